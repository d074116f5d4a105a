"""An AsyncAPI 3 document of every subject, generated from the contracts catalogue.

``inferlab schema --asyncapi`` prints it and ``python -m shared.docgen`` writes it to
docs/asyncapi.yaml; a test compares the two and validates the file with the official AsyncAPI
parser, so tools that read AsyncAPI (code generators, catalogues, event portals) see exactly
the contracts the code has. The view is the platform's: facts it sends, commands and telemetry
it receives.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import msgspec
import yaml

from shared.contracts.base import Command, Event
from shared.contracts.catalogue import CATALOGUE, SubjectSpec

ASYNCAPI_VERSION = "3.1.0"
SCHEMAS = "#/components/schemas/"
FACT_HEADERS = "FactHeaders"
MESSAGE_HEADERS = "MessageHeaders"

_DESCRIPTION = (
    "Event-driven model operations for ONNX models over NATS JetStream. Every message is a JSON "
    "object with the envelope fields type, event_id, schema_version, occurred_at and "
    "correlation_id; readers ignore unknown fields. Facts end with the model name token. Every "
    "message the platform publishes also carries CloudEvents 1.0 binary-mode headers beside the "
    "unchanged body. Reference: docs/events.md."
)


def _package_version() -> str:
    try:
        return version("inferlab")
    except PackageNotFoundError:  # a source tree run without installing
        return "0.0.0"


def channel_id(spec: SubjectSpec) -> str:
    """``model.registered.<name>`` → ``model.registered.name`` (ids allow no angle brackets)."""
    return spec.subject.replace("<", "").replace(">", "")


def channel_address(spec: SubjectSpec) -> str:
    """NATS subject tokens written ``<name>`` become AsyncAPI parameters ``{name}``."""
    return re.sub(r"<(\w+)>", r"{\1}", spec.subject)


def _parameters(spec: SubjectSpec) -> dict[str, Any]:
    described = {
        "name": "The model name (a NATS token): subscribe to one model, or use `*` for all.",
        "service": "The service that gave up on the message (registry, converter, benchmarker, validator).",
    }
    names = re.findall(r"<(\w+)>", spec.subject)
    return {name: {"description": described.get(name, f"The {name} token.")} for name in names}


def _header_schemas() -> dict[str, Any]:
    def text(description: str) -> dict[str, str]:
        return {"type": "string", "description": description}

    properties: dict[str, Any] = {
        "ce-specversion": {"type": "string", "const": "1.0", "description": "CloudEvents spec version."},
        "ce-id": text("CloudEvents id: the message's event_id."),
        "ce-type": text("CloudEvents type: the message's type, e.g. model.registered."),
        "ce-source": text("CloudEvents source: /inferlab/<service> for a service's facts."),
        "ce-time": {"type": "string", "format": "date-time", "description": "CloudEvents time: occurred_at."},
        "ce-subject": text("CloudEvents subject (facts only): the model name, the service on dead letters."),
        "content-type": {"type": "string", "const": "application/json"},
        "Nats-Msg-Id": text("JetStream dedupe id: the event_id."),
        "Inferlab-Correlation-Id": text("The correlation_id, for log search without decoding the body."),
    }
    required = ["ce-specversion", "ce-id", "ce-type", "ce-source", "ce-time", "ce-subject", "Nats-Msg-Id"]
    return {
        FACT_HEADERS: {"type": "object", "properties": properties, "required": required},
        MESSAGE_HEADERS: {
            "type": "object",
            "description": "Sent by inferlab's own clients; a message published by hand may carry none.",
            "properties": properties,
        },
    }


def _payload_schemas() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [spec.message for spec in CATALOGUE], ref_template=SCHEMAS + "{name}"
    )
    for spec in CATALOGUE:
        if issubclass(spec.message, Command):  # envelope fields, type included, may be left out
            root = components[spec.message.__name__]
            root["required"] = [f for f in root.get("required", []) if f != "type"]
    return dict(sorted(components.items()))


def _message(spec: SubjectSpec) -> dict[str, Any]:
    name = spec.message.__name__
    headers = FACT_HEADERS if issubclass(spec.message, Event) else MESSAGE_HEADERS
    message: dict[str, Any] = {
        "name": name,
        "title": spec.subject,
        "summary": spec.summary,
        "contentType": "application/json",
        "headers": {"$ref": SCHEMAS + headers},
        "payload": {"$ref": SCHEMAS + name},
    }
    doc = re.sub(r"\s*\n\s*", " ", (spec.message.__doc__ or "").strip())
    if doc:
        message["description"] = doc
    return message


def _channel(spec: SubjectSpec) -> dict[str, Any]:
    name = spec.message.__name__
    channel: dict[str, Any] = {
        "address": channel_address(spec),
        "title": spec.subject,
        "summary": spec.summary,
        "description": f"Publisher: {spec.publisher}. Consumers: {spec.consumers}.",
        "messages": {name: {"$ref": f"#/components/messages/{name}"}},
    }
    parameters = _parameters(spec)
    if parameters:
        channel["parameters"] = parameters
    return channel


def _operation(spec: SubjectSpec) -> tuple[str, dict[str, Any]]:
    action = "send" if issubclass(spec.message, Event) else "receive"
    cid = channel_id(spec)
    return f"{action}.{cid}", {
        "action": action,
        "title": f"{action} {spec.subject}",
        "summary": spec.summary,
        "channel": {"$ref": f"#/channels/{cid}"},
        "messages": [{"$ref": f"#/channels/{cid}/messages/{spec.message.__name__}"}],
    }


def asyncapi_document() -> dict[str, Any]:
    """The whole document as plain data (what the YAML file holds)."""
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "inferlab",
            "version": _package_version(),
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "url": "https://www.apache.org/licenses/LICENSE-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": "`inferlab up` or `docker compose up` (INFERLAB_NATS_URL elsewhere).",
            }
        },
        "channels": {channel_id(spec): _channel(spec) for spec in CATALOGUE},
        "operations": dict(_operation(spec) for spec in CATALOGUE),
        "components": {
            "messages": {spec.message.__name__: _message(spec) for spec in CATALOGUE},
            "schemas": {**_header_schemas(), **_payload_schemas()},
        },
    }


def asyncapi_yaml() -> str:
    header = "# Generated from shared/contracts/catalogue.py by `python -m shared.docgen`; do not edit by hand.\n"
    return header + yaml.safe_dump(asyncapi_document(), sort_keys=False, allow_unicode=True, width=100)
