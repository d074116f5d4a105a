"""Waiting on a real platform: a snapshot of what a stream holds, and polling a condition
until it holds. Shared by every test that watches events rather than calling a service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shared.sdk import Client, StreamEvent


async def stored(client: Client, subject: str) -> list[StreamEvent]:
    """Every message stored on ``subject`` right now (a snapshot of the stream)."""
    return [e async for e in client.events(subject, replay=True, stored_only=True)]


async def eventually(
    check: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 30.0,
    every: float = 0.25,
    what: str = "condition",
    tolerate: tuple[type[BaseException], ...] = (),
) -> None:
    """Poll ``check`` until it holds. ``tolerate``: errors that only mean "not yet" (a read
    that times out while a cluster node fails over); each check gets at most 20 s then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last_error: BaseException | None = None
    not_yet: tuple[type[BaseException], ...] = (*tolerate, TimeoutError) if tolerate else ()
    while True:
        try:
            if await asyncio.wait_for(check(), timeout=20.0 if tolerate else None):
                return
        except not_yet as exc:
            last_error = exc
        if loop.time() > deadline:
            detail = f" (last error: {type(last_error).__name__}: {last_error})" if last_error else ""
            raise AssertionError(f"{what} not met within {timeout:.0f}s{detail}")
        await asyncio.sleep(every)
