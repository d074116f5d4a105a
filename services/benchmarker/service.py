"""Benchmarker wiring: the measuring consumer (``model.registered.*``, ``model.benchmark``), the
history ingestion consumers (conversions, validations, alerts, production telemetry with the
anomaly monitor), and the micro endpoints (SQL, history, trend, compare, export).

Domain logic lives in protocol.py (measuring), stats.py, analysis.py, monitor.py, history.py
(DuckDB) and sql.py (the read-only guard). This module awaits, publishes and replies.

One process owns the DuckDB file: every write goes through one writer thread; readers (SQL,
history, trend, compare, export) get their own connection to the same database instance and
run on other threads, so a slow query never holds up ingestion.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import msgspec
import numpy as np

from services.benchmarker import analysis, stats
from services.benchmarker.history import TABLES, VIEWS, History, ProductionBatch, SampleBatch
from services.benchmarker.monitor import OPENED, Decision, Key, Monitor, MonitorConfig
from services.benchmarker.protocol import Measurement, MeasureSpec, fingerprint, measure_isolated
from services.benchmarker.runners import GPU_PROVIDERS, BenchmarkError, InvalidConfig, LoadFailed, UnavailableOnHost
from services.benchmarker.sql import run_query
from shared.artifacts import ArtifactStore
from shared.bus import Bus
from shared.cache import ArtifactCache
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.alerts import AnomalyAlert, DeadLetter, DeadLetterAlert, RegressionAlert
from shared.contracts.base import new_id
from shared.contracts.benchmark import (
    BENCHMARKER_COMPARE,
    BENCHMARKER_EXPORT,
    BENCHMARKER_HISTORY,
    BENCHMARKER_TREND,
    BenchmarkConfig,
    BenchmarkFailed,
    BenchmarkModel,
    BenchmarkProgress,
    CompareRequest,
    ComparisonReport,
    ExportedFile,
    ExportReply,
    ExportRequest,
    HardwareFingerprint,
    HistoryReply,
    HistoryRequest,
    InferenceTelemetry,
    ModelBenchmarked,
    SkippedConfig,
    SqlQuery,
    SqlResult,
    TrendReport,
    TrendRequest,
)
from shared.contracts.conversion import ConversionFailed, ConversionSkipped, ModelConverted
from shared.contracts.identity import ModelRef, format_ref, is_valid_name
from shared.contracts.registry import FORMAT_TENSORRT, INPUTS_NEED_SPEC, ModelRecord, ModelRegistered
from shared.contracts.validation import ModelValidated, ValidationErrored
from shared.endpoints import Endpoint
from shared.errors import ArtifactError, InferlabError, InvalidReference, NativeFailure, NotFound, ServiceUnavailable
from shared.log import get_logger
from shared.sandbox import Limits, limits_for
from shared.sdk import Client
from shared.worker import Delivery, Route, Worker

SERVICE = "benchmarker"
T = TypeVar("T")

# Benchmarks on one host run one at a time, also across processes (clean numbers).
HOST_LOCK = Path(tempfile.gettempdir()) / "inferlab-benchmark.lock"
TELEMETRY_COALESCE_S = 0.01
TELEMETRY_MAX_SAMPLES = 1_000_000
COMPARE_MAX_SAMPLES = 100_000


class AlertRow(msgspec.Struct, kw_only=True):
    """Any alert on ``alerts.>``, read leniently for the ``alerts`` table (its full JSON is
    stored in ``payload``): alert types added later are recorded too."""

    event_id: str = ""
    correlation_id: str = ""
    type: str = ""
    occurred_at: datetime | None = None
    severity: str = ""
    name: str = ""
    summary: str = ""
    ref: str | None = None
    state: str | None = None
    incident_id: str | None = None
    host: str | None = None


class InvalidTelemetry(InferlabError):
    code = "invalid_telemetry"


class BenchmarkerService:
    name = SERVICE
    description = "inferlab benchmarker: measurements, DuckDB history, regressions, production anomalies, SQL"

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self.bus = bus
        self.settings = settings
        self.cache = ArtifactCache(bus, settings.home_path / "cache" / SERVICE)
        self.scratch = settings.home_path / "scratch" / SERVICE
        self.registry = Client(bus)
        self.log = get_logger()
        self.db: History | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="history-writer")
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
        self.workers: list[Worker] = []
        try:
            self._default_batches = [int(b) for b in settings.bench_batch_sizes.split(",") if b.strip()] or [1]
        except ValueError:
            raise InferlabError(
                f"INFERLAB_BENCH_BATCH_SIZES={settings.bench_batch_sizes!r}: expected comma-separated integers",
                code="invalid_setting",
            ) from None

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        path = self.settings.effective_history_path
        try:
            self.db = await self._write(History, path)
        except duckdb.IOException as exc:
            raise InferlabError(
                f"cannot open the history {path}: {exc}. One benchmarker process owns one history file; "
                "give each replica its own INFERLAB_HISTORY_PATH (see docs/benchmarker.md)",
                code="history_locked",
            ) from None
        restored = await self._write(self._restore_monitor)
        self.log.info("history_opened", path=str(path), schema_version=self.db.schema_version, monitored=restored)
        self._flusher = asyncio.create_task(self._flush_loop(), name="telemetry-flusher")
        self.workers = [
            Worker(
                self.bus,
                service=SERVICE,
                stream="MODELS",
                durable="benchmarker",
                routes=[
                    Route("model.registered.*", ModelRegistered, self.on_registered),
                    Route(subjects.BENCHMARK, BenchmarkModel, self.on_benchmark),
                ],
                concurrency=1,  # one benchmark at a time: clean numbers
            ),
            Worker(
                self.bus,
                service=SERVICE,
                stream="MODELS",
                durable="benchmarker-history",
                routes=[
                    Route("model.converted.*", ModelConverted, self.on_converted),
                    Route("model.conversion_failed.*", ConversionFailed, self.on_conversion_failed),
                    Route("model.conversion_skipped.*", ConversionSkipped, self.on_conversion_skipped),
                    Route("model.validated.*", ModelValidated, self.on_validated),
                    Route("model.validation_failed.*", ValidationErrored, self.on_validation_errored),
                ],
                concurrency=4,
            ),
            Worker(
                self.bus,
                service=SERVICE,
                stream="ALERTS",
                durable="benchmarker-alerts",
                routes=[Route("alerts.>", AlertRow, self.on_alert)],  # type: ignore[arg-type]
                concurrency=8,
            ),
            Worker(
                self.bus,
                service=SERVICE,
                stream="TELEMETRY",
                durable="benchmarker-telemetry",
                routes=[Route("telemetry.inference.*", InferenceTelemetry, self.on_telemetry)],
                concurrency=256,  # in-flight messages are written together (see _flush_loop)
            ),
        ]

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for _, future in self._pending:
            if not future.done():
                future.set_exception(ServiceUnavailable("benchmarker stopping"))
        self._pending.clear()
        if self.db is not None:
            await self._write(self.db.close)
            self.db = None
        self._writer.shutdown(wait=True)

    def default_config(self) -> BenchmarkConfig:
        s = self.settings
        return BenchmarkConfig(
            providers=list(s.bench_providers),
            batch_sizes=self._default_batches,
            warmup_s=s.bench_warmup_s,
            window_s=s.bench_window_s,
            min_duration_s=s.bench_min_duration_s,
            max_duration_s=s.bench_max_duration_s,
            stability_threshold=s.bench_stability_threshold,
        )

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run on the single history-writer thread."""
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn, *args)

    async def _read(self, fn: Callable[[History], T]) -> T:
        """Run ``fn`` on a connection of its own, on another thread (an MVCC snapshot: it
        neither blocks nor sees half of a write)."""
        assert self.db is not None
        reader = await self._write(self.db.reader)
        try:
            return await asyncio.to_thread(fn, reader)
        finally:
            await asyncio.to_thread(reader.con.close)

    # --- measuring ----------------------------------------------------------------------------

    async def on_registered(self, delivery: Delivery[ModelRegistered]) -> None:
        if not self.settings.bench_auto:
            return
        event = delivery.message
        await self.benchmark(
            event.record,
            self.default_config(),
            source_event_id=event.event_id,
            correlation_id=event.correlation_id,
        )

    async def on_benchmark(self, delivery: Delivery[BenchmarkModel]) -> None:
        cmd = delivery.message
        try:
            ModelRef.parse(cmd.ref)
            view = await self.registry.get(cmd.ref)
        except (InvalidReference, NotFound) as exc:
            outcome = await self._failed(
                _name_of(cmd.ref), "", "base", cmd.ref, exc.code, exc.message, cmd.event_id, cmd.correlation_id
            )
            await self.bus.reply(cmd, outcome)
            return
        # ServiceUnavailable (registry down) propagates: the command is retried later.
        await self.benchmark(
            view.record,
            cmd.config or self.default_config(),
            source_event_id=cmd.event_id,
            correlation_id=cmd.correlation_id,
            command=cmd,
        )

    async def benchmark(
        self,
        record: ModelRecord,
        config: BenchmarkConfig,
        *,
        source_event_id: str,
        correlation_id: str,
        command: BenchmarkModel | None = None,
    ) -> ModelBenchmarked | BenchmarkFailed:
        """Measure every configuration of ``config`` on ``record``, store the runs, decide
        regressions, publish the outcome (and alerts), and answer ``command``."""
        fail = self._fail_for(record, source_event_id, correlation_id, command)
        try:
            analysis.validate_config(config)
        except InvalidConfig as exc:
            return await fail(exc.code, exc.message)
        engine = record.format == FORMAT_TENSORRT
        if engine:
            from shared.gpu import gpu_available, tensorrt_version

            if tensorrt_version() is None or not gpu_available():
                missing = "the TensorRT runtime" if tensorrt_version() is None else "an NVIDIA GPU"
                return await fail(
                    UnavailableOnHost.code,
                    f"{record.ref} is a TensorRT engine; this host lacks {missing}, so it cannot be measured here "
                    "(run a benchmarker on a GPU host with TensorRT)",
                )
        from shared.gpu import ort_providers

        if record.input_status == INPUTS_NEED_SPEC and not config.shapes and not record.dataset_uri:
            return await fail(INPUTS_NEED_SPEC, f"{record.ref}: {record.input_message}")
        planned, skipped, notes = analysis.plan(
            config, record.inputs, ort_providers(), engine=engine, resolved=record.resolved_inputs
        )
        if not planned:
            return await fail("invalid_config", "; ".join(s.message for s in skipped) or "nothing to measure")
        try:
            model_path = await self.cache.get(
                record.artifact_uri, record.sha256, suffix=".engine" if engine else ".onnx"
            )
        except ArtifactError as exc:
            return await fail(exc.code, f"cannot fetch the artifact of {record.ref}: {exc.message}")
        dataset_path = None
        if record.dataset_uri:
            try:
                dataset_path = await self.cache.get(record.dataset_uri, None, suffix=".npz")
            except ArtifactError as exc:
                notes.append(f"registered dataset unavailable ({exc.message}); synthetic inputs used")
        effect = _effect_threshold(record, self.settings)
        results = []
        hardware: dict[str, Any] | None = None
        regressions: list[tuple[dict[str, Any], dict[str, Any]]] = []
        event_id = f"bench-{source_event_id}"
        for index, item in enumerate(planned):
            run_id = analysis.run_id_for(source_event_id, item.key, record.sha256)
            assert self.db is not None
            stored = await self._write(self.db.run, run_id)
            if stored is None:
                spec = MeasureSpec(
                    model_path=str(model_path),
                    provider=item.provider,
                    batch_size=item.batch_size,
                    intra_op_threads=item.intra_op_threads,
                    concurrency=item.concurrency,
                    warmup_s=config.warmup_s,
                    window_s=config.window_s,
                    min_duration_s=config.min_duration_s,
                    max_duration_s=config.max_duration_s,
                    stability_threshold=config.stability_threshold,
                    seed=config.seed,
                    shapes=dict(config.shapes),
                    dataset_path=str(dataset_path) if dataset_path else None,
                    engine=engine,
                    resolved=list(record.resolved_inputs),
                )
                started = datetime.now(UTC)
                try:
                    limits = limits_for(
                        self.settings,
                        None,
                        model_bytes=model_path.stat().st_size,
                        gpu=engine or item.provider in GPU_PROVIDERS,
                    )
                    measurement = await asyncio.to_thread(_measure_exclusive, spec, limits)
                except NativeFailure as exc:
                    # The runtime crashed, hung or ran out of memory on this model: final.
                    return await fail(exc.code, f"{record.ref}: {exc.message}")
                except LoadFailed as exc:
                    return await fail(exc.code, f"{record.ref}: {exc.message}")
                except BenchmarkError as exc:
                    skipped.append(
                        SkippedConfig(
                            provider=item.provider,
                            batch_size=item.batch_size,
                            intra_op_threads=item.intra_op_threads,
                            concurrency=item.concurrency,
                            reason=exc.code,
                            message=exc.message,
                        )
                    )
                    self.log.warning(
                        "config_failed", ref=record.ref, config=item.key, reason=exc.code, error=exc.message
                    )
                    continue
                row, baseline = await self._analyse_and_store(
                    record,
                    config,
                    item,
                    measurement,
                    run_id,
                    started,
                    event_id,
                    source_event_id,
                    correlation_id,
                    effect,
                )
            else:
                row = stored
                baseline = (
                    await self._write(self.db.run, row["baseline_run_id"]) if row.get("baseline_run_id") else None
                )
            if hardware is None:
                hardware = await asyncio.to_thread(fingerprint, row["provider"])
            result = analysis.config_result(row, baseline)
            results.append(result)
            if row.get("status") == stats.REGRESSION and baseline is not None:
                regressions.append((row, baseline))
            if command is not None:
                await self.bus.reply(
                    command,
                    BenchmarkProgress(
                        ref=record.ref,
                        done=index + 1,
                        total=len(planned),
                        config_key=row["config_key"],
                        p50_ms=row["p50_ms"],
                    ),
                )
        if not results:
            first = skipped[-1] if skipped else None
            return await fail(
                first.reason if first else "run_failed",
                f"{record.ref}: no configuration could be measured: " + "; ".join(s.message for s in skipped[-3:]),
            )
        assert hardware is not None
        for result in results:
            result.notes = [*notes, *result.notes]
        outcome = ModelBenchmarked(
            event_id=event_id,
            correlation_id=correlation_id,
            name=record.name,
            version=record.version,
            variant=record.variant,
            ref=record.ref,
            sha256=record.sha256,
            hardware=HardwareFingerprint(**hardware),
            results=results,
            skipped=skipped,
            source_event_id=source_event_id,
        )
        await self.bus.publish(subjects.benchmarked(record.name), outcome)
        for row, baseline in regressions:
            await self._raise_regression(record, row, baseline, outcome, correlation_id)
        self.log.info(
            "benchmarked",
            ref=record.ref,
            configs=len(results),
            skipped=len(skipped),
            p50_ms=[round(r.latency.p50_ms, 4) for r in results],
            verdicts=[r.verdict.status if r.verdict else None for r in results],
        )
        if command is not None:
            await self.bus.reply(command, outcome)
        return outcome

    async def _analyse_and_store(
        self,
        record: ModelRecord,
        config: BenchmarkConfig,
        item: analysis.PlannedConfig,
        measurement: Measurement,
        run_id: str,
        started: datetime,
        event_id: str,
        source_event_id: str,
        correlation_id: str,
        effect: float,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        summary = await asyncio.to_thread(stats.summarize, measurement.latencies_ns, seed=config.seed)
        hardware = await asyncio.to_thread(fingerprint, measurement.provider)
        row = analysis.run_row(
            run_id=run_id,
            planned=item,
            config=config,
            record=record,
            measurement=measurement,
            summary=summary,
            hardware=hardware,
            started_at=started,
            finished_at=datetime.now(UTC),
            event_id=event_id,
            source_event_id=source_event_id,
            correlation_id=correlation_id,
        )
        samples = SampleBatch(
            latency_ns=measurement.latencies_ns,
            offset_ns=measurement.offsets_ns,
            window=measurement.windows,
            thread=measurement.threads,
        )
        p_threshold = self.settings.regression_p_threshold

        def decide_and_store() -> tuple[dict[str, Any], dict[str, Any] | None]:
            assert self.db is not None
            baseline = self.db.find_baseline(
                name=record.name,
                version=record.version,
                variant=record.variant,
                config_key=row["config_key"],
                hardware_id=row["hardware_id"],
                exclude_run_id=run_id,
            )
            if baseline is None:
                decision = stats.Decision(
                    stats.NO_BASELINE,
                    message="no earlier accepted run of this model, variant and configuration on this hardware",
                )
            else:
                decision = stats.decide_regression(
                    measurement.latencies_ns,
                    self.db.samples(baseline["run_id"]),
                    p_threshold=p_threshold,
                    effect_threshold=effect,
                    min_samples=analysis.MIN_SAMPLES,
                    new_stable=measurement.stable,
                    baseline_stable=bool(baseline["stable"]),
                )
            analysis.apply_decision(row, decision, baseline, p_threshold=p_threshold, effect_threshold=effect)
            self.db.insert_run(row, samples)
            return row, baseline

        return await self._write(decide_and_store)

    async def _raise_regression(
        self,
        record: ModelRecord,
        row: dict[str, Any],
        baseline: dict[str, Any],
        outcome: ModelBenchmarked,
        correlation_id: str,
    ) -> None:
        result = next(r for r in outcome.results if r.run_id == row["run_id"])
        ratio = float(row["median_ratio"])
        alert = RegressionAlert(
            event_id=f"regression-{row['run_id']}",
            correlation_id=correlation_id,
            severity="critical" if ratio >= 1.5 else "warning",
            name=record.name,
            summary=(
                f"{record.ref} is {ratio:.2f}x slower than {baseline['ref']} on {row['config_key']} "
                f"(p50 {row['p50_ms']:.4g} ms vs {baseline['p50_ms']:.4g} ms, {stats.fmt_p(row['p_value'])})"
            ),
            ref=record.ref,
            baseline_ref=baseline["ref"],
            run=result,
            baseline_run_id=baseline["run_id"],
            baseline_latency=analysis.latency_from_row(baseline),
            p_value=float(row["p_value"]),
            median_ratio=ratio,
            p_threshold=float(row["p_threshold"]),
            effect_threshold=float(row["effect_threshold"]),
            version=record.version,
            variant=record.variant,
            config_key=row["config_key"],
            hardware_id=row["hardware_id"],
            baseline_throughput_ips=float(baseline["throughput_ips"]),
            baseline_started_at=analysis._aware(baseline["started_at"]),
        )
        await self.bus.publish(subjects.alert("performance", "regression", record.name), alert)
        await self._store_alert(alert, subjects.alert("performance", "regression", record.name))
        self.log.warning("regression", ref=record.ref, baseline=baseline["ref"], ratio=round(ratio, 3))

    def _fail_for(
        self, record: ModelRecord, source_event_id: str, correlation_id: str, command: BenchmarkModel | None
    ) -> Callable[[str, str], Any]:
        async def fail(reason: str, message: str) -> BenchmarkFailed:
            outcome = await self._failed(
                record.name,
                record.version,
                record.variant,
                record.ref,
                reason,
                message,
                source_event_id,
                correlation_id,
            )
            if command is not None:
                await self.bus.reply(command, outcome)
            return outcome

        return fail

    async def _failed(
        self,
        name: str,
        version: str,
        variant: str,
        ref: str,
        reason: str,
        message: str,
        source_event_id: str,
        correlation_id: str,
    ) -> BenchmarkFailed:
        event = BenchmarkFailed(
            event_id=f"benchfail-{source_event_id}",
            correlation_id=correlation_id,
            name=name,
            version=version,
            variant=variant,
            ref=ref,
            reason=reason,
            message=message,
        )
        await self.bus.publish(subjects.benchmark_failed(name), event)
        assert self.db is not None
        await self._write(
            self.db.insert_event_row,
            "benchmark_failures",
            {
                "event_id": event.event_id,
                "name": name,
                "version": version,
                "variant": variant,
                "ref": ref,
                "reason": reason,
                "message": message,
                "occurred_at": event.occurred_at,
                "correlation_id": correlation_id,
            },
        )
        self.log.warning("benchmark_failed", ref=ref, reason=reason, message=message)
        return event

    # --- history ingestion ------------------------------------------------------------------------

    async def _insert(self, table: str, row: dict[str, Any]) -> None:
        assert self.db is not None
        await self._write(self.db.insert_event_row, table, row)

    async def on_converted(self, delivery: Delivery[ModelConverted]) -> None:
        e = delivery.message
        report = e.report
        await self._insert(
            "conversions",
            {
                "event_id": e.event_id,
                "type": "converted",
                "name": e.name,
                "version": e.version,
                "source_variant": e.source_variant,
                "profile": report.profile,
                "variant": e.variant,
                "ref": e.ref,
                "reason": None,
                "message": None,
                "size_before_bytes": report.size_before_bytes,
                "size_after_bytes": report.size_after_bytes,
                "duration_s": report.duration_s,
                "parity_passed": report.parity.passed if report.parity else None,
                "occurred_at": e.occurred_at,
                "correlation_id": e.correlation_id,
                "payload": delivery.raw.data.decode("utf-8", "replace"),
            },
        )

    async def on_conversion_failed(self, delivery: Delivery[ConversionFailed]) -> None:
        await self._conversion_problem(delivery, "conversion_failed")

    async def on_conversion_skipped(self, delivery: Delivery[ConversionSkipped]) -> None:
        await self._conversion_problem(delivery, "conversion_skipped")

    async def _conversion_problem(self, delivery: Delivery[Any], kind: str) -> None:
        e = delivery.message
        report = getattr(e, "report", None)
        await self._insert(
            "conversions",
            {
                "event_id": e.event_id,
                "type": kind,
                "name": e.name,
                "version": e.version,
                "source_variant": e.source_variant,
                "profile": e.profile,
                "variant": None,
                "ref": None,
                "reason": e.reason,
                "message": e.message,
                "size_before_bytes": report.size_before_bytes if report else None,
                "size_after_bytes": report.size_after_bytes if report else None,
                "duration_s": report.duration_s if report else None,
                "parity_passed": report.parity.passed if report and report.parity else None,
                "occurred_at": e.occurred_at,
                "correlation_id": e.correlation_id,
                "payload": delivery.raw.data.decode("utf-8", "replace"),
            },
        )

    async def on_validated(self, delivery: Delivery[ModelValidated]) -> None:
        e = delivery.message
        report = e.report
        await self._insert(
            "validations",
            {
                "event_id": e.event_id,
                "type": "validated",
                "name": e.name,
                "version": e.version,
                "variant": e.variant,
                "ref": e.ref,
                "ready": e.ready,
                "accuracy": e.accuracy,
                "samples": report.samples,
                "dataset_uri": report.dataset_uri,
                "failed_criteria": [c.metric for c in report.criteria if c.passed is False],
                "reason": None,
                "message": None,
                "duration_s": report.duration_s,
                "occurred_at": e.occurred_at,
                "correlation_id": e.correlation_id,
                "payload": delivery.raw.data.decode("utf-8", "replace"),
            },
        )

    async def on_validation_errored(self, delivery: Delivery[ValidationErrored]) -> None:
        e = delivery.message
        await self._insert(
            "validations",
            {
                "event_id": e.event_id,
                "type": "validation_failed",
                "name": e.name,
                "version": e.version,
                "variant": e.variant,
                "ref": e.ref,
                "reason": e.reason,
                "message": e.message,
                "occurred_at": e.occurred_at,
                "correlation_id": e.correlation_id,
                "payload": delivery.raw.data.decode("utf-8", "replace"),
            },
        )

    async def on_alert(self, delivery: Delivery[AlertRow]) -> None:
        a = delivery.message
        await self._insert(
            "alerts",
            {
                "event_id": a.event_id,
                "subject": delivery.subject,
                "type": a.type,
                "severity": a.severity,
                "name": a.name,
                "ref": a.ref,
                "summary": a.summary,
                "state": a.state,
                "incident_id": a.incident_id,
                "host": a.host,
                "occurred_at": a.occurred_at or datetime.now(UTC),
                "received_at": datetime.now(UTC),
                "correlation_id": a.correlation_id,
                "payload": delivery.raw.data.decode("utf-8", "replace"),
            },
        )

    async def _store_alert(self, alert: RegressionAlert | AnomalyAlert, subject: str) -> None:
        """Our own alerts go into the table at once (the ALERTS consumer would add them a moment
        later; the event id makes the second insert a no-op)."""
        from shared.contracts.base import encode

        await self._insert(
            "alerts",
            {
                "event_id": alert.event_id,
                "subject": subject,
                "type": msgspec.inspect.type_info(type(alert)).tag,  # type: ignore[attr-defined]
                "severity": alert.severity,
                "name": alert.name,
                "ref": alert.ref,
                "summary": alert.summary,
                "state": getattr(alert, "state", None),
                "incident_id": getattr(alert, "incident_id", None),
                "host": getattr(alert, "host", None),
                "occurred_at": alert.occurred_at,
                "received_at": datetime.now(UTC),
                "correlation_id": alert.correlation_id,
                "payload": encode(alert).decode(),
            },
        )

    # --- production telemetry -------------------------------------------------------------------

    async def on_telemetry(self, delivery: Delivery[InferenceTelemetry]) -> None:
        t = delivery.message
        try:
            batch = _telemetry_batch(t)
        except InvalidTelemetry as exc:
            await self._dead_letter(delivery, exc)
            return
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
            if self._pending_samples < TELEMETRY_MAX_SAMPLES:
                await asyncio.sleep(TELEMETRY_COALESCE_S)
            self._wake.clear()
            pending, self._pending, self._pending_samples = self._pending, [], 0
            if not pending:
                continue
            try:
                await self._flush([b for b, _ in pending])
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
        assert self.db is not None
        fresh = await self._write(self.db.insert_production, batches)
        decisions: list[Decision] = []
        for batch in fresh:
            key = Key(batch.name, batch.version, batch.variant, batch.host)
            decisions += self.monitor.observe(key, batch.timestamps, batch.latencies_ms)
        alerts = [*self._unpublished, *(_anomaly_alert(d) for d in decisions)]
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
            await self._store_alert(alert, subject)
            self.log.warning("anomaly", ref=alert.ref, host=alert.host, state=alert.state, score=round(alert.score, 2))

    def _restore_monitor(self) -> int:
        """Rebuild the monitor's baselines from stored samples and resume open incidents
        (runs on the writer thread at start)."""
        assert self.db is not None
        cfg = self.monitor.config
        keys = self.db.monitored_keys()
        for name, version, variant, host in keys:
            ts, lat = self.db.recent_production(name, version, variant, host, cfg.window * cfg.history_windows)
            self.monitor.warm(Key(name, version, variant, host), ts, lat)
        for row in self.db.open_incidents():
            payload = msgspec.json.decode(row["payload"] or b"{}")
            key = Key(row["name"], payload.get("version", ""), payload.get("variant", "base"), row.get("host") or "")
            opened = payload.get("opened_at") or payload.get("window_end")
            opened_s = datetime.fromisoformat(opened).timestamp() if opened else time.time()
            self.monitor.resume(key, row["incident_id"], opened_s, payload.get("detector", "robust_z"))
        return len(keys)

    async def _dead_letter(self, delivery: Delivery[Any], exc: InferlabError) -> None:
        """Invalid telemetry cannot get better by retrying: record it as a dead letter (with the
        reason) and raise the pipeline alert at once, as the worker does for undecodable input."""
        raw = delivery.raw
        letter = DeadLetter(
            event_id=f"dl-{delivery.stream.lower()}-{delivery.stream_seq}",
            service=SERVICE,
            subject=delivery.subject,
            stream=delivery.stream,
            stream_seq=delivery.stream_seq,
            deliveries=delivery.deliveries,
            error_type=type(exc).__name__,
            error=exc.message,
            payload=raw.data[:65536].decode("utf-8", errors="replace"),
            payload_bytes=len(raw.data),
            details={"reason": exc.code},
        )
        alert = DeadLetterAlert(
            event_id=f"dla-{delivery.stream.lower()}-{delivery.stream_seq}",
            correlation_id=letter.event_id,
            severity="warning",
            name=SERVICE,
            summary=f"{SERVICE} refused telemetry on {delivery.subject}: {exc.message[:200]}",
            subject=delivery.subject,
            error=exc.message,
            deliveries=delivery.deliveries,
            stream_seq=delivery.stream_seq,
        )
        await self.bus.publish(subjects.deadletter(SERVICE), letter)
        await self.bus.publish(subjects.deadletter_alert(SERVICE), alert)
        self.log.warning("telemetry_refused", subject=delivery.subject, error=exc.message)

    # --- endpoints --------------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("sql", subjects.BENCHMARKER_SQL, SqlQuery, self.ep_sql, "read-only SQL over the history"),
            Endpoint("history", BENCHMARKER_HISTORY, HistoryRequest, self.ep_history, "benchmark runs of a model"),
            Endpoint("trend", BENCHMARKER_TREND, TrendRequest, self.ep_trend, "Theil-Sen trend and change points"),
            Endpoint("compare", BENCHMARKER_COMPARE, CompareRequest, self.ep_compare, "compare models statistically"),
            Endpoint(
                "export", BENCHMARKER_EXPORT, ExportRequest, self.ep_export, "Parquet export into the object store"
            ),
        ]

    async def ep_sql(self, req: SqlQuery) -> SqlResult:
        max_rows = max(0, min(req.max_rows, self.settings.sql_max_rows))
        timeout = max(0.01, min(req.timeout_s, self.settings.sql_timeout_s))
        return await self._read(lambda h: run_query(h.con, req.sql, max_rows=max_rows, timeout_s=timeout))

    async def _exact(self, text: str) -> tuple[ModelRef, str | None]:
        """A parsed ref with its version resolved through the registry when it names an alias
        (a bare name stays open: all versions)."""
        ref = ModelRef.parse(text)
        if ref.alias is not None:
            resolved = await self.registry.resolve(text)
            return ref, resolved.version
        return ref, ref.version

    async def ep_history(self, req: HistoryRequest) -> HistoryReply:
        ref, version = await self._exact(req.ref)
        explicit_variant = "+" in req.ref
        rows = await self._read(
            lambda h: h.runs(
                name=ref.name,
                version=version,
                variant=ref.variant if explicit_variant else None,
                config_key=req.config_key,
                limit=max(1, min(req.limit, 10_000)),
            )
        )
        return HistoryReply(points=[analysis.history_point(r) for r in rows])

    async def ep_trend(self, req: TrendRequest) -> TrendReport:
        ref, version = await self._exact(req.ref)
        if req.metric not in analysis.TREND_METRICS:
            raise InferlabError(f"metric must be one of {', '.join(analysis.TREND_METRICS)}", code="invalid_request")

        def load(h: History) -> list[dict[str, Any]]:
            latest = h.runs(name=ref.name, version=version, variant=ref.variant, config_key=req.config_key, limit=1)
            if not latest:
                return []
            return h.runs(
                name=ref.name,
                version=version,
                variant=ref.variant,
                config_key=req.config_key or latest[0]["config_key"],
                hardware_id=req.hardware_id or latest[0]["hardware_id"],
                limit=max(1, min(req.limit, 10_000)),
            )

        rows = await self._read(load)
        if not rows:
            raise NotFound(f"no benchmark runs of {req.ref} in the history")
        return await asyncio.to_thread(analysis.trend_report, req.ref, req.metric, rows)

    async def ep_compare(self, req: CompareRequest) -> ComparisonReport:
        if not 2 <= len(req.refs) <= 20:
            raise InferlabError("compare takes 2 to 20 model references", code="invalid_request")
        if not 0 <= req.min_effect < 10:
            raise InferlabError(
                f"min_effect is a relative gap such as 0.05 (5%), got {req.min_effect}", code="invalid_request"
            )
        targets = []
        for text in req.refs:
            ref = ModelRef.parse(text)
            version = ref.version
            if version is None:
                with contextlib.suppress(ServiceUnavailable, NotFound):
                    version = (await self.registry.resolve(text)).version
            targets.append((text, ref, version))
        alpha = req.alpha

        def load(h: History) -> list[analysis.CompareInput]:
            runs = [
                h.runs(name=r.name, version=v, variant=r.variant, accepted_only=True, limit=200) for _, r, v in targets
            ]
            for (text, _, _), found in zip(targets, runs, strict=True):
                if not found:
                    raise NotFound(f"no accepted benchmark run of {text} in the history")
            common = {(r["config_key"], r["hardware_id"]) for r in runs[0]}
            for found in runs[1:]:
                common &= {(r["config_key"], r["hardware_id"]) for r in found}
            if req.config_key:
                common = {c for c in common if c[0] == req.config_key}
            if not common:
                raise NotFound(
                    "these models have no benchmark configuration on one hardware in common"
                    + (f" with config {req.config_key}" if req.config_key else "")
                    + "; benchmark them with the same settings on one host"
                )
            # The most recent shared configuration of the first model.
            chosen = next(
                (r["config_key"], r["hardware_id"]) for r in runs[0] if (r["config_key"], r["hardware_id"]) in common
            )
            inputs = []
            rng = np.random.default_rng(0)
            for found in runs:
                row = next(r for r in found if (r["config_key"], r["hardware_id"]) == chosen)
                samples = h.samples(row["run_id"])
                if samples.size > COMPARE_MAX_SAMPLES:
                    samples = rng.choice(samples, COMPARE_MAX_SAMPLES, replace=False)
                accuracy = h.latest_accuracy(row["name"], row["version"], row["variant"])
                inputs.append(analysis.CompareInput(ref=row["ref"], row=row, samples_ns=samples, accuracy=accuracy))
            return inputs

        inputs = await self._read(load)
        return await asyncio.to_thread(analysis.comparison_report, inputs, alpha=alpha, min_effect=req.min_effect)

    async def ep_export(self, req: ExportRequest) -> ExportReply:
        allowed = (*TABLES, *VIEWS, "schema_version")
        tables = list(dict.fromkeys(req.tables)) or list(allowed)
        unknown = [t for t in tables if t not in allowed]
        if unknown:
            raise InferlabError(f"unknown tables {unknown}; choose from {', '.join(allowed)}", code="invalid_request")
        export_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + new_id()[:8]
        folder = self.scratch / "exports" / export_id
        folder.mkdir(parents=True, exist_ok=True)
        store = ArtifactStore(self.bus)
        await store.ensure()
        assert self.db is not None
        files = []
        try:
            for table in tables:
                path = folder / f"{table}.parquet"
                rows = await self._read(lambda h, t=table, p=path: h.export_parquet(t, p))
                stored = await store.put_file(path, f"exports/{export_id}/{table}.parquet")
                files.append(
                    ExportedFile(table=table, uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size, rows=rows)
                )
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        self.log.info("exported", export_id=export_id, tables=len(files))
        return ExportReply(export_id=export_id, schema_version=self.db.schema_version, files=files)


# --- helpers ----------------------------------------------------------------------------------------


def _measure_exclusive(spec: MeasureSpec, limits: Limits | None = None) -> Measurement:
    with open(HOST_LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            return measure_isolated(spec, limits=limits)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _effect_threshold(record: ModelRecord, settings: Settings) -> float:
    """Per-model effect threshold from registration metadata ``regression_effect_threshold``,
    else the setting."""
    value = record.metadata.get("regression_effect_threshold")
    try:
        threshold = float(value) if value is not None else settings.regression_effect_threshold
    except (TypeError, ValueError):
        threshold = settings.regression_effect_threshold
    return threshold if math.isfinite(threshold) and threshold >= 1.0 else settings.regression_effect_threshold


def _name_of(ref: str) -> str:
    name = ref.split("@", 1)[0].split("+", 1)[0]
    return name if is_valid_name(name) else subjects.INVALID_NAME_TOKEN


MAX_TELEMETRY_SAMPLES = 100_000


def _telemetry_batch(t: InferenceTelemetry) -> ProductionBatch:
    if not is_valid_name(t.name):
        raise InvalidTelemetry(f"invalid model name {t.name!r}")
    n = len(t.latencies_ms)
    if n == 0:
        raise InvalidTelemetry("telemetry batch holds no latencies")
    if len(t.timestamps) != n:
        raise InvalidTelemetry(f"{len(t.timestamps)} timestamps for {n} latencies: they must be parallel lists")
    if n > MAX_TELEMETRY_SAMPLES:
        raise InvalidTelemetry(f"{n} samples in one batch; at most {MAX_TELEMETRY_SAMPLES}")
    ts = np.asarray(t.timestamps, dtype=np.float64)
    lat = np.asarray(t.latencies_ms, dtype=np.float64)
    if not (np.all(np.isfinite(ts)) and np.all(np.isfinite(lat))):
        raise InvalidTelemetry("timestamps and latencies must be finite numbers")
    if np.any(lat < 0):
        raise InvalidTelemetry("latencies must not be negative")
    if np.any(ts < 0) or np.any(ts > 32503680000):  # year 3000: seconds, not milliseconds
        raise InvalidTelemetry("timestamps must be Unix seconds")
    return ProductionBatch(
        batch_id=t.event_id,
        name=t.name,
        version=t.version,
        variant=t.variant,
        host=t.host,
        timestamps=ts,
        latencies_ms=lat,
    )


def _anomaly_alert(d: Decision) -> AnomalyAlert:
    key = d.key
    ref = format_ref(key.name, key.version, key.variant) if key.version else key.name
    opened = d.state == OPENED
    direction = "slower" if d.window_median_ms > d.baseline_median_ms else "faster"
    if opened:
        summary = (
            f"{ref} on {key.host}: production median {d.window_median_ms:.4g} ms vs baseline "
            f"{d.baseline_median_ms:.4g} ms ({direction}; {d.detector} score {d.score:+.1f})"
        )
    else:
        summary = (
            f"{ref} on {key.host}: back to baseline (median {d.window_median_ms:.4g} ms vs "
            f"{d.baseline_median_ms:.4g} ms) after {d.windows_anomalous} anomalous window(s)"
        )
    return AnomalyAlert(
        event_id=f"anomaly-{d.incident_id}-{d.state}",
        correlation_id=d.incident_id,
        severity="warning" if opened else "info",
        name=key.name,
        summary=summary,
        ref=ref,
        incident_id=d.incident_id,
        state=d.state,
        detector=d.detector,
        window_median_ms=d.window_median_ms,
        baseline_median_ms=d.baseline_median_ms,
        score=d.score,
        threshold=d.threshold,
        host=key.host,
        version=key.version,
        variant=key.variant,
        window_samples=d.window_samples,
        window_end=datetime.fromtimestamp(d.window_end, UTC),
        opened_at=datetime.fromtimestamp(d.opened_at, UTC),
        windows_anomalous=d.windows_anomalous,
        suppressed=d.suppressed,
    )
