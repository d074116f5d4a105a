"""Fault injection against the real platform: poison messages on every consumed subject,
kill -9 of a service in the middle of its work, nats-server restarted mid-flow, and a burst of
500 registrations. Every accepted command must end in exactly one final event (and one history
record), every poison message in one dead letter per consumer plus an alert, and the services
must keep serving.

Related fault tests elsewhere (not repeated here): converter killed mid-conversion
(tests/test_converter_e2e.py), validator killed mid-validation (tests/test_validator_service.py),
registry crash between storing and announcing (tests/test_registry_e2e.py), work that never
finishes (tests/test_worker.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from shared.bus import Bus
from shared.contracts.registry import ModelRegistered
from shared.sdk import Client, StreamEvent
from shared.worker import Route, Worker


async def stored(client: Client, subject: str) -> list[StreamEvent]:
    """Every message stored on ``subject`` right now."""
    return [e async for e in client.events(subject, replay=True, stored_only=True)]


async def eventually(check: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, every: float = 0.2) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout:.0f}s")
        await asyncio.sleep(every)


# --- dead letters ---------------------------------------------------------------------------------


async def test_each_consumer_of_a_poison_message_records_its_own_dead_letter(bus: Bus) -> None:
    """model.registered.* is read by the converter and the benchmarker: a poison fact must be
    dead-lettered (and alerted) by both. Dead-letter ids once derived from the stream position
    alone, so the second consumer's letter was dropped by JetStream's duplicate window."""

    async def never(delivery: Any) -> None:
        raise AssertionError("poison reached a handler")

    workers = [
        Worker(bus, service=s, stream="MODELS", durable=s, routes=[Route("model.registered.*", ModelRegistered, never)])
        for s in ("alpha", "beta")
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await bus.js.publish("model.registered.p", b"{not json")
        client = Client(bus)

        async def both_recorded() -> bool:
            return len(await stored(client, "deadletter.>")) == 2

        await eventually(both_recorded, timeout=15)
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
    letters = await stored(client, "deadletter.>")
    assert sorted(e.subject for e in letters) == ["deadletter.alpha", "deadletter.beta"]
    alerts = await stored(client, "alerts.pipeline.deadletter.>")
    assert sorted(e.subject for e in alerts) == ["alerts.pipeline.deadletter.alpha", "alerts.pipeline.deadletter.beta"]
    for letter in letters:
        assert letter.message is not None and letter.message.details["reason"] == "undecodable"
        assert "malformed" in letter.message.error and letter.message.payload == "{not json"
