"""SDK methods of the benchmarker (mixed into ``shared.sdk.Client``).

async with await Client.connect() as client:
    result = await client.benchmark("resnet50@1.2.0", BenchmarkConfig(batch_sizes=[1, 8]))
    rows = await client.sql("SELECT name, p99_ms FROM latest_runs")
    await client.export("history-parquet/")
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import msgspec

from shared.clients.host import ClientHost
from shared.contracts import subjects
from shared.contracts.base import new_id
from shared.contracts.benchmark import (
    BENCHMARKER_COMPARE,
    BENCHMARKER_EXPORT,
    BENCHMARKER_HISTORY,
    BENCHMARKER_TREND,
    BenchmarkConfig,
    BenchmarkFailed,
    BenchmarkModel,
    BenchmarkProgress,
    CompareRequest,
    ComparisonReport,
    ExportReply,
    ExportRequest,
    HistoryPoint,
    HistoryReply,
    HistoryRequest,
    ModelBenchmarked,
    SqlQuery,
    SqlResult,
    TrendReport,
    TrendRequest,
)
from shared.contracts.identity import ModelRef
from shared.errors import InferlabError

_FINAL = ("model.benchmarked", "model.benchmark_failed")


class BenchmarkFailedError(InferlabError):
    """The benchmarker could not measure the model; ``code`` is the event's ``reason``."""

    code = "benchmark_failed"

    def __init__(self, event: BenchmarkFailed) -> None:
        super().__init__(event.message, code=event.reason)
        self.event = event


class BenchmarkApi(ClientHost):
    """Methods that talk to the benchmarker."""

    async def benchmark(
        self,
        ref: str,
        config: BenchmarkConfig | None = None,
        *,
        wait: bool = True,
        timeout: float = 900.0,
        on_progress: Callable[[BenchmarkProgress], None] | None = None,
    ) -> ModelBenchmarked | str:
        """Benchmark ``ref`` (``config`` None: the service's default configuration). With
        ``wait`` returns the ``ModelBenchmarked`` result (``on_progress`` hears each finished
        configuration) or raises ``BenchmarkFailedError``; without, returns the command id.
        Benchmarks run one at a time per benchmarker, so ``timeout`` includes queueing."""
        ModelRef.parse(ref)
        command = BenchmarkModel(event_id=new_id(), ref=ref, config=config)
        if not wait:
            return await self.send(subjects.BENCHMARK, command)

        final = await self.send_for_outcome(
            subjects.BENCHMARK,
            command,
            outcomes=_FINAL,
            timeout=timeout,
            progress=BenchmarkProgress,
            on_progress=on_progress,
        )
        if final["type"] == "model.benchmark_failed":
            raise BenchmarkFailedError(msgspec.convert(final, BenchmarkFailed))
        return msgspec.convert(final, ModelBenchmarked)

    async def sql(self, query: str, *, max_rows: int = 10_000, timeout: float = 10.0) -> SqlResult:
        """Run one read-only SELECT over the history (see docs/history.md for the schema)."""
        return await self.bus.request(
            subjects.BENCHMARKER_SQL,
            SqlQuery(sql=query, max_rows=max_rows, timeout_s=timeout),
            SqlResult,
            timeout=timeout + 5.0,
        )

    async def history(self, ref: str, *, config_key: str | None = None, limit: int = 100) -> list[HistoryPoint]:
        """Benchmark runs of ``ref``, newest first (a bare name: every version and variant)."""
        ModelRef.parse(ref)
        reply = await self.bus.request(
            BENCHMARKER_HISTORY, HistoryRequest(ref=ref, config_key=config_key, limit=limit), HistoryReply
        )
        return reply.points

    async def trend(
        self, ref: str, *, metric: str = "p50_ms", config_key: str | None = None, limit: int = 500
    ) -> TrendReport:
        """Theil-Sen slope and change points of ``metric`` over ``ref``'s runs."""
        ModelRef.parse(ref)
        return await self.bus.request(
            BENCHMARKER_TREND,
            TrendRequest(ref=ref, metric=metric, config_key=config_key, limit=limit),
            TrendReport,
            timeout=30.0,
        )

    async def compare(
        self, refs: list[str], *, config_key: str | None = None, alpha: float = 0.05, min_effect: float = 0.05
    ) -> ComparisonReport:
        """Kruskal-Wallis, pairwise Mann-Whitney (Holm), ranking and Pareto front of ``refs``."""
        for ref in refs:
            ModelRef.parse(ref)
        return await self.bus.request(
            BENCHMARKER_COMPARE,
            CompareRequest(refs=refs, config_key=config_key, alpha=alpha, min_effect=min_effect),
            ComparisonReport,
            timeout=60.0,
        )

    async def export(
        self, dest: str | Path, *, tables: list[str] | None = None, progress: Callable[[int], None] | None = None
    ) -> list[Path]:
        """Export the history as Parquet files (one per table and view) into the folder
        ``dest``, plus ``manifest.json``. The benchmarker writes the files into the object store
        and this client downloads them (hash-verified), so it works from any host."""
        from shared.artifacts import ArtifactStore, parse_object_uri

        reply: ExportReply = await self.bus.request(
            BENCHMARKER_EXPORT, ExportRequest(tables=tables or []), ExportReply, timeout=600.0
        )
        folder = Path(dest).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for item in reply.files:
            bucket, name = parse_object_uri(item.uri)
            store = ArtifactStore(self.bus, bucket)
            target = folder / f"{item.table}.parquet"
            await store.get_to_file(name, target, sha256=item.sha256, progress=progress)
            paths.append(target)
            with contextlib.suppress(Exception):  # the export objects are single-use
                await store.delete(name)
        manifest = folder / "manifest.json"
        manifest.write_text(json.dumps(msgspec.to_builtins(reply), indent=2))
        return [*paths, manifest]
