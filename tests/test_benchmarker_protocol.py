"""The measurement protocol on real ONNX Runtime sessions, and the sweep planning."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from services.benchmarker import analysis
from services.benchmarker.protocol import (
    MeasureSpec,
    fingerprint,
    measure,
    measure_isolated,
    prepare_inputs,
    resolve_shape,
)
from services.benchmarker.rows import RunRow
from services.benchmarker.runners import (
    CPU,
    CUDA,
    InvalidConfig,
    LoadFailed,
    OrtRunner,
    ProviderUnavailable,
    RunFailed,
)
from shared.contracts.benchmark import BenchmarkConfig
from shared.contracts.registry import TensorSpec
from tests.support.benchmarker_models import custom_op_model, reshape_model, slow_model
from tests.support.models import mlp


def _spec(path: Path, **kw) -> MeasureSpec:
    base = {
        "model_path": str(path),
        "provider": CPU,
        "batch_size": 1,
        "intra_op_threads": 1,
        "concurrency": 1,
        "warmup_s": 0.05,
        "window_s": 0.1,
        "min_duration_s": 0.3,
        "max_duration_s": 1.5,
        "stability_threshold": 0.5,
    }
    return MeasureSpec(**{**base, **kw})


def test_measure_records_every_sample_with_windows_and_threads(tmp_path: Path) -> None:
    m = measure(_spec(mlp(tmp_path / "m.onnx"), concurrency=2, batch_size=4))
    n = m.latencies_ns.size
    assert n == m.completed >= 20
    assert m.offsets_ns.size == m.windows.size == m.threads.size == n
    assert set(np.unique(m.threads)) == {0, 1}
    assert m.windows.min() == 0 and m.windows.max() == len(m.window_medians_ms) - 1
    # Samples belong to the window they complete in: an inference already running when
    # measuring began has a negative start offset, but ends inside the first window.
    assert np.all(m.latencies_ns > 0) and np.all(m.offsets_ns + m.latencies_ns >= 0)
    assert m.throughput_ips == pytest.approx(n / m.measured_s)
    assert m.input_shapes == {"input": [4, 16]} and m.input_source == "synthetic"
    assert m.provider == CPU and m.load_time_s > 0
    assert m.measured_s >= 0.3 and len(m.window_medians_ms) >= 3


def test_unstable_runs_stop_at_the_time_budget(tmp_path: Path) -> None:
    # An impossible stability threshold: the windows never agree, the budget ends the run.
    m = measure(_spec(mlp(tmp_path / "m.onnx"), stability_threshold=1e-9, max_duration_s=0.6))
    assert not m.stable and 0.6 <= m.measured_s < 1.5


def test_an_inference_longer_than_the_budget_still_gives_finite_windows(tmp_path: Path) -> None:
    # zfnet512 on a loaded host: one inference outlasted the last window, whose median was NaN,
    # published as null in window_medians_ms, which the validator could not decode.
    m = measure(
        _spec(slow_model(tmp_path / "slow.onnx"), warmup_s=0.0, window_s=1e-4, min_duration_s=0.0, max_duration_s=2e-4)
    )
    assert m.completed >= 1 and m.window_medians_ms
    assert all(math.isfinite(v) and v > 0 for v in m.window_medians_ms)
    assert m.windows.max() == len(m.window_medians_ms) - 1


def test_isolated_measurement_and_errors_cross_the_process_boundary(tmp_path: Path) -> None:
    m = measure_isolated(_spec(mlp(tmp_path / "m.onnx")))
    assert m.completed > 0
    with pytest.raises(LoadFailed, match="Mystery"):
        measure_isolated(_spec(custom_op_model(tmp_path / "c.onnx")))
    with pytest.raises(RunFailed, match="x: float32\\[1, 4\\]"):
        measure_isolated(_spec(reshape_model(tmp_path / "r.onnx")))
    with pytest.raises(InvalidConfig):
        measure_isolated(_spec(mlp(tmp_path / "m.onnx"), batch_size=0))


def test_missing_provider_is_reported_not_faked(tmp_path: Path) -> None:
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    runner = OrtRunner(mlp(tmp_path / "m.onnx"), CUDA, 1)
    with pytest.raises(ProviderUnavailable, match="CUDAExecutionProvider is not available"):
        runner.load()


def test_inputs_from_specs_shapes_and_datasets(tmp_path: Path) -> None:
    specs = [
        ("x", "tensor(float)", ["batch", 3, None]),
        ("ids", "tensor(int64)", [None, 5]),
        ("flag", "tensor(bool)", []),
    ]
    feeds, source = prepare_inputs(specs, 4, {"x": [1, 3, 7]}, seed=1)
    assert source == "synthetic"
    assert feeds["x"].shape == (4, 3, 7) and feeds["x"].dtype == np.float32
    assert feeds["ids"].shape == (4, 5) and feeds["ids"].dtype == np.int64 and feeds["ids"].min() >= 0
    assert feeds["flag"].shape == () and feeds["flag"].dtype == np.bool_
    again, _ = prepare_inputs(specs, 4, {"x": [1, 3, 7]}, seed=1)
    assert np.array_equal(again["x"], feeds["x"])  # seeded
    np.savez(tmp_path / "d.npz", x=np.arange(2 * 3 * 7, dtype=np.float64).reshape(2, 3, 7), labels=np.zeros(2))
    from_data, source = prepare_inputs(specs[:1], 5, {}, seed=0, dataset_path=str(tmp_path / "d.npz"))
    assert source == "dataset" and from_data["x"].shape == (5, 3, 7) and from_data["x"].dtype == np.float32
    with pytest.raises(InvalidConfig, match="not model inputs"):
        prepare_inputs(specs, 1, {"nope": [1]}, seed=0)
    with pytest.raises(InvalidConfig, match="fixes that dimension"):
        resolve_shape("x", [1, 3], 1, {"x": [1, 4]})
    with pytest.raises(InvalidConfig, match="not a tensor"):
        prepare_inputs([("s", "seq(tensor(float))", [])], 1, {}, seed=0)


def test_fingerprint_is_stable_and_excludes_the_hostname() -> None:
    a, b = fingerprint(CPU), fingerprint(CPU)
    assert a == b and len(a["id"]) == 16
    assert a["gpu_name"] is None  # GPU fields only for GPU providers
    assert a["cpu_cores"] >= 1 and a["ort_version"]


def test_plan_sweeps_degrades_and_respects_fixed_batches() -> None:
    config = BenchmarkConfig(
        providers=[CPU, CUDA], batch_sizes=[1, 8], intra_op_threads=[1, 2], concurrency=[1], max_duration_s=1
    )
    dynamic = [TensorSpec(name="x", dtype="float32", shape=["batch", 16])]
    planned, skipped, notes = analysis.plan(config, dynamic, (CPU,), engine=False)
    assert [(p.provider, p.batch_size, p.intra_op_threads) for p in planned] == [
        (CPU, 1, 1),
        (CPU, 1, 2),
        (CPU, 8, 1),
        (CPU, 8, 2),
    ]
    assert {s.reason for s in skipped} == {"provider_unavailable"} and len(skipped) == 4
    only_cuda = BenchmarkConfig(providers=[CUDA])
    planned, _, notes = analysis.plan(only_cuda, dynamic, (CPU,), engine=False)
    assert [p.provider for p in planned] == [CPU] and planned[0].requested_provider == CUDA
    assert "measured CPUExecutionProvider instead" in notes[0]
    fixed = [TensorSpec(name="x", dtype="float32", shape=[2, 16])]
    planned, skipped, _ = analysis.plan(BenchmarkConfig(batch_sizes=[1, 2, 8]), fixed, (CPU,), engine=False)
    assert [p.batch_size for p in planned] == [2] and [s.batch_size for s in skipped] == [1, 8]
    planned, _, notes = analysis.plan(BenchmarkConfig(), dynamic, (CPU,), engine=True)
    assert [p.provider for p in planned] == ["TensorRTEngine"]


@pytest.mark.parametrize(
    "change",
    [
        {"providers": []},
        {"batch_sizes": [0]},
        {"concurrency": [0]},
        {"min_duration_s": 5.0, "max_duration_s": 1.0},
        {"stability_threshold": 1.5},
        {"batch_sizes": list(range(1, 40)), "concurrency": [1, 2]},
        {"shapes": {"x": [0, 3]}},
    ],
)
def test_config_validation(change: dict) -> None:
    with pytest.raises(InvalidConfig):
        analysis.validate_config(BenchmarkConfig(**change))


def test_trend_report_finds_slope_and_change_point() -> None:
    from datetime import UTC, datetime, timedelta

    rng = np.random.default_rng(0)
    rows = []
    for i in range(20):
        level = 1.0 if i < 12 else 1.4
        rows.append(
            RunRow(
                name="m",
                run_id=f"r{i}",
                ref="m@1.0.0" if i < 12 else "m@1.1.0",
                version="1.0.0" if i < 12 else "1.1.0",
                variant="base",
                config_key="CPUExecutionProvider|b1|t1|c1",
                hardware_id="hw",
                started_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=i),
                p50_ms=level * (1 + rng.normal(0, 0.01)),
                p99_ms=2.0,
                p90_ms=1.5,
                throughput_ips=1000.0,
                samples=100,
                stable=True,
            )
        )
    report = analysis.trend_report("m", "p50_ms", list(reversed(rows)))
    assert [p.run_id for p in report.points] == [f"r{i}" for i in range(20)]
    assert report.values[0] == pytest.approx(rows[0].p50_ms)
    assert report.direction == "rising" and report.slope_low > 0
    assert [(c.index, c.version) for c in report.change_points] == [(12, "1.1.0")]
    flat = analysis.trend_report("m", "p90_ms", rows)
    assert flat.direction == "flat" and flat.change_points == [] and flat.values[0] == 1.5
    with pytest.raises(InvalidConfig):
        analysis.trend_report("m", "nope", rows)


def test_resolved_inputs_decide_the_batch_and_the_feeds(tmp_path: Path) -> None:
    """A state input [2, batch, 128] is not a batch of 2: a VAD-like model is measured one
    resolved call at a time, on the shapes and values that ran at registration."""
    from shared.inputs import resolve
    from tests.support.input_models import bert, vad

    path = vad(tmp_path)
    resolved = resolve(path).inputs
    specs = [
        TensorSpec(name="input", dtype="float32", shape=["batch", "samples"]),
        TensorSpec(name="state", dtype="float32", shape=[2, "batch", 128]),
        TensorSpec(name="sr", dtype="int64", shape=[]),
    ]
    planned, skipped, notes = analysis.plan(
        BenchmarkConfig(batch_sizes=[1, 8]), specs, (CPU,), engine=False, resolved=resolved
    )
    assert [p.batch_size for p in planned] == [1] and [s.batch_size for s in skipped] == [8]
    assert "no batch dimension" in notes[0] and "fixes its batch dimension to 2" not in notes[0]
    m = measure(_spec(path, resolved=resolved, max_duration_s=0.3, min_duration_s=0.1))
    assert m.input_shapes["state"] == [2, 1, 128] and m.input_shapes["sr"] == []
    assert m.input_shapes["input"] == next(r.shape for r in resolved if r.name == "input")

    ids = resolve(bert(tmp_path)).inputs
    runner = OrtRunner(bert(tmp_path), CPU, 1)
    runner.load()
    feeds, source = prepare_inputs(runner.input_specs(), 8, {}, 0, resolved=ids)
    assert source == "synthetic" and feeds["input_ids"].shape[0] == 8
    assert feeds["token_type_ids"].max() <= 1 and feeds["input_ids"].max() <= 99
    runner.close()
