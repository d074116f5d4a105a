"""Harness overhead of the benchmarker's measurement protocol.

Ratio = median latency the benchmarker reports (measure_isolated: the fresh child process,
warm-up, windows, every sample timed, exactly what the service runs) / median of a bare
``InferenceSession.run`` loop on the same model, inputs and thread settings, in this process.
Rounds alternate the two to spread drift of a noisy machine evenly. Target: <= 1.03.

    .venv/bin/python bench/bench_benchmarker.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repo on sys.path)
import numpy as np
import onnxruntime as ort
from _common import report

from services.benchmarker.protocol import MeasureSpec, measure_isolated, prepare_inputs
from services.benchmarker.stats import summarize
from tests.support.models import mlp

ROUNDS = 3
DURATION_S = 2.0


def bare_median_ms(path: Path, feeds: dict[str, np.ndarray], threads: int, seconds: float) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    run = session.run
    for _ in range(200):  # warm-up
        run(None, feeds)
    clock = time.perf_counter_ns
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = clock()
        run(None, feeds)
        samples.append(clock() - t0)
    return float(np.median(samples)) / 1e6


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {
            "mlp 16-64-4 (tiny, ~10 us)": mlp(Path(tmp) / "tiny.onnx", hidden=64),
            "mlp 256 + 8 blocks (~100 us)": mlp(Path(tmp) / "mid.onnx", features=256, hidden=256, extra_matmuls=8),
            "mlp 1024 + 4 blocks (~1 ms)": mlp(Path(tmp) / "big.onnx", features=1024, hidden=1024, extra_matmuls=4),
        }
        for label, path in models.items():
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            specs = [(a.name, a.type, list(a.shape)) for a in session.get_inputs()]
            feeds, _ = prepare_inputs(specs, 1, {}, seed=0)
            spec = MeasureSpec(
                model_path=str(path),
                provider="CPUExecutionProvider",
                batch_size=1,
                intra_op_threads=1,
                concurrency=1,
                warmup_s=0.5,
                window_s=0.5,
                min_duration_s=DURATION_S,
                max_duration_s=DURATION_S,
                stability_threshold=0.10,
            )
            harness, bare = [], []
            for _ in range(ROUNDS):
                measured = measure_isolated(spec)
                harness.append(summarize(measured.latencies_ns).p50_ms)
                bare.append(bare_median_ms(path, feeds, 1, DURATION_S))
            h, b = statistics.median(harness), statistics.median(bare)
            rows.append((label, f"benchmarker p50 {h * 1000:.2f} us / bare loop p50 {b * 1000:.2f} us = {h / b:.3f}"))
    report("Harness overhead (target <= 1.03), CPU provider, 1 thread, batch 1", rows)


if __name__ == "__main__":
    main()
