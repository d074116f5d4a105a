"""Facts from the other services (conversions, validations, every alert) -> history rows."""

from __future__ import annotations

from typing import Any

from services.benchmarker import rows
from services.benchmarker.writer import HistoryWriter
from shared.contracts.conversion import ConversionFailed, ConversionSkipped, ModelConverted
from shared.contracts.validation import ModelValidated, ValidationErrored
from shared.worker import Delivery


class Ingestion:
    def __init__(self, writer: HistoryWriter) -> None:
        self.writer = writer

    async def on_converted(self, delivery: Delivery[ModelConverted]) -> None:
        await self.writer.insert("conversions", rows.converted_row(delivery.message, _payload(delivery)))

    async def on_conversion_failed(self, delivery: Delivery[ConversionFailed]) -> None:
        row = rows.conversion_problem_row(delivery.message, "conversion_failed", _payload(delivery))
        await self.writer.insert("conversions", row)

    async def on_conversion_skipped(self, delivery: Delivery[ConversionSkipped]) -> None:
        row = rows.conversion_problem_row(delivery.message, "conversion_skipped", _payload(delivery))
        await self.writer.insert("conversions", row)

    async def on_validated(self, delivery: Delivery[ModelValidated]) -> None:
        await self.writer.insert("validations", rows.validated_row(delivery.message, _payload(delivery)))

    async def on_validation_errored(self, delivery: Delivery[ValidationErrored]) -> None:
        await self.writer.insert("validations", rows.validation_errored_row(delivery.message, _payload(delivery)))

    async def on_alert(self, delivery: Delivery[Any]) -> None:
        # Delivery[Any]: an AlertRow is read leniently, not as a tagged Message (rows.AlertRow).
        alert: rows.AlertRow = delivery.message
        await self.writer.insert("alerts", rows.alert_entry(alert, delivery.subject, _payload(delivery)))


def _payload(delivery: Delivery[Any]) -> str:
    """The fact's JSON as it arrived (stored in the ``payload`` column)."""
    data: bytes = delivery.raw.data
    return data.decode("utf-8", "replace")
