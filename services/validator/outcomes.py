"""A finished suite's report as the events the validator publishes: ``model.validated`` (trimmed
to the message size limit) and, when a requirement failed or could not be measured,
``alerts.validation.failed``. Event ids derive from the trigger's, so a redelivered trigger
re-publishes duplicates that JetStream drops."""

from __future__ import annotations

from dataclasses import dataclass

from services.validator.jobs import Job
from services.validator.suite import headline_accuracy
from shared.contracts.alerts import ValidationFailedAlert
from shared.contracts.base import encode
from shared.contracts.registry import INPUTS_NEED_SPEC, ModelRecord
from shared.contracts.validation import CriterionResult, ModelValidated, ValidationReport

# Figures dropped, in order, until a report fits the message size limit.
_TRIM_ORDER = (
    ("metrics", "confusion_matrix"),
    ("metrics", "per_class"),
    ("fairness", "per_group"),
    ("metrics", "fold_spread"),
    ("parity", "outputs"),
    ("structural", "outputs"),
    ("robustness", "curve"),
)


@dataclass(frozen=True)
class Outcome:
    validated: ModelValidated
    alert: ValidationFailedAlert | None
    unmet: list[CriterionResult]  # criteria not passed (failed or not measured)


def outcome_events(job: Job, record: ModelRecord, report: ValidationReport, max_bytes: int) -> Outcome:
    """The events for ``report`` on ``record``; ``max_bytes`` bounds the validated event."""
    validated = ModelValidated(
        event_id=f"validated-{job.event_id}",
        correlation_id=job.correlation_id,
        name=record.name,
        version=record.version,
        variant=record.variant,
        ref=record.ref,
        ready=report.ready,
        accuracy=headline_accuracy(report),
        report=report,
        verdict=report.verdict,
    )
    fit_report(validated, max_bytes)
    unmet = [c for c in report.criteria if c.passed is not True]
    # a model nobody has said how to feed is an outcome for its owner, not an alert
    needs_spec = record.input_status == INPUTS_NEED_SPEC and all(c.passed is None for c in unmet)
    if not unmet or needs_spec:
        return Outcome(validated, None, unmet)
    alert = ValidationFailedAlert(
        event_id=f"validation-alert-{job.event_id}",
        correlation_id=job.correlation_id,
        severity="critical" if any(c.metric == "structural" for c in unmet) else "warning",
        name=record.name,
        summary=f"{record.ref} is not ready: " + "; ".join(c.message for c in unmet[:4]),
        ref=record.ref,
        version=record.version,
        variant=record.variant,
        failed=unmet,
        recommendations=report.recommendations,
        validated_event_id=validated.event_id,
    )
    return Outcome(validated, alert, unmet)


def fit_report(event: ModelValidated, max_bytes: int) -> None:
    """Drop the bulkiest figures (listed in ``report.truncated``) until the event fits."""
    report: ValidationReport = event.report
    if len(encode(event)) <= max_bytes:
        return
    by_name = {c.name: c for c in report.checks}
    for check, key in _TRIM_ORDER:
        outcome = by_name.get(check)
        if outcome is not None and key in outcome.figures:
            figures = dict(outcome.figures)
            figures.pop(key)
            outcome.figures = figures
            report.truncated.append(f"{check}.{key}")
            if len(encode(event)) <= max_bytes:
                return
    for outcome in report.checks:  # still too large: keep summaries only
        if outcome.figures:
            outcome.figures = {}
            report.truncated.append(f"{outcome.name}.*")
    report.recommendations = report.recommendations[:20]
