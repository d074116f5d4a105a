"""SDK methods for production telemetry (mixed into ``shared.sdk.Client``).

async with await Client.connect() as client:
    await client.report_latency("digits@production", 12.5)        # one request's latency
    await client.report_latency("digits@1.0.0", [9.1, 10.4, 8.7])  # several at once
    # leaving the block flushes what is buffered

The reference is resolved once per client through the registry, so a name that is not
registered fails at once with ``UnknownModel`` (``UnknownAlias`` for an alias that is not set)
instead of being stored under a typo.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shared.clients.host import ClientHost
from shared.contracts.identity import ModelRef
from shared.telemetry import (
    DEFAULT_INTERVAL_S,
    DEFAULT_MAX_BATCH,
    InvalidLatency,
    LatencyReporter,
    TelemetryKey,
)

if TYPE_CHECKING:
    from shared.contracts.registry import Resolved


class TelemetryApi(ClientHost):
    """Latency reporting; one ``LatencyReporter`` per (ref, host), created on first use."""

    _reporters: dict[tuple[str, str], LatencyReporter]

    if TYPE_CHECKING:

        async def resolve(self, ref: str) -> Resolved: ...

    async def reporter(
        self,
        ref: str,
        *,
        host: str = "",
        max_batch: int = DEFAULT_MAX_BATCH,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> LatencyReporter:
        """A started reporter for ``ref`` (an alias is resolved now, to its current version).
        Raises ``UnknownModel`` / ``UnknownAlias`` when the registry does not know ``ref``.
        The caller owns it: ``await reporter.close()`` publishes what is left."""
        ModelRef.parse(ref)
        resolved = await self.resolve(ref)
        key = TelemetryKey(resolved.name, resolved.version, resolved.variant, host)
        reporter = LatencyReporter(self.bus, key, max_batch=max_batch, interval_s=interval_s)
        reporter.start()
        return reporter

    async def report_latency(
        self,
        ref: str,
        latency_ms: float | Sequence[float],
        *,
        at: float | Sequence[float] | None = None,
        host: str = "",
    ) -> LatencyReporter:
        """Record production latencies (milliseconds) of ``ref`` measured at ``at`` (Unix
        seconds; default now). Buffered: batches go out on ``telemetry.inference.<name>`` every
        few seconds or every 1,000 samples, and when the client closes; ``flush_telemetry()``
        sends now. Returns the reporter (its ``sent``, ``pending`` and ``dropped`` counters)."""
        reporter = self._reporters.get((ref, host))
        if reporter is None:
            reporter = self._reporters[(ref, host)] = await self.reporter(ref, host=host)
        if isinstance(latency_ms, int | float):
            if at is not None and not isinstance(at, int | float):
                raise InvalidLatency("one latency takes one timestamp")
            reporter.record(latency_ms, at)
        else:
            if isinstance(at, int | float):
                raise InvalidLatency("several latencies take a list of timestamps, or none")
            stamps = at if at is not None else [time.time()] * len(latency_ms)
            reporter.record_many(latency_ms, stamps)
        return reporter

    async def flush_telemetry(self) -> int:
        """Publish every buffered latency now; returns how many were sent."""
        sent = 0
        for reporter in self._reporters.values():
            sent += await reporter.flush()
        return sent

    async def close_reporters(self) -> None:
        reporters, self._reporters = self._reporters, {}
        for reporter in reporters.values():
            await reporter.close()
