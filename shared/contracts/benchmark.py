"""Benchmarker messages: the ``model.benchmark`` command with its configuration, the
``model.benchmarked`` summary, production telemetry, and the request/reply bodies of the
benchmarker's micro endpoints (SQL, history, trend, compare, export)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from shared.contracts.base import Command, Event, Message
from shared.contracts.identity import BASE_VARIANT

# Benchmarker micro endpoints (core NATS request/reply, outside the streams). BENCHMARKER_SQL
# lives in subjects.py; the others are the benchmarker's own.
BENCHMARKER_HISTORY = "benchmarker.history"
BENCHMARKER_TREND = "benchmarker.trend"
BENCHMARKER_COMPARE = "benchmarker.compare"
BENCHMARKER_EXPORT = "benchmarker.export"


class BenchmarkConfig(msgspec.Struct, kw_only=True):
    """One sweep: every combination of providers x batch sizes x threads x concurrency is a
    configuration measured under the protocol (warm-up, then windows until the last three
    agree within ``stability_threshold`` on median latency and throughput, or
    ``max_duration_s`` ends and the run is flagged unstable)."""

    providers: list[str] = msgspec.field(default_factory=lambda: ["CPUExecutionProvider"])
    batch_sizes: list[int] = msgspec.field(default_factory=lambda: [1])
    intra_op_threads: list[int] = msgspec.field(default_factory=lambda: [1])
    concurrency: list[int] = msgspec.field(default_factory=lambda: [1])
    warmup_s: float = 0.5
    window_s: float = 0.5
    min_duration_s: float = 1.5
    max_duration_s: float = 10.0
    stability_threshold: float = 0.10
    seed: int = 0
    shapes: dict[str, list[int]] = {}


class BenchmarkModel(Command, kw_only=True, tag="model.benchmark"):
    """``model.benchmark``: measure ``ref`` with ``config`` (default config when unset)."""

    ref: str
    config: BenchmarkConfig | None = None


class HardwareFingerprint(msgspec.Struct, kw_only=True):
    """Runs compare only with baselines of the same ``id`` (a hash of the other fields)."""

    id: str
    cpu_model: str
    cpu_cores: int
    ort_version: str
    provider: str
    gpu_name: str | None = None
    gpu_driver: str | None = None
    hostname: str = ""


class LatencySummary(msgspec.Struct, kw_only=True):
    samples: int
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    cv: float
    min_ms: float
    max_ms: float
    p50_ci_ms: tuple[float, float]
    p99_ci_ms: tuple[float, float]
    outliers: int


class RegressionVerdict(msgspec.Struct, kw_only=True):
    """``status``: regression, improvement, no_change, no_baseline or insufficient_data.
    ``p_value`` is the one-sided Mann-Whitney p-value in the direction of ``status`` (slower for
    regression and no_change, faster for improvement); ``median_ratio`` = new / baseline."""

    status: str
    baseline_run_id: str | None = None
    baseline_ref: str | None = None
    p_value: float | None = None
    median_ratio: float | None = None
    message: str = ""
    p_threshold: float | None = None
    effect_threshold: float | None = None


class ConfigResult(msgspec.Struct, kw_only=True):
    run_id: str
    provider: str
    batch_size: int
    intra_op_threads: int
    concurrency: int
    latency: LatencySummary
    throughput_ips: float
    stable: bool
    windows: int
    duration_s: float
    load_time_s: float
    peak_memory_bytes: int
    verdict: RegressionVerdict | None = None
    # Added fields (defaults keep older readers and writers compatible).
    config_key: str = ""  # provider|b<batch>|t<threads>|c<concurrency>, the baseline key
    requested_provider: str = ""  # what the config asked for; ``provider`` is what ran
    input_shapes: dict[str, list[int]] = {}
    input_source: str = "synthetic"  # "synthetic" or "dataset"
    peak_rss_bytes: int = 0
    window_medians_ms: list[float] = []
    notes: list[str] = []


class ModelBenchmarked(Event, kw_only=True, tag="model.benchmarked"):
    """``model.benchmarked.<name>``: one result per configuration of the sweep."""

    name: str
    version: str
    variant: str = BASE_VARIANT
    ref: str
    sha256: str = ""
    hardware: HardwareFingerprint
    results: list[ConfigResult]
    # Configurations that were not measured (e.g. a provider this host lacks), with why.
    skipped: list[SkippedConfig] = []
    source_event_id: str = ""  # the model.registered event or model.benchmark command measured


class SkippedConfig(msgspec.Struct, kw_only=True):
    provider: str
    batch_size: int
    intra_op_threads: int
    concurrency: int
    reason: str
    message: str


class BenchmarkProgress(msgspec.Struct, kw_only=True, tag_field="type", tag="model.benchmark_progress"):
    """Sent only to a command's ``reply_to`` inbox while a sweep runs (before the final
    ``model.benchmarked`` or ``model.benchmark_failed`` reply); never stored in a stream."""

    ref: str
    done: int
    total: int
    config_key: str = ""
    p50_ms: float | None = None


class BenchmarkFailed(Event, kw_only=True, tag="model.benchmark_failed"):
    """``model.benchmark_failed.<name>``: the model could not be measured (e.g. ORT cannot
    load it, or a provider is missing)."""

    name: str
    version: str
    variant: str = BASE_VARIANT
    ref: str
    reason: str
    message: str


class InferenceTelemetry(Message, kw_only=True, tag="telemetry.inference"):
    """``telemetry.inference.<name>``: a batch of production latencies from one host.
    ``timestamps`` are Unix seconds, parallel to ``latencies_ms``."""

    name: str
    version: str
    variant: str = BASE_VARIANT
    host: str
    timestamps: list[float]
    latencies_ms: list[float]


class SqlQuery(msgspec.Struct, kw_only=True):
    """``benchmarker.sql``: one read-only SELECT. The service caps ``max_rows`` and
    ``timeout_s`` at its settings (INFERLAB_SQL_MAX_ROWS, INFERLAB_SQL_TIMEOUT_S)."""

    sql: str
    max_rows: int = 10_000
    timeout_s: float = 10.0


class SqlResult(msgspec.Struct, kw_only=True):
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    truncated: bool = False
    elapsed_s: float = 0.0


class HistoryPoint(msgspec.Struct, kw_only=True):
    run_id: str
    ref: str
    started_at: datetime
    p50_ms: float
    p99_ms: float
    throughput_ips: float
    version: str = ""
    variant: str = BASE_VARIANT
    config_key: str = ""
    hardware_id: str = ""
    samples: int = 0
    stable: bool = True
    status: str = ""
    median_ratio: float | None = None
    p_value: float | None = None


class HistoryRequest(msgspec.Struct, kw_only=True):
    """``benchmarker.history``: runs of ``ref`` (a bare name: every version and variant; with
    a version and/or variant: only those), newest first."""

    ref: str
    config_key: str | None = None
    limit: int = 100


class HistoryReply(msgspec.Struct, kw_only=True):
    points: list[HistoryPoint]


class TrendRequest(msgspec.Struct, kw_only=True):
    """``benchmarker.trend``: the trend of ``metric`` (p50_ms, p99_ms, mean_ms or
    throughput_ips) over a model's runs of one configuration on one hardware fingerprint
    (default: those of its most recent run)."""

    ref: str
    metric: str = "p50_ms"
    config_key: str | None = None
    hardware_id: str | None = None
    limit: int = 500


class ChangePointView(msgspec.Struct, kw_only=True):
    index: int
    run_id: str
    started_at: datetime
    version: str
    before: float
    after: float
    ratio: float


class TrendReport(msgspec.Struct, kw_only=True):
    """Theil-Sen slope of ``metric`` per day with its 95% confidence interval, the slope
    relative to the median level (``relative_slope_per_day``, 0.01 = +1%/day), and change
    points (ruptures PELT on log values; see docs/benchmarker.md)."""

    ref: str
    metric: str
    config_key: str
    hardware_id: str
    points: list[HistoryPoint]
    slope_per_day: float | None = None
    slope_low: float | None = None
    slope_high: float | None = None
    relative_slope_per_day: float | None = None
    direction: str = "flat"  # "rising", "falling" or "flat" (the CI contains 0)
    change_points: list[ChangePointView] = []
    message: str = ""
    values: list[float] = []  # ``metric`` of each point, in the order of ``points``


class CompareRequest(msgspec.Struct, kw_only=True):
    """``benchmarker.compare``: the latest accepted run of each ref on one configuration and
    hardware fingerprint that they all share."""

    refs: list[str]
    config_key: str | None = None
    alpha: float = 0.05
    # smallest relative gap between medians called a difference (0.05: the slower one at least
    # 5% slower); added later, with a default
    min_effect: float = 0.05


class CompareEntry(msgspec.Struct, kw_only=True):
    ref: str
    run_id: str
    samples: int
    median_ms: float
    median_ci_ms: tuple[float, float]
    p99_ms: float
    throughput_ips: float
    size_bytes: int | None = None
    accuracy: float | None = None
    rank: int = 0  # 1 = fastest median; entries not significantly different share a rank
    pareto: bool = False


class PairResult(msgspec.Struct, kw_only=True):
    a: str
    b: str
    p_value: float
    p_adjusted: float  # Holm-corrected
    significant: bool  # p_adjusted < alpha AND the medians at least min_effect apart
    median_ratio: float  # median(a) / median(b)
    statistically_significant: bool = False  # p_adjusted < alpha alone (added later)


class ComparisonReport(msgspec.Struct, kw_only=True):
    config_key: str
    hardware_id: str
    entries: list[CompareEntry]
    kruskal_h: float | None = None
    kruskal_p: float | None = None
    pairs: list[PairResult] = []
    pareto_objectives: list[str] = []
    message: str = ""
    alpha: float = 0.05  # the thresholds the pairs were judged with (added later)
    min_effect: float = 0.05


class ExportRequest(msgspec.Struct, kw_only=True):
    """``benchmarker.export``: write tables (default: every table and view) as Parquet into
    the artifact object store, so a client on any host can download them."""

    tables: list[str] = []


class ExportedFile(msgspec.Struct, kw_only=True):
    table: str
    uri: str  # nats-obj://<bucket>/exports/<export_id>/<table>.parquet
    sha256: str
    size_bytes: int
    rows: int


class ExportReply(msgspec.Struct, kw_only=True):
    export_id: str
    schema_version: int
    files: list[ExportedFile]
