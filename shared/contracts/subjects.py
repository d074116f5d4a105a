"""Subject names. Facts end with the model name token so subscribers can filter
(``model.registered.>``, ``alerts.*.*.resnet50``)."""

from __future__ import annotations

from shared.contracts.identity import is_valid_name

# Commands (any client may publish).
REGISTER = "model.register"
CONVERT = "model.convert"
BENCHMARK = "model.benchmark"
VALIDATE = "model.validate"
# Lifecycle commands (operators only: the pipeline user may not publish them).
ARCHIVE = "model.archive"
DELETE = "model.delete"

# Stream subject spaces.
MODELS_SPACE = "model.>"
ALERTS_SPACE = "alerts.>"
TELEMETRY_SPACE = "telemetry.>"
DEADLETTER_SPACE = "deadletter.>"

# Token used in place of a model name that is itself invalid (cannot be a valid name: names
# start with [a-z0-9]).
INVALID_NAME_TOKEN = "_"

# Registry micro endpoints (core NATS request/reply; deliberately outside "model.>" so the
# stream does not capture requests).
REGISTRY_GET = "registry.get"
REGISTRY_LIST = "registry.list"
REGISTRY_FIND = "registry.find"
REGISTRY_RESOLVE = "registry.resolve"
REGISTRY_ALIAS_SET = "registry.alias.set"
REGISTRY_ALIAS_REMOVE = "registry.alias.remove"
REGISTRY_TAGS_SET = "registry.tags.set"
REGISTRY_DATASET_PUT = "registry.dataset.put"
BENCHMARKER_SQL = "benchmarker.sql"


def name_token(name: str) -> str:
    return name if is_valid_name(name) else INVALID_NAME_TOKEN


def registered(name: str) -> str:
    return f"model.registered.{name_token(name)}"


def rejected(name: str) -> str:
    return f"model.rejected.{name_token(name)}"


def alias_set(name: str) -> str:
    return f"model.alias_set.{name_token(name)}"


def alias_removed(name: str) -> str:
    return f"model.alias_removed.{name_token(name)}"


def tags_set(name: str) -> str:
    return f"model.tags_set.{name_token(name)}"


def converted(name: str) -> str:
    return f"model.converted.{name_token(name)}"


def conversion_failed(name: str) -> str:
    return f"model.conversion_failed.{name_token(name)}"


def conversion_skipped(name: str) -> str:
    return f"model.conversion_skipped.{name_token(name)}"


def benchmarked(name: str) -> str:
    return f"model.benchmarked.{name_token(name)}"


def benchmark_failed(name: str) -> str:
    return f"model.benchmark_failed.{name_token(name)}"


def validated(name: str) -> str:
    return f"model.validated.{name_token(name)}"


def validation_failed(name: str) -> str:
    return f"model.validation_failed.{name_token(name)}"


def telemetry(name: str) -> str:
    return f"telemetry.inference.{name_token(name)}"


def alert(category: str, kind: str, name: str) -> str:
    """``alerts.<category>.<kind>.<name>``, e.g. ``alerts.performance.regression.resnet50``."""
    return f"alerts.{category}.{kind}.{name_token(name)}"


def deadletter(service: str) -> str:
    return f"deadletter.{service}"


def deadletter_alert(service: str) -> str:
    return f"alerts.pipeline.deadletter.{service}"


def archived(name: str) -> str:
    return f"model.archived.{name_token(name)}"


def deleted(name: str) -> str:
    return f"model.deleted.{name_token(name)}"


def lifecycle_refused(name: str) -> str:
    return f"model.lifecycle_refused.{name_token(name)}"
