"""The benchmarker end to end: registry + benchmarker in-process against a real nats-server,
real ONNX Runtime measurements, the DuckDB history behind the SQL endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from services.benchmarker.service import BenchmarkerService
from services.registry.service import RegistryService
from shared.bus import Bus
from shared.clients.benchmark import BenchmarkFailedError
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.alerts import AnomalyAlert, DeadLetter, RegressionAlert
from shared.contracts.base import new_id
from shared.contracts.benchmark import BenchmarkConfig, BenchmarkModel, ModelBenchmarked
from shared.contracts.conversion import ConversionReport, ModelConverted, ParityReport
from shared.contracts.validation import ModelValidated, ValidationReport
from shared.errors import RequestFailed
from shared.sdk import Client
from tests.support.benchmarker_models import custom_op_model, fixed_batch_model, reshape_model, telemetry_batches
from tests.support.models import mlp
from tests.support.services import ServiceProcess, running

QUICK = BenchmarkConfig(warmup_s=0.1, window_s=0.2, min_duration_s=0.6, max_duration_s=2.5)


@pytest.fixture
def bench_settings(settings: Settings) -> Settings:
    return settings.with_overrides(
        bench_warmup_s=QUICK.warmup_s,
        bench_window_s=QUICK.window_s,
        bench_min_duration_s=QUICK.min_duration_s,
        bench_max_duration_s=QUICK.max_duration_s,
    )


async def next_event(client: Client, subject: str, pred: Callable[[Any], bool] = lambda m: True, timeout: float = 60):
    async def go() -> Any:
        async for event in client.events(subject, replay=True):
            if event.message is not None and pred(event.message):
                return event.message
        return None

    return await asyncio.wait_for(go(), timeout)


async def collect(client: Client, subject: str, idle: float = 1.0) -> list[Any]:
    return [e.message async for e in client.events(subject, replay=True, idle_timeout=idle)]


async def poll_sql(client: Client, query: str, expect: Callable[[list[list[Any]]], bool], timeout: float = 20.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        rows = (await client.sql(query)).rows
        if expect(rows) or asyncio.get_running_loop().time() > deadline:
            return rows
        await asyncio.sleep(0.2)


async def test_registered_model_is_benchmarked_stored_and_queryable(
    bench_settings: Settings, client: Client, tmp_path: Path
) -> None:
    path = mlp(tmp_path / "m.onnx", hidden=64)
    async with running(bench_settings, RegistryService), running(bench_settings, BenchmarkerService):
        record = await client.register(path, name="auto", version="1.0.0")
        event: ModelBenchmarked = await next_event(client, subjects.benchmarked("auto"))
        assert event.ref == record.ref and event.sha256 == record.sha256
        (result,) = event.results
        assert result.provider == "CPUExecutionProvider" and result.batch_size == 1
        assert result.latency.samples >= 30 and 0 < result.latency.p50_ms <= result.latency.p99_ms
        assert result.latency.p50_ci_ms[0] <= result.latency.p50_ms <= result.latency.p50_ci_ms[1]
        assert result.throughput_ips > 0 and result.load_time_s > 0 and result.peak_memory_bytes > 0
        assert result.verdict is not None and result.verdict.status == "no_baseline"
        assert event.hardware.ort_version and event.hardware.cpu_cores >= 1
        assert result.input_shapes == {"input": [1, 16]}

        points = await client.history("auto")
        assert [p.run_id for p in points] == [result.run_id]
        stored = await client.sql(f"SELECT count(*) FROM latency_samples WHERE run_id = '{result.run_id}'")
        assert stored.rows == [[result.latency.samples]]
        latest = await client.sql("SELECT name, variant, p99_ms FROM latest_runs")
        assert latest.rows == [["auto", "base", pytest.approx(result.latency.p99_ms)]]

        # Parquet export through the object store, readable by outside tools.
        files = await client.export(tmp_path / "export", tables=["benchmark_runs", "latency_samples"])
        assert sorted(p.name for p in files) == ["benchmark_runs.parquet", "latency_samples.parquet", "manifest.json"]
        assert pq.read_table(tmp_path / "export" / "latency_samples.parquet").num_rows == result.latency.samples


# For the regression test on a shared 2-core machine: other processes' load moves an
# unchanged model's median far beyond the 1.10x default effect threshold between runs (repeats
# read "regression 1.15x" and, on this 2-vCPU VM with three other test runs, 2.07x: the
# median moves, so the load slows most calls, not a few outliers), and with 10% stability
# windows every run of the baseline version could end unstable, leaving the new version
# "no_baseline" (unstable runs are not accepted as baselines, by design). So the slow version
# is ~25x the work (128 extra 128x128 MatMuls: ~600 us vs ~25 us a run, quiet), the effect
# threshold is 5x (above the load noise seen, below the real difference even when the baseline
# ran loaded and the slow version quiet), and windows need only agree within 30%, with longer
# to get there.
LOADED = BenchmarkConfig(warmup_s=0.1, window_s=0.25, min_duration_s=0.75, max_duration_s=5.0, stability_threshold=0.3)


@pytest.mark.slow
async def test_slower_version_raises_one_regression_alert_and_repeats_raise_none(
    bench_settings: Settings, client: Client, tmp_path: Path
) -> None:
    settings = bench_settings.with_overrides(
        bench_warmup_s=LOADED.warmup_s,
        bench_window_s=LOADED.window_s,
        bench_min_duration_s=LOADED.min_duration_s,
        bench_max_duration_s=LOADED.max_duration_s,
        bench_stability_threshold=LOADED.stability_threshold,
        regression_effect_threshold=5.0,
    )
    fast = mlp(tmp_path / "fast.onnx", hidden=128)
    slow = mlp(tmp_path / "slow.onnx", hidden=128, extra_matmuls=128)  # same function shape, ~25x the work
    async with running(settings, RegistryService), running(settings, BenchmarkerService):
        await client.register(fast, name="net", version="1.0.0")
        first: ModelBenchmarked = await next_event(client, subjects.benchmarked("net"))
        assert first.results[0].verdict.status == "no_baseline"
        runs = 1
        # Repeated runs of the unchanged model: compared with the same version's last run.
        for _ in range(2):
            again = await client.benchmark("net@1.0.0", LOADED)
            runs += 1
            verdict = again.results[0].verdict
            assert verdict.status in ("no_change", "insufficient_data", "improvement"), verdict
        # A slower new version: compared with the previous version's latest accepted run
        # (one of the three exists: see LOADED).
        await client.register(slow, name="net", version="1.1.0")
        slower: ModelBenchmarked = await next_event(client, subjects.benchmarked("net"), lambda m: m.version == "1.1.0")
        runs += 1
        verdict = slower.results[0].verdict
        if verdict.status == "insufficient_data":
            # A run disturbed by other load on this machine did not stabilise: the benchmarker
            # says so instead of deciding. A re-run (still compared with 1.0.0: the unstable run
            # is not accepted as a baseline) decides.
            slower = await client.benchmark("net@1.1.0")
            runs += 1
            verdict = slower.results[0].verdict
        assert verdict.status == "regression", verdict
        assert verdict.median_ratio > 5.0 and verdict.p_value < 0.002 and verdict.baseline_ref == "net@1.0.0"
        alerts = await collect(client, subjects.alert("performance", "regression", "net"))
        assert len(alerts) == 1
        alert: RegressionAlert = alerts[0]
        assert alert.ref == "net@1.1.0" and alert.baseline_ref == "net@1.0.0"
        assert alert.run.latency.p50_ms > alert.baseline_latency.p50_ms
        assert alert.median_ratio == pytest.approx(verdict.median_ratio)
        assert alert.p_threshold == 0.002 and alert.effect_threshold == pytest.approx(5.0)
        # The alert reached the alerts table too.
        rows = await poll_sql(client, "SELECT type, name FROM alerts", lambda r: len(r) >= 1)
        assert rows == [["alert.performance.regression", "net"]]
        statuses = await client.sql("SELECT status FROM benchmark_runs ORDER BY started_at")
        assert [r[0] for r in statuses.rows][-1] == "regression"
        trend = await client.trend("net")
        assert len(trend.points) == runs and trend.config_key.startswith("CPUExecutionProvider")
        comparison = await client.compare(["net@1.0.0", "net@1.1.0"])
        assert [e.ref for e in comparison.entries] == ["net@1.0.0", "net@1.1.0"]
        assert comparison.pairs[0].significant and comparison.entries[0].rank == 1


@pytest.mark.slow
async def test_bad_requests_get_precise_failures_and_the_service_keeps_running(
    bench_settings: Settings, client: Client, bus: Bus, tmp_path: Path
) -> None:
    settings = bench_settings.with_overrides(bench_auto=False)
    async with running(settings, RegistryService), running(settings, BenchmarkerService):
        await client.register(custom_op_model(tmp_path / "custom.onnx"), name="custom", version="1.0.0")
        await client.register(reshape_model(tmp_path / "reshape.onnx"), name="reshape", version="1.0.0")
        await client.register(fixed_batch_model(tmp_path / "fixed.onnx"), name="fixed", version="1.0.0")
        await client.register(mlp(tmp_path / "ok.onnx"), name="ok", version="1.0.0")

        with pytest.raises(BenchmarkFailedError) as info:
            await client.benchmark("missing@1.0.0", QUICK)
        assert info.value.code == "unknown_model"
        with pytest.raises(BenchmarkFailedError) as info:
            await client.benchmark("custom@1.0.0", QUICK)
        assert info.value.code == "load_failed" and "Mystery" in info.value.message
        with pytest.raises(BenchmarkFailedError) as info:
            await client.benchmark("ok@1.0.0", BenchmarkConfig(batch_sizes=[0]))
        assert info.value.code == "invalid_config" and "batch_sizes" in info.value.message
        # A reference that is not even parseable, sent by hand.
        reply = await client.send_and_wait(subjects.BENCHMARK, BenchmarkModel(event_id=new_id(), ref="Bad Name!"))
        assert reply["type"] == "model.benchmark_failed" and reply["reason"] == "invalid_ref"

        # Batch 1 cannot run (Reshape to [3, -1]); batch 3 can: partial results, with why.
        partial = await client.benchmark("reshape@1.0.0", BenchmarkConfig(**{**_quick(), "batch_sizes": [1, 3]}))
        assert [r.batch_size for r in partial.results] == [3]
        assert [(s.batch_size, s.reason) for s in partial.skipped] == [(1, "run_failed")]
        # A fixed batch dimension is respected.
        fixed = await client.benchmark("fixed@1.0.0", BenchmarkConfig(**{**_quick(), "batch_sizes": [1, 8]}))
        assert [r.batch_size for r in fixed.results] == [2]
        # A provider this host lacks: skipped, and the sweep degrades to CPU, saying so.
        degraded = await client.benchmark(
            "ok@1.0.0", BenchmarkConfig(**{**_quick(), "providers": ["NoSuchExecutionProvider"]})
        )
        assert degraded.results[0].provider == "CPUExecutionProvider"
        assert degraded.skipped[0].reason == "provider_unavailable"
        assert any("measured CPUExecutionProvider instead" in n for n in degraded.results[0].notes)

        failures = await collect(client, "model.benchmark_failed.>")
        assert {f.reason for f in failures} >= {"unknown_model", "load_failed", "invalid_config", "invalid_ref"}
        rows = await client.sql("SELECT reason FROM benchmark_failures ORDER BY reason")
        assert {r[0] for r in rows.rows} >= {"unknown_model", "load_failed", "invalid_config"}


def _quick() -> dict[str, Any]:
    return {"warmup_s": QUICK.warmup_s, "window_s": QUICK.window_s, "min_duration_s": 0.6, "max_duration_s": 2.5}


async def test_sql_endpoint_refuses_hostile_queries(bench_settings: Settings, client: Client) -> None:
    async with running(bench_settings, BenchmarkerService):
        for query, code in [
            ("DROP TABLE benchmark_runs", "sql_refused"),
            ("COPY benchmark_runs TO '/tmp/x.csv'", "sql_refused"),
            ("ATTACH '/tmp/x.duckdb'", "sql_refused"),
            ("SELECT * FROM read_csv('/etc/passwd')", "sql_refused"),
            ("SELECT 1; DELETE FROM alerts", "sql_refused"),
            ("SET enable_external_access = true", "sql_refused"),
            ("SELECT nope FROM benchmark_runs", "sql_error"),
        ]:
            with pytest.raises(RequestFailed) as info:
                await client.sql(query)
            assert info.value.code == code, (query, info.value.message)
        ok = await client.sql("SELECT version, description FROM schema_version")
        assert ok.rows == [[1, "initial public schema"]]
        capped = await client.sql("SELECT * FROM range(100)", max_rows=5)
        assert len(capped.rows) == 5 and capped.truncated


async def test_history_ingests_conversions_validations_and_alerts_once(
    bench_settings: Settings, client: Client, bus: Bus
) -> None:
    report = ConversionReport(
        profile="fp16",
        source_ref="m@1.0.0",
        source_sha256="a" * 64,
        size_before_bytes=100,
        size_after_bytes=50,
        duration_s=0.5,
        parity=ParityReport(passed=True, input_source="synthetic", samples=8),
    )
    converted = ModelConverted(
        event_id=new_id(), name="m", version="1.0.0", variant="fp16", ref="m@1.0.0+fp16", report=report
    )
    validated = ModelValidated(
        event_id=new_id(), name="m", version="1.0.0", ref="m@1.0.0", ready=True, accuracy=0.93,
        report=ValidationReport(samples=100),
    )  # fmt: skip
    async with running(bench_settings, BenchmarkerService):
        for _ in range(2):  # the second copy gets another stream id: a redelivery as far as we know
            await bus.publish(subjects.converted("m"), converted, msg_id=new_id())
            await bus.publish(subjects.validated("m"), validated, msg_id=new_id())
        rows = await poll_sql(
            client,
            "SELECT (SELECT count(*) FROM conversions), (SELECT count(*) FROM validations)",
            lambda r: r == [[1, 1]],
        )
        assert rows == [[1, 1]]
        conv = await client.sql("SELECT profile, size_after_bytes, parity_passed FROM conversions")
        assert conv.rows == [["fp16", 50, True]]
        acc = await client.sql("SELECT accuracy, ready FROM validations")
        assert acc.rows == [[0.93, True]]


async def test_production_step_change_opens_and_resolves_one_incident(
    bench_settings: Settings, client: Client, bus: Bus
) -> None:
    settings = bench_settings.with_overrides(anomaly_window=200)
    batches = telemetry_batches("prod", [(10.0, 4000), (16.0, 2000), (10.0, 3000)])
    async with running(settings, BenchmarkerService):
        for t in batches:
            await bus.publish(subjects.telemetry("prod"), t)
        await bus.publish(subjects.telemetry("prod"), batches[3], msg_id=new_id())  # a duplicate delivery
        # Invalid telemetry is refused with a dead letter saying why; the rest carries on.
        bad = telemetry_batches("prod", [(10.0, 10)])[0]
        bad.timestamps = bad.timestamps[:3]
        await bus.publish(subjects.telemetry("prod"), bad)
        letter: DeadLetter = await next_event(client, subjects.deadletter("benchmarker"), timeout=20)
        assert "parallel" in letter.error and letter.details["reason"] == "invalid_telemetry"

        rows = await poll_sql(client, "SELECT count(*) FROM production_samples", lambda r: r == [[9000]])
        assert rows == [[9000]]
        alerts: list[AnomalyAlert] = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(alerts) < 2 and asyncio.get_running_loop().time() < deadline:
            alerts = await collect(client, subjects.alert("performance", "anomaly", "prod"), idle=0.5)
        assert [a.state for a in alerts] == ["opened", "resolved"]
        assert alerts[0].incident_id == alerts[1].incident_id
        assert alerts[0].host == "web-1" and alerts[0].window_median_ms > 15 and alerts[0].ref == "prod@1.0.0"
        stored = await poll_sql(
            client,
            "SELECT state FROM alerts WHERE type = 'alert.performance.anomaly' ORDER BY occurred_at",
            lambda r: len(r) == 2,
        )
        assert [r[0] for r in stored] == ["opened", "resolved"]


async def test_history_survives_a_restart_and_one_writer_owns_the_file(
    bench_settings: Settings, client: Client, bus: Bus, tmp_path: Path
) -> None:
    async with running(bench_settings, BenchmarkerService):
        for t in telemetry_batches("keep", [(5.0, 1000)]):
            await bus.publish(subjects.telemetry("keep"), t)
        await poll_sql(client, "SELECT count(*) FROM production_samples", lambda r: r == [[1000]])
    # Same home, now as a real child process (python -m services.benchmarker).
    child = ServiceProcess("benchmarker", bench_settings, tmp_path / "logs").start()
    try:
        rows = None
        for _ in range(100):
            try:
                rows = (await client.sql("SELECT count(*) FROM production_samples")).rows
                break
            except Exception:
                await asyncio.sleep(0.2)
        assert rows == [[1000]]
        # A second writer on the same file is refused with a clear error.
        second = ServiceProcess("benchmarker", bench_settings, tmp_path / "logs2").start()
        assert second.process is not None and second.process.wait(timeout=60) == 1
        assert "history_locked" in second.log() or "One benchmarker process owns" in second.log()
    finally:
        child.stop()
    assert "Traceback" not in child.log()


async def test_tensorrt_engine_without_tensorrt_is_unavailable_on_host(
    bench_settings: Settings, client: Client, tmp_path: Path
) -> None:
    from shared.contracts.registry import RegisterModel
    from shared.gpu import gpu_available, tensorrt_version

    if tensorrt_version() is not None and gpu_available():
        pytest.skip("this host can run TensorRT engines")
    settings = bench_settings.with_overrides(bench_auto=False)
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine, but this host cannot tell")
    async with running(settings, RegistryService), running(settings, BenchmarkerService):
        await client.register(mlp(tmp_path / "m.onnx"), name="eng", version="1.0.0")
        stored = await client.upload(engine)
        reply = await client.send_and_wait(
            subjects.REGISTER,
            RegisterModel(
                event_id=new_id(),
                name="eng",
                version="1.0.0",
                variant="trt-fp16",
                artifact_uri=stored.uri,
                parent="eng@1.0.0",
                format="tensorrt-engine",
            ),
        )
        assert reply["type"] == "model.registered", reply
        with pytest.raises(BenchmarkFailedError) as info:
            await client.benchmark("eng@1.0.0+trt-fp16", QUICK)
        assert info.value.code == "unavailable_on_host" and "TensorRT engine" in info.value.message


@pytest.mark.slow
async def test_models_are_measured_as_resolved_and_a_missing_spec_is_a_precise_failure(
    bench_settings: Settings, client: Client, tmp_path: Path
) -> None:
    """A VAD-like model (state [2, batch, 128]) is measured at batch 1 on the shapes resolved
    at registration, not as 'a fixed batch of 2'; one that nothing runs fails with
    ``needs_input_spec`` and the CLI fix; neither raises an alert."""
    from tests.support.input_models import vad

    settings = bench_settings.with_overrides(bench_auto=False)
    async with running(settings, RegistryService), running(settings, BenchmarkerService):
        record = await client.register(vad(tmp_path), name="vad", version="1.0.0")
        (tmp_path / "stuck").mkdir()
        await client.register(vad(tmp_path / "stuck", pad=5000), name="stuck", version="1.0.0")
        done = await client.benchmark("vad@1.0.0", BenchmarkConfig(**{**_quick(), "batch_sizes": [1, 4]}))
        assert [r.batch_size for r in done.results] == [1]
        assert done.results[0].input_shapes["state"] == [2, 1, 128]
        assert done.results[0].input_shapes["input"] == next(
            r.shape for r in record.resolved_inputs if r.name == "input"
        )
        assert any("no batch dimension" in n for n in done.results[0].notes)
        with pytest.raises(BenchmarkFailedError) as info:
            await client.benchmark("stuck@1.0.0", QUICK)
        assert info.value.code == "needs_input_spec" and "--shape input:NxN" in info.value.message
        assert not await collect(client, "alerts.>", idle=0.5)
