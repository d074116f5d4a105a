"""CloudEvents binary-mode headers for every message the bus publishes.

The JSON body stays exactly what it was; the CloudEvents context attributes travel beside it
as ``ce-*`` NATS headers (the binary content mode), so a consumer that speaks CloudEvents (an
event router, a CloudEvents SDK) reads our messages without knowing our envelope fields, and
one that does not simply ignores the headers. Header values are percent-encoded as the
CloudEvents HTTP binding prescribes, which keeps them safe in NATS headers too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote

from shared.contracts.base import Event, Message

SPECVERSION = "1.0"
CONTENT_TYPE = "application/json"
# Printable ASCII except space, double quote and percent (CloudEvents HTTP binding 3.1.3.2).
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ' "%')


def event_source(connection_name: str) -> str:
    """``ce-source``: a URI reference naming the publisher, ``/inferlab/<service>`` for a
    service's bus (connection ``inferlab-<service>``), ``/inferlab/<name>`` for any other."""
    return "/inferlab/" + connection_name.removeprefix("inferlab-")


def message_type(message: Message) -> str:
    """``ce-type``: the message's own ``type`` tag (``model.registered``), one name for both."""
    return str(type(message).__struct_config__.tag)


def rfc3339(when: datetime) -> str:
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return aware.astimezone(UTC).isoformat().replace("+00:00", "Z")


def cloudevent_headers(subject: str, message: Message, *, event_id: str, source: str) -> dict[str, str]:
    """The binary-mode headers of one message published on ``subject``. ``ce-subject`` is
    the last token of a fact's subject: the model name (``model.registered.<name>``), or the
    service on dead letters (``deadletter.<service>``). A command's subject names neither, so
    it carries none."""
    attributes = {
        "specversion": SPECVERSION,
        "id": message.event_id or event_id,
        "type": message_type(message),
        "source": source,
        "time": rfc3339(message.occurred_at),
    }
    if isinstance(message, Event):
        attributes["subject"] = subject.rsplit(".", 1)[-1]
    headers = {f"ce-{name}": quote(value, safe=_SAFE) for name, value in attributes.items()}
    headers["content-type"] = CONTENT_TYPE
    return headers
