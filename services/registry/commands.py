"""What a ``model.register`` may carry, checked before anything is fetched or stored, and how
its fields are echoed back (clipped, credentials stripped). Pure."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import msgspec

from services.registry.errors import Rejection
from shared.contracts.identity import MAX_VERSION_LENGTH, is_valid_name, is_valid_variant, is_valid_version
from shared.contracts.registry import FORMATS, RegisterModel, RejectionReason

_SHA256 = re.compile(r"[0-9a-f]{64}")
# Bounds of what a command may carry (a message is at most 1 MB; the record, which holds the
# metadata and tags, must fit in one KV entry with room for the model's own facts).
MAX_ID_CHARS = 128
MAX_URI_CHARS = 8192
MAX_TAGS = 64
MAX_TAG_VALUE_CHARS = 1024
MAX_TAG_KEY_CHARS = 128
MAX_METADATA_BYTES = 64 * 1024
ECHO_CHARS = 200


def check_command(cmd: RegisterModel) -> None:
    """Raises ``Rejection`` for a field out of bounds or not matched whole (a name with a
    trailing newline once passed, then broke a KV key on every delivery)."""
    _check_identity(cmd)
    _check_lengths(cmd)
    if len(cmd.tags) > MAX_TAGS or any(len(v) > MAX_TAG_VALUE_CHARS for v in cmd.tags.values()):
        raise Rejection(
            RejectionReason.INVALID_COMMAND,
            f"at most {MAX_TAGS} tags of at most {MAX_TAG_VALUE_CHARS} characters each",
        )
    metadata_bytes = len(msgspec.json.encode(cmd.metadata))
    if metadata_bytes > MAX_METADATA_BYTES:
        raise Rejection(
            RejectionReason.INVALID_COMMAND,
            f"metadata is {metadata_bytes} bytes as JSON, more than {MAX_METADATA_BYTES} (the record must fit "
            "in a message)",
        )
    if cmd.format not in FORMATS:
        raise Rejection(RejectionReason.UNSUPPORTED_FORMAT, f"format {cmd.format!r} is not one of {', '.join(FORMATS)}")
    if cmd.sha256 is not None and not _SHA256.fullmatch(cmd.sha256):
        raise Rejection(RejectionReason.INVALID_COMMAND, "sha256 must be 64 lowercase hex digits")
    for key in cmd.tags:
        if not key or len(key) > MAX_TAG_KEY_CHARS:
            raise Rejection(RejectionReason.INVALID_COMMAND, f"tag key {clip(key, 80)!r} must be 1 to 128 characters")


def _check_identity(cmd: RegisterModel) -> None:
    if not is_valid_name(cmd.name):
        raise Rejection(
            RejectionReason.INVALID_NAME,
            f"name {clip(cmd.name, 80)!r} ({len(cmd.name)} characters) must match [a-z0-9][a-z0-9_-]{{0,63}}",
        )
    if not is_valid_version(cmd.version):
        raise Rejection(
            RejectionReason.INVALID_VERSION,
            f"version {clip(cmd.version, 80)!r} must be a semantic version such as 1.2.0 or 1.2.0-rc.1 "
            f"of at most {MAX_VERSION_LENGTH} characters (no +build suffix: '+' introduces the variant)",
        )
    if not is_valid_variant(cmd.variant):
        raise Rejection(
            RejectionReason.INVALID_VARIANT,
            f"variant {clip(cmd.variant, 80)!r} must match [a-z0-9][a-z0-9_-]{{0,63}}",
        )


def _check_lengths(cmd: RegisterModel) -> None:
    for field, value, limit in (
        ("event_id", cmd.event_id, MAX_ID_CHARS),
        ("correlation_id", cmd.correlation_id, MAX_ID_CHARS),
        ("artifact_uri", cmd.artifact_uri, MAX_URI_CHARS),
        ("dataset_uri", cmd.dataset_uri or "", MAX_URI_CHARS),
        ("parent", cmd.parent or "", 256),
        ("task", cmd.task or "", 64),
        ("reply_to", cmd.reply_to or "", 256),
    ):
        if len(value) > limit:
            raise Rejection(
                RejectionReason.INVALID_URI if field.endswith("_uri") else RejectionReason.INVALID_COMMAND,
                f"{field} has {len(value)} characters, more than {limit}",
            )


def clip(text: str | None, limit: int = ECHO_CHARS) -> str:
    """At most ``limit`` characters of an echoed field, marked when cut."""
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def public_uri(uri: str) -> str:
    """Strip user info and query strings (possible credentials) before a URI is recorded or
    sent in an event."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        host = parsed.hostname or ""
        if parsed.port:
            host += f":{parsed.port}"
        return f"{parsed.scheme}://{host}{parsed.path}"
    return uri
