"""A registered model's record and its ``model.registered`` event, and the signals other
services' events add to it. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from services.registry.commands import public_uri
from services.registry.verify import ModelFacts
from shared.contracts.base import new_id
from shared.contracts.benchmark import ModelBenchmarked
from shared.contracts.identity import format_ref
from shared.contracts.registry import ModelRecord, ModelRegistered, RegisterModel
from shared.contracts.validation import ModelValidated
from shared.inputs import Resolution


@dataclass(frozen=True)
class Stored:
    """Where the registry put what a command brought: the model, and its dataset and sample."""

    sha256: str
    source_sha256: str  # the bytes received, when the stored file differs (external data inlined)
    size_bytes: int
    artifact_uri: str
    dataset_uri: str | None
    sample_uri: str | None


def new_record(
    cmd: RegisterModel, facts: ModelFacts, stored: Stored, parent: str | None, resolution: Resolution
) -> ModelRecord:
    """The immutable record of a verified, stored model, not yet announced."""
    onnx_metadata = {"onnx_metadata": facts.metadata_props} if facts.metadata_props else {}
    return ModelRecord(
        name=cmd.name,
        version=cmd.version,
        variant=cmd.variant,
        ref=format_ref(cmd.name, cmd.version, cmd.variant),
        sha256=stored.sha256,
        source_sha256=stored.source_sha256,
        format=cmd.format,
        size_bytes=stored.size_bytes,
        artifact_uri=stored.artifact_uri,
        source_uri=public_uri(cmd.artifact_uri),
        task=cmd.task,
        framework=facts.framework,
        framework_version=facts.framework_version,
        ir_version=facts.ir_version,
        opset=facts.opset,
        inputs=facts.inputs,
        outputs=facts.outputs,
        parameter_count=facts.parameter_count,
        warnings=list(facts.warnings),
        tags=dict(cmd.tags),
        metadata={**onnx_metadata, **cmd.metadata},
        dataset_uri=stored.dataset_uri,
        parent=parent,
        input_specs=list(cmd.input_specs),
        sample_uri=stored.sample_uri,
        resolved_inputs=resolution.inputs,
        input_status=resolution.status,
        input_message=resolution.message,
        correlation_id=cmd.correlation_id,
        registered_event_id=new_id(),
    )


def registered_event(record: ModelRecord) -> ModelRegistered:
    """The record's one ``model.registered`` event (its id is stored on the record)."""
    return ModelRegistered(
        event_id=record.registered_event_id,
        correlation_id=record.correlation_id,
        name=record.name,
        version=record.version,
        variant=record.variant,
        sha256=record.sha256,
        record=record,
    )


def mark_announced(record: ModelRecord) -> None:
    record.announced = True


def benchmark_signals(event: ModelBenchmarked) -> dict[str, object] | None:
    """What ``find`` ranks by from a benchmark: latency of the lightest configuration, the best
    throughput, the largest peak memory. None for a benchmark without results."""
    if not event.results:
        return None
    reference = min(event.results, key=lambda r: (r.batch_size * r.concurrency, r.intra_op_threads))
    return {
        "p50_ms": reference.latency.p50_ms,
        "p99_ms": reference.latency.p99_ms,
        "throughput_ips": max(r.throughput_ips for r in event.results),
        "peak_memory_bytes": max(r.peak_memory_bytes for r in event.results),
        "benchmarked_at": event.occurred_at,
    }


def validation_signals(event: ModelValidated) -> dict[str, object]:
    update: dict[str, object] = {"ready": event.ready, "validated_at": event.occurred_at}
    if event.accuracy is not None:
        # A validation without a labelled dataset measures no accuracy: keep the last one.
        update["accuracy"] = event.accuracy
    return update
