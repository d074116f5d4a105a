"""Validator messages: the ``model.validate`` command, requirements, and the report carried by
``model.validated``."""

from __future__ import annotations

from typing import Any

import msgspec

from shared.contracts.base import Command, Event, Message
from shared.contracts.identity import BASE_VARIANT


class Requirement(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``metric op value``, e.g. ``accuracy >= 0.95`` or ``p99_ms <= 5``."""

    metric: str
    op: str
    value: float


class ValidateModel(Command, kw_only=True, tag="model.validate"):
    """``model.validate``: validate ``ref`` on ``dataset_uri`` (else the model's registered
    dataset). ``checks`` limits which checks run (empty: all that the inputs allow)."""

    ref: str
    dataset_uri: str | None = None
    requirements: list[Requirement] = []
    checks: list[str] = []
    options: dict[str, Any] = {}


class CriterionResult(msgspec.Struct, kw_only=True):
    """One readiness criterion: ``passed`` is None when it could not be measured."""

    metric: str
    op: str
    limit: float
    measured: float | None
    passed: bool | None
    message: str = ""
    # where the requirement came from: request, metadata, policy, default-policy or default
    source: str = ""


class CheckOutcome(msgspec.Struct, kw_only=True):
    """One check (structural, parity, metrics, fairness, robustness, ...) with its figures."""

    name: str
    status: str  # "passed", "failed", "skipped", "error"
    summary: str = ""
    figures: dict[str, Any] = {}


class ValidationReport(msgspec.Struct, kw_only=True):
    dataset_uri: str | None = None
    samples: int = 0
    checks: list[CheckOutcome] = []
    criteria: list[CriterionResult] = []
    ready: bool = False
    recommendations: list[str] = []
    duration_s: float = 0.0
    # what was validated and how (added in schema_version 1, with defaults)
    task: str | None = None
    parent_ref: str | None = None
    trigger: str = ""  # "model.validate" or "model.benchmarked"
    dataset_sha256: str | None = None
    seed: int = 0
    # headline figures by metric name (accuracy, macro_f1, map50, p99_ms, ...) and their 95%
    # bootstrap confidence intervals
    metrics: dict[str, float | None] = {}
    intervals: dict[str, list[float]] = {}
    # figures dropped to keep the event under the message size limit
    truncated: list[str] = []


class ModelValidated(Event, kw_only=True, tag="model.validated"):
    """``model.validated.<name>``: the full report and the readiness verdict."""

    name: str
    version: str
    variant: str = BASE_VARIANT
    ref: str
    ready: bool
    accuracy: float | None = None
    report: ValidationReport


class ValidationErrored(Event, kw_only=True, tag="model.validation_failed"):
    """``model.validation_failed.<name>``: validation could not run (unknown dataset, model
    that does not load); distinct from a model that ran and failed its requirements."""

    name: str
    version: str
    variant: str = BASE_VARIANT
    ref: str
    reason: str
    message: str


class ValidationProgress(Message, kw_only=True, tag="model.validation_progress"):
    """Sent only to a waiting client's ``reply_to`` inbox (never to a stream) while the
    validator works: ``stage`` is the check now running, ``step`` of ``steps``."""

    ref: str
    stage: str
    step: int
    steps: int
