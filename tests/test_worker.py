"""The durable consumer loop against a real nats-server: retries, dead letters, heartbeats,
dedupe, shared consumers."""

from __future__ import annotations

import asyncio

import pytest

from shared.bus import Bus
from shared.contracts import subjects
from shared.contracts.base import Command
from shared.contracts.registry import RegisterModel
from shared.sdk import Client
from shared.worker import Delivery, Route, Worker, subject_matches


async def run_worker(bus: Bus, handler, *, durable: str = "t", subject: str = subjects.REGISTER, **kw) -> Worker:
    worker = Worker(
        bus, service="tester", stream="MODELS", durable=durable, routes=[Route(subject, RegisterModel, handler)], **kw
    )
    _tasks[worker] = asyncio.create_task(worker.run())
    return worker


_tasks: dict[Worker, asyncio.Task] = {}


async def stop(*workers: Worker) -> None:
    for worker in workers:
        worker.stop()
    await asyncio.gather(*(_tasks.pop(w) for w in workers))


def command(name: str, event_id: str = "") -> RegisterModel:
    return RegisterModel(event_id=event_id, name=name, version="1.0.0", artifact_uri="nats-obj://a/b")


async def eventually(predicate, timeout: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_a_failing_handler_is_retried_then_succeeds(bus: Bus) -> None:
    attempts: list[int] = []

    async def flaky(delivery: Delivery) -> None:
        attempts.append(delivery.deliveries)
        if delivery.deliveries < 2:
            raise RuntimeError("transient")

    worker = await run_worker(bus, flaky, max_deliver=3)
    await bus.publish(subjects.REGISTER, command("a", "e1"))
    await eventually(lambda: worker.handled == 1)
    await stop(worker)
    assert attempts == [1, 2] and worker.dead_lettered == 0


async def test_a_handler_failing_every_time_is_dead_lettered_with_an_alert(bus: Bus) -> None:
    async def broken(delivery: Delivery) -> None:
        raise ValueError("model exploded")

    worker = await run_worker(bus, broken, max_deliver=2)
    await bus.publish(subjects.REGISTER, command("b", "e2"))
    await eventually(lambda: worker.dead_lettered == 1, timeout=20)
    await stop(worker)
    client = Client(bus)
    [letter] = [e async for e in client.events("deadletter.tester", replay=True, idle_timeout=10, stored_only=True)]
    assert letter.message.error == "model exploded" and letter.message.deliveries == 2
    assert letter.message.details["reason"] == "max_deliver"
    [alert] = [
        e
        async for e in client.alerts(
            "alerts.pipeline.deadletter.tester", replay=True, idle_timeout=10, stored_only=True
        )
    ]
    assert alert.message.subject == subjects.REGISTER


async def test_heartbeats_keep_long_work_from_being_redelivered(bus: Bus) -> None:
    seen: list[int] = []

    async def slow(delivery: Delivery) -> None:
        seen.append(delivery.deliveries)
        await asyncio.sleep(4.0)  # longer than ack_wait below: only in_progress() keeps it ours

    worker = await run_worker(bus, slow, ack_wait_s=1.5, max_deliver=5)
    await bus.publish(subjects.REGISTER, command("c", "e3"))
    await eventually(lambda: worker.handled == 1, timeout=20)
    await stop(worker)
    assert seen == [1]


async def test_publish_dedupes_on_event_id(bus: Bus) -> None:
    first = await bus.publish(subjects.REGISTER, command("d", "same-id"))
    second = await bus.publish(subjects.REGISTER, command("d", "same-id"))
    assert second.duplicate and second.seq == first.seq


async def test_replicas_share_one_durable_consumer(bus: Bus, settings) -> None:
    other = await Bus.connect(settings, name="replica-2")
    seen: list[str] = []

    async def handler(delivery: Delivery) -> None:
        seen.append(delivery.message.name)
        await asyncio.sleep(0.01)

    one = await run_worker(bus, handler, durable="shared", concurrency=2)
    two = await run_worker(other, handler, durable="shared", concurrency=2)
    for i in range(30):
        await bus.publish(subjects.REGISTER, command(f"n{i}", f"id{i}"))
    await eventually(lambda: one.handled + two.handled == 30)
    await stop(one, two)
    await other.close()
    assert sorted(seen) == sorted(f"n{i}" for i in range(30))


async def test_oversized_message_is_dead_lettered(bus: Bus) -> None:
    handled: list[str] = []

    async def handler(delivery: Delivery) -> None:
        handled.append(delivery.message.name)

    small = bus.settings.with_overrides(max_message_bytes=600)
    tight = Bus(bus.nc, small, name="tight")
    worker = await run_worker(tight, handler)
    big = command("big", "big-id")
    big.metadata = {"blob": "x" * 1000}
    await bus.publish(subjects.REGISTER, big)
    await bus.publish(subjects.REGISTER, command("small", "small-id"))
    await eventually(lambda: worker.handled == 1 and worker.dead_lettered == 1)
    await stop(worker)
    assert handled == ["small"]


@pytest.mark.parametrize(
    ("pattern", "subject", "expected"),
    [
        ("model.registered.*", "model.registered.m", True),
        ("model.registered.*", "model.registered.m.x", False),
        ("model.>", "model.a.b.c", True),
        ("model.>", "model", False),
        ("model.register", "model.registered", False),
    ],
)
def test_subject_matching(pattern: str, subject: str, expected: bool) -> None:
    assert subject_matches(pattern, subject) is expected


def test_commands_carry_reply_to() -> None:
    assert "reply_to" in Command.__struct_fields__


async def test_work_that_never_finishes_is_dead_lettered_through_the_advisory(bus: Bus) -> None:
    """A process that dies in the middle of a message every time (simulated: a handler that
    hangs without heartbeats) exhausts max_deliver without ever reaching our failure path;
    JetStream's MAX_DELIVERIES advisory still gets the message dead-lettered."""

    async def hangs(delivery: Delivery) -> None:
        await asyncio.sleep(3600)

    worker = Worker(
        bus,
        service="tester",
        stream="MODELS",
        durable="stuck",
        routes=[Route(subjects.REGISTER, RegisterModel, hangs)],
        ack_wait_s=1.0,
        max_deliver=2,
        concurrency=4,
    )

    async def no_heartbeat(msg) -> None:
        return None

    worker._heartbeat = no_heartbeat  # type: ignore[method-assign]
    _tasks[worker] = asyncio.create_task(worker.run())
    await bus.publish(subjects.REGISTER, command("stuck", "stuck-id"))
    await eventually(lambda: worker.dead_lettered == 1, timeout=30)
    for task in list(worker._inflight):
        task.cancel()
    await stop(worker)
    client = Client(bus)
    [letter] = [e async for e in client.events("deadletter.tester", replay=True, idle_timeout=10, stored_only=True)]
    assert letter.message.details["reason"] == "max_deliver_advisory"
    assert letter.message.payload and "stuck" in letter.message.payload


async def test_a_handler_can_declare_a_message_poison(bus: Bus) -> None:
    from shared.worker import PoisonMessage

    calls: list[int] = []

    async def refuses(delivery: Delivery) -> None:
        calls.append(delivery.deliveries)
        raise PoisonMessage("latencies and timestamps differ in length")

    worker = await run_worker(bus, refuses, durable="poison", max_deliver=5)
    await bus.publish(subjects.REGISTER, command("p", "poison-id"))
    await eventually(lambda: worker.dead_lettered == 1)
    await stop(worker)
    assert calls == [1]  # no retries
    client = Client(bus)
    [letter] = [e async for e in client.events("deadletter.tester", replay=True, idle_timeout=10, stored_only=True)]
    assert letter.message.details["reason"] == "poison"


async def test_a_dependency_that_is_down_does_not_spend_the_message(bus: Bus) -> None:
    """While another service does not answer, the handler is run again on the same delivery
    (heartbeats hold the message) instead of being nak'ed into the dead-letter queue."""
    from shared.errors import ServiceUnavailable

    calls: list[int] = []

    async def needs_registry(delivery: Delivery) -> None:
        calls.append(delivery.deliveries)
        if len(calls) < 4:
            raise ServiceUnavailable("no service answers registry.get")

    worker = await run_worker(bus, needs_registry, durable="dep", max_deliver=2)
    await bus.publish(subjects.REGISTER, command("dep", "dep-id"))
    await eventually(lambda: worker.handled == 1, timeout=30)
    await stop(worker)
    assert calls == [1, 1, 1, 1] and worker.dead_lettered == 0
