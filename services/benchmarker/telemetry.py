"""Production latencies -> the history -> the anomaly monitor -> anomaly alerts.

Telemetry messages that arrive together are written in one transaction (``_flush_loop``); only
after their samples are stored and the monitor's alerts published are their handlers released,
so a message is acknowledged only once it is in the history.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import msgspec
import numpy as np

from services.benchmarker.errors import InvalidTelemetry
from services.benchmarker.history import ProductionBatch
from services.benchmarker.monitor import OPENED, Decision, Key, Monitor, MonitorConfig
from services.benchmarker.rows import own_alert_entry
from services.benchmarker.sources import RegisteredSources
from services.benchmarker.writer import HistoryWriter
from shared.bus import Bus
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.alerts import AnomalyAlert
from shared.contracts.benchmark import InferenceTelemetry
from shared.contracts.identity import format_ref, is_valid_name
from shared.errors import ServiceUnavailable
from shared.log import get_logger
from shared.worker import Delivery, PoisonMessage

# How long the flusher waits for more messages to write together...
FLUSH_COALESCE_S = 0.01
# ...unless this many samples are already pending: then it writes at once.
FLUSH_NOW_PENDING_SAMPLES = 1_000_000
# The most latencies one telemetry message may carry.
MAX_SAMPLES_PER_MESSAGE = 100_000
# Timestamps are Unix seconds; beyond the year 3000 they are milliseconds by mistake.
MAX_TIMESTAMP_S = 32503680000


class Telemetry:
    def __init__(self, bus: Bus, settings: Settings, writer: HistoryWriter, sources: RegisteredSources) -> None:
        self.bus = bus
        self.sources = sources
        self.writer = writer
        self.log = get_logger()
        self.monitor = Monitor(
            MonitorConfig(
                window=settings.anomaly_window,
                z_threshold=settings.anomaly_z_threshold,
                z_resolve=settings.anomaly_z_threshold / 2.0,
                min_interval_s=settings.anomaly_min_interval_s,
            )
        )
        self._pending: list[tuple[ProductionBatch, asyncio.Future[None]]] = []
        self._pending_samples = 0
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._unpublished: list[AnomalyAlert] = []

    async def start(self) -> int:
        """Restore the monitor from the history and start the flusher; returns how many
        (model, host) series the monitor watches."""
        restored = await self.writer.write(self._restore_monitor)
        self._flusher = asyncio.create_task(self._flush_loop(), name="telemetry-flusher")
        return restored

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for _, future in self._pending:
            if not future.done():
                future.set_exception(ServiceUnavailable("benchmarker stopping"))
        self._pending.clear()

    async def on_telemetry(self, delivery: Delivery[InferenceTelemetry]) -> None:
        try:
            batch = telemetry_batch(delivery.message)
        except InvalidTelemetry as exc:
            # No retry can fix it: the worker dead-letters it at once, with our reason.
            raise PoisonMessage(exc.message, reason=exc.code) from exc
        await self.sources.require(delivery.message)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, future))
        self._pending_samples += int(batch.latencies_ms.size)
        self._wake.set()
        await future

    async def _flush_loop(self) -> None:
        """Writes the telemetry messages that arrived together in one transaction, then runs
        the monitor on the new ones and publishes its alerts; only then are the messages'
        handlers released (and the messages acknowledged)."""
        while True:
            await self._wake.wait()
            if self._pending_samples < FLUSH_NOW_PENDING_SAMPLES:
                await asyncio.sleep(FLUSH_COALESCE_S)
            self._wake.clear()
            pending, self._pending, self._pending_samples = self._pending, [], 0
            if not pending:
                continue
            try:
                await self._flush([batch for batch, _ in pending])
            except Exception as exc:
                self.log.warning("telemetry_flush_failed", error=str(exc), error_type=type(exc).__name__)
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, future in pending:
                if not future.done():
                    future.set_result(None)

    async def _flush(self, batches: list[ProductionBatch]) -> None:
        fresh = await self.writer.write(self.writer.db.insert_production, batches)
        decisions: list[Decision] = []
        for batch in fresh:
            key = Key(batch.name, batch.version, batch.variant, batch.host)
            decisions += self.monitor.observe(key, batch.timestamps, batch.latencies_ms)
        alerts = [*self._unpublished, *(anomaly_alert(d) for d in decisions)]
        self._unpublished = []
        for i, alert in enumerate(alerts):
            subject = subjects.alert("performance", "anomaly", alert.name)
            try:
                await self.bus.publish(subject, alert)
            except ServiceUnavailable:
                # The samples are stored and acknowledged; keep the alert and retry it with the
                # next flush rather than lose it or replay the samples.
                self._unpublished = alerts[i:]
                self.log.warning("anomaly_alert_deferred", count=len(self._unpublished))
                return
            await self.writer.insert("alerts", own_alert_entry(alert, subject))
            self.log.warning("anomaly", ref=alert.ref, host=alert.host, state=alert.state, score=round(alert.score, 2))

    def _restore_monitor(self) -> int:
        """Rebuild the monitor's baselines from stored samples and resume open incidents
        (runs on the writer thread at start)."""
        db = self.writer.db
        config = self.monitor.config
        keys = db.monitored_keys()
        for name, version, variant, host in keys:
            ts, lat = db.recent_production(name, version, variant, host, config.window * config.history_windows)
            self.monitor.warm(Key(name, version, variant, host), ts, lat)
        for entry in db.open_incidents():
            payload = msgspec.json.decode(entry.payload or "{}")
            key = Key(entry.name, payload.get("version", ""), payload.get("variant", "base"), entry.host or "")
            opened = payload.get("opened_at") or payload.get("window_end")
            opened_s = datetime.fromisoformat(opened).timestamp() if opened else time.time()
            self.monitor.resume(key, entry.incident_id or "", opened_s, payload.get("detector", "robust_z"))
        return len(keys)


def telemetry_batch(message: InferenceTelemetry) -> ProductionBatch:
    """A telemetry message as a batch for the history, or ``InvalidTelemetry`` saying why not."""
    if not is_valid_name(message.name):
        raise InvalidTelemetry(f"invalid model name {message.name!r}")
    n = len(message.latencies_ms)
    if n == 0:
        raise InvalidTelemetry("telemetry batch holds no latencies")
    if len(message.timestamps) != n:
        raise InvalidTelemetry(f"{len(message.timestamps)} timestamps for {n} latencies: they must be parallel lists")
    if n > MAX_SAMPLES_PER_MESSAGE:
        raise InvalidTelemetry(f"{n} samples in one batch; at most {MAX_SAMPLES_PER_MESSAGE}")
    ts = np.asarray(message.timestamps, dtype=np.float64)
    lat = np.asarray(message.latencies_ms, dtype=np.float64)
    if not (np.all(np.isfinite(ts)) and np.all(np.isfinite(lat))):
        raise InvalidTelemetry("timestamps and latencies must be finite numbers")
    if np.any(lat < 0):
        raise InvalidTelemetry("latencies must not be negative")
    if np.any(ts < 0) or np.any(ts > MAX_TIMESTAMP_S):
        raise InvalidTelemetry("timestamps must be Unix seconds")
    return ProductionBatch(
        batch_id=message.event_id,
        name=message.name,
        version=message.version,
        variant=message.variant,
        host=message.host,
        timestamps=ts,
        latencies_ms=lat,
    )


def anomaly_alert(decision: Decision) -> AnomalyAlert:
    """The alert of a monitor decision: an incident opened or resolved."""
    key = decision.key
    ref = format_ref(key.name, key.version, key.variant) if key.version else key.name
    opened = decision.state == OPENED
    direction = "slower" if decision.window_median_ms > decision.baseline_median_ms else "faster"
    if opened:
        summary = (
            f"{ref} on {key.host}: production median {decision.window_median_ms:.4g} ms vs baseline "
            f"{decision.baseline_median_ms:.4g} ms ({direction}; {decision.detector} score {decision.score:+.1f})"
        )
    else:
        summary = (
            f"{ref} on {key.host}: back to baseline (median {decision.window_median_ms:.4g} ms vs "
            f"{decision.baseline_median_ms:.4g} ms) after {decision.windows_anomalous} anomalous window(s)"
        )
    return AnomalyAlert(
        event_id=f"anomaly-{decision.incident_id}-{decision.state}",
        correlation_id=decision.incident_id,
        severity="warning" if opened else "info",
        name=key.name,
        summary=summary,
        ref=ref,
        incident_id=decision.incident_id,
        state=decision.state,
        detector=decision.detector,
        window_median_ms=decision.window_median_ms,
        baseline_median_ms=decision.baseline_median_ms,
        score=decision.score,
        threshold=decision.threshold,
        host=key.host,
        version=key.version,
        variant=key.variant,
        window_samples=decision.window_samples,
        window_end=datetime.fromtimestamp(decision.window_end, UTC),
        opened_at=datetime.fromtimestamp(decision.opened_at, UTC),
        windows_anomalous=decision.windows_anomalous,
        suppressed=decision.suppressed,
    )
