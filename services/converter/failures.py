"""The converter's failure edge: the one place an error becomes a ``model.conversion_failed``
(or, for a profile with nothing to do or that cannot run here, ``model.conversion_skipped``)
event, plus the alert a failure raises. Pure: the service publishes what these return."""

from __future__ import annotations

from services.converter import keys
from services.converter.errors import ConversionFailure
from services.converter.jobs import Job
from shared.contracts.alerts import ConversionFailedAlert
from shared.contracts.conversion import ConversionFailed, ConversionReport, ConversionSkipped, ConvertModel
from shared.contracts.identity import BASE_VARIANT, ModelRef
from shared.errors import InferlabError, InvalidReference


def failure_event(job: Job, profile: str, exc: InferlabError) -> ConversionFailed | ConversionSkipped:
    """The outcome of ``profile`` on ``job``'s model that ``exc`` ended. Its event id derives
    from the failure's key (a ``ConversionFailure`` names the one it was raised under), so a
    redelivered command's outcome dedupes."""
    key = exc.key if isinstance(exc, ConversionFailure) else ""
    report = exc.report if isinstance(exc, ConversionFailure) else None
    record = job.record
    if isinstance(exc, ConversionFailure) and exc.skipped:
        return ConversionSkipped(
            event_id=keys.event_id("convskip", record.ref, key, profile, exc.code),
            correlation_id=job.correlation_id,
            name=record.name,
            version=record.version,
            source_variant=record.variant,
            profile=profile,
            reason=exc.code,
            message=exc.message,
        )
    return ConversionFailed(
        event_id=keys.event_id("convfail", record.ref, key, exc.code),
        correlation_id=job.correlation_id,
        name=record.name,
        version=record.version,
        source_variant=record.variant,
        profile=profile,
        reason=exc.code,
        message=exc.message,
        report=report,
    )


def request_failure_event(cmd: ConvertModel, profile: str, exc: InferlabError) -> ConversionFailed:
    """The outcome of ``profile`` for a ``model.convert`` whose model never resolved (an
    invalid request, an unknown model): identified by what the command said."""
    try:
        parsed = ModelRef.parse(cmd.ref)
        name, version, variant = parsed.name, parsed.version or parsed.alias or "", parsed.variant
    except InvalidReference:
        name, version, variant = cmd.ref, "", BASE_VARIANT
    return ConversionFailed(
        event_id=keys.event_id("convfail", cmd.event_id, profile),
        correlation_id=cmd.correlation_id,
        name=name,
        version=version,
        source_variant=variant,
        profile=profile,
        reason=exc.code,
        message=exc.message,
    )


def failure_alert(outcome: ConversionFailed, ref: str) -> ConversionFailedAlert:
    """``alerts.conversion.failed`` for a failed conversion of ``ref``."""
    report: ConversionReport | None = outcome.report
    return ConversionFailedAlert(
        event_id=keys.event_id("convalert", outcome.event_id),
        correlation_id=outcome.correlation_id,
        severity="warning",
        name=outcome.name,
        summary=f"{outcome.profile} conversion of {ref} failed ({outcome.reason}): {outcome.message[:300]}",
        ref=ref,
        profile=outcome.profile,
        reason=outcome.reason,
        report=report,
    )
