"""The read-only micro endpoints over the history: SQL, history, trend, compare, export. Each
reads on a connection of its own (writer.py) and leaves the statistics to analysis.py."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from services.benchmarker import analysis
from services.benchmarker.errors import InvalidRequest
from services.benchmarker.history import TABLES, VIEWS, History
from services.benchmarker.rows import RunRow
from services.benchmarker.sql import run_query
from services.benchmarker.writer import HistoryWriter
from shared.artifacts import ArtifactStore
from shared.bus import Bus
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.base import new_id
from shared.contracts.benchmark import (
    BENCHMARKER_COMPARE,
    BENCHMARKER_EXPORT,
    BENCHMARKER_HISTORY,
    BENCHMARKER_TREND,
    CompareRequest,
    ComparisonReport,
    ExportedFile,
    ExportReply,
    ExportRequest,
    HistoryReply,
    HistoryRequest,
    SqlQuery,
    SqlResult,
    TrendReport,
    TrendRequest,
)
from shared.contracts.identity import ModelRef
from shared.endpoints import Endpoint
from shared.errors import NotFound, ServiceUnavailable
from shared.log import get_logger
from shared.sdk import Client

# Latencies per model that a comparison tests (drawn at random beyond this many).
COMPARE_MAX_SAMPLES = 100_000


class Queries:
    def __init__(self, bus: Bus, settings: Settings, writer: HistoryWriter, registry: Client, scratch: Path) -> None:
        self.bus = bus
        self.settings = settings
        self.writer = writer
        self.registry = registry
        self.scratch = scratch
        self.log = get_logger()

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("sql", subjects.BENCHMARKER_SQL, SqlQuery, self.ep_sql, "read-only SQL over the history"),
            Endpoint("history", BENCHMARKER_HISTORY, HistoryRequest, self.ep_history, "benchmark runs of a model"),
            Endpoint("trend", BENCHMARKER_TREND, TrendRequest, self.ep_trend, "Theil-Sen trend and change points"),
            Endpoint("compare", BENCHMARKER_COMPARE, CompareRequest, self.ep_compare, "compare models statistically"),
            Endpoint(
                "export", BENCHMARKER_EXPORT, ExportRequest, self.ep_export, "Parquet export into the object store"
            ),
        ]

    async def ep_sql(self, req: SqlQuery) -> SqlResult:
        max_rows = max(0, min(req.max_rows, self.settings.sql_max_rows))
        timeout = max(0.01, min(req.timeout_s, self.settings.sql_timeout_s))
        return await self.writer.read(lambda h: run_query(h.con, req.sql, max_rows=max_rows, timeout_s=timeout))

    async def _exact(self, text: str) -> tuple[ModelRef, str | None]:
        """A parsed ref with its version resolved through the registry when it names an alias
        (a bare name stays open: all versions)."""
        ref = ModelRef.parse(text)
        if ref.alias is not None:
            resolved = await self.registry.resolve(text)
            return ref, resolved.version
        return ref, ref.version

    async def ep_history(self, req: HistoryRequest) -> HistoryReply:
        ref, version = await self._exact(req.ref)
        explicit_variant = "+" in req.ref
        rows = await self.writer.read(
            lambda h: h.runs(
                name=ref.name,
                version=version,
                variant=ref.variant if explicit_variant else None,
                config_key=req.config_key,
                limit=max(1, min(req.limit, 10_000)),
            )
        )
        return HistoryReply(points=[analysis.history_point(r) for r in rows])

    async def ep_trend(self, req: TrendRequest) -> TrendReport:
        ref, version = await self._exact(req.ref)
        if req.metric not in analysis.TREND_METRICS:
            raise InvalidRequest(f"metric must be one of {', '.join(analysis.TREND_METRICS)}")

        def load(h: History) -> list[RunRow]:
            # The latest run's configuration and hardware unless the request names them.
            latest = h.runs(name=ref.name, version=version, variant=ref.variant, config_key=req.config_key, limit=1)
            if not latest:
                return []
            return h.runs(
                name=ref.name,
                version=version,
                variant=ref.variant,
                config_key=req.config_key or latest[0].config_key,
                hardware_id=req.hardware_id or latest[0].hardware_id,
                limit=max(1, min(req.limit, 10_000)),
            )

        rows = await self.writer.read(load)
        if not rows:
            raise NotFound(f"no benchmark runs of {req.ref} in the history")
        return await asyncio.to_thread(analysis.trend_report, req.ref, req.metric, rows)

    async def ep_compare(self, req: CompareRequest) -> ComparisonReport:
        if not 2 <= len(req.refs) <= 20:
            raise InvalidRequest("compare takes 2 to 20 model references")
        if not 0 <= req.min_effect < 10:
            raise InvalidRequest(f"min_effect is a relative gap such as 0.05 (5%), got {req.min_effect}")
        targets = []
        for text in req.refs:
            ref = ModelRef.parse(text)
            version = ref.version
            if version is None:
                with contextlib.suppress(ServiceUnavailable, NotFound):
                    version = (await self.registry.resolve(text)).version
            targets.append((text, ref, version))

        def load(h: History) -> list[analysis.CompareInput]:
            found = [
                (text, h.runs(name=ref.name, version=version, variant=ref.variant, accepted_only=True, limit=200))
                for text, ref, version in targets
            ]
            rng = np.random.default_rng(0)
            return [
                analysis.CompareInput(
                    ref=row.ref,
                    row=row,
                    samples_ns=analysis.capped(h.samples(row.run_id), COMPARE_MAX_SAMPLES, rng),
                    accuracy=h.latest_accuracy(row.name, row.version, row.variant),
                )
                for row in analysis.comparison_runs(found, req.config_key)
            ]

        inputs = await self.writer.read(load)
        return await asyncio.to_thread(analysis.comparison_report, inputs, alpha=req.alpha, min_effect=req.min_effect)

    async def ep_export(self, req: ExportRequest) -> ExportReply:
        allowed = (*TABLES, *VIEWS, "schema_version")
        tables = list(dict.fromkeys(req.tables)) or list(allowed)
        unknown = [table for table in tables if table not in allowed]
        if unknown:
            raise InvalidRequest(f"unknown tables {unknown}; choose from {', '.join(allowed)}")
        export_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ-") + new_id()[:8]
        folder = self.scratch / "exports" / export_id
        folder.mkdir(parents=True, exist_ok=True)
        store = ArtifactStore(self.bus)
        await store.ensure()
        files = []
        try:
            for table in tables:
                path = folder / f"{table}.parquet"
                rows = await self.writer.read(functools.partial(History.export_parquet, table=table, target=path))
                stored = await store.put_file(path, f"exports/{export_id}/{table}.parquet")
                files.append(
                    ExportedFile(table=table, uri=stored.uri, sha256=stored.sha256, size_bytes=stored.size, rows=rows)
                )
        finally:
            await asyncio.to_thread(shutil.rmtree, folder, True)
        self.log.info("exported", export_id=export_id, tables=len(files))
        schema_version = await self.writer.write(lambda: self.writer.db.schema_version)
        return ExportReply(export_id=export_id, schema_version=schema_version, files=files)
