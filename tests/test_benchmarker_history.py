"""The DuckDB history: schema and migrations, idempotent bulk writes, baselines, Parquet export,
and the read-only SQL guard against hostile queries."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import msgspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from services.benchmarker import history as h
from services.benchmarker.history import History, Migration, ProductionBatch, SampleBatch
from services.benchmarker.rows import RunRow, ValidationRow
from services.benchmarker.sql import SqlFailed, SqlRefused, SqlTimeout, check_statement, run_query


def _run(
    run_id: str, *, version: str = "1.0.0", hardware: str = "hw1", accepted: bool = True, minutes: int = 0
) -> RunRow:
    return RunRow(
        run_id=run_id,
        name="m",
        version=version,
        variant="base",
        ref=f"m@{version}",
        config_key="CPUExecutionProvider|b1|t1|c1",
        hardware_id=hardware,
        started_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
        accepted=accepted,
        stable=accepted,
        p50_ms=1.0,
        p99_ms=2.0,
        input_shapes={"x": [1, 4]},
        samples=100,
    )


def _samples(n: int = 100, seed: int = 0) -> SampleBatch:
    rng = np.random.default_rng(seed)
    return SampleBatch(latency_ns=rng.integers(900_000, 1_100_000, n))


@pytest.fixture
def hist(tmp_path: Path):
    db = History(tmp_path / "history.duckdb")
    yield db
    db.close()


def test_schema_is_created_at_the_current_version(hist: History) -> None:
    assert hist.schema_version == h.SCHEMA_VERSION
    names = {r[0] for r in hist.con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert set(h.TABLES) | set(h.VIEWS) | {"schema_version"} <= names


def test_run_insert_is_idempotent_and_keeps_every_sample(hist: History) -> None:
    assert hist.insert_run(_run("r1"), _samples(250))
    assert not hist.insert_run(_run("r1"), _samples(250, seed=1))  # redelivered: nothing added
    assert hist.samples("r1").size == 250
    assert hist.con.execute("SELECT count(*) FROM benchmark_runs").fetchone() == (1,)
    stored = hist.con.execute("SELECT input_shapes, started_at FROM benchmark_runs WHERE run_id = 'r1'").fetchone()
    assert stored is not None and stored[0] == '{"x": [1, 4]}'
    assert stored[1] == datetime(2026, 1, 1)  # stored as naive UTC
    run = hist.run("r1")
    assert run is not None and run.input_shapes == {"x": [1, 4]}


def test_baseline_same_version_then_previous_version(hist: History) -> None:
    key = {"name": "m", "variant": "base", "config_key": "CPUExecutionProvider|b1|t1|c1", "hardware_id": "hw1"}
    hist.insert_run(_run("v1a", version="1.0.0", minutes=0), _samples())
    hist.insert_run(_run("v1b", version="1.0.0", minutes=1), _samples())
    hist.insert_run(_run("v1c", version="1.0.0", minutes=2, accepted=False), _samples())
    hist.insert_run(_run("v09", version="0.9.0", minutes=3), _samples())
    hist.insert_run(_run("other-hw", version="1.0.0", minutes=4, hardware="hw2"), _samples())
    # Same version: the latest accepted run on the same hardware.
    assert hist.find_baseline(version="1.0.0", exclude_run_id="new", **key).run_id == "v1b"
    # A new version without runs: the newest earlier version's latest accepted run.
    assert hist.find_baseline(version="1.1.0", exclude_run_id="new", **key).run_id == "v1b"
    assert hist.find_baseline(version="0.9.5", exclude_run_id="new", **key).run_id == "v09"
    assert hist.find_baseline(version="0.1.0", exclude_run_id="new", **key) is None
    assert hist.find_baseline(version="1.0.0", exclude_run_id="new", **{**key, "hardware_id": "hw3"}) is None


def test_history_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "h.duckdb"
    db = History(path)
    db.insert_run(_run("r1"), _samples(10))
    db.close()
    again = History(path)
    try:
        assert again.applied == []  # nothing re-applied
        assert again.samples("r1").size == 10
    finally:
        again.close()


def test_migrations_apply_in_order_and_refuse_newer_files(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "m.duckdb"))
    assert h.migrate(con) == [1]
    v2 = Migration(2, "add a column", ("ALTER TABLE benchmark_runs ADD COLUMN extra VARCHAR",))
    assert h.migrate(con, (*h.MIGRATIONS, v2)) == [2]
    assert h.migrate(con, (*h.MIGRATIONS, v2)) == []
    assert "extra" in [r[0] for r in con.execute("DESCRIBE benchmark_runs").fetchall()]
    with pytest.raises(RuntimeError, match="newer"):
        h.migrate(con)  # the file is at 2; this code knows only 1
    broken = Migration(3, "fails half way", ("CREATE TABLE t3 (a INT)", "NOT SQL"))
    with pytest.raises(duckdb.Error):
        h.migrate(con, (*h.MIGRATIONS, v2, broken))
    assert h.current_version(con) == 2  # the failed migration left nothing behind
    assert "t3" not in {r[0] for r in con.execute("SHOW TABLES").fetchall()}
    con.close()


def test_production_batches_are_deduplicated(hist: History) -> None:
    ts = 1_700_000_000.0 + np.arange(5, dtype=float)
    batch = ProductionBatch("b1", "m", "1.0.0", "base", "host", ts, np.arange(5, dtype=float))
    other = ProductionBatch("b2", "m", "1.0.0", "base", "host", ts + 5, np.arange(5, dtype=float))
    assert [b.batch_id for b in hist.insert_production([batch])] == ["b1"]
    assert [b.batch_id for b in hist.insert_production([batch, other])] == ["b2"]
    assert hist.con.execute("SELECT count(*) FROM production_samples").fetchone() == (10,)
    t, lat = hist.recent_production("m", "1.0.0", "base", "host", 3)
    assert list(lat) == [2.0, 3.0, 4.0] and t[0] == pytest.approx(1_700_000_007.0)
    assert hist.monitored_keys() == [("m", "1.0.0", "base", "host")]


def test_event_rows_are_deduplicated(hist: History) -> None:
    row = ValidationRow(event_id="e1", type="validated", name="m", version="1.0.0", variant="base",
                        accuracy=0.9, failed_criteria=["accuracy"], occurred_at=datetime.now(UTC))  # fmt: skip
    assert hist.insert_event_row("validations", row)
    assert not hist.insert_event_row("validations", row)
    assert hist.latest_accuracy("m", "1.0.0", "base") == pytest.approx(0.9)
    with pytest.raises(ValueError):
        hist.insert_event_row("benchmark_runs", row)


def test_views(hist: History) -> None:
    hist.insert_run(_run("a", minutes=0), _samples())
    hist.insert_run(_run("b", minutes=5), _samples())
    assert hist.con.execute("SELECT run_id FROM latest_runs").fetchall() == [("b",)]
    assert hist.con.execute("SELECT runs, day FROM daily_trend").fetchall()[0][0] == 2


def test_parquet_export_round_trips(hist: History, tmp_path: Path) -> None:
    hist.insert_run(_run("a"), _samples(1000))
    target = tmp_path / "latency_samples.parquet"
    assert hist.export_parquet("latency_samples", target, batch_rows=300) == 1000
    table = pq.read_table(target)
    assert table.num_rows == 1000 and table.column_names[-1] == "latency_ns"
    with pytest.raises(ValueError):
        hist.export_parquet("'; DROP TABLE alerts; --", target)


# --- read-only SQL -------------------------------------------------------------------------------


HOSTILE = [
    ("DROP TABLE benchmark_runs", "DROP"),
    ("INSERT INTO alerts (event_id) VALUES ('x')", "INSERT"),
    ("DELETE FROM benchmark_runs", "DELETE"),
    ("UPDATE benchmark_runs SET p50_ms = 0", "UPDATE"),
    ("CREATE TABLE x AS SELECT 1", "CREATE"),
    ("COPY benchmark_runs TO '/tmp/out.csv'", "COPY"),
    ("ATTACH '/tmp/other.duckdb' AS other", "ATTACH"),
    ("PRAGMA threads=1", "SET"),
    ("PRAGMA database_list", "PRAGMA"),
    ("SET threads = 1", "SET"),
    ("SELECT 1; DROP TABLE benchmark_runs", "exactly one"),
    ("CALL pragma_version()", "CALL"),
    ("INSTALL httpfs", "LOAD"),
    ("EXPLAIN ANALYZE SELECT 1", "EXPLAIN"),
    ("CHECKPOINT", "only read-only"),
    ("EXPORT DATABASE '/tmp/x'", "EXPORT"),
]


@pytest.mark.parametrize(("sql", "word"), HOSTILE)
def test_hostile_statements_are_refused_before_running(hist: History, sql: str, word: str) -> None:
    before = hist.con.execute("SELECT count(*) FROM information_schema.tables").fetchone()
    with pytest.raises(SqlRefused) as info:
        run_query(hist.cursor(), sql, max_rows=10, timeout_s=5)
    assert word.lower() in info.value.message.lower()
    assert hist.con.execute("SELECT count(*) FROM information_schema.tables").fetchone() == before


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM '/etc/passwd.csv'",
        "SELECT * FROM glob('/*')",
        "SELECT * FROM read_parquet('/tmp/*.parquet')",
    ],
)
def test_file_system_functions_are_refused(hist: History, sql: str) -> None:
    with pytest.raises(SqlRefused, match="not allowed"):
        run_query(hist.cursor(), sql, max_rows=10, timeout_s=5)


def test_configuration_cannot_be_changed_even_through_a_select(hist: History) -> None:
    with pytest.raises((SqlRefused, SqlFailed)):
        run_query(hist.cursor(), "SELECT set_config('threads', '1')", max_rows=10, timeout_s=5)
    assert hist.con.execute("SELECT current_setting('enable_external_access')").fetchone() == (False,)


def test_environment_is_not_readable(hist: History) -> None:
    os.environ["INFERLAB_TEST_SECRET"] = "hunter2"
    with pytest.raises(SqlFailed):
        run_query(hist.cursor(), "SELECT getenv('INFERLAB_TEST_SECRET')", max_rows=10, timeout_s=5)


def test_select_works_with_row_limit(hist: History) -> None:
    hist.insert_run(_run("a"), _samples(500))
    result = run_query(
        hist.cursor(), "SELECT seq, latency_ns FROM latency_samples ORDER BY seq", max_rows=7, timeout_s=5
    )
    assert result.columns == ["seq", "latency_ns"] and result.types[0] == "INTEGER"
    assert len(result.rows) == 7 and result.truncated
    full = run_query(hist.cursor(), "SELECT started_at, input_shapes FROM benchmark_runs", max_rows=7, timeout_s=5)
    assert not full.truncated and full.rows == [["2026-01-01T00:00:00", '{"x": [1, 4]}']]
    with_cte = "WITH t AS (SELECT name, max(p99_ms) AS p99 FROM latest_runs GROUP BY name) SELECT * FROM t"
    assert run_query(hist.cursor(), with_cte, max_rows=10, timeout_s=5).rows == [["m", 2.0]]


def test_slow_query_is_interrupted(hist: History) -> None:
    slow = "SELECT count(*) FROM range(1000000000) a, range(1000000000) b WHERE a.range * b.range = 7"
    with pytest.raises(SqlTimeout):
        run_query(hist.cursor(), slow, max_rows=10, timeout_s=0.3)
    assert run_query(hist.cursor(), "SELECT 42", max_rows=1, timeout_s=5).rows == [[42]]


def test_syntax_errors_are_reported() -> None:
    with pytest.raises(SqlFailed, match="syntax"):
        check_statement("SELEC 1")
    with pytest.raises(SqlRefused, match="empty"):
        check_statement("   ")


def test_documented_queries_run_through_the_guard(hist: History) -> None:
    """Every ```sql block of docs/history.md is a valid read-only query on this schema."""
    import re

    from tests.support.services import REPO

    hist.insert_run(msgspec.structs.replace(_run("a"), status="no_baseline", size_bytes=10), _samples())
    hist.insert_run(
        msgspec.structs.replace(_run("b", minutes=10), status="regression", baseline_run_id="a"), _samples()
    )
    text = (REPO / "docs" / "history.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, re.S)
    assert len(blocks) >= 4
    for block in blocks:
        statements = [s.strip() for s in block.split(";") if s.strip()]
        for statement in statements:
            query = "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--"))
            run_query(hist.cursor(), query.replace("'...'", "'a'"), max_rows=100, timeout_s=10)
