"""The one writer of the DuckDB history, and its readers.

One process owns the DuckDB file: every write goes through one writer thread; readers (SQL,
history, trend, compare, export) get their own connection to the same database instance and
run on other threads, so a slow query never holds up ingestion.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from services.benchmarker.errors import HistoryLocked
from services.benchmarker.history import History
from services.benchmarker.rows import EventRow
from shared.errors import ServiceUnavailable

T = TypeVar("T")


class HistoryWriter:
    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-writer")
        self._db: History | None = None

    @property
    def db(self) -> History:
        if self._db is None:
            raise ServiceUnavailable("the history is not open")
        return self._db

    async def open(self, path: Path) -> History:
        try:
            self._db = await self.write(History, path)
        except duckdb.IOException as exc:
            raise HistoryLocked(
                f"cannot open the history {path}: {exc}. One benchmarker process owns one history file; "
                "give each replica its own INFERLAB_HISTORY_PATH (see docs/benchmarker.md)"
            ) from None
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            await self.write(self._db.close)
            self._db = None
        self._thread.shutdown(wait=True)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run on the single history-writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def read(self, fn: Callable[[History], T]) -> T:
        """Run ``fn`` on a connection of its own, on another thread (an MVCC snapshot: it
        neither blocks nor sees half of a write)."""
        reader = await self.write(self.db.reader)
        try:
            return await asyncio.to_thread(fn, reader)
        finally:
            await asyncio.to_thread(reader.con.close)

    async def insert(self, table: str, row: EventRow) -> None:
        """Store one fact (a no-op when its event id is stored already)."""
        await self.write(self.db.insert_event_row, table, row)
