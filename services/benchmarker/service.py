"""Benchmarker wiring: which consumer and endpoint runs what, start and stop, and the one edge
where an error becomes ``model.benchmark_failed``.

- measuring.py: ``model.registered.*`` / ``model.benchmark`` -> measurements, verdicts, facts
- ingestion.py: conversions, validations and every alert -> history rows
- telemetry.py: production latencies -> history -> anomaly monitor -> anomaly alerts
- queries.py: the read-only endpoints (SQL, history, trend, compare, export)
- retention.py: retention settings applied hourly; a deleted version's rows purged on request
- writer.py: the one writer thread over the DuckDB history, readers on their own connections
"""

from __future__ import annotations

from services.benchmarker import SERVICE
from services.benchmarker.failures import failure_event
from services.benchmarker.ingestion import Ingestion
from services.benchmarker.measuring import Measuring, Request
from services.benchmarker.queries import Queries
from services.benchmarker.retention import Retention, policy_from
from services.benchmarker.rows import AlertRow
from services.benchmarker.sources import RegisteredSources
from services.benchmarker.telemetry import Telemetry
from services.benchmarker.writer import HistoryWriter
from shared.bus import Bus
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.benchmark import BenchmarkModel, InferenceTelemetry
from shared.contracts.conversion import ConversionFailed, ConversionSkipped, ModelConverted
from shared.contracts.registry import ModelDeleted, ModelRecord, ModelRegistered
from shared.contracts.validation import ModelValidated, ValidationErrored
from shared.endpoints import Endpoint
from shared.errors import InferlabError, ServiceUnavailable
from shared.log import get_logger
from shared.sdk import Client
from shared.worker import Delivery, Route, Worker

__all__ = ["SERVICE", "AlertRow", "BenchmarkerService"]


class BenchmarkerService:
    name = SERVICE
    description = "inferlab benchmarker: measurements, DuckDB history, regressions, production anomalies, SQL"

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self.bus = bus
        self.settings = settings
        self.scratch = settings.home_path / "scratch" / SERVICE
        self.registry = Client(bus)
        self.log = get_logger()
        self.writer = HistoryWriter()
        self.measuring = Measuring(bus, settings, self.writer, self.registry)
        self.ingestion = Ingestion(self.writer)
        self.telemetry = Telemetry(bus, settings, self.writer, RegisteredSources(self.registry))
        self.queries = Queries(bus, settings, self.writer, self.registry, self.scratch)
        self.retention = Retention(self.writer, policy_from(settings))
        self.workers: list[Worker] = []

    async def start(self) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        path = self.settings.effective_history_path
        db = await self.writer.open(path)
        monitored = await self.telemetry.start()
        self.log.info("history_opened", path=str(path), schema_version=db.schema_version, monitored=monitored)
        self.retention.start()
        self.workers = [
            self._worker(
                "MODELS",
                "benchmarker",
                [
                    Route("model.registered.*", ModelRegistered, self.on_registered),
                    Route(subjects.BENCHMARK, BenchmarkModel, self.on_benchmark),
                ],
                concurrency=1,  # one benchmark at a time: clean numbers
            ),
            self._worker(
                "MODELS",
                "benchmarker-history",
                [
                    Route("model.converted.*", ModelConverted, self.ingestion.on_converted),
                    Route("model.conversion_failed.*", ConversionFailed, self.ingestion.on_conversion_failed),
                    Route("model.conversion_skipped.*", ConversionSkipped, self.ingestion.on_conversion_skipped),
                    Route("model.validated.*", ModelValidated, self.ingestion.on_validated),
                    Route("model.validation_failed.*", ValidationErrored, self.ingestion.on_validation_errored),
                    Route("model.deleted.*", ModelDeleted, self.retention.on_deleted),
                ],
                concurrency=4,
            ),
            self._worker(
                "ALERTS",
                "benchmarker-alerts",
                # AlertRow reads any alert leniently: not a tagged Message (rows.AlertRow).
                [Route("alerts.>", AlertRow, self.ingestion.on_alert)],  # type: ignore[arg-type]
                concurrency=8,
            ),
            self._worker(
                "TELEMETRY",
                "benchmarker-telemetry",
                [Route("telemetry.inference.*", InferenceTelemetry, self.telemetry.on_telemetry)],
                concurrency=256,  # in-flight messages are written together (telemetry.py)
            ),
        ]

    def _worker(self, stream: str, durable: str, routes: list[Route], *, concurrency: int) -> Worker:
        return Worker(self.bus, service=SERVICE, stream=stream, durable=durable, routes=routes, concurrency=concurrency)

    async def stop(self) -> None:
        await self.retention.stop()
        await self.telemetry.stop()
        await self.writer.close()

    def endpoints(self) -> list[Endpoint]:
        return self.queries.endpoints()

    # --- the measuring consumer and its failure edge ----------------------------------------

    async def on_registered(self, delivery: Delivery[ModelRegistered]) -> None:
        if not self.settings.bench_auto:
            return
        event = delivery.message
        await self._benchmark(event, event.record)

    async def on_benchmark(self, delivery: Delivery[BenchmarkModel]) -> None:
        await self._benchmark(delivery.message, None)

    async def _benchmark(self, request: Request, record: ModelRecord | None) -> None:
        """Measure what ``request`` asks for; the one place where an error becomes the failure
        event. ServiceUnavailable (the registry, NATS or the object store down) is not the
        model's fault: it propagates and the message is retried later."""
        try:
            if record is None:
                assert isinstance(request, BenchmarkModel)
                record = await self.measuring.record_of(request)
            config = request.config if isinstance(request, BenchmarkModel) else None
            await self.measuring.benchmark(record, config or self.measuring.default_config(), request)
        except ServiceUnavailable:
            raise
        except InferlabError as exc:
            await self.measuring.report_failure(failure_event(request, exc, record), request)
