"""A converted variant's way into the registry: the ``model.register`` command that records
it with its lineage, the ``model.converted`` event once it is registered, and the failure when
the registry refuses it. Pure."""

from __future__ import annotations

from typing import Any

import msgspec

from services.converter import keys
from services.converter.errors import ConversionFailure
from shared.contracts.base import new_id
from shared.contracts.conversion import (
    REASON_REGISTRATION_REJECTED,
    REASON_VARIANT_EXISTS,
    ConversionReport,
    ModelConverted,
)
from shared.contracts.registry import FORMAT_TENSORRT, ModelRecord, RegisterModel


def register_command(
    source: ModelRecord, *, correlation_id: str, profile: str, variant: str, artifact_uri: str, fmt: str,
    report: ConversionReport,
) -> RegisterModel:  # fmt: skip
    """``model.register`` for the variant stored at ``artifact_uri``, a child of ``source``
    carrying its conversion report (whose key lets a later run recognise it)."""
    metadata: dict[str, Any] = {"conversion": msgspec.to_builtins(report)}
    if fmt == FORMAT_TENSORRT:
        metadata["tensorrt_version"] = report.details.get("tensorrt_version", "")
    return RegisterModel(
        event_id=new_id(),
        correlation_id=correlation_id,
        name=source.name,
        version=source.version,
        variant=variant,
        artifact_uri=artifact_uri,
        sha256=report.variant_sha256 or "",
        task=source.task,
        dataset_uri=source.dataset_uri,
        parent=source.ref,
        metadata=metadata,
        tags={"profile": profile},
        format=fmt,
    )


def registration_failure(
    source: ModelRecord, variant: str, reply: dict[str, Any], report: ConversionReport
) -> ConversionFailure:
    """The failure for a registry's ``model.rejected`` answer about a converted variant."""
    exists = reply.get("reason") == "version_exists"
    message = f"the registry rejected {source.name}@{source.version}+{variant}: {reply.get('message', '')}"
    if exists:
        message += (
            " (it was converted before with other options or library versions; a variant is immutable: "
            "register a new model version to convert it differently)"
        )
    reason = REASON_VARIANT_EXISTS if exists else REASON_REGISTRATION_REJECTED
    return ConversionFailure(reason, message, report, key=report.key)


def stored_report(variant: ModelRecord, key: str) -> ConversionReport | None:
    """The conversion report a registered variant carries, when it was made by the conversion
    ``key`` names (a redelivery, a repeated command); else None."""
    stored = variant.metadata.get("conversion") if isinstance(variant.metadata, dict) else None
    if not isinstance(stored, dict) or stored.get("key") != key:
        return None
    try:
        return msgspec.convert(stored, ConversionReport)
    except msgspec.ValidationError:
        return None


def converted_event(source: ModelRecord, variant: ModelRecord, report: ConversionReport) -> ModelConverted:
    return ModelConverted(
        event_id=keys.event_id("converted", variant.ref, report.key or variant.sha256),
        correlation_id=variant.correlation_id or source.correlation_id,
        name=source.name,
        version=source.version,
        source_variant=source.variant,
        variant=variant.variant,
        ref=variant.ref,
        report=report,
        profile=report.profile,
        sha256=variant.sha256,
        artifact_uri=variant.artifact_uri,
    )
