"""Facts made up for tests that feed a consumer directly: a ``model.benchmarked`` as the
benchmarker would publish it, without measuring anything."""

from __future__ import annotations

from shared.contracts.base import new_id
from shared.contracts.benchmark import ConfigResult, HardwareFingerprint, LatencySummary, ModelBenchmarked
from shared.contracts.identity import ModelRef


def benchmarked(ref: str, *, p99_ms: float, throughput_ips: float | None = None) -> ModelBenchmarked:
    """One stable CPU run at batch 1 of ``ref`` (name@version[+variant]): median half the p99,
    throughput one request per median unless given."""
    parsed = ModelRef.parse(ref)
    assert parsed.version is not None, ref
    p50 = p99_ms / 2
    latency = LatencySummary(
        samples=500,
        p50_ms=p50,
        p90_ms=p99_ms * 0.8,
        p95_ms=p99_ms * 0.9,
        p99_ms=p99_ms,
        mean_ms=p50,
        std_ms=0.1,
        cv=0.1,
        min_ms=p99_ms / 4,
        max_ms=p99_ms * 1.2,
        p50_ci_ms=(p99_ms / 2.1, p99_ms / 1.9),
        p99_ci_ms=(p99_ms * 0.95, p99_ms * 1.05),
        outliers=0,
    )
    result = ConfigResult(
        run_id=new_id(),
        provider="CPUExecutionProvider",
        batch_size=1,
        intra_op_threads=1,
        concurrency=1,
        latency=latency,
        throughput_ips=throughput_ips if throughput_ips is not None else 1000.0 / p50,
        stable=True,
        windows=3,
        duration_s=1.5,
        load_time_s=0.01,
        peak_memory_bytes=64 << 20,
    )
    hardware = HardwareFingerprint(
        id="hw", cpu_model="cpu", cpu_cores=2, ort_version="x", provider="CPUExecutionProvider"
    )
    return ModelBenchmarked(
        event_id=new_id(),
        name=parsed.name,
        version=parsed.version,
        variant=parsed.variant,
        ref=ref,
        hardware=hardware,
        results=[result],
    )
