"""The ``inferlab`` console script run as a user runs it: a child process with the test's
settings in its environment, its exit status and output returned."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from shared.config import Settings
from tests.support.services import REPO

# The console script pip installed next to this interpreter.
INFERLAB = str(Path(sys.executable).parent / "inferlab")


def cli_env(settings: Settings, columns: int = 200) -> dict[str, str]:
    """The environment of a CLI child: the test's settings as INFERLAB_* variables, a fixed
    terminal width and no colours, so output is the same on every machine."""
    return {**os.environ, **settings.to_env(), "COLUMNS": str(columns), "NO_COLOR": "1"}


async def cli(settings: Settings, *args: str, timeout: float = 60.0, columns: int = 200) -> tuple[int, str, str]:
    """``inferlab *args``: (exit status, stdout, stderr). A child still running at ``timeout``
    is killed before the TimeoutError propagates, so a hang cannot outlive its test."""
    proc = await asyncio.create_subprocess_exec(
        INFERLAB,
        *args,
        cwd=REPO,
        env=cli_env(settings, columns),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(), err.decode()


def assert_one_line_error(rc: int, err: str, needle: str) -> None:
    """A user error: non-zero exit, one ``error:`` line naming the problem, no traceback."""
    assert rc != 0
    assert "Traceback" not in err
    assert needle in err
    assert err.strip().startswith("error:")
