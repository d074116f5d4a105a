"""Every message of the event flow as a msgspec Struct, and the subject names.

Import messages from their domain module (``shared.contracts.registry`` ...) or from here.
"""

from shared.contracts import alerts, benchmark, conversion, registry, subjects, validation
from shared.contracts.base import SCHEMA_VERSION, Command, Event, Message, decode, encode, new_id
from shared.contracts.identity import BASE_VARIANT, ModelRef, format_ref

__all__ = [
    "BASE_VARIANT",
    "SCHEMA_VERSION",
    "Command",
    "Event",
    "Message",
    "ModelRef",
    "alerts",
    "benchmark",
    "conversion",
    "decode",
    "encode",
    "format_ref",
    "new_id",
    "registry",
    "subjects",
    "validation",
]
