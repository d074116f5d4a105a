"""The catalogue of every subject: its message type, who publishes it and who consumes it.

``inferlab schema`` and docs/events.md are generated from this table, so the documentation and
the code cannot drift apart (a test compares them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from shared.contracts import alerts, benchmark, conversion, registry, validation
from shared.contracts.base import Command, Message


@dataclass(frozen=True)
class SubjectSpec:
    subject: str
    message: type[Message]
    publisher: str
    consumers: str
    summary: str


CATALOGUE: tuple[SubjectSpec, ...] = (
    SubjectSpec(
        "model.register",
        registry.RegisterModel,
        "any pipeline, SDK, CLI, converter",
        "registry",
        "Register a model version (command).",
    ),
    SubjectSpec(
        "model.registered.<name>",
        registry.ModelRegistered,
        "registry",
        "converter (base variants), benchmarker, SDK/CLI waiters",
        "A version was verified and stored; announced once per (name, version, variant).",
    ),
    SubjectSpec(
        "model.rejected.<name>",
        registry.ModelRejected,
        "registry",
        "SDK/CLI waiters, anyone",
        "A registration was refused; `reason` is machine-readable.",
    ),
    SubjectSpec("model.alias_set.<name>", registry.AliasSet, "registry", "anyone", "An alias was created or moved."),
    SubjectSpec("model.alias_removed.<name>", registry.AliasRemoved, "registry", "anyone", "An alias was removed."),
    SubjectSpec("model.tags_set.<name>", registry.TagsSet, "registry", "anyone", "Tags of a version changed."),
    SubjectSpec(
        "model.archive",
        registry.ArchiveModel,
        "operators (admin user): SDK, CLI",
        "registry",
        "Archive a version and its variants (command).",
    ),
    SubjectSpec(
        "model.delete",
        registry.DeleteModel,
        "operators (admin user): SDK, CLI",
        "registry",
        "Delete a version, its variants and their unshared objects (command).",
    ),
    SubjectSpec("model.archived.<name>", registry.ModelArchived, "registry", "anyone", "A version was archived."),
    SubjectSpec(
        "model.deleted.<name>",
        registry.ModelDeleted,
        "registry",
        "benchmarker (purges history when asked), anyone",
        "A version was deleted.",
    ),
    SubjectSpec(
        "model.lifecycle_refused.<name>",
        registry.LifecycleRefused,
        "registry",
        "anyone",
        "An archive or delete was refused; `reason` is machine-readable.",
    ),
    SubjectSpec(
        "model.convert",
        conversion.ConvertModel,
        "SDK, CLI, any client",
        "converter",
        "Convert a model with explicit profiles and options (command).",
    ),
    SubjectSpec(
        "model.converted.<name>",
        conversion.ModelConverted,
        "converter",
        "anyone",
        "A variant passed parity and was registered.",
    ),
    SubjectSpec(
        "model.conversion_failed.<name>",
        conversion.ConversionFailed,
        "converter",
        "anyone",
        "A conversion failed or broke parity; nothing registered.",
    ),
    SubjectSpec(
        "model.conversion_skipped.<name>",
        conversion.ConversionSkipped,
        "converter",
        "anyone",
        "A profile cannot run on this host, or has nothing to do on this model (not a failure).",
    ),
    SubjectSpec(
        "model.benchmark",
        benchmark.BenchmarkModel,
        "SDK, CLI, any client",
        "benchmarker",
        "Benchmark a model with an explicit configuration (command).",
    ),
    SubjectSpec(
        "model.benchmarked.<name>",
        benchmark.ModelBenchmarked,
        "benchmarker",
        "validator, registry (ranking)",
        "Benchmark summary per configuration.",
    ),
    SubjectSpec(
        "model.benchmark_failed.<name>",
        benchmark.BenchmarkFailed,
        "benchmarker",
        "anyone",
        "A model could not be benchmarked.",
    ),
    SubjectSpec(
        "model.validate",
        validation.ValidateModel,
        "SDK, CLI, any client",
        "validator",
        "Validate a model on a dataset against requirements (command).",
    ),
    SubjectSpec(
        "model.validated.<name>",
        validation.ModelValidated,
        "validator",
        "benchmarker (history), registry (ranking)",
        "Validation report and readiness verdict.",
    ),
    SubjectSpec(
        "model.validation_failed.<name>",
        validation.ValidationErrored,
        "validator",
        "anyone",
        "Validation could not run.",
    ),
    SubjectSpec(
        "telemetry.inference.<name>",
        benchmark.InferenceTelemetry,
        "production inference servers",
        "benchmarker monitor",
        "Batches of production latencies.",
    ),
    SubjectSpec(
        "alerts.performance.regression.<name>",
        alerts.RegressionAlert,
        "benchmarker",
        "people, pagers",
        "A run is significantly slower than its baseline.",
    ),
    SubjectSpec(
        "alerts.performance.anomaly.<name>",
        alerts.AnomalyAlert,
        "benchmarker monitor",
        "people, pagers",
        "Production latency left its baseline (opened, then resolved).",
    ),
    SubjectSpec(
        "alerts.validation.failed.<name>",
        alerts.ValidationFailedAlert,
        "validator",
        "people, pagers",
        "A readiness requirement failed.",
    ),
    SubjectSpec(
        "alerts.conversion.failed.<name>",
        alerts.ConversionFailedAlert,
        "converter",
        "people, pagers",
        "A conversion failed or broke parity.",
    ),
    SubjectSpec(
        "alerts.pipeline.deadletter.<service>",
        alerts.DeadLetterAlert,
        "every service",
        "operators",
        "A message was dead-lettered.",
    ),
    SubjectSpec(
        "deadletter.<service>",
        alerts.DeadLetter,
        "every service",
        "operators",
        "A message a service gave up on, with the error.",
    ),
)


def _pattern(subject: str) -> str:
    return ".".join("*" if token.startswith("<") else token for token in subject.split("."))


_BY_PATTERN = [(_pattern(spec.subject), spec) for spec in CATALOGUE]


def spec_for(subject: str) -> SubjectSpec | None:
    """The catalogue entry whose subject pattern matches a concrete subject."""
    tokens = subject.split(".")
    for pattern, spec in _BY_PATTERN:
        p_tokens = pattern.split(".")
        if len(p_tokens) == len(tokens) and all(p in ("*", t) for p, t in zip(p_tokens, tokens, strict=True)):
            return spec
    return None


def message_type_for(subject: str) -> type[Message] | None:
    spec = spec_for(subject)
    return spec.message if spec else None


def json_schema(spec: SubjectSpec) -> dict[str, Any]:
    """The JSON Schema of one message. Commands do not require envelope fields (``type``
    included): a hand-written ``{"name": ..., "version": ..., "artifact_uri": ...}`` is valid."""
    schema = msgspec.json.schema(spec.message)
    if issubclass(spec.message, Command):
        root = schema["$defs"][spec.message.__name__]
        root["required"] = [f for f in root.get("required", []) if f != "type"]
    schema["title"] = spec.subject
    schema["description"] = spec.summary
    return schema


def all_schemas() -> dict[str, dict[str, Any]]:
    return {spec.subject: json_schema(spec) for spec in CATALOGUE}
