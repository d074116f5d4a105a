"""Exactly-once facts that do not depend on JetStream's duplicate window (the audit's third
finding: a redelivery later than the window republished a fact under the same event id).

Every service publishes through ``Bus.publish`` on a bus its workers mark ``exactly_once``: each
publish is recorded in the ``announced`` KV bucket and never repeated. The streams here get a
0.1 s duplicate window, so every redelivery comes after it."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.benchmarker.service import BenchmarkerService
from services.converter.service import ConverterService
from services.registry.service import RegistryService
from services.validator.service import ValidatorService
from shared.bus import MSG_ID_HEADER, Bus
from shared.config import Settings
from shared.contracts.base import new_id
from shared.contracts.registry import ModelRegistered, RegisterModel
from shared.sdk import Client
from shared.worker import Delivery, Route, Worker
from tests.support.cluster import minimal_payload, quick
from tests.support.events import eventually, stored
from tests.support.models import digits_classifier
from tests.support.services import running

WINDOW_S = 0.1


@pytest.fixture
def short_window(settings: Settings) -> Settings:
    return settings.with_overrides(duplicate_window_s=WINDOW_S)


async def test_a_handler_redelivered_after_the_window_publishes_its_fact_once(short_window: Settings) -> None:
    bus = await Bus.connect(short_window, name="once")
    await bus.ensure_streams()
    runs: list[int] = []
    done = asyncio.Event()
    fact = msgspec.convert({**minimal_payload(ModelRegistered), "event_id": "fact-1"}, ModelRegistered)

    async def handler(delivery: Delivery[RegisterModel]) -> None:
        runs.append(delivery.deliveries)
        await bus.publish("model.registered.once", fact)
        if delivery.deliveries == 1:
            raise RuntimeError("died after publishing, before the ack")  # nak'ed: redelivered in 0.5 s
        done.set()

    worker = Worker(
        bus, service="once", stream="MODELS", durable="once", routes=[Route("model.register", RegisterModel, handler)]
    )
    task = asyncio.create_task(worker.run())
    try:
        await bus.js.publish(
            "model.register", msgspec.json.encode(RegisterModel(name="x", version="1.0.0", artifact_uri="u"))
        )
        await asyncio.wait_for(done.wait(), timeout=20)
    finally:
        worker.stop()
        await task
    assert runs == [1, 2]
    stored_facts = await bus.js.stream_info("MODELS", subjects_filter="model.registered.once")
    assert stored_facts.state.subjects == {"model.registered.once": 1}
    # The control: the window had passed, so JetStream alone would have stored it again.
    plain = await bus.js.publish("model.registered.control", b"{}", headers={MSG_ID_HEADER: "fact-1"})
    assert not plain.duplicate
    await bus.close()


@pytest.mark.slow
async def test_every_service_publishes_each_fact_once_when_its_input_comes_again_after_the_window(
    short_window: Settings, tmp_path: Path
) -> None:
    """The whole pipeline runs once; then every command and fact the services consume is
    delivered to them again (a copy under a fresh Nats-Msg-Id: to a handler, exactly what a
    redelivery after the window is). Every service runs each handler again, and no fact, alert
    or dead letter is stored twice."""
    settings = quick(short_window)
    async with (
        running(settings, RegistryService) as registry,
        running(settings, ConverterService) as converter,
        running(settings, BenchmarkerService) as benchmarker,
        running(settings, ValidatorService) as validator,
    ):
        services = [registry, converter, benchmarker, validator]
        client = await Client.connect(settings)
        try:
            await client.register(digits_classifier(tmp_path / "d.onnx"), name="once", version="1.0.0")

            async def validated_both() -> bool:
                events = await stored(client, "model.validated.once")
                return {e.message.variant for e in events if e.message} >= {"base", "ort-opt"}

            await eventually(validated_both, timeout=120, what="both variants validated")
            await _settled(client.bus, services)
            handled_before = {w.durable: w.handled for s in services for w in s.workers}

            injected: Counter[tuple[str, str]] = Counter()
            for event in await stored(client, "model.>"):
                if event.subject.startswith(("model.register", "model.registered.", "model.converted.",
                                             "model.benchmarked.", "model.validated.")):  # fmt: skip
                    await client.bus.js.publish(event.subject, event.raw, headers={MSG_ID_HEADER: new_id()})
                    injected[(event.subject, event.data.get("event_id", ""))] += 1
            assert sum(injected.values()) >= 7
            await _settled(client.bus, services)
            handled_after = {w.durable: w.handled for s in services for w in s.workers}
            ran_again = {d for d in handled_after if handled_after[d] > handled_before[d]}
            assert {"registry", "converter", "benchmarker", "validator"} <= ran_again, ran_again

            facts: Counter[tuple[str, str]] = Counter()
            for subject in ("model.*.>", "alerts.>", "deadletter.>"):
                for event in await stored(client, subject):
                    data: Any = event.data
                    facts[(event.subject, data.get("event_id", ""))] += 1
            twice = {k: n - injected[k] for k, n in facts.items() if n - injected[k] > 1}
            assert twice == {}
            assert all(w.dead_lettered == 0 for s in services for w in s.workers)
        finally:
            await client.close()


async def _settled(bus: Bus, services: list[Any]) -> None:
    """Every service's durable has nothing pending or unacknowledged."""

    async def idle() -> bool:
        for service in services:
            for worker in service.workers:
                info = await bus.js.consumer_info(worker.stream, worker.durable)
                if info.num_pending or info.num_ack_pending:
                    return False
        return True

    await eventually(idle, timeout=120, what="every consumer idle")
