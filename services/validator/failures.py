"""The validator's one error edge: an error of the hierarchy becomes the
``model.validation_failed`` event, its ``code`` the event's ``reason``."""

from __future__ import annotations

from services.validator.jobs import Job
from shared.contracts import subjects
from shared.contracts.identity import ModelRef
from shared.contracts.validation import ValidationErrored
from shared.errors import InferlabError, InvalidReference


def failure_event(job: Job, exc: InferlabError) -> ValidationErrored:
    """Validation of ``job`` could not run because of ``exc``."""
    try:
        parsed = ModelRef.parse(job.ref)
        name, version, variant = parsed.name, parsed.version or parsed.alias or "", parsed.variant
    except InvalidReference:
        name, version, variant = subjects.INVALID_NAME_TOKEN, "", "base"
    return ValidationErrored(
        event_id=f"validation-errored-{job.event_id}",
        correlation_id=job.correlation_id,
        name=name,
        version=version,
        variant=variant,
        ref=job.ref,
        reason=exc.code,
        message=exc.message,
    )
