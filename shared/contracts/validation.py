"""Validator messages: the ``model.validate`` command, requirements, and the report carried by
``model.validated``."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from shared.contracts.base import Command, Event, Message
from shared.contracts.identity import BASE_VARIANT
from shared.errors import InferlabError

# The checks a validation may run (``ValidateModel.checks``; empty = all the inputs allow).
CHECKS = ("structural", "parity", "metrics", "fairness", "robustness", "adversarial")

# Metrics a requirement may name: name -> (what it measures, unit, higher is better).
METRICS: dict[str, tuple[str, str, bool]] = {
    "accuracy": ("share of samples classified correctly", "", True),
    "macro_f1": ("mean F1 over classes", "", True),
    "map50": ("detection mAP at IoU 0.5", "", True),
    "map": ("COCO detection mAP over IoU 0.50:0.95", "", True),
    "mae": ("regression mean absolute error", "", False),
    "rmse": ("regression root mean squared error", "", False),
    "r2": ("regression coefficient of determination", "", True),
    "p50_ms": ("benchmarked median latency", "ms", False),
    "p99_ms": ("benchmarked 99th-percentile latency", "ms", False),
    "throughput_ips": ("benchmarked best throughput", "inferences/s", True),
    "memory_mb": ("benchmarked peak memory", "MiB", False),
    "robust_accuracy": ("accuracy under Gaussian noise at the reference strength", "", True),
    "noise_breakpoint": ("noise strength where accuracy first drops by more than max_drop", "x std", True),
    "adversarial_accuracy": ("accuracy under the black-box L-inf attack", "", True),
    "eo_difference": ("equalized-odds difference across groups", "", False),
    "dp_difference": ("demographic-parity difference across groups", "", False),
    "worst_group_accuracy": ("lowest per-group accuracy", "", True),
    "top1_agreement": ("share of samples where the variant predicts the parent's class", "", True),
    "accuracy_drop": ("accuracy lost against the parent", "points", False),
    "mcnemar_p": ("McNemar exact p-value, variant vs parent", "", True),
    "structural": ("structural check passed (1) or not (0)", "", True),
    "parity": ("parity with the parent passed (1) or not (0)", "", True),
    "fairness": ("no significant fairness disparity (1) or a detected one (0)", "", True),
}
METRIC_ALIASES = {
    "p99": "p99_ms",
    "latency_p99_ms": "p99_ms",
    "p99_latency_ms": "p99_ms",
    "p50": "p50_ms",
    "latency_p50_ms": "p50_ms",
    "throughput": "throughput_ips",
    "memory": "memory_mb",
    "peak_memory_mb": "memory_mb",
    "f1": "macro_f1",
    "top1_accuracy": "accuracy",
    "map_50": "map50",
    "map@0.5": "map50",
    "map@[.5:.95]": "map",
    "fairness_gap": "eo_difference",
    "equalized_odds_difference": "eo_difference",
    "demographic_parity_difference": "dp_difference",
    "agreement": "top1_agreement",
    "accuracy_drop_points": "accuracy_drop",
    "robustness": "robust_accuracy",
}
OPS = (">=", "<=", "==", ">", "<")
_TOP_K = re.compile(r"^top(\d+)_accuracy$")
_TEXT = re.compile(
    r"^\s*(?P<metric>[A-Za-z0-9_@.\[\]:]+)\s*(?P<op>>=|<=|==|>|<)\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<unit>%|ms|mb|mib)?\s*$",
    re.IGNORECASE,
)


class RequirementError(InferlabError):
    code = "invalid_requirement"


class Requirement(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``metric op value``, e.g. ``accuracy >= 0.95`` or ``p99_ms <= 5``."""

    metric: str
    op: str
    value: float

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


def canonical_metric(name: str) -> str:
    """The metric's canonical name (aliases such as ``p99`` resolved); raises
    ``RequirementError`` for a name no check measures."""
    key = name.strip().lower()
    key = METRIC_ALIASES.get(key, key)
    if key in METRICS or _TOP_K.match(key):
        return key
    raise RequirementError(
        f"unknown metric {name!r}; known: {', '.join(sorted(METRICS))}, topK_accuracy (e.g. top5_accuracy)"
    )


def parse_requirement(text: str) -> Requirement:
    """``"accuracy>=0.95"`` -> Requirement(metric="accuracy", op=">=", value=0.95); ``95%``
    reads as 0.95; a unit suffix (``ms``, ``mb``) is allowed after the number."""
    match = _TEXT.match(text)
    if not match:
        raise RequirementError(
            f"cannot read requirement {text!r}: write METRIC OP VALUE, e.g. accuracy>=0.95 or p99_ms<=5"
        )
    metric = canonical_metric(match["metric"])
    value = float(match["value"])
    unit = (match["unit"] or "").lower()
    expected = METRICS.get(metric, ("", "", True))[1]
    if unit == "%":
        if expected:
            raise RequirementError(f"{text!r}: {metric} is measured in {expected}, not a percentage")
        value /= 100.0
    elif unit and not (unit == "ms" and expected == "ms") and not (unit in ("mb", "mib") and expected == "MiB"):
        raise RequirementError(f"{text!r}: {metric} is not measured in {unit}")
    return Requirement(metric=metric, op=match["op"], value=value)


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
    # the verdict in words (added later, with a default; readers treat unknown values as not
    # ready): "ready", "not_ready", or "not_validated_for_accuracy" (no dataset, so structure
    # and performance only: never READY unless the validator is told so). "" from older
    # validators: read ``ready``.
    verdict: str = ""


class ModelValidated(Event, kw_only=True, tag="model.validated"):
    """``model.validated.<name>``: the full report and the readiness verdict."""

    name: str
    version: str
    variant: str = BASE_VARIANT
    ref: str
    ready: bool
    accuracy: float | None = None
    report: ValidationReport
    verdict: str = ""  # as ValidationReport.verdict (added later; "" from older validators)

    @property
    def verdict_words(self) -> str:
        """READY / NOT READY / NOT VALIDATED FOR ACCURACY; an unknown future value reads as
        itself (upper case), never as READY."""
        if self.verdict:
            return "READY" if self.verdict == "ready" else self.verdict.replace("_", " ").upper()
        return "READY" if self.ready else "NOT READY"


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
