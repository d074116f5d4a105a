"""``model.registered`` / ``model.benchmark`` -> one measurement of each planned configuration,
its verdict against the baseline, the stored runs, and the facts and alerts they announce.

A benchmark reads: plan (analysis.plan_benchmark) -> measure (one isolated child per
configuration, one at a time per host) -> assess (analysis.assess, against the baseline run)
-> store (one run row and its raw samples) -> publish (``model.benchmarked`` and any
regression alerts). An error that ends the benchmark is raised; service.py turns it into
``model.benchmark_failed`` (failures.py).
"""

from __future__ import annotations

import asyncio
import fcntl
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from services.benchmarker import SERVICE, analysis, stats
from services.benchmarker.analysis import Plan, PlannedConfig, RunOrigin, StoredRun
from services.benchmarker.errors import InvalidSetting, MeasurementFailed
from services.benchmarker.history import SampleBatch
from services.benchmarker.protocol import Measurement, MeasureSpec, fingerprint, measure_isolated
from services.benchmarker.rows import RunRow, failure_row, own_alert_entry
from services.benchmarker.runners import GPU_PROVIDERS, BenchmarkError, LoadFailed
from services.benchmarker.writer import HistoryWriter
from shared.bus import Bus
from shared.cache import ArtifactCache
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.benchmark import (
    BenchmarkConfig,
    BenchmarkFailed,
    BenchmarkModel,
    BenchmarkProgress,
    HardwareFingerprint,
    ModelBenchmarked,
    SkippedConfig,
)
from shared.contracts.identity import ModelRef
from shared.contracts.registry import FORMAT_TENSORRT, ModelRecord, ModelRegistered
from shared.errors import ArtifactError, NativeFailure
from shared.log import get_logger
from shared.sandbox import Limits, limits_for
from shared.sdk import Client

# Benchmarks on one host run one at a time, also across processes (clean numbers).
HOST_LOCK = Path(tempfile.gettempdir()) / "inferlab-benchmark.lock"

Request = ModelRegistered | BenchmarkModel


class Measuring:
    def __init__(self, bus: Bus, settings: Settings, writer: HistoryWriter, registry: Client) -> None:
        self.bus = bus
        self.settings = settings
        self.writer = writer
        self.registry = registry
        self.cache = ArtifactCache(bus, settings.home_path / "cache" / SERVICE)
        self.log = get_logger()
        self.default_batches = default_batch_sizes(settings.bench_batch_sizes)

    def default_config(self) -> BenchmarkConfig:
        s = self.settings
        return BenchmarkConfig(
            providers=list(s.bench_providers),
            batch_sizes=self.default_batches,
            warmup_s=s.bench_warmup_s,
            window_s=s.bench_window_s,
            min_duration_s=s.bench_min_duration_s,
            max_duration_s=s.bench_max_duration_s,
            stability_threshold=s.bench_stability_threshold,
        )

    async def record_of(self, command: BenchmarkModel) -> ModelRecord:
        """The record ``command`` names (InvalidReference, NotFound: it names none)."""
        ModelRef.parse(command.ref)
        view = await self.registry.get(command.ref)
        return view.record

    async def benchmark(self, record: ModelRecord, config: BenchmarkConfig, request: Request) -> ModelBenchmarked:
        """Measure every planned configuration of ``config`` on ``record``, store the runs with
        their verdicts, publish the outcome (and regression alerts), and answer a command."""
        plan = self._plan(record, config)
        model_path, dataset_path, notes = await self._fetch(record, plan)
        origin = RunOrigin(f"bench-{request.event_id}", request.event_id, request.correlation_id)
        runs: list[StoredRun] = []
        skipped = list(plan.skipped)
        for index, item in enumerate(plan.configs):
            run = await self._stored_run(record, config, plan, item, origin, model_path, dataset_path)
            if isinstance(run, SkippedConfig):
                skipped.append(run)
                continue
            runs.append(run)
            if isinstance(request, BenchmarkModel):
                progress = BenchmarkProgress(
                    ref=record.ref,
                    done=index + 1,
                    total=len(plan.configs),
                    config_key=run.row.config_key,
                    p50_ms=run.row.p50_ms,
                )
                await self.bus.reply(request, progress)
        if not runs:
            raise analysis.nothing_measured(record, skipped)
        hardware = await self._hardware(runs[0].row.provider)
        outcome = analysis.benchmarked(record, runs, skipped, [*plan.notes, *notes], hardware, origin)
        await self._publish(record, outcome, runs, request)
        return outcome

    async def report_failure(self, event: BenchmarkFailed, request: Request) -> None:
        """Announce, record and answer a benchmark that failed."""
        await self.bus.publish(subjects.benchmark_failed(event.name), event)
        await self.writer.insert("benchmark_failures", failure_row(event))
        self.log.warning("benchmark_failed", ref=event.ref, reason=event.reason, message=event.message)
        if isinstance(request, BenchmarkModel):
            await self.bus.reply(request, event)

    # --- the steps --------------------------------------------------------------------------

    def _plan(self, record: ModelRecord, config: BenchmarkConfig) -> Plan:
        from shared.gpu import ort_providers

        missing = _missing_engine_runtime() if record.format == FORMAT_TENSORRT else None
        return analysis.plan_benchmark(record, config, ort_providers(), engine_runtime_missing=missing)

    async def _fetch(self, record: ModelRecord, plan: Plan) -> tuple[Path, Path | None, list[str]]:
        """The model's file, its registered dataset when it has one, and notes (a dataset that
        cannot be fetched is a note: synthetic inputs are measured instead)."""
        suffix = ".engine" if plan.engine else ".onnx"
        try:
            model_path = await self.cache.get(record.artifact_uri, record.sha256, suffix=suffix)
        except ArtifactError as exc:
            raise ArtifactError(f"cannot fetch the artifact of {record.ref}: {exc.message}", code=exc.code) from exc
        dataset_path = None
        notes = []
        if record.dataset_uri:
            try:
                dataset_path = await self.cache.get(record.dataset_uri, None, suffix=".npz")
            except ArtifactError as exc:
                notes.append(f"registered dataset unavailable ({exc.message}); synthetic inputs used")
        return model_path, dataset_path, notes

    async def _stored_run(
        self,
        record: ModelRecord,
        config: BenchmarkConfig,
        plan: Plan,
        item: PlannedConfig,
        origin: RunOrigin,
        model_path: Path,
        dataset_path: Path | None,
    ) -> StoredRun | SkippedConfig:
        """One configuration's run: the stored one when this request measured it already (a
        redelivery), else measured, assessed and stored now; or why it could not run here."""
        run_id = analysis.run_id_for(origin.source_event_id, item.key, record.sha256)
        stored = await self.writer.write(self.writer.db.run, run_id)
        if stored is not None:
            return StoredRun(stored, await self._run(stored.baseline_run_id))
        started = datetime.now(UTC)
        spec = measure_spec(record, config, item, model_path, dataset_path, engine=plan.engine)
        try:
            measurement = await self._measure(record, item, spec, model_path)
        except BenchmarkError as exc:
            self.log.warning("config_failed", ref=record.ref, config=item.key, reason=exc.code, error=exc.message)
            return analysis.skipped_config(item, exc.code, exc.message)
        summary = await asyncio.to_thread(stats.summarize, measurement.latencies_ns, seed=config.seed)
        hardware = await self._hardware(measurement.provider)
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
            origin=origin,
        )
        baseline, baseline_ns = await self._baseline_of(row)
        verdict = await asyncio.to_thread(
            analysis.assess,
            measurement,
            baseline,
            baseline_ns,
            p_threshold=self.settings.regression_p_threshold,
            effect_threshold=analysis.effect_threshold(record, self.settings.regression_effect_threshold),
        )
        row = analysis.judged(row, verdict)
        await self.writer.write(self.writer.db.insert_run, row, samples_of(measurement))
        return StoredRun(row, baseline)

    async def _measure(
        self, record: ModelRecord, item: PlannedConfig, spec: MeasureSpec, model_path: Path
    ) -> Measurement:
        """One isolated measurement. A model that cannot load, or whose runtime crashed, hung or
        ran out of memory, fails the whole benchmark (``MeasurementFailed``); any other
        ``BenchmarkError`` skips only this configuration."""
        try:
            limits = limits_for(
                self.settings,
                None,
                model_bytes=model_path.stat().st_size,
                gpu=spec.engine or item.provider in GPU_PROVIDERS,
            )
            return await asyncio.to_thread(_measure_exclusive, spec, limits)
        except (NativeFailure, LoadFailed) as exc:
            raise MeasurementFailed(f"{record.ref}: {exc.message}", code=exc.code) from exc

    async def _baseline_of(self, row: RunRow) -> tuple[RunRow | None, np.ndarray | None]:
        """The run ``row`` is judged against, and its raw samples."""
        db = self.writer.db
        baseline = await self.writer.write(
            lambda: db.find_baseline(
                name=row.name,
                version=row.version,
                variant=row.variant,
                config_key=row.config_key,
                hardware_id=row.hardware_id,
                exclude_run_id=row.run_id,
            )
        )
        if baseline is None:
            return None, None
        return baseline, await self.writer.write(db.samples, baseline.run_id)

    async def _run(self, run_id: str | None) -> RunRow | None:
        return await self.writer.write(self.writer.db.run, run_id) if run_id else None

    async def _hardware(self, provider: str) -> HardwareFingerprint:
        return HardwareFingerprint(**await asyncio.to_thread(fingerprint, provider))

    async def _publish(
        self, record: ModelRecord, outcome: ModelBenchmarked, runs: list[StoredRun], request: Request
    ) -> None:
        await self.bus.publish(subjects.benchmarked(record.name), outcome)
        for run in runs:
            if not run.regressed:
                continue
            alert = analysis.regression_alert(record, run, outcome, request.correlation_id)
            subject = subjects.alert("performance", "regression", record.name)
            await self.bus.publish(subject, alert)
            await self.writer.insert("alerts", own_alert_entry(alert, subject))
            self.log.warning(
                "regression", ref=record.ref, baseline=alert.baseline_ref, ratio=round(alert.median_ratio, 3)
            )
        self.log.info(
            "benchmarked",
            ref=record.ref,
            configs=len(outcome.results),
            skipped=len(outcome.skipped),
            p50_ms=[round(r.latency.p50_ms, 4) for r in outcome.results],
            verdicts=[r.verdict.status if r.verdict else None for r in outcome.results],
        )
        if isinstance(request, BenchmarkModel):
            await self.bus.reply(request, outcome)


def default_batch_sizes(setting: str) -> list[int]:
    """``INFERLAB_BENCH_BATCH_SIZES`` as a list (``[1]`` when empty)."""
    try:
        return [int(b) for b in setting.split(",") if b.strip()] or [1]
    except ValueError:
        raise InvalidSetting(f"INFERLAB_BENCH_BATCH_SIZES={setting!r}: expected comma-separated integers") from None


def measure_spec(
    record: ModelRecord,
    config: BenchmarkConfig,
    item: PlannedConfig,
    model_path: Path,
    dataset_path: Path | None,
    *,
    engine: bool,
) -> MeasureSpec:
    return MeasureSpec(
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


def samples_of(measurement: Measurement) -> SampleBatch:
    return SampleBatch(
        latency_ns=measurement.latencies_ns,
        offset_ns=measurement.offsets_ns,
        window=measurement.windows,
        thread=measurement.threads,
    )


def _missing_engine_runtime() -> str | None:
    """What this host lacks to run a TensorRT engine, if anything."""
    from shared.gpu import gpu_available, tensorrt_version

    if tensorrt_version() is None:
        return "the TensorRT runtime"
    if not gpu_available():
        return "an NVIDIA GPU"
    return None


def _measure_exclusive(spec: MeasureSpec, limits: Limits | None = None) -> Measurement:
    with open(HOST_LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            return measure_isolated(spec, limits=limits)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
