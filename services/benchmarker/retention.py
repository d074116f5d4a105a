"""How much history the benchmarker keeps: retention by age for runs, facts and production
telemetry, a cap on the raw latency samples kept per run, and a purge of one version's rows
(``model.deleted`` with ``purge_history``). Each function runs on the history-writer thread
(``HistoryWriter.write``) and returns the rows it deleted per table."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import msgspec

from services.benchmarker.history import History
from services.benchmarker.writer import HistoryWriter
from shared.config import Settings
from shared.contracts.registry import ModelDeleted
from shared.log import get_logger
from shared.worker import Delivery

# How often the policy is applied (and once at start): deleting old rows is not urgent, and
# each pass scans the dated columns.
RETENTION_EVERY_S = 3600.0

# Tables of facts stored as they arrived, by the column that dates them.
_FACT_TABLES = (("conversions", "occurred_at"), ("validations", "occurred_at"), ("benchmark_failures", "occurred_at"))
_VERSIONED_TABLES = ("conversions", "validations", "benchmark_failures", "telemetry_batches", "production_samples")


class RetentionPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """0 keeps everything of that kind."""

    history_days: float = 0.0
    telemetry_days: float = 0.0
    samples_per_run: int = 0


def _cutoff(days: float, now: datetime) -> datetime:
    return (now - timedelta(days=days)).astimezone(UTC).replace(tzinfo=None)


def _delete(history: History, sql: str, params: list[object]) -> int:
    row = history.con.execute(sql + " RETURNING 1", params).fetchall()
    return len(row)


def apply_retention(history: History, policy: RetentionPolicy, now: datetime | None = None) -> dict[str, int]:
    """Delete what ``policy`` no longer keeps; one transaction."""
    now = now or datetime.now(UTC)
    deleted: dict[str, int] = {}
    history.con.execute("BEGIN TRANSACTION")
    try:
        if policy.history_days > 0:
            cutoff = _cutoff(policy.history_days, now)
            old_runs = "SELECT run_id FROM benchmark_runs WHERE started_at < ?"
            deleted["latency_samples"] = _delete(
                history, f"DELETE FROM latency_samples WHERE run_id IN ({old_runs})", [cutoff]
            )
            deleted["benchmark_runs"] = _delete(history, "DELETE FROM benchmark_runs WHERE started_at < ?", [cutoff])
            for table, column in (*_FACT_TABLES, ("alerts", "received_at")):
                deleted[table] = _delete(history, f"DELETE FROM {table} WHERE {column} < ?", [cutoff])
        if policy.telemetry_days > 0:
            cutoff = _cutoff(policy.telemetry_days, now)
            deleted["production_samples"] = _delete(history, "DELETE FROM production_samples WHERE ts < ?", [cutoff])
            deleted["telemetry_batches"] = _delete(
                history, "DELETE FROM telemetry_batches WHERE coalesce(last_ts, received_at) < ?", [cutoff]
            )
        if policy.samples_per_run > 0:
            deleted["latency_samples_thinned"] = thin_samples(history, policy.samples_per_run)
        history.con.execute("COMMIT")
    except BaseException:
        history.con.execute("ROLLBACK")
        raise
    return {table: n for table, n in deleted.items() if n}


def thin_samples(history: History, keep: int) -> int:
    """Keep ``keep`` evenly spaced samples (by ``seq``) of every run that has more: the
    distribution's shape survives for comparisons and baselines, the bulk does not."""
    return _delete(
        history,
        """
        DELETE FROM latency_samples USING (
            SELECT run_id, seq FROM (
                SELECT run_id, seq,
                       row_number() OVER (PARTITION BY run_id ORDER BY seq) - 1 AS i,
                       count(*) OVER (PARTITION BY run_id) AS n
                FROM latency_samples
                WHERE run_id IN (SELECT run_id FROM latency_samples GROUP BY run_id HAVING count(*) > ?)
            )
            WHERE (i * ?) // n = ((i - 1) * ?) // n AND i > 0
        ) AS drop_rows
        WHERE latency_samples.run_id = drop_rows.run_id AND latency_samples.seq = drop_rows.seq
        """,
        [keep, keep, keep],
    )


def purge_version(history: History, name: str, version: str) -> dict[str, int]:
    """Every history row of ``name@version`` (all variants), alerts included; one transaction."""
    deleted: dict[str, int] = {}
    history.con.execute("BEGIN TRANSACTION")
    try:
        runs = "SELECT run_id FROM benchmark_runs WHERE name = ? AND version = ?"
        deleted["latency_samples"] = _delete(
            history, f"DELETE FROM latency_samples WHERE run_id IN ({runs})", [name, version]
        )
        deleted["benchmark_runs"] = _delete(
            history, "DELETE FROM benchmark_runs WHERE name = ? AND version = ?", [name, version]
        )
        for table in _VERSIONED_TABLES:
            deleted[table] = _delete(history, f"DELETE FROM {table} WHERE name = ? AND version = ?", [name, version])
        ref = f"{name}@{version}"
        deleted["alerts"] = _delete(
            history, "DELETE FROM alerts WHERE ref = ? OR starts_with(ref, ?)", [ref, ref + "+"]
        )
        history.con.execute("COMMIT")
    except BaseException:
        history.con.execute("ROLLBACK")
        raise
    return {table: n for table, n in deleted.items() if n}


def policy_from(settings: Settings) -> RetentionPolicy:
    return RetentionPolicy(
        history_days=settings.history_retention_days,
        telemetry_days=settings.telemetry_retention_days,
        samples_per_run=settings.history_samples_per_run,
    )


class Retention:
    """Applies the policy at start and then every ``every_s`` seconds, on the writer thread;
    purges a deleted version's rows when its ``model.deleted`` fact asks for it."""

    def __init__(self, writer: HistoryWriter, policy: RetentionPolicy, every_s: float = RETENTION_EVERY_S) -> None:
        self.writer = writer
        self.policy = policy
        self.every_s = every_s
        self.log = get_logger(component="retention")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.policy != RetentionPolicy():
            self._task = asyncio.create_task(self._loop(), name="history-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def apply(self) -> dict[str, int]:
        deleted = await self.writer.write(apply_retention, self.writer.db, self.policy)
        if deleted:
            self.log.info("history_retention", deleted=deleted)
        return deleted

    async def _loop(self) -> None:
        while True:
            try:
                await self.apply()
            except Exception as exc:  # the next pass tries again
                self.log.warning("history_retention_failed", error=str(exc), error_type=type(exc).__name__)
            await asyncio.sleep(self.every_s)

    async def on_deleted(self, delivery: Delivery[ModelDeleted]) -> None:
        fact = delivery.message
        if not fact.purge_history:
            return
        deleted = await self.writer.write(purge_version, self.writer.db, fact.name, fact.version)
        self.log.info("history_purged", ref=f"{fact.name}@{fact.version}", deleted=deleted)
