"""How the CLI talks to people (rich tables, progress bars) and to scripts (``--json``)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

import msgspec
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

# Wider than any table we print: the width stdout gets when it is not a terminal.
UNWRAPPED_WIDTH = 100_000


def stdout_console() -> Console:
    """The console for stdout. On a terminal rich fits output to the window; into a pipe or a
    file (``inferlab models | less``, CI logs) it would wrap every table at 80 columns, which
    breaks ``grep``/``cut`` and the eye alike, so there each line is printed whole. An explicit
    ``COLUMNS`` still wins for those who want a fixed width."""
    out = Console()
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = UNWRAPPED_WIDTH
    return out


console = stdout_console()
err_console = Console(stderr=True)


def to_builtins(obj: Any) -> Any:
    return msgspec.to_builtins(obj, builtin_types=(datetime,)) if not isinstance(obj, str | int | float) else obj


def emit_json(obj: Any) -> None:
    """One JSON document on stdout (datetimes as ISO strings)."""
    sys.stdout.write(json.dumps(msgspec.to_builtins(obj), indent=2, default=str) + "\n")
    sys.stdout.flush()


def emit_json_line(obj: Any) -> None:
    sys.stdout.write(json.dumps(msgspec.to_builtins(obj), default=str) + "\n")
    sys.stdout.flush()


def command_queued(as_json: bool, command_id: str, what: str, hint: str) -> int:
    """A command published without ``--wait``: its id, and where to watch for the outcome."""
    if as_json:
        emit_json({"status": "queued", "command_id": command_id})
    else:
        console.print(f"queued {escape(what)} (command {command_id}); {hint}", highlight=False)
    return 0


def command_refused(as_json: bool, status: str, label: str, code: str, message: str) -> int:
    """A command answered with a refusal (rejected, failed, errored): exit status 1."""
    if as_json:
        emit_json({"status": status, "reason": code, "message": message})
    else:
        console.print(f"[bold red]{label}[/] ({code}): {escape(message)}", highlight=False)
    return 1


def table(
    title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, caption: str | None = None
) -> None:
    t = Table(title=title, caption=caption, header_style="bold", show_lines=False)
    for column in columns:
        justify: Literal["right", "left"] = (
            "right" if column.endswith(("ms", "bytes", "/s", "size", "params", "score", "n")) else "left"
        )
        t.add_column(column, justify=justify, overflow="fold")
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    console.print(t)


def human_bytes(n: int | float | None) -> str:
    if n is None:
        return ""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def fmt_ms(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def when(dt: datetime | None) -> str:
    return "" if dt is None else dt.astimezone().strftime("%Y-%m-%d %H:%M:%S")


@contextmanager
def transfer_progress(description: str, total: int | None, *, enabled: bool = True) -> Iterator[Any]:
    """A byte-transfer progress bar on stderr; yields ``advance(n)``."""
    if not enabled or not err_console.is_terminal:
        yield lambda n: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


@contextmanager
def step_progress(
    description: str, total: int | None = None, *, enabled: bool = True, plain: bool = False
) -> Iterator[Any]:
    """A step progress bar (or spinner when ``total`` is None) on stderr; yields
    ``update(description=None, advance=0)``. Without a terminal and with ``plain``, each new
    description is one plain line on stderr instead, so a pipe or a CI log still shows that
    something is happening."""
    if not err_console.is_terminal and plain:
        yield _plain_lines(description)
        return
    if not enabled or not err_console.is_terminal:
        yield lambda description=None, advance=0: None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}" if total else ""),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)

        def update(description: str | None = None, advance: int = 0) -> None:
            progress.update(task, description=description or progress.tasks[0].description, advance=advance)

        yield update


# A plain-line progress repeats its last line after this long without news (a bare
# ``update()`` call is a heartbeat), so a long single step does not look hung in a log.
HEARTBEAT_S = 10.0


def _plain_lines(first: str) -> Any:
    started = last_at = time.monotonic()
    last = first
    err_console.print(f"{first} …", highlight=False, soft_wrap=True)

    def update(description: str | None = None, advance: int = 0) -> None:
        nonlocal last, last_at
        now = time.monotonic()
        changed = bool(description) and description != last
        if not changed and now - last_at < HEARTBEAT_S:
            return
        last, last_at = description or last, now
        err_console.print(f"{last} ({now - started:.0f} s)", highlight=False, soft_wrap=True)

    return update


async def heartbeat(update: Any, every: float = HEARTBEAT_S / 2) -> None:
    """Call ``update()`` every ``every`` seconds until cancelled (see ``HEARTBEAT_S``)."""
    while True:
        await asyncio.sleep(every)
        update()
