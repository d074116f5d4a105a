"""Pure glue between the protocol, the statistics, the history rows and the contracts:
planning a sweep, turning a measurement into a history row and a ``ConfigResult``, and the
trend and comparison reports. No I/O here; service.py does the awaiting."""

from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from services.benchmarker import stats
from services.benchmarker.protocol import Measurement
from services.benchmarker.runners import CPU, TENSORRT_ENGINE, InvalidConfig
from shared.contracts.benchmark import (
    BenchmarkConfig,
    ChangePointView,
    CompareEntry,
    ComparisonReport,
    ConfigResult,
    HistoryPoint,
    LatencySummary,
    PairResult,
    RegressionVerdict,
    SkippedConfig,
    TrendReport,
)
from shared.contracts.registry import ResolvedInput, TensorSpec
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
    if not config.intra_op_threads or any(not 0 <= t <= 1024 for t in config.intra_op_threads):
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


# --- a measured run -----------------------------------------------------------------------------


def latency_summary(summary: stats.Summary) -> LatencySummary:
    return LatencySummary(
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
        p50_ci_ms=summary.p50_ci_ms,
        p99_ci_ms=summary.p99_ci_ms,
        outliers=summary.outliers,
    )


def run_row(
    *,
    run_id: str,
    planned: PlannedConfig,
    config: BenchmarkConfig,
    record: Any,
    measurement: Measurement,
    summary: stats.Summary,
    hardware: dict[str, Any],
    started_at: datetime,
    finished_at: datetime,
    event_id: str,
    source_event_id: str,
    correlation_id: str,
) -> dict[str, Any]:
    """A ``benchmark_runs`` row before the regression decision is filled in."""
    accepted = measurement.stable and summary.samples >= MIN_SAMPLES
    return {
        "run_id": run_id,
        "event_id": event_id,
        "source_event_id": source_event_id,
        "correlation_id": correlation_id,
        "name": record.name,
        "version": record.version,
        "variant": record.variant,
        "ref": record.ref,
        "sha256": record.sha256,
        "format": record.format,
        "size_bytes": record.size_bytes,
        "config_key": config_key(
            measurement.provider, planned.batch_size, planned.intra_op_threads, planned.concurrency
        ),
        "requested_provider": planned.requested_provider,
        "provider": measurement.provider,
        "batch_size": planned.batch_size,
        "intra_op_threads": planned.intra_op_threads,
        "concurrency": planned.concurrency,
        "input_shapes": measurement.input_shapes,
        "input_source": measurement.input_source,
        "warmup_s": config.warmup_s,
        "window_s": config.window_s,
        "min_duration_s": config.min_duration_s,
        "max_duration_s": config.max_duration_s,
        "stability_threshold": config.stability_threshold,
        "seed": config.seed,
        "hardware_id": hardware["id"],
        "cpu_model": hardware["cpu_model"],
        "cpu_cores": hardware["cpu_cores"],
        "ort_version": hardware["ort_version"],
        "gpu_name": hardware["gpu_name"],
        "gpu_driver": hardware["gpu_driver"],
        "hostname": hardware["hostname"],
        "started_at": started_at,
        "finished_at": finished_at,
        "duration_s": measurement.measured_s,
        "windows": len(measurement.window_medians_ms),
        "stable": measurement.stable,
        "accepted": accepted,
        "samples": summary.samples,
        "p50_ms": summary.p50_ms,
        "p90_ms": summary.p90_ms,
        "p95_ms": summary.p95_ms,
        "p99_ms": summary.p99_ms,
        "mean_ms": summary.mean_ms,
        "std_ms": summary.std_ms,
        "cv": summary.cv,
        "min_ms": summary.min_ms,
        "max_ms": summary.max_ms,
        "p50_ci_low_ms": summary.p50_ci_ms[0],
        "p50_ci_high_ms": summary.p50_ci_ms[1],
        "p99_ci_low_ms": summary.p99_ci_ms[0],
        "p99_ci_high_ms": summary.p99_ci_ms[1],
        "outliers": summary.outliers,
        "throughput_ips": measurement.throughput_ips,
        "load_time_s": measurement.load_time_s,
        "peak_memory_bytes": measurement.peak_memory_bytes,
        "peak_rss_bytes": measurement.peak_rss_bytes,
        "notes": "; ".join(measurement.notes),
        "window_medians_ms": measurement.window_medians_ms,  # not a column: travels in the event
    }


def apply_decision(
    row: dict[str, Any], decision: stats.Decision, baseline: dict[str, Any] | None, **thresholds: float
) -> None:
    row["status"] = decision.status
    row["baseline_run_id"] = baseline["run_id"] if baseline else None
    row["p_value"] = decision.p_value
    row["median_ratio"] = decision.median_ratio
    row["p_threshold"] = thresholds.get("p_threshold")
    row["effect_threshold"] = thresholds.get("effect_threshold")
    row["verdict_message"] = decision.message


def config_result(row: dict[str, Any], baseline: dict[str, Any] | None = None) -> ConfigResult:
    """The ``ConfigResult`` of a stored (or about-to-be-stored) run row."""
    verdict = None
    if row.get("status"):
        verdict = RegressionVerdict(
            status=row["status"],
            baseline_run_id=row.get("baseline_run_id"),
            baseline_ref=baseline["ref"] if baseline else None,
            p_value=_finite(row.get("p_value")),
            median_ratio=_finite(row.get("median_ratio")),
            message=row.get("verdict_message") or "",
            p_threshold=row.get("p_threshold"),
            effect_threshold=row.get("effect_threshold"),
        )
    shapes = row.get("input_shapes") or {}
    if isinstance(shapes, str):
        import json

        shapes = json.loads(shapes) if shapes else {}
    return ConfigResult(
        run_id=row["run_id"],
        provider=row["provider"],
        batch_size=int(row["batch_size"]),
        intra_op_threads=int(row["intra_op_threads"]),
        concurrency=int(row["concurrency"]),
        latency=latency_from_row(row),
        throughput_ips=float(row["throughput_ips"]),
        stable=bool(row["stable"]),
        windows=int(row["windows"]),
        duration_s=float(row["duration_s"]),
        load_time_s=float(row["load_time_s"]),
        peak_memory_bytes=int(row["peak_memory_bytes"]),
        verdict=verdict,
        config_key=row["config_key"],
        requested_provider=row.get("requested_provider") or row["provider"],
        input_shapes=shapes,
        input_source=row.get("input_source") or "synthetic",
        peak_rss_bytes=int(row.get("peak_rss_bytes") or 0),
        window_medians_ms=list(row.get("window_medians_ms") or []),
        notes=[n for n in (row.get("notes") or "").split("; ") if n],
    )


def latency_from_row(row: dict[str, Any]) -> LatencySummary:
    return LatencySummary(
        samples=int(row["samples"]),
        p50_ms=float(row["p50_ms"]),
        p90_ms=float(row["p90_ms"]),
        p95_ms=float(row["p95_ms"]),
        p99_ms=float(row["p99_ms"]),
        mean_ms=float(row["mean_ms"]),
        std_ms=float(row["std_ms"]),
        cv=float(row["cv"]),
        min_ms=float(row["min_ms"]),
        max_ms=float(row["max_ms"]),
        p50_ci_ms=(float(row["p50_ci_low_ms"]), float(row["p50_ci_high_ms"])),
        p99_ci_ms=(float(row["p99_ci_low_ms"]), float(row["p99_ci_high_ms"])),
        outliers=int(row["outliers"]),
    )


def history_point(row: dict[str, Any]) -> HistoryPoint:
    return HistoryPoint(
        run_id=row["run_id"],
        ref=row["ref"],
        started_at=_aware(row["started_at"]),
        p50_ms=float(row["p50_ms"]),
        p99_ms=float(row["p99_ms"]),
        throughput_ips=float(row["throughput_ips"]),
        version=row["version"],
        variant=row["variant"],
        config_key=row["config_key"],
        hardware_id=row["hardware_id"],
        samples=int(row["samples"] or 0),
        stable=bool(row["stable"]),
        status=row.get("status") or "",
        median_ratio=_finite(row.get("median_ratio")),
        p_value=_finite(row.get("p_value")),
    )


# --- trend ---------------------------------------------------------------------------------------


def trend_report(ref: str, metric: str, rows: list[dict[str, Any]]) -> TrendReport:
    """Trend of ``metric`` over ``rows`` (one configuration on one hardware, any order)."""
    if metric not in TREND_METRICS:
        raise InvalidConfig(f"metric must be one of {', '.join(TREND_METRICS)}")
    rows = sorted(rows, key=lambda r: (r["started_at"], r["run_id"]))
    points = [history_point(r) for r in rows]
    key = rows[-1]["config_key"] if rows else ""
    hardware = rows[-1]["hardware_id"] if rows else ""
    report = TrendReport(
        ref=ref,
        metric=metric,
        config_key=key,
        hardware_id=hardware,
        points=points,
        values=[float(r[metric]) for r in rows],
    )
    if len(rows) < 3:
        report.message = f"{len(rows)} run(s): a trend needs at least 3"
        return report
    t0 = rows[0]["started_at"]
    days = np.array([(r["started_at"] - t0).total_seconds() / 86400.0 for r in rows])
    values = np.array([float(r[metric]) for r in rows])
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
    for cp in stats.change_points(values):
        row = rows[cp.index]
        report.change_points.append(
            ChangePointView(
                index=cp.index,
                run_id=row["run_id"],
                started_at=_aware(row["started_at"]),
                version=row["version"],
                before=cp.before,
                after=cp.after,
                ratio=cp.ratio,
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


@dataclass
class CompareInput:
    ref: str
    row: dict[str, Any]
    samples_ns: np.ndarray
    accuracy: float | None


def comparison_report(
    inputs: list[CompareInput], *, alpha: float, min_effect: float = stats.DEFAULT_MIN_EFFECT, seed: int = 0
) -> ComparisonReport:
    """Kruskal-Wallis, pairwise Mann-Whitney with Holm's correction, a ranking by median with
    bootstrap CIs (models not significantly different share a rank), and the Pareto front of
    median latency, size and (when every model has one) error rate = 1 - accuracy."""
    groups = [np.asarray(i.samples_ns, dtype=np.float64) / 1e6 for i in inputs]
    result = stats.compare_groups(groups, alpha=alpha, min_effect=min_effect)
    medians = [float(np.median(g)) for g in groups]
    order = sorted(range(len(inputs)), key=lambda i: medians[i])
    significant = {(p.a, p.b): p.significant for p in result.pairs}

    def differs(i: int, j: int) -> bool:
        return significant.get((min(i, j), max(i, j)), True)

    ranks: dict[int, int] = {}
    for position, i in enumerate(order):
        if position == 0:
            ranks[i] = 1
            continue
        previous = order[position - 1]
        ranks[i] = ranks[previous] if not differs(i, previous) else position + 1
    objectives = ["median_ms", "size_bytes"]
    use_accuracy = all(i.accuracy is not None for i in inputs)
    if use_accuracy:
        objectives.append("error_rate")
    points = []
    for k, item in enumerate(inputs):
        point = [medians[k], float(item.row.get("size_bytes") or 0)]
        if use_accuracy:
            point.append(1.0 - float(item.accuracy or 0.0))
        points.append(tuple(point))
    front = set(stats.pareto_front(points))
    entries = []
    for k, item in enumerate(inputs):
        ci = stats.bootstrap_quantile_ci(groups[k], 0.5, seed=seed + k)
        entries.append(
            CompareEntry(
                ref=item.ref,
                run_id=item.row["run_id"],
                samples=int(groups[k].size),
                median_ms=medians[k],
                median_ci_ms=ci,
                p99_ms=float(np.percentile(groups[k], 99)),
                throughput_ips=float(item.row["throughput_ips"]),
                size_bytes=item.row.get("size_bytes"),
                accuracy=item.accuracy,
                rank=ranks[k],
                pareto=k in front,
            )
        )
    entries.sort(key=lambda e: (e.rank, e.median_ms))
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
        config_key=first["config_key"],
        hardware_id=first["hardware_id"],
        entries=entries,
        kruskal_h=result.kruskal_h,
        kruskal_p=result.kruskal_p,
        pairs=pairs,
        pareto_objectives=objectives,
        message=message,
        alpha=alpha,
        min_effect=min_effect,
    )


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    f = float(value)
    return f if math.isfinite(f) else None


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt
