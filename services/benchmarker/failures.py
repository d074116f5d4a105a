"""The one mapping of an error to the benchmarker's failure event (pure)."""

from __future__ import annotations

from shared.contracts import subjects
from shared.contracts.benchmark import BenchmarkFailed, BenchmarkModel
from shared.contracts.identity import BASE_VARIANT, is_valid_name
from shared.contracts.registry import ModelRecord, ModelRegistered
from shared.errors import InferlabError


def failure_event(
    command: ModelRegistered | BenchmarkModel, exc: InferlabError, record: ModelRecord | None = None
) -> BenchmarkFailed:
    """``model.benchmark_failed`` for ``command`` (a registration measured automatically, or a
    ``model.benchmark`` request) that failed with ``exc``. ``record`` is the model measured;
    without one (a request naming no known model) the identity comes from the request's ref."""
    if record is None and isinstance(command, ModelRegistered):
        record = command.record
    if record is not None:
        name, version, variant, ref = record.name, record.version, record.variant, record.ref
    else:
        assert isinstance(command, BenchmarkModel)
        name, version, variant, ref = name_of(command.ref), "", BASE_VARIANT, command.ref
    return BenchmarkFailed(
        event_id=f"benchfail-{command.event_id}",
        correlation_id=command.correlation_id,
        name=name,
        version=version,
        variant=variant,
        ref=ref,
        reason=exc.code,
        message=exc.message,
    )


def name_of(ref: str) -> str:
    """The model name of a ref as a subject token (a placeholder when it is not a valid name)."""
    name = ref.split("@", 1)[0].split("+", 1)[0]
    return name if is_valid_name(name) else subjects.INVALID_NAME_TOKEN
