"""Production latencies from any server, in batches: ``LatencyReporter``.

    reporter = await client.reporter("digits@production")   # UnknownModel for a typo
    reporter.record(12.5)                                     # cheap: appends to a buffer
    ...
    await reporter.close()                                    # flushes what is left

A reporter buffers latencies and publishes them as ``InferenceTelemetry`` batches on
``telemetry.inference.<name>`` when ``max_batch`` samples are waiting or every ``interval_s``,
whichever comes first; the benchmarker's monitor ingests them (docs/benchmarker.md). Values
are checked when recorded with the rules the benchmarker applies to a batch, so a bad value
fails at its source instead of dead-lettering a whole batch later.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from shared.bus import Bus
from shared.contracts import subjects
from shared.contracts.base import new_id
from shared.contracts.benchmark import InferenceTelemetry
from shared.contracts.identity import BASE_VARIANT, format_ref
from shared.errors import InferlabError

# The benchmarker refuses a batch of more than 100,000 samples (services/benchmarker).
MAX_BATCH = 100_000
# Unix seconds of the year 3000: the benchmarker's bound that tells seconds from milliseconds.
MAX_TIMESTAMP_S = 32_503_680_000.0
DEFAULT_MAX_BATCH = 1_000
DEFAULT_INTERVAL_S = 5.0
DEFAULT_MAX_BUFFER = 100_000

log = structlog.get_logger("telemetry")


class InvalidLatency(InferlabError):
    """A latency or timestamp that the benchmarker would refuse."""

    code = "invalid_telemetry"


@dataclass(frozen=True, slots=True)
class TelemetryKey:
    """Which model variant, served where, the latencies belong to."""

    name: str
    version: str
    variant: str = BASE_VARIANT
    host: str = ""

    @property
    def ref(self) -> str:
        return format_ref(self.name, self.version, self.variant)


def check_sample(latency_ms: float, at: float) -> tuple[float, float]:
    """The (timestamp, latency) pair as floats, or InvalidLatency saying what is wrong."""
    try:
        lat, ts = float(latency_ms), float(at)
    except (TypeError, ValueError) as exc:
        raise InvalidLatency(f"latency and timestamp must be numbers: {exc}") from None
    if not (math.isfinite(lat) and math.isfinite(ts)):
        raise InvalidLatency(f"latency {latency_ms!r} ms at {at!r}: both must be finite numbers")
    if lat < 0:
        raise InvalidLatency(f"latency {lat} ms is negative")
    if ts < 0 or ts > MAX_TIMESTAMP_S:
        raise InvalidLatency(f"timestamp {ts} is not Unix seconds (milliseconds? divide by 1000)")
    return ts, lat


def batches(samples: list[tuple[float, float]], key: TelemetryKey, size: int) -> list[InferenceTelemetry]:
    """``samples`` as telemetry messages of at most ``size`` samples each, in order."""
    out = []
    for start in range(0, len(samples), size):
        chunk = samples[start : start + size]
        out.append(
            InferenceTelemetry(
                event_id=new_id(),
                name=key.name,
                version=key.version,
                variant=key.variant,
                host=key.host,
                timestamps=[ts for ts, _ in chunk],
                latencies_ms=[lat for _, lat in chunk],
            )
        )
    return out


class LatencyReporter:
    """Buffers latencies of one model variant on one host and publishes them in batches.

    ``record`` never blocks nor talks to the network; a background task (started by
    ``start``, or by the first ``record`` inside a running event loop) flushes. When NATS is
    unreachable the buffer keeps at most ``max_buffer`` samples, dropping the oldest (counted
    in ``dropped`` and logged): a serving process must not run out of memory for its
    telemetry."""

    def __init__(
        self,
        bus: Bus,
        key: TelemetryKey,
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        interval_s: float = DEFAULT_INTERVAL_S,
        max_buffer: int = DEFAULT_MAX_BUFFER,
    ) -> None:
        if not 1 <= max_batch <= MAX_BATCH:
            raise InferlabError(f"max_batch must lie in 1..{MAX_BATCH}, not {max_batch}")
        if interval_s <= 0:
            raise InferlabError(f"interval_s must be positive, not {interval_s}")
        self.bus = bus
        self.key = key if key.host else TelemetryKey(key.name, key.version, key.variant, socket.gethostname())
        self.max_batch = max_batch
        self.interval_s = interval_s
        self._buffer: deque[tuple[float, float]] = deque(maxlen=max(max_buffer, max_batch))
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.sent = 0
        self.batches_sent = 0
        self.dropped = 0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def record(self, latency_ms: float, at: float | None = None) -> None:
        """Buffer one latency (milliseconds) measured at ``at`` (Unix seconds, default now)."""
        if self._closed:
            raise InferlabError(f"the latency reporter of {self.key.ref} is closed")
        sample = check_sample(latency_ms, time.time() if at is None else at)
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning("telemetry_dropped", ref=self.key.ref, dropped=self.dropped)
        self._buffer.append(sample)
        self._ensure_started()
        if len(self._buffer) >= self.max_batch:
            self._wake.set()

    def record_many(self, latencies_ms: Iterable[float], at: Iterable[float] | None = None) -> int:
        """Buffer several latencies; ``at`` parallel to them, or every one stamped now."""
        values = list(latencies_ms)
        stamps = [time.time()] * len(values) if at is None else list(at)
        if len(stamps) != len(values):
            raise InvalidLatency(f"{len(stamps)} timestamps for {len(values)} latencies: they must be parallel")
        checked = [check_sample(v, t) for v, t in zip(values, stamps, strict=True)]  # all or nothing
        for ts, lat in checked:
            self.record(lat, ts)
        return len(checked)

    def start(self) -> None:
        self._ensure_started()

    def _ensure_started(self) -> None:
        if self._task is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: ``flush``/``close`` publish what was recorded
        self._task = loop.create_task(self._run(), name=f"telemetry-{self.key.name}")

    async def _run(self) -> None:
        while True:
            full_only = True
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except TimeoutError:
                full_only = False  # the interval passed: whatever is buffered goes
            self._wake.clear()
            try:
                await self.flush(full_only=full_only)
            except InferlabError as exc:
                # Kept in the buffer; the next round tries again.
                log.warning("telemetry_flush_failed", ref=self.key.ref, error=exc.message)

    async def flush(self, *, full_only: bool = False) -> int:
        """Publish everything buffered now (in batches of ``max_batch``; ``full_only``: only
        full batches, the rest waits for the interval); returns how many samples were sent.
        Samples go back to the buffer when a publish fails."""
        async with self._lock:
            count = len(self._buffer)
            if full_only:
                count -= count % self.max_batch
            taken = [self._buffer.popleft() for _ in range(count)]
            if not taken:
                return 0
            messages = batches(taken, self.key, self.max_batch)
            for i, message in enumerate(messages):
                try:
                    await self.bus.publish(subjects.telemetry(self.key.name), message)
                except InferlabError:
                    unsent = taken[i * self.max_batch :]
                    room = (self._buffer.maxlen or 0) - len(self._buffer)
                    if len(unsent) > room:  # the newest that do not fit are lost: count them
                        self.dropped += len(unsent) - room
                    self._buffer.extendleft(reversed(unsent))
                    raise
                self.sent += len(message.latencies_ms)
                self.batches_sent += 1
            return len(taken)

    async def close(self) -> None:
        """Stop the background task and publish what is left."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
