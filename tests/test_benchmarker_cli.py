"""The benchmarker's CLI commands as a user runs them (the `inferlab` console script as a child
process), against registry + benchmarker running in-process on a real nats-server."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from services.benchmarker.service import BenchmarkerService
from services.registry.service import RegistryService
from shared.config import Settings
from shared.sdk import Client
from tests.support.cli import assert_one_line_error, cli
from tests.support.models import mlp
from tests.support.services import running

# Short windows that agree within 50%: on a loaded machine 0.2 s windows rarely agree within the
# default 10%, a run that never stabilises is not accepted, and `compare` then finds no run.
QUICK = ("--warmup", "0.1", "--window", "0.2", "--min-duration", "0.6", "--duration", "2", "--stability", "0.5")


@pytest.mark.slow
async def test_bench_history_trend_compare_sql_export(settings: Settings, client: Client, tmp_path: Path) -> None:
    settings = settings.with_overrides(bench_auto=False)
    async with running(settings, RegistryService), running(settings, BenchmarkerService):
        await client.register(mlp(tmp_path / "a.onnx"), name="clim", version="1.0.0")
        await client.register(mlp(tmp_path / "b.onnx", extra_matmuls=6), name="clim", version="2.0.0")

        rc, out, err = await cli(settings, "bench", "clim@1.0.0", "--batch", "1,4", *QUICK, "--wait", "--json")
        assert rc == 0, err
        result = json.loads(out)
        assert [r["batch_size"] for r in result["results"]] == [1, 4]
        assert all(r["latency"]["samples"] > 0 for r in result["results"])

        rc, out, err = await cli(settings, "bench", "clim@2.0.0", *QUICK, "--wait")
        assert rc == 0, err
        assert "p50 ms" in out and "clim@2.0.0" in out and "CPU" in out

        rc, out, _ = await cli(settings, "bench", "clim@2.0.0", "--json")  # without --wait: queued
        assert json.loads(out)["status"] == "queued"

        rc, out, err = await cli(settings, "history", "clim")
        assert rc == 0, err
        assert "clim@1.0.0" in out and "clim@2.0.0" in out

        rc, out, err = await cli(settings, "trend", "clim", "--json")
        assert rc == 0, err
        assert json.loads(out)["metric"] == "p50_ms"

        rc, out, err = await cli(settings, "compare", "clim@1.0.0", "clim@2.0.0")
        assert rc == 0, err
        assert "Kruskal-Wallis" in out and "Holm" in out
        assert "medians at least 5% apart" in out  # the practical threshold is stated
        rc, out, err = await cli(settings, "compare", "clim@1.0.0", "clim@2.0.0", "--min-effect", "0.5", "--json")
        assert rc == 0, err
        doc = json.loads(out)
        assert doc["min_effect"] == 0.5 and "statistically_significant" in doc["pairs"][0]

        rc, out, err = await cli(
            settings, "sql", "SELECT version, count(*) AS runs FROM benchmark_runs GROUP BY 1 ORDER BY 1", "--json"
        )
        assert rc == 0, err
        assert json.loads(out)["rows"][0][0] == "1.0.0"
        rc, out, err = await cli(settings, "sql", "SELECT name, batch_size FROM latest_runs ORDER BY batch_size")
        assert rc == 0 and "clim" in out and "row(s)" in out

        rc, out, err = await cli(settings, "sql", "DROP TABLE benchmark_runs")
        assert_one_line_error(rc, err, "only read-only SELECT")
        rc, out, err = await cli(settings, "sql", "SELECT * FROM read_csv('/etc/passwd')")
        assert_one_line_error(rc, err, "not allowed")

        rc, out, err = await cli(settings, "export", "--parquet", str(tmp_path / "out"))
        assert rc == 0, err
        assert pq.read_table(tmp_path / "out" / "benchmark_runs.parquet").num_rows >= 3
        rc, out, err = await cli(settings, "history", "export", "--parquet", str(tmp_path / "out2"), "--json")
        assert rc == 0, err
        assert any(f.endswith("latency_samples.parquet") for f in json.loads(out)["files"])

        rc, out, err = await cli(settings, "bench", "nothere@1.0.0", *QUICK, "--wait")
        assert rc == 1 and "unknown_model" in out
        rc, out, err = await cli(settings, "bench", "clim@1.0.0", "--batch", "x")
        assert rc == 2 and "comma-separated integers" in err


def test_intervals_print_enough_digits_to_differ() -> None:
    from shared.cli.bench import interval

    assert interval(0.005912, 0.005987) == "0.00591-0.00599"
    assert interval(0.0059121, 0.0059123) == "0.0059121-0.0059123"
    assert interval(0.00594, 0.005944) == "0.005940-0.005944"  # the same digits on both ends
    assert interval(1.5, 1.5) == "1.50-1.50"
    assert interval(12.34, 56.78) == "12.3-56.8"
