"""Service discovery for ``Client.status``: ``$SRV.INFO`` answers from every running instance,
then each instance's ``$SRV.STATS``.

A broadcast request has no natural end, so the gather stops as soon as every service the caller
expects has answered (plus a short grace for extra replicas) instead of always sleeping out its
timeout; the per-instance statistics are one reply each and are asked for concurrently. Before,
``inferlab status`` slept the timeout once for INFO and once more per instance, in sequence
(about 4 s with four services)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

import msgspec

from shared.supervisor import SERVICES

if TYPE_CHECKING:
    from shared.bus import Bus

# Replicas of a service answer within milliseconds of each other on one server; this is how long
# the gather keeps listening once every expected service has been heard from.
REPLICA_GRACE_S = 0.1


class ServiceStatus(msgspec.Struct, kw_only=True):
    name: str
    id: str
    version: str
    endpoints: list[dict[str, Any]] = []
    stats: dict[str, Any] | None = None


async def gather(
    bus: Bus,
    subject: str,
    timeout: float,
    *,
    enough: Callable[[list[dict[str, Any]]], bool] = lambda replies: False,
    grace: float = REPLICA_GRACE_S,
) -> list[dict[str, Any]]:
    """Every JSON reply to a request on ``subject`` until ``timeout``, or until ``enough(replies)``
    holds and ``grace`` more seconds have passed."""
    inbox = bus.nc.new_inbox()
    replies: list[dict[str, Any]] = []
    satisfied = asyncio.Event()

    async def collect(msg: Any) -> None:
        with contextlib.suppress(ValueError):
            replies.append(json.loads(msg.data))
        if enough(replies):
            satisfied.set()

    sub = await bus.nc.subscribe(inbox, cb=collect)
    try:
        await bus.nc.publish(subject, b"", reply=inbox)
        await bus.nc.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(satisfied.wait(), timeout)
            await asyncio.sleep(grace)
    finally:
        await sub.unsubscribe()
    return replies


def all_named(expected: Collection[str]) -> Callable[[list[dict[str, Any]]], bool]:
    """``enough`` for INFO replies: every expected service name answered at least once."""
    wanted = set(expected)

    def enough(replies: list[dict[str, Any]]) -> bool:
        return bool(wanted) and wanted <= {reply.get("name") for reply in replies}

    return enough


class DiscoveryApi:
    bus: Bus

    async def status(
        self,
        service: str | None = None,
        timeout: float = 0.75,
        *,
        expect: Collection[str] | None = None,
    ) -> builtins.list[ServiceStatus]:
        """Every running service instance, found through ``$SRV.INFO`` (micro discovery), with its
        endpoint statistics from ``$SRV.STATS``. Returns once every service in ``expect``
        (default: ``service`` when given, else the platform's four) answered, at the latest after
        ``timeout``."""
        wanted = expect if expect is not None else ([service] if service else SERVICES)
        subject = "$SRV.INFO" + (f".{service}" if service else "")
        infos = await gather(self.bus, subject, timeout, enough=all_named(wanted))
        stats = await asyncio.gather(*(self._stats(info, timeout) for info in infos))
        out = [
            ServiceStatus(
                name=info.get("name", "?"),
                id=info.get("id", "?"),
                version=info.get("version", "?"),
                endpoints=info.get("endpoints") or [],
                stats=stat,
            )
            for info, stat in zip(infos, stats, strict=True)
        ]
        out.sort(key=lambda s: (s.name, s.id))
        return out

    async def _stats(self, info: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        subject = f"$SRV.STATS.{info.get('name')}.{info.get('id')}"
        replies = await gather(self.bus, subject, timeout, enough=bool, grace=0.0)
        return replies[0] if replies else None
