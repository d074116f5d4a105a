"""Retention of the benchmark history and telemetry (services/benchmarker/retention.py) on a
real DuckDB history: old runs, facts and production samples go, recent ones stay, the raw
samples of a run are thinned evenly to the number kept, and a version's rows purge alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from services.benchmarker.history import History
from services.benchmarker.retention import RetentionPolicy, apply_retention, purge_version

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _history(tmp_path: Path) -> History:
    history = History(tmp_path / "history.duckdb")
    con = history.con
    for run_id, version, age_days, samples in (("old", "1.0.0", 40, 1000), ("new", "2.0.0", 1, 10)):
        started = (NOW - timedelta(days=age_days)).replace(tzinfo=None)
        con.execute(
            "INSERT INTO benchmark_runs (run_id, name, version, variant, ref, config_key, hardware_id, started_at) "
            "VALUES (?, 'm', ?, 'base', ?, 'k', 'h', ?)",
            [run_id, version, f"m@{version}", started],
        )
        for seq in range(samples):
            con.execute(
                "INSERT INTO latency_samples (run_id, seq, latency_ns) VALUES (?, ?, ?)", [run_id, seq, 1000 + seq]
            )
        con.execute(
            "INSERT INTO validations (event_id, name, version, occurred_at) VALUES (?, 'm', ?, ?)",
            [f"v-{run_id}", version, started],
        )
        con.execute(
            "INSERT INTO production_samples (batch_id, name, version, ts, latency_ms) VALUES (?, 'm', ?, ?, 1.0)",
            [f"b-{run_id}", version, started],
        )
        con.execute(
            "INSERT INTO alerts (event_id, name, ref, received_at) VALUES (?, 'm', ?, ?)",
            [f"a-{run_id}", f"m@{version}+fp16", started],
        )
    return history


def _count(history: History, table: str) -> int:
    row = history.con.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_retention_by_age_and_samples_per_run(tmp_path: Path) -> None:
    history = _history(tmp_path)
    assert apply_retention(history, RetentionPolicy(), NOW) == {}  # the default keeps everything

    deleted = apply_retention(history, RetentionPolicy(telemetry_days=30), NOW)
    assert deleted == {"production_samples": 1}
    assert _count(history, "benchmark_runs") == 2  # runs follow their own setting

    deleted = apply_retention(history, RetentionPolicy(history_days=30), NOW)
    assert deleted == {"latency_samples": 1000, "benchmark_runs": 1, "validations": 1, "alerts": 1}
    assert history.con.execute("SELECT run_id FROM benchmark_runs").fetchall() == [("new",)]
    history.close()


def test_samples_per_run_thins_evenly(tmp_path: Path) -> None:
    history = _history(tmp_path)
    deleted = apply_retention(history, RetentionPolicy(samples_per_run=100), NOW)
    assert deleted == {"latency_samples_thinned": 900}
    kept = np.array([r[0] for r in history.con.execute(
        "SELECT seq FROM latency_samples WHERE run_id = 'old' ORDER BY seq"
    ).fetchall()])  # fmt: skip
    assert len(kept) == 100 and kept[0] == 0 and set(np.diff(kept)) == {10}  # evenly spaced
    assert _count(history, "latency_samples") == 110  # the small run is untouched
    assert apply_retention(history, RetentionPolicy(samples_per_run=100), NOW) == {}  # idempotent
    history.close()


def test_purge_version_removes_only_that_version(tmp_path: Path) -> None:
    history = _history(tmp_path)
    deleted = purge_version(history, "m", "1.0.0")
    assert deleted == {
        "latency_samples": 1000,
        "benchmark_runs": 1,
        "validations": 1,
        "production_samples": 1,
        "alerts": 1,
    }
    assert _count(history, "benchmark_runs") == 1 and _count(history, "alerts") == 1
    history.close()
