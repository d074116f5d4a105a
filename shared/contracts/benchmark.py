"""Benchmarker messages: the ``model.benchmark`` command with its configuration, the
``model.benchmarked`` summary, production telemetry, and SQL request/reply bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from shared.contracts.base import Command, Event, Message
from shared.contracts.identity import BASE_VARIANT


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
    """``status``: regression, improvement, no_change, no_baseline or insufficient_data."""

    status: str
    baseline_run_id: str | None = None
    baseline_ref: str | None = None
    p_value: float | None = None
    median_ratio: float | None = None
    message: str = ""


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


class ModelBenchmarked(Event, kw_only=True, tag="model.benchmarked"):
    """``model.benchmarked.<name>``: one result per configuration of the sweep."""

    name: str
    version: str
    variant: str = BASE_VARIANT
    ref: str
    sha256: str = ""
    hardware: HardwareFingerprint
    results: list[ConfigResult]


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
