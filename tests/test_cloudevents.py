"""Every message the bus publishes carries CloudEvents binary-mode headers beside an unchanged
JSON body, read back here with the CloudEvents SDK itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from cloudevents.core.bindings.http import HTTPMessage, from_binary_event

from services.registry.service import RegistryService
from shared.bus import MSG_ID_HEADER, Bus
from shared.config import Settings
from shared.contracts.base import decode
from shared.contracts.registry import ModelRegistered
from shared.sdk import Client
from tests.support.models import digits_classifier
from tests.support.services import running


async def stored_message(bus: Bus, subject: str) -> tuple[dict[str, str], bytes]:
    raw = await bus.js.get_last_msg("MODELS", subject)
    assert raw.data is not None
    return dict(raw.headers or {}), raw.data


async def test_a_fact_reads_back_as_a_cloudevent(settings: Settings, client: Client, tmp_path: Path) -> None:
    async with running(settings, RegistryService):
        record = await client.register(digits_classifier(tmp_path / "d.onnx"), name="ce-digits", version="1.0.0")
    headers, body = await stored_message(client.bus, "model.registered.ce-digits")
    fact = decode(body, ModelRegistered)

    event = from_binary_event(HTTPMessage(headers=headers, body=body))
    assert event.get_specversion() == "1.0"
    assert event.get_id() == fact.event_id == headers[MSG_ID_HEADER]
    assert event.get_type() == "model.registered" == json.loads(body)["type"]
    assert event.get_source() == "/inferlab/registry"
    assert event.get_subject() == "ce-digits"
    assert event.get_time() == fact.occurred_at.astimezone(UTC)
    assert event.get_datacontenttype() == "application/json"
    # The body is the fact as it always was: the JSON the SDK hands over is the body itself.
    assert event.get_data() == json.loads(body)
    assert fact.record.version == record.version == "1.0.0"


async def test_a_command_carries_the_headers_without_a_subject(bus: Bus) -> None:
    from shared.contracts.registry import RegisterModel

    command = RegisterModel(event_id="cmd-1", name="x", version="1.0.0", artifact_uri="nats-obj://a/b")
    command.occurred_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await bus.publish("model.register", command)
    headers, body = await stored_message(bus, "model.register")

    event = from_binary_event(HTTPMessage(headers=headers, body=body))
    assert event.get_id() == "cmd-1" and event.get_type() == "model.register"
    assert event.get_subject() is None
    assert headers["ce-time"] == "2026-01-02T03:04:05Z"
    assert json.loads(body)["name"] == "x"
