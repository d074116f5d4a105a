"""DuckDB history: ingest of 10 M latency samples, and the regression query + test over them.

1. Ingest: 100 runs x 100 000 raw samples through ``History.insert_run`` (run row, idempotency
   check and Arrow bulk insert in one transaction each). Raw baseline: the same samples loaded by
   bare ``INSERT INTO t SELECT * FROM arrow`` into a table of the same columns. Target: >= 1 M
   samples/s.
2. Regression decision with 10 M samples stored: ``find_baseline`` + both runs' samples + the
   one-sided Mann-Whitney U and effect test (what the service does after each run). Raw
   baseline: two bare ``SELECT latency_ns ... WHERE run_id = ?`` plus scipy's ``mannwhitneyu``.
   Target: <= 0.5 s.

    .venv/bin/python bench/bench_benchmarker_history.py
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import _common  # noqa: F401
import duckdb
import numpy as np
import pyarrow as pa
from _common import report
from scipy import stats as sps

from services.benchmarker import stats
from services.benchmarker.history import History, SampleBatch
from services.benchmarker.rows import RunRow

RUNS = 100
PER_RUN = 100_000


def run_row(i: int) -> RunRow:
    return RunRow(
        run_id=f"run-{i:04d}",
        name="resnet",
        version=f"1.{i // 10}.0",
        variant="base",
        ref=f"resnet@1.{i // 10}.0",
        config_key="CPUExecutionProvider|b1|t1|c1",
        hardware_id="hw",
        started_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=i),
        stable=True,
        accepted=True,
        samples=PER_RUN,
    )


def main() -> None:
    rng = np.random.default_rng(0)
    runs = [(rng.lognormal(np.log(2e6), 0.1, PER_RUN)).astype(np.int64) for _ in range(RUNS)]
    total = RUNS * PER_RUN
    with tempfile.TemporaryDirectory() as tmp:
        history = History(Path(tmp) / "history.duckdb")
        t0 = time.perf_counter()
        for i, lat in enumerate(runs):
            n = lat.size
            history.insert_run(
                run_row(i),
                SampleBatch(
                    latency_ns=lat,
                    offset_ns=np.cumsum(lat),
                    window=(np.arange(n) * 6 // n).astype(np.int16),
                    thread=np.zeros(n, dtype=np.int16),
                ),
            )
        ingest_s = time.perf_counter() - t0
        history.con.execute("CHECKPOINT")

        raw = duckdb.connect(str(Path(tmp) / "raw.duckdb"))
        raw.execute(
            "CREATE TABLE t (run_id VARCHAR, seq INTEGER, window_index SMALLINT, thread_index SMALLINT, "
            "offset_ns BIGINT, latency_ns BIGINT)"
        )
        t0 = time.perf_counter()
        for i, lat in enumerate(runs):
            n = lat.size
            table = pa.table(
                {
                    "run_id": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([f"run-{i}"])),
                    "seq": np.arange(n, dtype=np.int32),
                    "window_index": (np.arange(n) * 6 // n).astype(np.int16),
                    "thread_index": np.zeros(n, dtype=np.int16),
                    "offset_ns": np.cumsum(lat),
                    "latency_ns": lat,
                }
            )
            raw.register("incoming", table)
            raw.execute("INSERT INTO t SELECT * FROM incoming")
            raw.unregister("incoming")
        raw_s = time.perf_counter() - t0
        raw.execute("CHECKPOINT")

        # The regression decision for a new run of resnet@1.9.0 (baseline: its latest run).
        new = (rng.lognormal(np.log(2.3e6), 0.1, PER_RUN)).astype(np.int64)
        ours, bare = [], []
        for _ in range(5):
            t0 = time.perf_counter()
            baseline = history.find_baseline(
                name="resnet",
                version="1.9.0",
                variant="base",
                config_key="CPUExecutionProvider|b1|t1|c1",
                hardware_id="hw",
                exclude_run_id="new",
            )
            decision = stats.decide_regression(
                new, history.samples(baseline.run_id), p_threshold=0.002, effect_threshold=1.10
            )
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            a = raw.execute("SELECT latency_ns FROM t WHERE run_id = 'run-99'").fetchnumpy()["latency_ns"]
            sps.mannwhitneyu(new, a, alternative="greater", method="asymptotic")
            bare.append(time.perf_counter() - t0)
        stored = history.con.execute("SELECT count(*) FROM latency_samples").fetchone()[0]
        size = (Path(tmp) / "history.duckdb").stat().st_size
        history.close()
        raw.close()
    q, b = statistics.median(ours), statistics.median(bare)
    report(
        "DuckDB history",
        [
            ("samples stored", f"{stored:,} in {RUNS} runs ({size / stored:.2f} bytes/sample on disk)"),
            ("ingest (History.insert_run)", f"{total / ingest_s / 1e6:.2f} M samples/s (target >= 1 M/s)"),
            ("ingest (raw Arrow INSERT)", f"{total / raw_s / 1e6:.2f} M samples/s"),
            ("ingest ratio raw/ours", f"{ingest_s / raw_s:.2f}x the raw time"),
            ("regression query + test", f"{q * 1000:.0f} ms (target <= 500 ms); verdict {decision.status}"),
            ("raw select + scipy MWU", f"{b * 1000:.0f} ms; ratio {q / b:.2f}"),
        ],
    )


if __name__ == "__main__":
    main()
