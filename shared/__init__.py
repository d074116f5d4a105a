"""inferlab's common library: contracts, bus, artifacts, config, logging, SDK and CLI."""

__version__ = "0.1.0"
