"""The DuckDB performance history: a public, documented schema (docs/history.md) with a
``schema_version`` table and forward migrations.

The benchmarker is the one process that opens the file, read-write; everything else reaches it
through the benchmarker (read-only SQL, Parquet export). The database instance is opened with
``enable_external_access = false`` and ``lock_configuration = true`` from the start, so even the
read-only SQL connections that share it cannot read files, attach databases or change settings;
the writer needs neither: it loads samples by registering Arrow tables and exports Parquet with
pyarrow.

All methods are synchronous and expect to be called from one thread at a time per ``History``
(service.py runs them on a single writer thread). Raw samples are written in bulk through Arrow,
never row by row; event rows (alerts, conversions, ...) are single facts and use ``INSERT ... ON
CONFLICT DO NOTHING`` on their event id, so a redelivered event never duplicates a row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import numpy as np
import pyarrow as pa

from services.benchmarker.rows import AlertEntry, EventRow, RunRow, from_columns
from shared.contracts.identity import version_key

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


_V1 = (
    """
    CREATE TABLE IF NOT EXISTS benchmark_runs (
        run_id VARCHAR PRIMARY KEY,
        event_id VARCHAR,
        source_event_id VARCHAR,
        correlation_id VARCHAR,
        name VARCHAR NOT NULL,
        version VARCHAR NOT NULL,
        variant VARCHAR NOT NULL,
        ref VARCHAR NOT NULL,
        sha256 VARCHAR,
        format VARCHAR,
        size_bytes BIGINT,
        config_key VARCHAR NOT NULL,
        requested_provider VARCHAR,
        provider VARCHAR,
        batch_size INTEGER,
        intra_op_threads INTEGER,
        concurrency INTEGER,
        input_shapes VARCHAR,
        input_source VARCHAR,
        warmup_s DOUBLE,
        window_s DOUBLE,
        min_duration_s DOUBLE,
        max_duration_s DOUBLE,
        stability_threshold DOUBLE,
        seed BIGINT,
        hardware_id VARCHAR NOT NULL,
        cpu_model VARCHAR,
        cpu_cores INTEGER,
        ort_version VARCHAR,
        gpu_name VARCHAR,
        gpu_driver VARCHAR,
        hostname VARCHAR,
        started_at TIMESTAMP NOT NULL,
        finished_at TIMESTAMP,
        duration_s DOUBLE,
        windows INTEGER,
        stable BOOLEAN,
        accepted BOOLEAN,
        samples BIGINT,
        p50_ms DOUBLE,
        p90_ms DOUBLE,
        p95_ms DOUBLE,
        p99_ms DOUBLE,
        mean_ms DOUBLE,
        std_ms DOUBLE,
        cv DOUBLE,
        min_ms DOUBLE,
        max_ms DOUBLE,
        p50_ci_low_ms DOUBLE,
        p50_ci_high_ms DOUBLE,
        p99_ci_low_ms DOUBLE,
        p99_ci_high_ms DOUBLE,
        outliers BIGINT,
        throughput_ips DOUBLE,
        load_time_s DOUBLE,
        peak_memory_bytes BIGINT,
        peak_rss_bytes BIGINT,
        status VARCHAR,
        baseline_run_id VARCHAR,
        p_value DOUBLE,
        median_ratio DOUBLE,
        p_threshold DOUBLE,
        effect_threshold DOUBLE,
        verdict_message VARCHAR,
        notes VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS latency_samples (
        run_id VARCHAR NOT NULL,
        seq INTEGER NOT NULL,
        window_index SMALLINT,
        thread_index SMALLINT,
        offset_ns BIGINT,
        latency_ns BIGINT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS telemetry_batches (
        batch_id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL,
        version VARCHAR,
        variant VARCHAR,
        host VARCHAR,
        samples INTEGER,
        first_ts TIMESTAMP,
        last_ts TIMESTAMP,
        received_at TIMESTAMP
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS production_samples (
        batch_id VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        version VARCHAR,
        variant VARCHAR,
        host VARCHAR,
        ts TIMESTAMP NOT NULL,
        latency_ms DOUBLE NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS alerts (
        event_id VARCHAR PRIMARY KEY,
        subject VARCHAR,
        type VARCHAR,
        severity VARCHAR,
        name VARCHAR,
        ref VARCHAR,
        summary VARCHAR,
        state VARCHAR,
        incident_id VARCHAR,
        host VARCHAR,
        occurred_at TIMESTAMP,
        received_at TIMESTAMP,
        correlation_id VARCHAR,
        payload VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS conversions (
        event_id VARCHAR PRIMARY KEY,
        type VARCHAR,
        name VARCHAR,
        version VARCHAR,
        source_variant VARCHAR,
        profile VARCHAR,
        variant VARCHAR,
        ref VARCHAR,
        reason VARCHAR,
        message VARCHAR,
        size_before_bytes BIGINT,
        size_after_bytes BIGINT,
        duration_s DOUBLE,
        parity_passed BOOLEAN,
        occurred_at TIMESTAMP,
        correlation_id VARCHAR,
        payload VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS validations (
        event_id VARCHAR PRIMARY KEY,
        type VARCHAR,
        name VARCHAR,
        version VARCHAR,
        variant VARCHAR,
        ref VARCHAR,
        ready BOOLEAN,
        accuracy DOUBLE,
        samples BIGINT,
        dataset_uri VARCHAR,
        failed_criteria VARCHAR[],
        reason VARCHAR,
        message VARCHAR,
        duration_s DOUBLE,
        occurred_at TIMESTAMP,
        correlation_id VARCHAR,
        payload VARCHAR
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS benchmark_failures (
        event_id VARCHAR PRIMARY KEY,
        name VARCHAR,
        version VARCHAR,
        variant VARCHAR,
        ref VARCHAR,
        reason VARCHAR,
        message VARCHAR,
        occurred_at TIMESTAMP,
        correlation_id VARCHAR
    )
    """,
    """
    CREATE OR REPLACE VIEW latest_runs AS
    SELECT * FROM benchmark_runs
    QUALIFY row_number() OVER (
        PARTITION BY name, variant, config_key, hardware_id ORDER BY started_at DESC, run_id DESC
    ) = 1
    """,
    """
    CREATE OR REPLACE VIEW daily_trend AS
    SELECT
        CAST(date_trunc('day', started_at) AS DATE) AS day,
        name,
        variant,
        config_key,
        hardware_id,
        count(*) AS runs,
        list(DISTINCT version ORDER BY version) AS versions,
        median(p50_ms) AS p50_ms,
        median(p99_ms) AS p99_ms,
        min(p50_ms) AS best_p50_ms,
        max(p99_ms) AS worst_p99_ms,
        median(throughput_ips) AS throughput_ips,
        count(*) FILTER (WHERE status = 'regression') AS regressions,
        count(*) FILTER (WHERE NOT stable) AS unstable_runs
    FROM benchmark_runs
    GROUP BY ALL
    """,
)

MIGRATIONS: tuple[Migration, ...] = (Migration(1, "initial public schema", _V1),)

TABLES = (
    "benchmark_runs",
    "latency_samples",
    "production_samples",
    "telemetry_batches",
    "alerts",
    "conversions",
    "validations",
    "benchmark_failures",
)
VIEWS = ("latest_runs", "daily_trend")


def instance_config(memory_limit: str | None = None, threads: int | None = None) -> dict[str, Any]:
    """The settings every connection to the history inherits, locked for the instance's
    lifetime: nothing that runs on it can reach the file system or network, load extensions,
    or change a setting."""
    config: dict[str, Any] = {
        "enable_external_access": False,
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "lock_configuration": True,
    }
    if memory_limit:
        config["memory_limit"] = memory_limit
    if threads:
        config["threads"] = threads
    return config


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "version INTEGER PRIMARY KEY, applied_at TIMESTAMP NOT NULL, description VARCHAR)"
    )
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def migrate(con: duckdb.DuckDBPyConnection, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply the migrations newer than the file's version, each in its own transaction; returns
    the versions applied. A file newer than this code is refused rather than misread."""
    have = current_version(con)
    newest = max((m.version for m in migrations), default=0)
    if have > newest:
        raise RuntimeError(
            f"the history file has schema version {have}, newer than this benchmarker understands ({newest}); "
            "upgrade inferlab"
        )
    applied = []
    for migration in sorted(migrations, key=lambda m: m.version):
        if migration.version <= have:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in migration.statements:
                con.execute(statement)
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)", [migration.version, _utc_naive(), migration.description]
            )
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        applied.append(migration.version)
    return applied


def _utc_naive(dt: datetime | None = None) -> datetime:
    """Timestamps are stored as UTC without a zone (DuckDB ``TIMESTAMP``), which needs no ICU
    extension in users' queries."""
    dt = dt or datetime.now(UTC)
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt


RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "event_id",
    "source_event_id",
    "correlation_id",
    "name",
    "version",
    "variant",
    "ref",
    "sha256",
    "format",
    "size_bytes",
    "config_key",
    "requested_provider",
    "provider",
    "batch_size",
    "intra_op_threads",
    "concurrency",
    "input_shapes",
    "input_source",
    "warmup_s",
    "window_s",
    "min_duration_s",
    "max_duration_s",
    "stability_threshold",
    "seed",
    "hardware_id",
    "cpu_model",
    "cpu_cores",
    "ort_version",
    "gpu_name",
    "gpu_driver",
    "hostname",
    "started_at",
    "finished_at",
    "duration_s",
    "windows",
    "stable",
    "accepted",
    "samples",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "std_ms",
    "cv",
    "min_ms",
    "max_ms",
    "p50_ci_low_ms",
    "p50_ci_high_ms",
    "p99_ci_low_ms",
    "p99_ci_high_ms",
    "outliers",
    "throughput_ips",
    "load_time_s",
    "peak_memory_bytes",
    "peak_rss_bytes",
    "status",
    "baseline_run_id",
    "p_value",
    "median_ratio",
    "p_threshold",
    "effect_threshold",
    "verdict_message",
    "notes",
)


@dataclass
class SampleBatch:
    """Raw samples of one run, as the protocol recorded them."""

    latency_ns: np.ndarray
    offset_ns: np.ndarray | None = None
    window: np.ndarray | None = None
    thread: np.ndarray | None = None


@dataclass
class ProductionBatch:
    batch_id: str
    name: str
    version: str
    variant: str
    host: str
    timestamps: np.ndarray  # float64 Unix seconds
    latencies_ms: np.ndarray  # float64


class History:
    """One DuckDB database file (or ``:memory:``)."""

    def __init__(self, path: Path | str, *, memory_limit: str | None = None, threads: int | None = None) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(self.path, config=instance_config(memory_limit, threads))
        self.applied = migrate(self.con)

    def close(self) -> None:
        try:
            self.con.execute("CHECKPOINT")
        finally:
            self.con.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new connection to the same database instance (for readers on other threads)."""
        return self.con.cursor()

    def reader(self) -> History:
        """This history's query methods on a connection of their own, for use on another
        thread (each DuckDB connection is single-threaded; the instance is shared). Close it
        with ``reader.con.close()``."""
        view = History.__new__(History)
        view.path = self.path
        view.con = self.con.cursor()
        view.applied = []
        return view

    @property
    def schema_version(self) -> int:
        return current_version(self.con)

    # --- benchmark runs -------------------------------------------------------------------

    def insert_run(self, row: RunRow, samples: SampleBatch) -> bool:
        """Store one run and its raw samples in one transaction. Returns False (and writes
        nothing) when the run id is already stored: redelivered work is not duplicated."""
        values = [_sql_value(getattr(row, col)) for col in RUN_COLUMNS]
        n = int(samples.latency_ns.size)
        table = pa.table(
            {
                "seq": pa.array(np.arange(n, dtype=np.int32)),
                "window_index": pa.array(_or_zeros(samples.window, n, np.int16)),
                "thread_index": pa.array(_or_zeros(samples.thread, n, np.int16)),
                "offset_ns": pa.array(_or_zeros(samples.offset_ns, n, np.int64)),
                "latency_ns": pa.array(np.ascontiguousarray(samples.latency_ns, dtype=np.int64)),
            }
        )
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            if con.execute("SELECT 1 FROM benchmark_runs WHERE run_id = ?", [row.run_id]).fetchone():
                con.execute("ROLLBACK")
                return False
            placeholders = ", ".join("?" for _ in RUN_COLUMNS)
            con.execute(f"INSERT INTO benchmark_runs ({', '.join(RUN_COLUMNS)}) VALUES ({placeholders})", values)
            self._append_samples(row.run_id, table)
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        return True

    def _append_samples(self, run_id: str, table: pa.Table) -> None:
        self.con.register("_incoming_samples", table)
        try:
            self.con.execute(
                "INSERT INTO latency_samples"
                " SELECT ?, seq, window_index, thread_index, offset_ns, latency_ns FROM _incoming_samples",
                [run_id],
            )
        finally:
            self.con.unregister("_incoming_samples")

    def run(self, run_id: str) -> RunRow | None:
        return self._one_run("SELECT * FROM benchmark_runs WHERE run_id = ?", [run_id])

    def samples(self, run_id: str) -> np.ndarray:
        result = self.con.execute("SELECT latency_ns FROM latency_samples WHERE run_id = ?", [run_id]).fetchnumpy()
        return np.asarray(result["latency_ns"], dtype=np.int64)

    def find_baseline(
        self, *, name: str, version: str, variant: str, config_key: str, hardware_id: str, exclude_run_id: str = ""
    ) -> RunRow | None:
        """The latest accepted run of the same name, version, variant and configuration on the
        same hardware; else the latest accepted run of the newest earlier version."""
        where = (
            "name = ? AND variant = ? AND config_key = ? AND hardware_id = ? AND accepted AND run_id <> ?"
            " AND version = ?"
        )
        params = [name, variant, config_key, hardware_id, exclude_run_id]
        same = self._one_run(
            f"SELECT * FROM benchmark_runs WHERE {where} ORDER BY started_at DESC, run_id DESC LIMIT 1",
            [*params, version],
        )
        if same is not None:
            return same
        versions = [
            r[0]
            for r in self.con.execute(
                "SELECT DISTINCT version FROM benchmark_runs WHERE name = ? AND variant = ? AND config_key = ?"
                " AND hardware_id = ? AND accepted AND run_id <> ?",
                params,
            ).fetchall()
        ]
        try:
            mine = version_key(version)
            earlier = [v for v in versions if version_key(v) < mine]
        except ValueError:
            earlier = []
        if not earlier:
            return None
        previous = max(earlier, key=version_key)
        return self._one_run(
            f"SELECT * FROM benchmark_runs WHERE {where} ORDER BY started_at DESC, run_id DESC LIMIT 1",
            [*params, previous],
        )

    def runs(
        self,
        *,
        name: str,
        version: str | None = None,
        variant: str | None = None,
        config_key: str | None = None,
        hardware_id: str | None = None,
        limit: int = 1000,
        accepted_only: bool = False,
    ) -> list[RunRow]:
        """Runs of a model, newest first."""
        clauses, params = ["name = ?"], [name]
        for column, value in (
            ("version", version),
            ("variant", variant),
            ("config_key", config_key),
            ("hardware_id", hardware_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if accepted_only:
            clauses.append("accepted")
        rows = self._all(
            f"SELECT * FROM benchmark_runs WHERE {' AND '.join(clauses)} ORDER BY started_at DESC, run_id DESC LIMIT ?",
            [*params, limit],
        )
        return [from_columns(RunRow, r) for r in rows]

    def latest_accuracy(self, name: str, version: str, variant: str) -> float | None:
        row = self.con.execute(
            "SELECT accuracy FROM validations WHERE name = ? AND version = ? AND variant = ? AND type = 'validated'"
            " AND accuracy IS NOT NULL ORDER BY occurred_at DESC LIMIT 1",
            [name, version, variant],
        ).fetchone()
        return None if row is None else float(row[0])

    # --- events from other services --------------------------------------------------------

    def insert_event_row(self, table: str, row: EventRow) -> bool:
        """Insert one fact keyed by its event id; False when it was already stored."""
        if table not in ("alerts", "conversions", "validations", "benchmark_failures"):
            raise ValueError(f"not an event table: {table}")
        values = msgspec.structs.asdict(row)
        columns = list(values)
        placeholders = ", ".join("?" for _ in columns)
        before = self._count_key(table, row.event_id)
        if before:
            return False
        self.con.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) ON CONFLICT DO NOTHING",
            [_sql_value(values[c]) for c in columns],
        )
        return True

    def _count_key(self, table: str, event_id: str) -> int:
        row = self.con.execute(f"SELECT count(*) FROM {table} WHERE event_id = ?", [event_id]).fetchone()
        return int(row[0]) if row else 0

    # --- production telemetry ------------------------------------------------------------------

    def insert_production(self, batches: Iterable[ProductionBatch]) -> list[ProductionBatch]:
        """Store telemetry batches in one transaction, skipping batch ids already stored (a
        redelivered message); returns the batches that were new."""
        incoming = {b.batch_id: b for b in batches}
        if not incoming:
            return []
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            ids = pa.table({"batch_id": pa.array(list(incoming), pa.string())})
            con.register("_incoming_ids", ids)
            try:
                seen = {
                    r[0]
                    for r in con.execute(
                        "SELECT b.batch_id FROM telemetry_batches b JOIN _incoming_ids i USING (batch_id)"
                    ).fetchall()
                }
            finally:
                con.unregister("_incoming_ids")
            fresh = [b for b in incoming.values() if b.batch_id not in seen]
            if fresh:
                now = _utc_naive()
                meta = pa.table(
                    {
                        "batch_id": [b.batch_id for b in fresh],
                        "name": [b.name for b in fresh],
                        "version": [b.version for b in fresh],
                        "variant": [b.variant for b in fresh],
                        "host": [b.host for b in fresh],
                        "samples": pa.array([int(b.latencies_ms.size) for b in fresh], pa.int32()),
                        "first_ts": pa.array([_ts_us(b.timestamps.min()) for b in fresh], pa.timestamp("us")),
                        "last_ts": pa.array([_ts_us(b.timestamps.max()) for b in fresh], pa.timestamp("us")),
                        "received_at": pa.array([now] * len(fresh), pa.timestamp("us")),
                    }
                )
                counts = np.array([b.latencies_ms.size for b in fresh])
                index = np.repeat(np.arange(len(fresh), dtype=np.int32), counts)

                def categorical(values: list[str]) -> pa.DictionaryArray:
                    return pa.DictionaryArray.from_arrays(pa.array(index), pa.array(values, pa.string()))

                samples = pa.table(
                    {
                        "batch_id": categorical([b.batch_id for b in fresh]),
                        "name": categorical([b.name for b in fresh]),
                        "version": categorical([b.version for b in fresh]),
                        "variant": categorical([b.variant for b in fresh]),
                        "host": categorical([b.host for b in fresh]),
                        "ts": pa.array(
                            (np.concatenate([b.timestamps for b in fresh]) * 1e6).astype("datetime64[us]"),
                            pa.timestamp("us"),
                        ),
                        "latency_ms": pa.array(np.concatenate([b.latencies_ms for b in fresh]).astype(np.float64)),
                    }
                )
                con.register("_incoming_meta", meta)
                con.register("_incoming_prod", samples)
                try:
                    con.execute("INSERT INTO telemetry_batches SELECT * FROM _incoming_meta")
                    con.execute("INSERT INTO production_samples SELECT * FROM _incoming_prod")
                finally:
                    con.unregister("_incoming_meta")
                    con.unregister("_incoming_prod")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        return fresh

    def recent_production(
        self, name: str, version: str, variant: str, host: str, limit: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The newest ``limit`` production samples of one model on one host, oldest first
        (timestamps as Unix seconds, latencies in ms): the monitor's baseline after a restart."""
        rows = self.con.execute(
            "SELECT epoch_us(ts) / 1e6 AS t, latency_ms FROM ("
            " SELECT ts, latency_ms FROM production_samples"
            " WHERE name = ? AND version = ? AND variant = ? AND host = ? ORDER BY ts DESC LIMIT ?"
            ") ORDER BY t",
            [name, version, variant, host, limit],
        ).fetchnumpy()
        return np.asarray(rows["t"], dtype=np.float64), np.asarray(rows["latency_ms"], dtype=np.float64)

    def monitored_keys(self, since_days: float = 3.0) -> list[tuple[str, str, str, str]]:
        cutoff = _utc_naive() - timedelta(days=since_days)
        rows = self.con.execute(
            "SELECT DISTINCT name, version, variant, host FROM telemetry_batches WHERE received_at >= ?", [cutoff]
        ).fetchall()
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def open_incidents(self) -> list[AlertEntry]:
        """Anomaly incidents whose latest alert is ``opened`` (to resume them after a restart)."""
        rows = self._all(
            "SELECT * FROM alerts WHERE type = 'alert.performance.anomaly' "
            "QUALIFY row_number() OVER (PARTITION BY incident_id ORDER BY occurred_at DESC, state DESC) = 1 "
            "AND state = 'opened'",
            [],
        )
        return [from_columns(AlertEntry, r) for r in rows]

    # --- export -------------------------------------------------------------------------------

    def export_parquet(self, table: str, target: Path, *, batch_rows: int = 1 << 20) -> int:
        """Write one table or view to a Parquet file, streamed in record batches; returns rows."""
        import pyarrow.parquet as pq

        if table not in (*TABLES, *VIEWS, "schema_version"):
            raise ValueError(f"unknown table {table}")
        cursor = self.cursor()
        try:
            reader = cursor.sql(f"SELECT * FROM {table}").to_arrow_reader(batch_rows)
            rows = 0
            with pq.ParquetWriter(str(target), reader.schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_batch(batch)
                    rows += batch.num_rows
            return rows
        finally:
            cursor.close()

    # --- helpers ----------------------------------------------------------------------------------

    def _one_run(self, sql: str, params: list[Any]) -> RunRow | None:
        rows = self._all(sql, params)
        return from_columns(RunRow, rows[0]) if rows else None

    def _all(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        cursor = self.con.execute(sql, params)
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def _or_zeros(values: np.ndarray | None, n: int, dtype: Any) -> np.ndarray:
    if values is None:
        return np.zeros(n, dtype=dtype)
    return np.ascontiguousarray(values, dtype=dtype)


def _ts_us(seconds: float) -> datetime:
    return datetime.fromtimestamp(float(seconds), UTC).replace(tzinfo=None)


def _sql_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _utc_naive(value)
    if isinstance(value, dict | list) and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return json.dumps(value, default=str)
    if isinstance(value, np.generic):
        return value.item()
    return value
