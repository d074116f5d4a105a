"""The ``inferlab`` command line (console script ``inferlab = shared.cli:main``)."""

from shared.cli.app import main

__all__ = ["main"]
