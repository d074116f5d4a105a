"""Pure glue between the protocol, the statistics, the history rows and the contracts:
planning a sweep, turning a measurement into a history row and a ``ConfigResult``, judging it
against its baseline, the outcome and alert of a benchmark, and the trend and comparison
reports. No I/O here; measuring.py and queries.py do the awaiting."""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
import numpy as np

from services.benchmarker import stats
from services.benchmarker.errors import InputsNeedSpec, NothingMeasured
from services.benchmarker.protocol import Measurement
from services.benchmarker.rows import RunRow
from services.benchmarker.runners import CPU, TENSORRT_ENGINE, InvalidConfig, UnavailableOnHost
from shared.contracts.alerts import RegressionAlert
from shared.contracts.benchmark import (
    BenchmarkConfig,
    ChangePointView,
    CompareEntry,
    ComparisonReport,
    ConfigResult,
    HardwareFingerprint,
    HistoryPoint,
    LatencySummary,
    ModelBenchmarked,
    PairResult,
    RegressionVerdict,
    SkippedConfig,
    TrendReport,
)
from shared.contracts.registry import FORMAT_TENSORRT, INPUTS_NEED_SPEC, ModelRecord, ResolvedInput, TensorSpec
from shared.errors import NotFound
from shared.inputs import fixed_batch

MIN_SAMPLES = 30  # fewer measured inferences than this decide nothing
MAX_CONFIGS = 64
MAX_DURATION_S = 600.0
TREND_METRICS = ("p50_ms", "p90_ms", "p95_ms", "p99_ms", "mean_ms", "throughput_ips")


def config_key(provider: str, batch_size: int, threads: int, concurrency: int) -> str:
    """The configuration part of a baseline key, e.g. ``CPUExecutionProvider|b1|t1|c1``."""
    return f"{provider}|b{batch_size}|t{threads}|c{concurrency}"


def run_id_for(source_event_id: str, key: str, sha256: str) -> str:
    """Deterministic per (request, configuration, artifact): a redelivered request finds its
    runs already stored instead of measuring again."""
    return hashlib.sha256(f"{source_event_id}|{key}|{sha256}".encode()).hexdigest()[:32]


@dataclass(frozen=True)
class PlannedConfig:
    provider: str
    batch_size: int
    intra_op_threads: int
    concurrency: int
    requested_provider: str

    @property
    def key(self) -> str:
        return config_key(self.provider, self.batch_size, self.intra_op_threads, self.concurrency)


def validate_config(config: BenchmarkConfig) -> None:
    problems = []
    if not config.providers:
        problems.append("providers must name at least one execution provider")
    if not config.batch_sizes or any(not 1 <= b <= 65536 for b in config.batch_sizes):
        problems.append("batch_sizes must be 1..65536")
    if not config.intra_op_threads or any(not 0 <= threads <= 1024 for threads in config.intra_op_threads):
        problems.append("intra_op_threads must be 0..1024 (0: onnxruntime's default)")
    if not config.concurrency or any(not 1 <= c <= 256 for c in config.concurrency):
        problems.append("concurrency must be 1..256")
    if not 0 <= config.warmup_s <= 120 or not 0.01 <= config.window_s <= 120:
        problems.append("warmup_s must be 0..120 and window_s 0.01..120")
    if not 0 <= config.min_duration_s <= config.max_duration_s <= MAX_DURATION_S or config.max_duration_s <= 0:
        problems.append(f"need 0 <= min_duration_s <= max_duration_s <= {MAX_DURATION_S:g} and max_duration_s > 0")
    if not 0 < config.stability_threshold < 1:
        problems.append("stability_threshold is a fraction in (0, 1), e.g. 0.10")
    combos = (
        len(set(config.providers))
        * len(set(config.batch_sizes))
        * len(set(config.intra_op_threads))
        * len(set(config.concurrency))
    )
    if combos > MAX_CONFIGS:
        problems.append(f"the sweep has {combos} configurations; at most {MAX_CONFIGS} per request")
    for name, shape in config.shapes.items():
        if not shape or any(d <= 0 for d in shape):
            problems.append(f"shapes[{name!r}] must be a list of positive dimensions")
    if problems:
        raise InvalidConfig("; ".join(problems))


def _leading_fixed_batch(inputs: list[TensorSpec]) -> int | None:
    """The fixed first dimension shared by the model's inputs, if it fixes one."""
    fixed = {
        s.shape[0]
        for s in inputs
        if s.is_tensor and s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0 and len(s.shape) > 1
    }
    return fixed.pop() if len(fixed) == 1 else None


def _batch_from_resolution(inputs: list[TensorSpec], resolved: list[ResolvedInput]) -> tuple[int | None, str]:
    """(fixed batch, why) from the inputs resolved at registration: a model with a real batch
    axis sweeps batch sizes; one without (a fixed leading size, or a state ``[2, batch, 128]``
    whose batch does not lead every input) is measured one resolved call at a time."""
    if not resolved or not fixed_batch(resolved):
        return None, ""
    fixed = _leading_fixed_batch(inputs)
    leads = {s.shape[0] if s.shape else None for s in inputs if s.is_tensor and s.shape}
    if fixed is not None and leads == {fixed}:
        return fixed, f"the model fixes its batch dimension to {fixed}"
    return 1, (
        "the model has no batch dimension (no dimension leads every input); one call feeds the inputs "
        "resolved at registration"
    )


def plan(
    config: BenchmarkConfig,
    inputs: list[TensorSpec],
    available: tuple[str, ...],
    *,
    engine: bool,
    resolved: list[ResolvedInput] | None = None,
) -> tuple[list[PlannedConfig], list[SkippedConfig], list[str]]:
    """The configurations to measure, those skipped (with why), and notes.

    - A provider this host lacks is skipped; when none of the requested providers exists here,
      the sweep degrades to the CPU provider and says so (the results name the provider that
      actually ran, so a CPU figure is never labelled CUDA).
    - A model with a fixed batch dimension is measured at that batch size only.
    - A TensorRT engine runs on TensorRT's runtime whatever providers were asked for.
    """
    notes: list[str] = []
    skipped: list[SkippedConfig] = []
    batches = list(dict.fromkeys(config.batch_sizes))
    threads = list(dict.fromkeys(config.intra_op_threads))
    concurrency = list(dict.fromkeys(config.concurrency))
    fixed = _leading_fixed_batch(inputs)
    why = f"the model fixes its batch dimension to {fixed}"
    if resolved and not config.shapes:
        fixed, why = _batch_from_resolution(inputs, resolved)
    if fixed is not None and batches != [fixed]:
        for b in batches:
            if b != fixed:
                skipped.append(
                    SkippedConfig(
                        provider=config.providers[0],
                        batch_size=b,
                        intra_op_threads=threads[0],
                        concurrency=concurrency[0],
                        reason="fixed_batch",
                        message=why,
                    )
                )
        batches = [fixed]
        notes.append(f"{why}; measured at batch size {fixed}")
    if engine:
        providers = [(TENSORRT_ENGINE, TENSORRT_ENGINE)]
        if any(p != TENSORRT_ENGINE for p in config.providers):
            notes.append("a tensorrt-engine runs on TensorRT's runtime; the requested providers do not apply")
    else:
        providers = []
        for p in dict.fromkeys(config.providers):
            if p in available:
                providers.append((p, p))
                continue
            for b, t, c in itertools.product(batches, threads, concurrency):
                skipped.append(
                    SkippedConfig(
                        provider=p,
                        batch_size=b,
                        intra_op_threads=t,
                        concurrency=c,
                        reason="provider_unavailable",
                        message=f"{p} is not available on this host (onnxruntime providers: {', '.join(available)})",
                    )
                )
        if not providers:
            providers = [(CPU, config.providers[0])]
            notes.append(
                f"none of the requested providers ({', '.join(config.providers)}) is available on this host; "
                f"measured {CPU} instead"
            )
    planned = [
        PlannedConfig(provider=p, batch_size=b, intra_op_threads=t, concurrency=c, requested_provider=req)
        for (p, req), b, t, c in itertools.product(providers, batches, threads, concurrency)
    ]
    return planned, skipped, notes


@dataclass(frozen=True)
class Plan:
    """What one benchmark request measures."""

    configs: list[PlannedConfig]
    skipped: list[SkippedConfig]
    notes: list[str]
    engine: bool


def plan_benchmark(
    record: ModelRecord,
    config: BenchmarkConfig,
    available: tuple[str, ...],
    *,
    engine_runtime_missing: str | None = None,
) -> Plan:
    """The plan of a benchmark of ``record``, or the error that says why it cannot run here.
    ``engine_runtime_missing`` names what this host lacks to run a TensorRT engine, if anything."""
    validate_config(config)
    engine = record.format == FORMAT_TENSORRT
    if engine and engine_runtime_missing:
        raise UnavailableOnHost(
            f"{record.ref} is a TensorRT engine; this host lacks {engine_runtime_missing}, so it cannot be measured "
            "here (run a benchmarker on a GPU host with TensorRT)"
        )
    if record.input_status == INPUTS_NEED_SPEC and not config.shapes and not record.dataset_uri:
        raise InputsNeedSpec(f"{record.ref}: {record.input_message}")
    planned, skipped, notes = plan(config, record.inputs, available, engine=engine, resolved=record.resolved_inputs)
    if not planned:
        raise InvalidConfig("; ".join(s.message for s in skipped) or "nothing to measure")
    return Plan(configs=planned, skipped=skipped, notes=notes, engine=engine)


def effect_threshold(record: ModelRecord, default: float) -> float:
    """Per-model effect threshold from registration metadata ``regression_effect_threshold``,
    else ``default``."""
    value = record.metadata.get("regression_effect_threshold")
    try:
        threshold = float(value) if value is not None else default
    except (TypeError, ValueError):
        threshold = default
    return threshold if math.isfinite(threshold) and threshold >= 1.0 else default


def skipped_config(item: PlannedConfig, reason: str, message: str) -> SkippedConfig:
    return SkippedConfig(
        provider=item.provider,
        batch_size=item.batch_size,
        intra_op_threads=item.intra_op_threads,
        concurrency=item.concurrency,
        reason=reason,
        message=message,
    )


# --- a measured run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RunOrigin:
    """The request a run answers, as its row records it."""

    event_id: str
    source_event_id: str
    correlation_id: str


def run_row(
    *,
    run_id: str,
    planned: PlannedConfig,
    config: BenchmarkConfig,
    record: ModelRecord,
    measurement: Measurement,
    summary: LatencySummary,
    hardware: HardwareFingerprint,
    started_at: datetime,
    finished_at: datetime,
    origin: RunOrigin,
) -> RunRow:
    """A ``benchmark_runs`` row before the regression verdict is filled in (``judged``)."""
    return RunRow(
        run_id=run_id,
        event_id=origin.event_id,
        source_event_id=origin.source_event_id,
        correlation_id=origin.correlation_id,
        name=record.name,
        version=record.version,
        variant=record.variant,
        ref=record.ref,
        sha256=record.sha256,
        format=record.format,
        size_bytes=record.size_bytes,
        config_key=config_key(measurement.provider, planned.batch_size, planned.intra_op_threads, planned.concurrency),
        requested_provider=planned.requested_provider,
        provider=measurement.provider,
        batch_size=planned.batch_size,
        intra_op_threads=planned.intra_op_threads,
        concurrency=planned.concurrency,
        input_shapes=measurement.input_shapes,
        input_source=measurement.input_source,
        warmup_s=config.warmup_s,
        window_s=config.window_s,
        min_duration_s=config.min_duration_s,
        max_duration_s=config.max_duration_s,
        stability_threshold=config.stability_threshold,
        seed=config.seed,
        hardware_id=hardware.id,
        cpu_model=hardware.cpu_model,
        cpu_cores=hardware.cpu_cores,
        ort_version=hardware.ort_version,
        gpu_name=hardware.gpu_name,
        gpu_driver=hardware.gpu_driver,
        hostname=hardware.hostname,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=measurement.measured_s,
        windows=len(measurement.window_medians_ms),
        stable=measurement.stable,
        accepted=measurement.stable and summary.samples >= MIN_SAMPLES,
        samples=summary.samples,
        p50_ms=summary.p50_ms,
        p90_ms=summary.p90_ms,
        p95_ms=summary.p95_ms,
        p99_ms=summary.p99_ms,
        mean_ms=summary.mean_ms,
        std_ms=summary.std_ms,
        cv=summary.cv,
        min_ms=summary.min_ms,
        max_ms=summary.max_ms,
        p50_ci_low_ms=summary.p50_ci_ms[0],
        p50_ci_high_ms=summary.p50_ci_ms[1],
        p99_ci_low_ms=summary.p99_ci_ms[0],
        p99_ci_high_ms=summary.p99_ci_ms[1],
        outliers=summary.outliers,
        throughput_ips=measurement.throughput_ips,
        load_time_s=measurement.load_time_s,
        peak_memory_bytes=measurement.peak_memory_bytes,
        peak_rss_bytes=measurement.peak_rss_bytes,
        notes="; ".join(measurement.notes),
        window_medians_ms=measurement.window_medians_ms,
    )


def assess(
    measurement: Measurement,
    baseline: RunRow | None,
    baseline_ns: np.ndarray | None,
    *,
    p_threshold: float,
    effect_threshold: float,
) -> RegressionVerdict:
    """The regression verdict of a new measurement against its baseline run (``None``: there
    is none). Raw p-value and ratio: ``config_result`` hides the ones that are not finite."""
    if baseline is None or baseline_ns is None:
        decision = stats.Decision(
            stats.NO_BASELINE,
            message="no earlier accepted run of this model, variant and configuration on this hardware",
        )
    else:
        decision = stats.decide_regression(
            measurement.latencies_ns,
            baseline_ns,
            p_threshold=p_threshold,
            effect_threshold=effect_threshold,
            min_samples=MIN_SAMPLES,
            new_stable=measurement.stable,
            baseline_stable=baseline.stable,
        )
    return RegressionVerdict(
        status=decision.status,
        baseline_run_id=baseline.run_id if baseline else None,
        baseline_ref=baseline.ref if baseline else None,
        p_value=decision.p_value,
        median_ratio=decision.median_ratio,
        message=decision.message,
        p_threshold=p_threshold,
        effect_threshold=effect_threshold,
    )


def judged(row: RunRow, verdict: RegressionVerdict) -> RunRow:
    """``row`` with its verdict, as it is stored."""
    return msgspec.structs.replace(
        row,
        status=verdict.status,
        baseline_run_id=verdict.baseline_run_id,
        p_value=verdict.p_value,
        median_ratio=verdict.median_ratio,
        p_threshold=verdict.p_threshold,
        effect_threshold=verdict.effect_threshold,
        verdict_message=verdict.message,
    )


@dataclass(frozen=True)
class StoredRun:
    """A run in the history and the baseline it was judged against."""

    row: RunRow
    baseline: RunRow | None

    @property
    def regressed(self) -> bool:
        return self.row.status == stats.REGRESSION and self.baseline is not None


def config_result(row: RunRow, baseline: RunRow | None = None) -> ConfigResult:
    """The ``ConfigResult`` of a stored (or about-to-be-stored) run row."""
    verdict = None
    if row.status:
        verdict = RegressionVerdict(
            status=row.status,
            baseline_run_id=row.baseline_run_id,
            baseline_ref=baseline.ref if baseline else None,
            p_value=_finite(row.p_value),
            median_ratio=_finite(row.median_ratio),
            message=row.verdict_message or "",
            p_threshold=row.p_threshold,
            effect_threshold=row.effect_threshold,
        )
    return ConfigResult(
        run_id=row.run_id,
        provider=row.provider,
        batch_size=row.batch_size,
        intra_op_threads=row.intra_op_threads,
        concurrency=row.concurrency,
        latency=latency_from_row(row),
        throughput_ips=row.throughput_ips,
        stable=row.stable,
        windows=row.windows,
        duration_s=row.duration_s,
        load_time_s=row.load_time_s,
        peak_memory_bytes=row.peak_memory_bytes,
        verdict=verdict,
        config_key=row.config_key,
        requested_provider=row.requested_provider or row.provider,
        input_shapes=dict(row.input_shapes),
        input_source=row.input_source or "synthetic",
        peak_rss_bytes=row.peak_rss_bytes,
        window_medians_ms=list(row.window_medians_ms),
        notes=[n for n in row.notes.split("; ") if n],
    )


def latency_from_row(row: RunRow) -> LatencySummary:
    return LatencySummary(
        samples=row.samples,
        p50_ms=row.p50_ms,
        p90_ms=row.p90_ms,
        p95_ms=row.p95_ms,
        p99_ms=row.p99_ms,
        mean_ms=row.mean_ms,
        std_ms=row.std_ms,
        cv=row.cv,
        min_ms=row.min_ms,
        max_ms=row.max_ms,
        p50_ci_ms=(row.p50_ci_low_ms, row.p50_ci_high_ms),
        p99_ci_ms=(row.p99_ci_low_ms, row.p99_ci_high_ms),
        outliers=row.outliers,
    )


def history_point(row: RunRow) -> HistoryPoint:
    return HistoryPoint(
        run_id=row.run_id,
        ref=row.ref,
        started_at=aware(row.started_at),
        p50_ms=row.p50_ms,
        p99_ms=row.p99_ms,
        throughput_ips=row.throughput_ips,
        version=row.version,
        variant=row.variant,
        config_key=row.config_key,
        hardware_id=row.hardware_id,
        samples=row.samples,
        stable=row.stable,
        status=row.status or "",
        median_ratio=_finite(row.median_ratio),
        p_value=_finite(row.p_value),
    )


# --- the outcome of a benchmark -------------------------------------------------------------------


def nothing_measured(record: ModelRecord, skipped: Sequence[SkippedConfig]) -> NothingMeasured:
    last = skipped[-1] if skipped else None
    return NothingMeasured(
        f"{record.ref}: no configuration could be measured: " + "; ".join(s.message for s in skipped[-3:]),
        code=last.reason if last else "run_failed",
    )


def benchmarked(
    record: ModelRecord,
    runs: Sequence[StoredRun],
    skipped: list[SkippedConfig],
    notes: list[str],
    hardware: HardwareFingerprint,
    origin: RunOrigin,
) -> ModelBenchmarked:
    """The ``model.benchmarked`` fact of the stored runs (``notes`` on the whole benchmark lead
    each result's own)."""
    results = [config_result(run.row, run.baseline) for run in runs]
    for result in results:
        result.notes = [*notes, *result.notes]
    return ModelBenchmarked(
        event_id=origin.event_id,
        correlation_id=origin.correlation_id,
        name=record.name,
        version=record.version,
        variant=record.variant,
        ref=record.ref,
        sha256=record.sha256,
        hardware=hardware,
        results=results,
        skipped=skipped,
        source_event_id=origin.source_event_id,
    )


def regression_alert(
    record: ModelRecord, run: StoredRun, outcome: ModelBenchmarked, correlation_id: str
) -> RegressionAlert:
    """The alert of a run judged a regression (``run.regressed``)."""
    row, baseline = run.row, run.baseline
    assert baseline is not None and row.median_ratio is not None and row.p_value is not None
    result = next(r for r in outcome.results if r.run_id == row.run_id)
    ratio = row.median_ratio
    return RegressionAlert(
        event_id=f"regression-{row.run_id}",
        correlation_id=correlation_id,
        severity="critical" if ratio >= 1.5 else "warning",
        name=record.name,
        summary=(
            f"{record.ref} is {ratio:.2f}x slower than {baseline.ref} on {row.config_key} "
            f"(p50 {row.p50_ms:.4g} ms vs {baseline.p50_ms:.4g} ms, {stats.fmt_p(row.p_value)})"
        ),
        ref=record.ref,
        baseline_ref=baseline.ref,
        run=result,
        baseline_run_id=baseline.run_id,
        baseline_latency=latency_from_row(baseline),
        p_value=row.p_value,
        median_ratio=ratio,
        p_threshold=float(row.p_threshold or 0.0),
        effect_threshold=float(row.effect_threshold or 0.0),
        version=record.version,
        variant=record.variant,
        config_key=row.config_key,
        hardware_id=row.hardware_id,
        baseline_throughput_ips=baseline.throughput_ips,
        baseline_started_at=aware(baseline.started_at),
    )


# --- trend ---------------------------------------------------------------------------------------


def trend_report(ref: str, metric: str, rows: Sequence[RunRow]) -> TrendReport:
    """Trend of ``metric`` over ``rows`` (one configuration on one hardware, any order)."""
    if metric not in TREND_METRICS:
        raise InvalidConfig(f"metric must be one of {', '.join(TREND_METRICS)}")
    rows = sorted(rows, key=lambda r: (r.started_at, r.run_id))
    points = [history_point(r) for r in rows]
    key = rows[-1].config_key if rows else ""
    hardware = rows[-1].hardware_id if rows else ""
    report = TrendReport(
        ref=ref,
        metric=metric,
        config_key=key,
        hardware_id=hardware,
        points=points,
        values=[_metric(r, metric) for r in rows],
    )
    if len(rows) < 3:
        report.message = f"{len(rows)} run(s): a trend needs at least 3"
        return report
    t0 = rows[0].started_at
    days = np.array([(r.started_at - t0).total_seconds() / 86400.0 for r in rows])
    values = np.array([_metric(r, metric) for r in rows])
    if np.ptp(days) > 0:
        slope = stats.theil_sen(days, values)
        level = float(np.median(values))
        report.slope_per_day = slope.slope
        report.slope_low = slope.low
        report.slope_high = slope.high
        report.relative_slope_per_day = slope.slope / level if level else None
        if slope.low > 0:
            report.direction = "rising"
        elif slope.high < 0:
            report.direction = "falling"
    for change in stats.change_points(values):
        row = rows[change.index]
        report.change_points.append(
            ChangePointView(
                index=change.index,
                run_id=row.run_id,
                started_at=aware(row.started_at),
                version=row.version,
                before=change.before,
                after=change.after,
                ratio=change.ratio,
            )
        )
    worse = "slower" if metric != "throughput_ips" else "more throughput"
    parts = [f"{len(rows)} runs"]
    if report.slope_per_day is not None:
        parts.append(
            f"Theil-Sen slope {report.slope_per_day:+.4g}/day "
            f"(95% CI {report.slope_low:+.4g} .. {report.slope_high:+.4g}): {report.direction}"
        )
    for cp in report.change_points:
        parts.append(f"change at run {cp.index} ({cp.version}): {cp.before:.4g} -> {cp.after:.4g} ({cp.ratio:.2f}x)")
    if report.direction == "rising" and metric != "throughput_ips":
        parts.append(f"getting {worse}")
    report.message = "; ".join(parts)
    return report


# --- comparison ----------------------------------------------------------------------------------


def _metric(row: RunRow, metric: str) -> float:
    return float(getattr(row, metric))


@dataclass
class CompareInput:
    ref: str
    row: RunRow
    samples_ns: np.ndarray
    accuracy: float | None


def comparison_runs(found: Sequence[tuple[str, Sequence[RunRow]]], config_key: str | None = None) -> list[RunRow]:
    """One accepted run per model (``found``: each ref with its runs, newest first), all of one
    configuration on one hardware: the most recent that every model shares, as the first
    model's runs order them (restricted to ``config_key`` when given)."""
    for text, runs in found:
        if not runs:
            raise NotFound(f"no accepted benchmark run of {text} in the history")
    common = {(r.config_key, r.hardware_id) for r in found[0][1]}
    for _, runs in found[1:]:
        common &= {(r.config_key, r.hardware_id) for r in runs}
    if config_key:
        common = {c for c in common if c[0] == config_key}
    if not common:
        raise NotFound(
            "these models have no benchmark configuration on one hardware in common"
            + (f" with config {config_key}" if config_key else "")
            + "; benchmark them with the same settings on one host"
        )
    chosen = next((r.config_key, r.hardware_id) for r in found[0][1] if (r.config_key, r.hardware_id) in common)
    return [next(r for r in runs if (r.config_key, r.hardware_id) == chosen) for _, runs in found]


def capped(samples: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``limit`` of ``samples``, drawn without replacement when there are more."""
    return rng.choice(samples, limit, replace=False) if samples.size > limit else samples


def _shared_ranks(medians: list[float], significant: dict[tuple[int, int], bool]) -> dict[int, int]:
    """Rank by median; a model not significantly different from the one ranked before it
    shares that one's rank."""
    order = sorted(range(len(medians)), key=lambda i: medians[i])
    ranks: dict[int, int] = {}
    for position, i in enumerate(order):
        if position == 0:
            ranks[i] = 1
            continue
        previous = order[position - 1]
        differs = significant.get((min(i, previous), max(i, previous)), True)
        ranks[i] = ranks[previous] if not differs else position + 1
    return ranks


def _pareto(inputs: list[CompareInput], medians: list[float]) -> tuple[list[str], set[int]]:
    """The Pareto objectives and the indices on the front."""
    objectives = ["median_ms", "size_bytes"]
    use_accuracy = all(i.accuracy is not None for i in inputs)
    if use_accuracy:
        objectives.append("error_rate")
    points = []
    for k, item in enumerate(inputs):
        point = [medians[k], float(item.row.size_bytes or 0)]
        if use_accuracy:
            point.append(1.0 - float(item.accuracy or 0.0))
        points.append(tuple(point))
    return objectives, set(stats.pareto_front(points))


def comparison_report(
    inputs: list[CompareInput], *, alpha: float, min_effect: float = stats.DEFAULT_MIN_EFFECT, seed: int = 0
) -> ComparisonReport:
    """Kruskal-Wallis, pairwise Mann-Whitney with Holm's correction, a ranking by median with
    bootstrap CIs (models not significantly different share a rank), and the Pareto front of
    median latency, size and (when every model has one) error rate = 1 - accuracy."""
    groups = [np.asarray(i.samples_ns, dtype=np.float64) / 1e6 for i in inputs]
    result = stats.compare_groups(groups, alpha=alpha, min_effect=min_effect)
    medians = [float(np.median(g)) for g in groups]
    ranks = _shared_ranks(medians, {(p.a, p.b): p.significant for p in result.pairs})
    objectives, front = _pareto(inputs, medians)
    entries = []
    for k, item in enumerate(inputs):
        ci = stats.bootstrap_quantile_ci(groups[k], 0.5, seed=seed + k)
        entries.append(
            CompareEntry(
                ref=item.ref,
                run_id=item.row.run_id,
                samples=int(groups[k].size),
                median_ms=medians[k],
                median_ci_ms=ci,
                p99_ms=float(np.percentile(groups[k], 99)),
                throughput_ips=item.row.throughput_ips,
                size_bytes=item.row.size_bytes,
                accuracy=item.accuracy,
                rank=ranks[k],
                pareto=k in front,
            )
        )
    entries.sort(key=lambda entry: (entry.rank, entry.median_ms))
    pairs = [
        PairResult(
            a=inputs[p.a].ref,
            b=inputs[p.b].ref,
            p_value=p.p_value,
            p_adjusted=p.p_adjusted,
            significant=p.significant,
            median_ratio=p.median_ratio,
            statistically_significant=p.statistically_significant,
        )
        for p in result.pairs
    ]
    first = inputs[0].row
    message = (
        f"Kruskal-Wallis H={result.kruskal_h:.3g}, {stats.fmt_p(result.kruskal_p)}"
        if result.kruskal_p is not None
        else "one model: nothing to compare"
    )
    return ComparisonReport(
        config_key=first.config_key,
        hardware_id=first.hardware_id,
        entries=entries,
        kruskal_h=result.kruskal_h,
        kruskal_p=result.kruskal_p,
        pairs=pairs,
        pareto_objectives=objectives,
        message=message,
        alpha=alpha,
        min_effect=min_effect,
    )


def _finite(value: float | None) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
