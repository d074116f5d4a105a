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
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from services.benchmarker.service import BenchmarkerService
from services.converter.service import ConverterService
from services.registry.service import RegistryService
from services.validator.service import ValidatorService
from shared.artifacts import ArtifactStore, sha256_file
from shared.bus import Bus
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.base import new_id
from shared.contracts.benchmark import BenchmarkConfig, BenchmarkModel
from shared.contracts.registry import ModelRegistered, RegisterModel
from shared.embedded import EmbeddedNats
from shared.errors import ServiceUnavailable
from shared.sdk import Client, StreamEvent
from shared.worker import Route, Worker
from tests.support.cluster import minimal_payload, padded, quick
from tests.support.events import eventually, stored
from tests.support.models import mlp, sized_model
from tests.support.services import ServiceProcess, running

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


# --- poison on every consumed subject ---------------------------------------------------------------

LIMIT = 32 * 1024


def _concrete(pattern: str) -> str:
    return ".".join({"*": "poison", ">": "poison.x"}.get(t, t) for t in pattern.split("."))


def _tagged(kind: type) -> bool:
    return msgspec.inspect.type_info(kind).tag_field is not None  # type: ignore[attr-defined]


@pytest.mark.fault
async def test_poison_on_every_consumed_subject_is_dead_lettered_and_the_pipeline_keeps_serving(
    settings: Settings, bus: Bus, client: Client, tmp_path: Path
) -> None:
    """For every subject any service consumes: invalid JSON, wrong field types, an unknown
    event type, and a payload one byte over the service's size limit are each dead-lettered
    by every consumer of that subject, with the error and an alert; a payload exactly at the
    limit is not refused as poison. Then a real model still goes through the whole pipeline."""
    s = quick(settings, max_message_bytes=LIMIT)
    async with (
        running(s, RegistryService) as registry,
        running(s, ConverterService) as converter,
        running(s, BenchmarkerService) as benchmarker,
        running(s, ValidatorService) as validator,
    ):
        # An operator may allow larger messages in the streams than a service decodes: the
        # service's own limit must still hold (the services set the stream limit to theirs).
        await bus.ensure_streams()
        consumers = [
            (w, r) for svc in (registry, converter, benchmarker, validator) for w in svc.workers for r in w.routes
        ]
        by_subject: dict[str, list[tuple[Worker, type]]] = {}
        for _worker, route in consumers:
            subject = _concrete(route.subject)
            by_subject[subject] = [(w, r.kind) for w, r in consumers if r.matches(subject)]
        assert {
            "model.register",
            "model.registered.poison",
            "model.convert",
            "model.benchmark",
            "model.validate",
            "model.benchmarked.poison",
            "model.validated.poison",
            "telemetry.inference.poison",
            "alerts.poison.x",
        } <= set(by_subject)

        # (durable, stream, seq) -> (subject, what the error says, payload size)
        refused: dict[tuple[str, str, int], tuple[str, str, int]] = {}
        alerts_expected: set[tuple[str, str, int]] = set()
        at_limit: dict[str, tuple[str, int]] = {}
        for subject, readers in sorted(by_subject.items()):
            kinds = {kind for _, kind in readers}
            assert len(kinds) == 1, f"{subject} is decoded as {kinds}"
            kind = kinds.pop()
            sample = minimal_payload(kind)
            cases: list[tuple[bytes, str | None]] = [
                (b"{not json", "malformed"),
                (msgspec.json.encode({**sample, "event_id": 12345}), "Expected `str`, got `int`"),
                (padded(sample, LIMIT + 1), f"over the {LIMIT}-byte limit"),
                (padded(sample, LIMIT), None),
            ]
            if _tagged(kind):
                cases.append(
                    (msgspec.json.encode({**sample, "type": "model.nonsense"}), "Invalid value 'model.nonsense'")
                )
            for data, error in cases:
                ack = await bus.js.publish(subject, data)
                if error is None:
                    at_limit[subject] = (ack.stream, ack.seq)
                    continue
                for worker, _ in readers:
                    refused[(worker.durable, ack.stream, ack.seq)] = (subject, error, len(data))
                    alerts_expected.add((worker.service, subject, ack.seq))

        async def all_refused() -> bool:
            got = {_letter_key(e) for e in await stored(client, "deadletter.>")}
            return set(refused) <= got

        await eventually(all_refused, timeout=60, what="a dead letter per consumer and poison message")
        letters = await stored(client, "deadletter.>")
        by_key: dict[tuple[str, str, int], list[Any]] = {}
        for e in letters:
            by_key.setdefault(_letter_key(e), []).append(e.message)
        for key, (subject, error, size) in refused.items():
            [letter] = by_key[key]  # exactly one per consumer
            assert letter.details["reason"] == "undecodable" and letter.deliveries == 1, letter
            assert error in letter.error, (key, letter.error)
            assert letter.subject == subject and letter.payload_bytes == size
        for stream, seq in at_limit.values():  # decodable at the limit: never refused as poison
            for (durable, st, sq), found in by_key.items():
                if (st, sq) == (stream, seq):
                    assert all(m.details["reason"] != "undecodable" for m in found), (durable, found)
        # ... and handled: the command at the limit gets its precise rejection.
        _, register_seq = at_limit["model.register"]
        rejections = await stored(client, "model.rejected.poison")
        assert [e.message.reason.value for e in rejections if e.message.event_id == f"rej-models-{register_seq}"] == [
            "invalid_version"
        ]
        alerts = await stored(client, "alerts.pipeline.deadletter.>")
        got_alerts = {(e.subject.rsplit(".", 1)[1], e.message.subject, e.message.stream_seq) for e in alerts}
        assert alerts_expected <= got_alerts

        # The next good message goes all the way through every service.
        record = await client.register(mlp(tmp_path / "good.onnx"), name="good", version="1.0.0")
        assert record.ref == "good@1.0.0"

        async def pipeline_done() -> bool:
            validated = await stored(client, "model.validated.good")
            return {e.message.variant for e in validated if e.message} >= {"base", "ort-opt"}

        await eventually(pipeline_done, timeout=90, what="the good model converted, benchmarked and validated")
        assert len(await stored(client, "model.converted.good")) == 1
        assert len(await stored(client, "model.benchmarked.good")) == 2


def _durable_of(e: StreamEvent) -> str:
    # dl-<durable>-<stream>-<seq>; durables may contain dashes (registry-signals)
    assert e.message is not None
    body = e.message.event_id[len("dl-") :]
    return body.rsplit("-", 2)[0]


def _letter_key(e: StreamEvent) -> tuple[str, str, int]:
    assert e.message is not None
    return (_durable_of(e), e.message.stream, e.message.stream_seq)


# --- kill -9 mid-work ------------------------------------------------------------------------------


@pytest.mark.fault
async def test_registry_killed_mid_upload_registers_once_and_its_orphan_chunks_are_purged(
    settings: Settings, bus: Bus, client: Client, imports: Path, tmp_path: Path
) -> None:
    """kill -9 while the registry streams a 64 MB import into the object store: the restarted
    registry gets the command again, registers and announces it once, and answers the waiting
    client; the dead upload's chunks (no metadata points to them) are purged by the sweep."""
    s = settings.with_overrides(ack_wait_s=2.0)
    model = sized_model(imports / "big.onnx", 64 << 20)
    store = ArtifactStore(bus)
    await store.ensure()
    chunk_seen = asyncio.Event()

    async def on_chunk(_: Any) -> None:
        chunk_seen.set()

    sub = await bus.nc.subscribe(f"$O.{s.artifact_bucket}.C.>", cb=on_chunk)
    first = ServiceProcess("registry", s, tmp_path / "logs").start()
    second = None
    try:
        command = RegisterModel(event_id=new_id(), name="big", version="1.0.0", artifact_uri=f"file://{model}")
        waiting = asyncio.create_task(client.send_and_wait(subjects.REGISTER, command, timeout=120))
        await asyncio.wait_for(chunk_seen.wait(), 60)
        first.kill()  # mid-upload: chunks are in the bucket, the metadata is not
        await sub.unsubscribe()
        second = ServiceProcess("registry", s, tmp_path / "logs").start()
        reply = await waiting
        assert reply["type"] == "model.registered", reply
    finally:
        first.kill()
        if second is not None:
            second.stop()

    assert len(await stored(client, "model.registered.big")) == 1
    assert await stored(client, "model.rejected.big") == []
    chunk_sets = await bus.js.stream_info(store.stream, subjects_filter=f"$O.{s.artifact_bucket}.C.>")
    assert len(chunk_sets.state.subjects or {}) == 2  # the dead upload's and the live object's
    assert await store.purge_orphans(min_age_s=600) == 0  # too young: could be an upload in progress
    assert await store.purge_orphans(min_age_s=0) == 1
    chunk_sets = await bus.js.stream_info(store.stream, subjects_filter=f"$O.{s.artifact_bucket}.C.>")
    assert len(chunk_sets.state.subjects or {}) == 1
    async with running(s, RegistryService):
        record = (await client.get("big@1.0.0")).record
        assert record.sha256 == sha256_file(model)
        downloaded = await client.download("big@1.0.0", tmp_path / "back.onnx")  # hash-verified
        assert downloaded.stat().st_size == model.stat().st_size


@pytest.mark.fault
async def test_benchmarker_killed_mid_run_publishes_one_outcome_and_one_history_row_per_config(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    """kill -9 between the two configurations of a benchmark: the restarted benchmarker (same
    DuckDB file, reopened after the crash) takes the command again, reuses the configuration
    already stored, measures the other, and publishes one model.benchmarked; the history holds
    exactly one row per configuration."""
    s = settings.with_overrides(bench_auto=False, ack_wait_s=2.0)
    config = BenchmarkConfig(batch_sizes=[1, 2], warmup_s=0.05, window_s=0.2, min_duration_s=1.0, max_duration_s=2.0)
    async with running(s, RegistryService):
        await client.register(mlp(tmp_path / "m.onnx"), name="bm", version="1.0.0")
        first = ServiceProcess("benchmarker", s, tmp_path / "logs").start()
        second = None
        inbox = client.bus.nc.new_inbox()
        progress: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def on_reply(msg: Any) -> None:
            await progress.put(json.loads(msg.data))

        sub = await client.bus.nc.subscribe(inbox, cb=on_reply)
        try:
            command = BenchmarkModel(event_id=new_id(), ref="bm@1.0.0", config=config, reply_to=inbox)
            await client.send(subjects.BENCHMARK, command)
            first_done = await asyncio.wait_for(progress.get(), 60)
            assert first_done.get("done") == 1, first_done
            first.kill()  # the second configuration is being measured
            second = ServiceProcess("benchmarker", s, tmp_path / "logs").start()

            async def benchmarked() -> bool:
                return len(await stored(client, "model.benchmarked.bm")) >= 1

            await eventually(benchmarked, timeout=90, what="model.benchmarked after the restart")
            await asyncio.sleep(1.0)  # a duplicate would arrive now
            [event] = await stored(client, "model.benchmarked.bm")
            assert event.message.event_id == f"bench-{command.event_id}"
            assert sorted(r.batch_size for r in event.message.results) == [1, 2]
            result = await client.sql(
                "SELECT batch_size, count(*) AS n FROM benchmark_runs "
                f"WHERE source_event_id = '{command.event_id}' GROUP BY batch_size ORDER BY batch_size"
            )
            assert [list(row) for row in result.rows] == [[1, 1], [2, 1]]
            assert await stored(client, "model.benchmark_failed.bm") == []
        finally:
            await sub.unsubscribe()
            first.kill()
            if second is not None:
                second.stop()


async def test_an_upload_whose_chunk_acks_never_come_fails_cleanly_instead_of_hanging(
    bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk published to a node that dies is never acknowledged, and nats-py's
    publish_async futures have no timeout: the upload (and the handler heartbeating for it)
    once hung forever. Now it times out, is retried, and fails with a one-line error, and the
    connection's publish slots are released."""
    import shared.artifacts as artifacts
    import shared.bus as bus_module

    monkeypatch.setattr(artifacts, "ACK_TIMEOUT_S", 0.5)
    monkeypatch.setattr(bus_module, "TRANSIENT_RETRY_S", 2.0)

    async def swallow(_: Any) -> None:  # a responder that never answers: acks are lost
        return None

    sink = await bus.nc.subscribe("$O.ghost.C.>", cb=swallow)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"x" * (3 * artifacts.CHUNK_SIZE))
    try:
        with pytest.raises(ServiceUnavailable, match="upload of 'blob'"):
            await asyncio.wait_for(ArtifactStore(bus, "ghost").put_file(blob, "blob"), 30)
    finally:
        await sink.unsubscribe()
    assert bus.js.publish_async_pending() == 0


# --- nats-server killed mid-flow ---------------------------------------------------------------------


async def _flow_complete(client: Client, names: list[str]) -> bool:
    for name in names:
        validated = await stored(client, f"model.validated.{name}")
        if {e.message.variant for e in validated if e.message} != {"base", "ort-opt"}:
            return False
    return True


async def _assert_each_step_once(client: Client, names: list[str]) -> None:
    """Every step of every model announced exactly once, and recorded once in the history."""
    for name in names:
        for subject, expected in (
            (f"model.registered.{name}", ["base", "ort-opt"]),
            (f"model.benchmarked.{name}", ["base", "ort-opt"]),
            (f"model.validated.{name}", ["base", "ort-opt"]),
        ):
            assert sorted(e.message.variant for e in await stored(client, subject)) == expected, subject
        assert [e.message.profile for e in await stored(client, f"model.converted.{name}")] == ["ort-opt"]
        for prefix in (
            "model.rejected.",
            "model.conversion_failed.",
            "model.benchmark_failed.",
            "model.validation_failed.",
        ):
            assert await stored(client, prefix + name) == [], prefix + name
    quoted = ", ".join(f"'{n}'" for n in names)
    for table, per_model in (("benchmark_runs", 2), ("conversions", 1), ("validations", 2)):
        result = await client.sql(f"SELECT name, count(*) FROM {table} WHERE name IN ({quoted}) GROUP BY name")
        assert sorted(map(tuple, result.rows)) == [(n, per_model) for n in sorted(names)], table


@pytest.mark.fault
async def test_nats_server_killed_mid_flow_services_reconnect_and_finish_every_step_once(
    settings: Settings, nats_server: EmbeddedNats, client: Client, tmp_path: Path
) -> None:
    """kill -9 nats-server while models are being registered, converted, benchmarked and
    validated; start it again on its store: the services reconnect and finish the work, and
    nothing is announced or recorded twice (publishes retried across the outage carry their
    Nats-Msg-Id, which the restarted server still deduplicates)."""
    s = quick(settings, ack_wait_s=4.0)
    names = ["ra", "rb", "rc"]
    async with (
        running(s, RegistryService),
        running(s, ConverterService),
        running(s, BenchmarkerService),
        running(s, ValidatorService),
    ):
        for i, name in enumerate(names):
            await client.register(mlp(tmp_path / f"{name}.onnx", seed=i), name=name, version="1.0.0", wait=False)

        # Twice: once while registrations are under way, once while variants are measured.
        for subject in ("model.registered.>", "model.benchmarked.>"):

            async def reached(subject: str = subject) -> bool:
                return len(await stored(client, subject)) >= 1

            await eventually(reached, timeout=60, every=0.05, what=f"the first {subject}")
            nats_server.kill()
            await asyncio.sleep(1.5)
            nats_server.start()
        await eventually(lambda: _flow_complete(client, names), timeout=150, every=1.0, what="every model validated")
        await asyncio.sleep(1.0)
        await _assert_each_step_once(client, names)


# --- a burst of registrations ------------------------------------------------------------------------

BURST = 500


async def _subject_counts(bus: Bus, subject: str) -> dict[str, int]:
    info = await bus.js.stream_info("MODELS", subjects_filter=subject)
    return dict(info.state.subjects or {})


@pytest.mark.fault
async def test_500_registrations_at_once_are_each_registered_once_and_followed_up(
    settings: Settings, bus: Bus, client: Client, imports: Path
) -> None:
    """500 model.register commands published at once (500 different models): every one is
    registered and announced exactly once, and every model.registered fact is followed up: the
    converter answers each with its outcome (a TensorRT profile, skipped on a host without
    TensorRT, so the burst measures the platform rather than a GPU compiler) and the benchmarker
    records each outcome in its history."""
    from services.converter.profiles import get_profile

    profile = "trt-fp16" if get_profile("trt-fp16").availability() is not None else "opset-17"
    s = settings.with_overrides(converter_profiles=(profile,), bench_auto=False, ack_wait_s=30.0)
    names = [f"burst-{i:03d}" for i in range(BURST)]
    paths = [mlp(imports / f"{name}.onnx", seed=i, hidden=8) for i, name in enumerate(names)]
    commands = [
        RegisterModel(event_id=new_id(), name=name, version="1.0.0", artifact_uri=f"file://{path}")
        for name, path in zip(names, paths, strict=True)
    ]
    async with running(s, RegistryService), running(s, ConverterService), running(s, BenchmarkerService):
        await asyncio.gather(*(client.send(subjects.REGISTER, cmd) for cmd in commands))

        async def all_followed_up() -> bool:
            return (
                len(await _subject_counts(bus, "model.conversion_skipped.>"))
                + len(await _subject_counts(bus, "model.conversion_failed.>"))
                + len(await _subject_counts(bus, "model.converted.>"))
                >= BURST
            )

        await eventually(all_followed_up, timeout=150, every=1.0, what=f"{BURST} conversion outcomes")
        await asyncio.sleep(1.0)

        registered = await _subject_counts(bus, "model.registered.>")
        assert registered == {f"model.registered.{n}": 1 for n in names}
        assert await _subject_counts(bus, "model.rejected.>") == {}
        outcomes = {
            **await _subject_counts(bus, "model.conversion_skipped.>"),
            **await _subject_counts(bus, "model.converted.>"),
            **await _subject_counts(bus, "model.conversion_failed.>"),
        }
        assert sorted(outcomes.values()) == [1] * BURST and len(outcomes) == BURST
        listed = await client.list(limit=1000)
        assert listed.total == BURST

        async def history_complete() -> bool:
            result = await client.sql("SELECT count(DISTINCT name), count(*) FROM conversions")
            return list(result.rows[0]) == [BURST, BURST]

        await eventually(history_complete, timeout=30, what="one history row per conversion outcome")
        for durable in ("registry", "converter", "benchmarker", "benchmarker-history"):
            info = await bus.js.consumer_info("MODELS", durable)
            assert info.num_pending == 0 and info.num_ack_pending == 0, (durable, info)


# --- the same bytes as two versions: two conversions, two facts ---------------------------------


async def test_the_same_bytes_registered_as_two_versions_are_each_converted_once(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    s = quick(settings, bench_auto=False)
    async with running(s, RegistryService), running(s, ConverterService):
        path = mlp(tmp_path / "same.onnx")
        await client.register(path, name="same", version="1.0.0")
        await client.register(path, name="same", version="1.0.1")

        async def both_variants() -> bool:
            listed = await client.list(name="same")
            return sum(v.record.variant == "ort-opt" for v in listed.models) == 2

        await eventually(both_variants, timeout=60, what="an ort-opt variant of each version")
        await asyncio.sleep(0.5)
        converted = await stored(client, "model.converted.same")
        assert sorted(e.message.version for e in converted) == ["1.0.0", "1.0.1"]
