"""Read-only SQL over the history for untrusted users (``inferlab sql``).

Layers, each enough on its own for what it guards:

1. The database instance itself is opened with ``enable_external_access = false`` and
   ``lock_configuration = true`` (history.instance_config): no file, network or extension
   access (``read_csv('/etc/passwd')``, ``COPY``, ``ATTACH``, ``glob``) and no ``SET``/``PRAGMA``
   changes, whatever the statement.
2. Only a single statement whose parsed type (``duckdb.extract_statements``) is SELECT is run;
   DDL, DML, ``COPY``, ``ATTACH``, ``PRAGMA``, ``SET``, ``CALL``, ``EXPLAIN ANALYZE`` and
   multi-statement strings are refused before execution with a message naming what was found.
3. It runs on its own connection inside ``BEGIN TRANSACTION READ ONLY``, rolled back afterwards,
   so a SELECT with side effects (``nextval``) cannot write either.
4. At most ``max_rows`` rows come back (``truncated`` says when there were more), and a query
   running longer than ``timeout_s`` is interrupted.
"""

from __future__ import annotations

import threading
import time
from datetime import date, datetime, timedelta
from datetime import time as dtime
from decimal import Decimal
from typing import Any
from uuid import UUID

import duckdb

from shared.contracts.benchmark import SqlResult
from shared.errors import InferlabError

MAX_SQL_CHARS = 100_000
HARD_MAX_ROWS = 1_000_000


class SqlRefused(InferlabError):
    """The statement is not a single read-only query."""

    code = "sql_refused"


class SqlFailed(InferlabError):
    """The query was allowed but DuckDB could not run it (syntax, unknown column, ...)."""

    code = "sql_error"


class SqlTimeout(InferlabError):
    code = "sql_timeout"


def check_statement(sql: str) -> str:
    """The single SELECT statement in ``sql``, or ``SqlRefused`` saying why not."""
    if len(sql) > MAX_SQL_CHARS:
        raise SqlRefused(f"query is {len(sql)} characters; the limit is {MAX_SQL_CHARS}")
    if not sql.strip():
        raise SqlRefused("empty query")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise SqlFailed(f"SQL syntax error: {_clean(exc)}") from None
    if len(statements) != 1:
        kinds = ", ".join(_kind(s.type) for s in statements) or "none"
        raise SqlRefused(f"exactly one SELECT statement per query is allowed; found {len(statements)} ({kinds})")
    statement = statements[0]
    if statement.type != duckdb.StatementType.SELECT:
        raise SqlRefused(
            f"only read-only SELECT queries are allowed; this is a {_kind(statement.type)} statement. "
            "The history is written by the benchmarker alone; export it with `inferlab export --parquet DIR` "
            "to work on a copy"
        )
    return statement.query


def run_query(cursor: duckdb.DuckDBPyConnection, sql: str, *, max_rows: int, timeout_s: float) -> SqlResult:
    """Run one checked SELECT on ``cursor`` (a connection of its own; closed by the caller)."""
    query = check_statement(sql)
    max_rows = max(0, min(int(max_rows), HARD_MAX_ROWS))
    started = time.perf_counter()
    timed_out = threading.Event()

    def interrupt() -> None:
        timed_out.set()
        cursor.interrupt()

    timer = threading.Timer(max(0.001, timeout_s), interrupt)
    timer.daemon = True
    timer.start()
    try:
        cursor.execute("BEGIN TRANSACTION READ ONLY")
        try:
            result = cursor.execute(query)
            description = result.description or []
            rows = result.fetchmany(max_rows + 1)
        finally:
            try:
                cursor.execute("ROLLBACK")
            except duckdb.Error:
                pass
    except duckdb.Error as exc:
        if timed_out.is_set() or isinstance(exc, duckdb.InterruptException):
            raise SqlTimeout(f"query ran longer than {timeout_s:g}s and was stopped") from None
        if isinstance(exc, duckdb.PermissionException):
            raise SqlRefused(f"not allowed: {_clean(exc)}") from None
        raise SqlFailed(_clean(exc)) from None
    finally:
        timer.cancel()
    truncated = len(rows) > max_rows
    rows = rows[:max_rows]
    return SqlResult(
        columns=[d[0] for d in description],
        types=[str(d[1]) for d in description],
        rows=[[_json_value(v) for v in row] for row in rows],
        truncated=truncated,
        elapsed_s=round(time.perf_counter() - started, 6),
    )


def _json_value(value: Any) -> Any:
    """Values as JSON can carry them (datetimes as ISO-8601 strings, decimals as floats)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return str(value)


def _kind(statement_type: Any) -> str:
    return str(statement_type).rsplit(".", 1)[-1]


def _clean(exc: BaseException) -> str:
    """DuckDB's message on one line, without its source excerpt (``LINE 1: ...`` and carets)."""
    text = str(exc).strip().split("\nLINE ", 1)[0]
    return " ".join(text.split())[:1000]
