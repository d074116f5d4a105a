"""Typed rows of the history tables (docs/history.md), and how each fact becomes one.

``RunRow`` is a ``benchmark_runs`` row as it travels between analysis, measuring, the history
and the queries; the event rows are what the ingestion consumers store. All of it is pure:
history.py writes and reads these, nothing here touches DuckDB.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec

from shared.contracts.alerts import AnomalyAlert, RegressionAlert
from shared.contracts.base import encode
from shared.contracts.benchmark import BenchmarkFailed
from shared.contracts.conversion import ConversionFailed, ConversionSkipped, ModelConverted
from shared.contracts.validation import ModelValidated, ValidationErrored


class RunRow(msgspec.Struct, kw_only=True):
    """One ``benchmark_runs`` row. The identity and baseline key are required; the rest has
    the neutral value a column holds before it is measured. The verdict fields stay ``None``
    until the regression decision (``analysis.judged``)."""

    run_id: str
    name: str
    version: str
    variant: str
    ref: str
    config_key: str
    hardware_id: str
    started_at: datetime
    event_id: str = ""
    source_event_id: str = ""
    correlation_id: str = ""
    sha256: str = ""
    format: str = ""
    size_bytes: int | None = None
    requested_provider: str = ""
    provider: str = ""
    batch_size: int = 1
    intra_op_threads: int = 0
    concurrency: int = 1
    input_shapes: dict[str, list[int]] = {}
    input_source: str = ""
    warmup_s: float = 0.0
    window_s: float = 0.0
    min_duration_s: float = 0.0
    max_duration_s: float = 0.0
    stability_threshold: float = 0.0
    seed: int = 0
    cpu_model: str = ""
    cpu_cores: int = 0
    ort_version: str = ""
    gpu_name: str | None = None
    gpu_driver: str | None = None
    hostname: str = ""
    finished_at: datetime | None = None
    duration_s: float = 0.0
    windows: int = 0
    stable: bool = False
    accepted: bool = False
    samples: int = 0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    std_ms: float = 0.0
    cv: float = 0.0
    min_ms: float = 0.0
    max_ms: float = 0.0
    p50_ci_low_ms: float = 0.0
    p50_ci_high_ms: float = 0.0
    p99_ci_low_ms: float = 0.0
    p99_ci_high_ms: float = 0.0
    outliers: int = 0
    throughput_ips: float = 0.0
    load_time_s: float = 0.0
    peak_memory_bytes: int = 0
    peak_rss_bytes: int = 0
    status: str | None = None
    baseline_run_id: str | None = None
    p_value: float | None = None
    median_ratio: float | None = None
    p_threshold: float | None = None
    effect_threshold: float | None = None
    verdict_message: str | None = None
    notes: str = ""
    # Not a column: travels in the event only.
    window_medians_ms: list[float] = []


class ConversionRow(msgspec.Struct, kw_only=True):
    event_id: str
    type: str
    name: str
    version: str
    source_variant: str
    profile: str
    occurred_at: datetime
    correlation_id: str
    payload: str
    variant: str | None = None
    ref: str | None = None
    reason: str | None = None
    message: str | None = None
    size_before_bytes: int | None = None
    size_after_bytes: int | None = None
    duration_s: float | None = None
    parity_passed: bool | None = None


class ValidationRow(msgspec.Struct, kw_only=True):
    event_id: str
    type: str
    name: str
    version: str
    variant: str
    occurred_at: datetime
    ref: str | None = None
    correlation_id: str = ""
    payload: str | None = None
    ready: bool | None = None
    accuracy: float | None = None
    samples: int | None = None
    dataset_uri: str | None = None
    failed_criteria: list[str] | None = None
    reason: str | None = None
    message: str | None = None
    duration_s: float | None = None


class AlertRow(msgspec.Struct, kw_only=True):
    """Any alert on ``alerts.>``, read leniently for the ``alerts`` table (its full JSON is
    stored in ``payload``): alert types added later are recorded too. Not a tagged
    ``Message`` for that reason."""

    event_id: str = ""
    correlation_id: str = ""
    type: str = ""
    occurred_at: datetime | None = None
    severity: str = ""
    name: str = ""
    summary: str = ""
    ref: str | None = None
    state: str | None = None
    incident_id: str | None = None
    host: str | None = None


class AlertEntry(msgspec.Struct, kw_only=True):
    """One ``alerts`` row: any alert on ``alerts.>``, its full JSON in ``payload``."""

    event_id: str
    subject: str = ""
    type: str = ""
    severity: str = ""
    name: str = ""
    ref: str | None = None
    summary: str = ""
    state: str | None = None
    incident_id: str | None = None
    host: str | None = None
    occurred_at: datetime | None = None
    received_at: datetime | None = None
    correlation_id: str = ""
    payload: str = ""


class FailureRow(msgspec.Struct, kw_only=True):
    event_id: str
    name: str
    version: str
    variant: str
    ref: str
    reason: str
    message: str
    occurred_at: datetime
    correlation_id: str


EventRow = ConversionRow | ValidationRow | AlertEntry | FailureRow


def from_columns(kind: type[Any], columns: dict[str, Any]) -> Any:
    """A row read from DuckDB as ``kind``: SQL NULLs take the field's default, JSON text
    columns (``input_shapes``) are decoded."""
    values = {k: v for k, v in columns.items() if v is not None}
    shapes = values.get("input_shapes")
    if isinstance(shapes, str):
        values["input_shapes"] = msgspec.json.decode(shapes) if shapes else {}
    return msgspec.convert(values, kind)


# --- facts -> rows --------------------------------------------------------------------------------


def converted_row(event: ModelConverted, payload: str) -> ConversionRow:
    report = event.report
    return ConversionRow(
        event_id=event.event_id,
        type="converted",
        name=event.name,
        version=event.version,
        source_variant=event.source_variant,
        profile=report.profile,
        variant=event.variant,
        ref=event.ref,
        size_before_bytes=report.size_before_bytes,
        size_after_bytes=report.size_after_bytes,
        duration_s=report.duration_s,
        parity_passed=report.parity.passed if report.parity else None,
        occurred_at=event.occurred_at,
        correlation_id=event.correlation_id,
        payload=payload,
    )


def conversion_problem_row(event: ConversionFailed | ConversionSkipped, kind: str, payload: str) -> ConversionRow:
    report = event.report if isinstance(event, ConversionFailed) else None
    return ConversionRow(
        event_id=event.event_id,
        type=kind,
        name=event.name,
        version=event.version,
        source_variant=event.source_variant,
        profile=event.profile,
        reason=event.reason,
        message=event.message,
        size_before_bytes=report.size_before_bytes if report else None,
        size_after_bytes=report.size_after_bytes if report else None,
        duration_s=report.duration_s if report else None,
        parity_passed=report.parity.passed if report and report.parity else None,
        occurred_at=event.occurred_at,
        correlation_id=event.correlation_id,
        payload=payload,
    )


def validated_row(event: ModelValidated, payload: str) -> ValidationRow:
    report = event.report
    return ValidationRow(
        event_id=event.event_id,
        type="validated",
        name=event.name,
        version=event.version,
        variant=event.variant,
        ref=event.ref,
        ready=event.ready,
        accuracy=event.accuracy,
        samples=report.samples,
        dataset_uri=report.dataset_uri,
        failed_criteria=[c.metric for c in report.criteria if c.passed is False],
        duration_s=report.duration_s,
        occurred_at=event.occurred_at,
        correlation_id=event.correlation_id,
        payload=payload,
    )


def validation_errored_row(event: ValidationErrored, payload: str) -> ValidationRow:
    return ValidationRow(
        event_id=event.event_id,
        type="validation_failed",
        name=event.name,
        version=event.version,
        variant=event.variant,
        ref=event.ref,
        reason=event.reason,
        message=event.message,
        occurred_at=event.occurred_at,
        correlation_id=event.correlation_id,
        payload=payload,
    )


def alert_entry(alert: AlertRow, subject: str, payload: str) -> AlertEntry:
    now = datetime.now(UTC)
    return AlertEntry(
        event_id=alert.event_id,
        subject=subject,
        type=alert.type,
        severity=alert.severity,
        name=alert.name,
        ref=alert.ref,
        summary=alert.summary,
        state=alert.state,
        incident_id=alert.incident_id,
        host=alert.host,
        occurred_at=alert.occurred_at or now,
        received_at=now,
        correlation_id=alert.correlation_id,
        payload=payload,
    )


def own_alert_entry(alert: RegressionAlert | AnomalyAlert, subject: str) -> AlertEntry:
    """The ``alerts`` row of an alert this service raised (stored at once; the ALERTS consumer
    adds the same event id a moment later as a no-op)."""
    return AlertEntry(
        event_id=alert.event_id,
        subject=subject,
        type=msgspec.inspect.type_info(type(alert)).tag,  # type: ignore[attr-defined]
        severity=alert.severity,
        name=alert.name,
        ref=alert.ref,
        summary=alert.summary,
        state=alert.state if isinstance(alert, AnomalyAlert) else None,
        incident_id=alert.incident_id if isinstance(alert, AnomalyAlert) else None,
        host=alert.host if isinstance(alert, AnomalyAlert) else None,
        occurred_at=alert.occurred_at,
        received_at=datetime.now(UTC),
        correlation_id=alert.correlation_id,
        payload=encode(alert).decode(),
    )


def failure_row(event: BenchmarkFailed) -> FailureRow:
    return FailureRow(
        event_id=event.event_id,
        name=event.name,
        version=event.version,
        variant=event.variant,
        ref=event.ref,
        reason=event.reason,
        message=event.message,
        occurred_at=event.occurred_at,
        correlation_id=event.correlation_id,
    )
