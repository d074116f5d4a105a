"""The registry's failure edge: the one place an error becomes a ``model.rejected`` event.
Pure: the service publishes and answers what these return."""

from __future__ import annotations

import json

from services.registry.commands import MAX_ID_CHARS, MAX_URI_CHARS, clip, public_uri
from services.registry.errors import Rejection
from shared.contracts.base import new_id
from shared.contracts.registry import (
    ArchiveModel,
    DeleteModel,
    LifecycleRefused,
    ModelRejected,
    RegisterModel,
    RejectionReason,
)
from shared.errors import (
    ArtifactNotFound,
    ArtifactTooLarge,
    ImportNotAllowed,
    InferlabError,
    InputError,
    IntegrityError,
    InvalidDataset,
    NativeFailure,
    NativeOutOfMemory,
    NativeTimeout,
)

MESSAGE_CHARS = 2000


def failure_event(cmd: RegisterModel, exc: InferlabError) -> ModelRejected:
    """``model.rejected`` for ``cmd``. Its id derives from the command's, so a redelivered
    command's rejection dedupes. Every echoed field is clipped: a rejection of a 900 KB name must
    itself fit in a message (and its subject uses a placeholder token for an invalid name)."""
    return ModelRejected(
        event_id=f"rej-{clip(cmd.event_id, MAX_ID_CHARS)}",
        correlation_id=clip(cmd.correlation_id, MAX_ID_CHARS),
        name=clip(cmd.name),
        version=clip(cmd.version),
        variant=clip(cmd.variant),
        sha256=exc.sha256 if isinstance(exc, Rejection) else "",
        artifact_uri=clip(public_uri(cmd.artifact_uri), MAX_URI_CHARS),
        reason=rejection_reason(exc),
        message=clip(exc.message, MESSAGE_CHARS),
    )


def malformed_rejection(data: bytes, error: str) -> tuple[ModelRejected, str] | None:
    """``model.rejected`` (``invalid_command``) and the inbox to answer, for a ``model.register``
    that does not decode (a wrong type, a missing field), when its JSON names the sender (an
    event id, or an inbox to reply to); None when nothing names it."""
    try:
        raw = json.loads(data)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None

    def text(key: str, limit: int = 200) -> str:
        value = raw.get(key)
        return clip(value, limit) if isinstance(value, str) else ""

    event_id = text("event_id", MAX_ID_CHARS)
    reply_to = text("reply_to", 256)
    if not event_id and not reply_to:
        return None
    rejected = ModelRejected(
        event_id=f"rej-{event_id or new_id()}",
        correlation_id=text("correlation_id", MAX_ID_CHARS),
        name=text("name"),
        version=text("version"),
        variant=text("variant") or "base",
        artifact_uri=clip(public_uri(text("artifact_uri", MAX_URI_CHARS)), MAX_URI_CHARS),
        reason=RejectionReason.INVALID_COMMAND,
        message=clip(
            f"the command does not decode: {error.removeprefix('cannot decode RegisterModel: ')}", MESSAGE_CHARS
        ),
    )
    return rejected, reply_to


def as_rejection(exc: InferlabError, sha256: str = "", *, prefix: str = "") -> Rejection:
    """``exc`` as the rejection it means for a registration (of an artifact whose sha256 is
    known once fetched); ``prefix`` says what it was about (``dataset ...: ``)."""
    return Rejection(rejection_reason(exc), prefix + exc.message, sha256)


def rejection_reason(exc: InferlabError) -> RejectionReason:
    if isinstance(exc, Rejection):
        return exc.reason
    if isinstance(exc, NativeFailure):
        # The sandbox worker that ran the native call did not answer (shared/sandbox.py).
        if isinstance(exc, NativeTimeout):
            return RejectionReason.TIMED_OUT
        if isinstance(exc, NativeOutOfMemory):
            return RejectionReason.OUT_OF_MEMORY
        return RejectionReason.RUNTIME_CRASHED
    if isinstance(exc, InputError):
        # A spec or sample that contradicts the model.
        if exc.code in ("invalid_sample", "invalid_dataset"):
            return RejectionReason.INVALID_DATASET
        return RejectionReason.INVALID_COMMAND
    return _artifact_reason(exc)


def _artifact_reason(exc: InferlabError) -> RejectionReason:
    if isinstance(exc, ArtifactTooLarge):
        return RejectionReason.TOO_LARGE
    if isinstance(exc, IntegrityError):
        return RejectionReason.SHA256_MISMATCH
    if isinstance(exc, ArtifactNotFound):
        return RejectionReason.ARTIFACT_NOT_FOUND
    if isinstance(exc, ImportNotAllowed):
        return RejectionReason.INVALID_URI if exc.code == "invalid_uri" else RejectionReason.IMPORT_NOT_ALLOWED
    if isinstance(exc, InvalidDataset):
        return RejectionReason.INVALID_DATASET
    if exc.code == "invalid_uri":
        return RejectionReason.INVALID_URI
    return RejectionReason.FETCH_FAILED


def lifecycle_refused_event(cmd: ArchiveModel | DeleteModel, exc: InferlabError) -> LifecycleRefused:
    """``model.lifecycle_refused`` for an archive or delete that cannot be done as asked."""
    return LifecycleRefused(
        event_id=f"ref-{clip(cmd.event_id, MAX_ID_CHARS)}",
        correlation_id=clip(cmd.correlation_id or cmd.event_id, MAX_ID_CHARS),
        name=clip(cmd.name),
        version=clip(cmd.version),
        action="delete" if isinstance(cmd, DeleteModel) else "archive",
        reason=exc.code,
        message=clip(exc.message, MESSAGE_CHARS),
    )
