"""Fold the platform's events about the corpus models into one outcome per model: registration,
each conversion profile, each variant's benchmark and validation. Pure: messages in, state out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corpus.speed import SpeedCheck
from shared.contracts.benchmark import BenchmarkFailed, ModelBenchmarked
from shared.contracts.conversion import ConversionFailed, ConversionReport, ConversionSkipped, ModelConverted
from shared.contracts.identity import BASE_VARIANT
from shared.contracts.registry import ModelRegistered, ModelRejected
from shared.contracts.validation import ModelValidated, ValidationErrored
from shared.demo import default_config

# How a profile's outcome is counted in the totals.
CONVERTED = "converted"
NOT_APPLICABLE = "not applicable"
PARITY_LOSS = "parity loss"
INPUTS = "input synthesis"
TOOL = "tool failure"


@dataclass
class Conversion:
    status: str
    reason: str = ""
    message: str = ""
    parity: str = ""
    size_before: int = 0
    size_after: int = 0


@dataclass
class Variant:
    variant: str
    size_bytes: int = 0
    p50_ms: float | None = None
    benchmark_error: str = ""
    benchmarked: bool = False
    validated: bool = False
    ready: bool | None = None
    failed_criteria: list[str] = field(default_factory=list)
    validation_error: str = ""
    accuracy: float | None = None
    # measured against the base back to back once the chain has settled (corpus/speed.py)
    speed: list[SpeedCheck] = field(default_factory=list)
    speed_error: str = ""


@dataclass
class Outcome:
    name: str
    registered: bool = False
    rejected: str = ""
    warnings: list[str] = field(default_factory=list)
    conversions: dict[str, Conversion] = field(default_factory=dict)
    variants: dict[str, Variant] = field(default_factory=dict)

    def variant(self, variant: str) -> Variant:
        return self.variants.setdefault(variant, Variant(variant))


def parity_summary(report: ConversionReport | None) -> str:
    if report is None or report.parity is None:
        return ""
    p = report.parity
    compared = [o for o in p.outputs if o.compared]
    parts = [f"{p.samples} {p.input_source}"]
    cos = [o.cosine_similarity for o in compared if o.cosine_similarity is not None]
    if cos:
        parts.append(f"cos {min(cos):.5f}")
    abs_err = [o.max_abs_error for o in compared if o.max_abs_error is not None]
    if abs_err:
        parts.append(f"max abs {max(abs_err):.2g}")
    top1 = [o.top1_agreement for o in compared if o.top1_agreement is not None]
    if top1:
        parts.append(f"top-1 {min(top1):.3f}")
    return ", ".join(parts)


def classify_failure(reason: str, message: str) -> str:
    if reason == "parity_failed":
        return PARITY_LOSS
    # the source itself does not run on the inputs the converter made: the input resolver's
    # problem (a variant that fails on inputs its source ran on is the tool's)
    if reason == "needs_input_spec" or message.startswith("the source model fails on"):
        return INPUTS
    return TOOL


class Follower:
    def __init__(self, names: list[str], version: str, profiles: list[str]) -> None:
        self.version = version
        self.profiles = profiles
        self.models = {n: Outcome(n) for n in names}

    def feed(self, message: Any) -> None:
        name = getattr(message, "name", None)
        model = self.models.get(name) if isinstance(name, str) else None
        if model is None or getattr(message, "version", self.version) != self.version:
            return
        if isinstance(message, ModelRegistered):
            record = message.record
            model.variant(record.variant).size_bytes = record.size_bytes
            if record.variant == BASE_VARIANT:
                model.registered = True
                model.warnings = list(getattr(record, "warnings", []) or [])
        elif isinstance(message, ModelRejected):
            if getattr(message, "variant", BASE_VARIANT) == BASE_VARIANT:
                model.rejected = f"{message.reason.value}: {message.message}"
        elif isinstance(message, ModelConverted):
            report = message.report
            model.conversions[message.profile or message.variant] = Conversion(
                CONVERTED,
                parity=parity_summary(report),
                size_before=report.size_before_bytes,
                size_after=report.size_after_bytes or 0,
            )
        elif isinstance(message, ConversionSkipped):
            model.conversions[message.profile] = Conversion(NOT_APPLICABLE, message.reason, message.message)
        elif isinstance(message, ConversionFailed):
            model.conversions[message.profile] = Conversion(
                classify_failure(message.reason, message.message),
                message.reason,
                message.message,
                parity=parity_summary(message.report),
            )
        elif isinstance(message, ModelBenchmarked):
            state = model.variant(message.variant)
            state.benchmarked = True
            best = default_config(message.results)
            state.p50_ms = best.latency.p50_ms if best is not None else None
        elif isinstance(message, BenchmarkFailed):
            state = model.variant(message.variant)
            state.benchmarked = True
            state.benchmark_error = f"{message.reason}: {message.message}"
        elif isinstance(message, ModelValidated):
            state = model.variant(message.variant)
            state.validated, state.ready, state.accuracy = True, message.ready, message.accuracy
            state.failed_criteria = [c.metric for c in message.report.criteria if c.passed is False]
        elif isinstance(message, ValidationErrored):
            state = model.variant(message.variant)
            state.validated = True
            state.validation_error = f"{message.reason}: {message.message}"

    def pending(self) -> list[str]:
        out = []
        for m in self.models.values():
            if m.rejected:
                continue
            if not m.registered:
                out.append(f"{m.name}: registration")
                continue
            out += [f"{m.name}: {p}" for p in self.profiles if p not in m.conversions]
            for v in m.variants.values():
                if not v.benchmarked:
                    out.append(f"{m.name}+{v.variant}: benchmark")
                elif not v.benchmark_error and not v.validated:
                    out.append(f"{m.name}+{v.variant}: validation")
        return out
