"""The envelope every message shares, and the codec that reads and writes it.

Every message is a msgspec Struct tagged by its ``type`` field. Readers ignore unknown fields
so that a newer writer never breaks an older reader; a field is never removed or retyped
within one ``schema_version``, and new fields always carry a default.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Message(msgspec.Struct, kw_only=True, tag_field="type"):
    """Envelope fields. ``event_id`` doubles as the JetStream ``Nats-Msg-Id`` dedupe id.

    Commands published by hand (``nats pub model.register '{...}'``) may leave out every
    envelope field: the bus fills ``event_id`` from the stream position, so a redelivered
    command keeps the id it had the first time, and ``correlation_id`` from ``event_id``.
    """

    event_id: str = ""
    schema_version: int = SCHEMA_VERSION
    occurred_at: datetime = msgspec.field(default_factory=utcnow)
    correlation_id: str = ""

    def __post_init__(self) -> None:
        if self.correlation_id == "" and self.event_id:
            self.correlation_id = self.event_id


class Command(Message, kw_only=True):
    """A request for work. ``reply_to`` lets a waiting client hear the outcome of its own
    command even when the outcome is an existing fact that is not announced again."""

    reply_to: str | None = None


class Event(Message, kw_only=True):
    """A fact that happened. Subjects of facts end with the model name token."""


M = TypeVar("M", bound=Message)
S = TypeVar("S", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


class Codec:
    """Reusable decoders, one per Struct type (msgspec decoders are cheap to reuse, costly
    to build): messages and plain request/reply bodies alike."""

    def __init__(self) -> None:
        self._decoders: dict[type, msgspec.json.Decoder[Any]] = {}

    def decode(self, data: bytes, kind: type[S]) -> S:
        decoder: msgspec.json.Decoder[S] | None = self._decoders.get(kind)
        if decoder is None:
            decoder = self._decoders[kind] = msgspec.json.Decoder(kind)
        return decoder.decode(data)


codec = Codec()


def decode(data: bytes, kind: type[M]) -> M:
    """Decode ``data`` as ``kind``; raises ``msgspec.ValidationError`` or
    ``msgspec.DecodeError`` with the JSON path of the first problem."""
    return codec.decode(data, kind)


def with_envelope(message: M, *, event_id: str, correlation_id: str | None = None) -> M:
    """Fill envelope fields that a hand-written command left empty."""
    if not message.event_id:
        message.event_id = event_id
    if not message.correlation_id:
        message.correlation_id = correlation_id or message.event_id
    return message


def type_tag(kind: type[msgspec.Struct]) -> str:
    info = msgspec.inspect.type_info(kind)
    assert isinstance(info, msgspec.inspect.StructType)
    return str(info.tag)
