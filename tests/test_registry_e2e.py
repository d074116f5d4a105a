"""The registry end to end, through a real nats-server: SDK, raw JSON publishes, endpoints."""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import threading
from pathlib import Path

import msgspec
import pytest

from services.registry.service import RegistryService
from services.registry.store import RegistryStore
from shared.artifacts import ArtifactStore, sha256_file
from shared.bus import Bus
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.registry import FindModels, ListModels, ModelRecord, RegisterModel
from shared.contracts.validation import ModelValidated, ValidationReport
from shared.errors import Rejected, UnknownAlias, UnknownModel
from shared.sdk import Client
from tests.support.events import stored as stored_events
from tests.support.facts import benchmarked
from tests.support.models import digits_classifier, digits_dataset, mlp, sized_model
from tests.support.services import running


async def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def publish_raw(bus: Bus, payload: dict | bytes, subject: str = subjects.REGISTER) -> None:
    """What a non-Python pipeline does: a plain JSON publish, no envelope fields."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    await bus.js.publish(subject, data)


async def outcome_of(client: Client, name: str, version: str, timeout: float = 15.0):
    token = subjects.name_token(name)

    async def find():
        for subject in (f"model.registered.{token}", f"model.rejected.{token}"):
            for event in await stored_events(client, subject):
                if event.data.get("name") == name and event.data.get("version") == version:
                    return event
        return None

    return await wait_for(find, timeout)


# --- registration ----------------------------------------------------------------------------


async def test_register_through_the_sdk_is_announced_once(settings: Settings, client: Client, tmp_path: Path) -> None:
    path = mlp(tmp_path / "m.onnx")
    async with running(settings, RegistryService):
        record = await client.register(path, name="mlp", version="1.0.0", task="classification", tags={"team": "ml"})
        assert record.ref == "mlp@1.0.0"
        assert record.sha256 == sha256_file(path)
        assert record.inputs[0].shape == ["batch", 16]
        assert record.artifact_uri == f"nats-obj://artifacts/sha256/{record.sha256}"

        again = await client.register(path, name="mlp", version="1.0.0")
        assert again.sha256 == record.sha256 and again.created_at == record.created_at

        other = mlp(tmp_path / "other.onnx", seed=9)
        with pytest.raises(Rejected) as rejected:
            await client.register(other, name="mlp", version="1.0.0")
        assert rejected.value.code == "version_exists"

        events = await stored_events(client, "model.registered.mlp")
        assert len(events) == 1
        assert events[0].message.record.tags == {"team": "ml"}
        assert len(await stored_events(client, "model.rejected.mlp")) == 1

        downloaded = await client.download("mlp@1.0.0", tmp_path / "dl")
        assert sha256_file(downloaded) == record.sha256


async def test_raw_json_publish_with_file_uri(settings: Settings, client: Client, bus: Bus, imports: Path) -> None:
    model = digits_classifier(imports / "digits.onnx")
    async with running(settings, RegistryService):
        await publish_raw(bus, {"name": "digits", "version": "0.1.0", "artifact_uri": f"file://{model}"})
        event = await outcome_of(client, "digits", "0.1.0")
        assert event.subject == "model.registered.digits"
        assert event.message.record.source_uri == f"file://{model}"
        assert event.message.correlation_id.startswith("models-")  # filled from the stream position


async def test_raw_json_publish_with_an_uploaded_object(
    settings: Settings, client: Client, bus: Bus, tmp_path: Path
) -> None:
    path = mlp(tmp_path / "m.onnx", seed=4)
    store = ArtifactStore(bus)
    await store.ensure()
    await store.put_file(path, "uploads/my-model.onnx")
    async with running(settings, RegistryService):
        await publish_raw(
            bus, {"name": "obj", "version": "2.0.0", "artifact_uri": "nats-obj://artifacts/uploads/my-model.onnx"}
        )
        event = await outcome_of(client, "obj", "2.0.0")
        record = event.message.record
        assert record.artifact_uri.endswith(f"sha256/{sha256_file(path)}")  # stored content-addressed
        assert record.source_uri == "nats-obj://artifacts/uploads/my-model.onnx"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"name": "Bad Name", "version": "1.0.0", "artifact_uri": "file:///x"}, "invalid_name"),
        ({"name": "ok", "version": "1.0", "artifact_uri": "file:///x"}, "invalid_version"),
        ({"name": "ok", "version": "1.0.0", "variant": "FP16", "artifact_uri": "file:///x"}, "invalid_variant"),
        ({"name": "ok", "version": "1.0.0", "artifact_uri": "file:///etc/passwd"}, "import_not_allowed"),
        ({"name": "ok", "version": "1.0.0", "artifact_uri": "ftp://host/m.onnx"}, "import_not_allowed"),
        ({"name": "ok", "version": "1.0.0", "artifact_uri": "no-scheme.onnx"}, "invalid_uri"),
        ({"name": "ok", "version": "1.0.0", "artifact_uri": "nats-obj://artifacts/none"}, "artifact_not_found"),
        ({"name": "ok", "version": "1.0.0", "artifact_uri": "file:///x", "sha256": "xyz"}, "invalid_command"),
        ({"name": "ok", "version": "1.0.0", "artifact_uri": "file:///x", "format": "pickle"}, "unsupported_format"),
        ({"name": "ok", "version": "1.0.0", "artifact_uri": "file:///x", "parent": "ghost@1.0.0"}, "unknown_parent"),
    ],
)
async def test_bad_commands_are_rejected_with_a_reason(
    settings: Settings, client: Client, bus: Bus, payload: dict, reason: str
) -> None:
    async with running(settings, RegistryService):
        await publish_raw(bus, payload)
        event = await outcome_of(client, payload["name"], payload["version"])
        assert event.subject.startswith("model.rejected.")
        assert event.message.reason == reason, event.message.message
        assert event.message.message


async def test_artifact_problems_are_rejected_precisely(settings: Settings, client: Client, imports: Path) -> None:
    small = settings.with_overrides(max_artifact_bytes=64 * 1024)
    big = sized_model(imports / "big.onnx", 200 * 1024)
    missing = imports / "nope.onnx"
    not_onnx = imports / "notes.onnx"
    not_onnx.write_text("hello " * 100)
    truncated = imports / "truncated.onnx"
    truncated.write_bytes(mlp(imports / "full.onnx").read_bytes()[:300])
    async with running(small, RegistryService):
        cases = [
            (big, "too_large"),
            (missing, "artifact_not_found"),
            (not_onnx, "not_onnx"),
            (truncated, None),  # not_onnx or invalid_model, depending on where the cut falls
        ]
        for i, (path, reason) in enumerate(cases):
            with pytest.raises(Rejected) as rejected:
                await client.register(f"file://{path}", name="case", version=f"1.0.{i}")
            if reason:
                assert rejected.value.code == reason, rejected.value.message
            else:
                assert rejected.value.code in ("not_onnx", "invalid_model")


async def test_sha256_in_the_command_is_checked(settings: Settings, client: Client, imports: Path) -> None:
    path = mlp(imports / "m.onnx")
    async with running(settings, RegistryService):
        cmd = RegisterModel(name="sha", version="1.0.0", artifact_uri=f"file://{path}", sha256="a" * 64)
        reply = await client.send_and_wait(subjects.REGISTER, cmd, timeout=15)
        assert reply["type"] == "model.rejected" and reply["reason"] == "sha256_mismatch"


async def test_http_import(settings: Settings, client: Client, tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    mlp(served / "model.onnx", seed=5)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    local = settings.with_overrides(fetch_hosts=("127.0.0.1",))  # loopback is refused unless named
    try:
        async with running(local, RegistryService):
            record = await client.register(f"{base}/model.onnx?token=secret", name="web", version="1.0.0")
            assert record.source_uri == f"{base}/model.onnx"  # query string (credentials) dropped
            with pytest.raises(Rejected) as rejected:
                await client.register(f"{base}/missing.onnx", name="web", version="1.0.1")
            assert rejected.value.code == "artifact_not_found"
        no_http = local.with_overrides(allowed_schemes=("nats-obj", "upload", "file"))
        async with running(no_http, RegistryService):
            with pytest.raises(Rejected) as rejected:
                await client.register(f"{base}/model.onnx", name="web", version="1.0.2")
            assert rejected.value.code == "import_not_allowed"
    finally:
        server.shutdown()


async def test_dataset_is_checked_and_stored(settings: Settings, client: Client, tmp_path: Path) -> None:
    model = digits_classifier(tmp_path / "d.onnx")
    good = digits_dataset(tmp_path / "good.npz")
    bad = digits_dataset(tmp_path / "bad.npz", input_name="pixels")
    import numpy as np

    with np.load(bad) as data:
        np.savez(tmp_path / "bad.npz", pixels=data["pixels"], other=data["pixels"], labels=data["labels"])
    async with running(settings, RegistryService):
        record = await client.register(model, name="digits", version="1.0.0", dataset=good)
        assert record.dataset_uri and record.dataset_uri.startswith("nats-obj://artifacts/datasets/")
        with pytest.raises(Rejected) as rejected:
            await client.register(model, name="digits", version="1.0.1", dataset=tmp_path / "bad.npz")
        assert rejected.value.code == "invalid_dataset"
        assert "X" in rejected.value.message


async def test_lineage_parent_and_variant(settings: Settings, client: Client, tmp_path: Path) -> None:
    async with running(settings, RegistryService):
        await client.register(mlp(tmp_path / "a.onnx"), name="net", version="1.0.0")
        variant = await client.register(
            mlp(tmp_path / "b.onnx", seed=1), name="net", version="1.0.0", variant="fp16", parent="net@1.0.0"
        )
        assert variant.ref == "net@1.0.0+fp16" and variant.parent == "net@1.0.0"
        view = await client.get("net@1.0.0+fp16")
        assert view.record.parent == "net@1.0.0"
        with pytest.raises(UnknownModel):
            await client.get("net@1.0.0+int8-dynamic")


# --- aliases, tags, list, find -------------------------------------------------------------


async def test_aliases_move_atomically_and_resolve_everywhere(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    async with running(settings, RegistryService):
        await client.register(mlp(tmp_path / "a.onnx"), name="clf", version="1.0.0")
        await client.register(mlp(tmp_path / "b.onnx", seed=2), name="clf", version="1.1.0")
        first = await client.set_alias("clf@1.0.0", "production")
        assert first.previous is None
        moved = await client.set_alias("clf@1.1.0", "production")
        assert moved.previous == "1.0.0" and moved.version == "1.1.0"
        assert (await client.get("clf@production")).record.version == "1.1.0"
        assert (await client.resolve("clf@production")).version == "1.1.0"
        assert (await client.get("clf")).record.version == "1.1.0"  # bare name: newest
        await client.remove_alias("clf", "production")
        with pytest.raises(UnknownAlias):
            await client.get("clf@production")
        with pytest.raises(UnknownModel):
            await client.set_alias("clf@9.9.9", "production")
        events = [e.subject for e in await stored_events(client, "model.*.clf") if "alias" in e.subject]
        assert events == ["model.alias_set.clf", "model.alias_set.clf", "model.alias_removed.clf"]


async def test_tags_and_list_filters(settings: Settings, client: Client, tmp_path: Path) -> None:
    async with running(settings, RegistryService):
        await client.register(
            mlp(tmp_path / "a.onnx"), name="a", version="1.0.0", task="classification", tags={"team": "vision"}
        )
        await client.register(
            mlp(tmp_path / "b.onnx", seed=1), name="b", version="1.0.0", task="regression", tags={"team": "nlp"}
        )
        await client.register(mlp(tmp_path / "c.onnx", seed=2), name="c", version="1.0.0", task="classification")
        await client.set_tags("c@1.0.0", {"stage": "beta"})
        assert (await client.get("c@1.0.0")).record.tags == {"stage": "beta"}

        async def refs(**kw) -> list[str]:
            result = await client.list(ListModels(**kw))
            return [v.record.ref for v in result.models]

        await wait_for(lambda: refs(tags=["stage"]))
        assert await refs(task="classification") == ["a@1.0.0", "c@1.0.0"]
        assert await refs(task="classification", tags=["team=vision"]) == ["a@1.0.0"]
        assert await refs(any_of=[ListModels(task="regression"), ListModels(tags=["stage=beta"])]) == [
            "b@1.0.0",
            "c@1.0.0",
        ]
        assert len(await stored_events(client, "model.tags_set.c")) == 1


async def test_find_ranks_with_published_benchmark_and_validation_results(
    settings: Settings, client: Client, bus: Bus, tmp_path: Path
) -> None:
    async with running(settings, RegistryService):
        fast = await client.register(mlp(tmp_path / "f.onnx"), name="fast", version="1.0.0", task="classification")
        slow = await client.register(
            mlp(tmp_path / "s.onnx", seed=3), name="slow", version="1.0.0", task="classification"
        )
        unknown = await client.register(
            mlp(tmp_path / "u.onnx", seed=4), name="unmeasured", version="1.0.0", task="classification"
        )
        await bus.publish(subjects.benchmarked("fast"), benchmarked(fast.ref, p99_ms=1.0, throughput_ips=900.0))
        await bus.publish(subjects.benchmarked("slow"), benchmarked(slow.ref, p99_ms=9.0, throughput_ips=100.0))
        for record, accuracy in ((fast, 0.91), (slow, 0.95)):
            await bus.publish(
                subjects.validated(record.name),
                ModelValidated(
                    event_id=f"v-{record.name}",
                    name=record.name,
                    version=record.version,
                    ref=record.ref,
                    ready=True,
                    accuracy=accuracy,
                    report=ValidationReport(),
                ),
            )

        async def signals_in() -> bool:
            views = (await client.list()).models
            return sum(1 for v in views if v.signals and v.signals.accuracy is not None) == 2

        await wait_for(signals_in)
        ranked = await client.find(FindModels(task="classification", max_p99_ms=5.0))
        refs = [r.view.record.ref for r in ranked]
        assert "slow@1.0.0" not in refs  # measured above the limit
        assert refs[0] == "fast@1.0.0"
        assert unknown.ref in refs and ranked[refs.index(unknown.ref)].unknown == ["max_p99_ms"]
        best_accuracy = await client.find(FindModels(task="classification", min_accuracy=0.93))
        assert best_accuracy[0].view.record.ref == "slow@1.0.0"


# --- durability and scale-out -----------------------------------------------------------------


async def test_restarted_registry_keeps_everything(settings: Settings, client: Client, tmp_path: Path) -> None:
    async with running(settings, RegistryService):
        await client.register(mlp(tmp_path / "a.onnx"), name="keep", version="1.0.0")
        await client.set_alias("keep@1.0.0", "champion")
    async with running(settings, RegistryService):
        view = await client.get("keep@champion")
        assert view.record.version == "1.0.0" and view.aliases == ["champion"]
        assert (await client.list()).total == 1
        again = await client.register(mlp(tmp_path / "a.onnx"), name="keep", version="1.0.0")
        assert again.sha256 == view.record.sha256
    assert len(await stored_events(client, "model.registered.keep")) == 1


async def test_two_replicas_share_the_work_without_duplicates(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    count = 40
    paths = [mlp(tmp_path / f"m{i}.onnx", seed=i) for i in range(count)]
    uploads = [await client.upload(p) for p in paths]
    async with running(settings, RegistryService) as one, running(settings, RegistryService) as two:
        for i, stored in enumerate(uploads):
            cmd = RegisterModel(name=f"r{i}", version="1.0.0", artifact_uri=stored.uri)
            await client.send(subjects.REGISTER, cmd)

        async def all_registered() -> bool:
            return (await client.list()).total == count

        await wait_for(all_registered, timeout=60)
        handled = [one.workers[0].handled, two.workers[0].handled]
    events = await stored_events(client, "model.registered.*")
    assert len(events) == count
    assert len({e.message.name for e in events}) == count
    assert all(h > 0 for h in handled), handled


async def test_crash_between_storing_and_announcing_is_announced_once(
    settings: Settings, client: Client, bus: Bus, tmp_path: Path
) -> None:
    """The record was stored but the process died before model.registered went out: the
    redelivered (or repeated) command announces it, exactly once."""
    path = mlp(tmp_path / "m.onnx")
    stored = await client.upload(path)
    store = await RegistryStore(bus).open(watch=False)
    orphan = ModelRecord(
        name="orphan",
        version="1.0.0",
        ref="orphan@1.0.0",
        sha256=stored.sha256,
        size_bytes=stored.size,
        artifact_uri=stored.uri,
        source_uri=stored.uri,
        registered_event_id="fixed-event-id",
        announced=False,
    )
    assert await store.create(orphan) is not None
    async with running(settings, RegistryService):
        first = await client.register(path, name="orphan", version="1.0.0")
        second = await client.register(path, name="orphan", version="1.0.0")
        assert first.sha256 == second.sha256 == stored.sha256
    events = await stored_events(client, "model.registered.orphan")
    assert len(events) == 1 and events[0].message.event_id == "fixed-event-id"
    record, _ = await store.get("orphan", "1.0.0", "base")
    assert record.announced


async def test_malformed_json_is_dead_lettered_and_the_registry_keeps_serving(
    settings: Settings, client: Client, bus: Bus, imports: Path
) -> None:
    model = mlp(imports / "m.onnx")
    async with running(settings, RegistryService):
        await publish_raw(bus, b"{not json at all")
        await publish_raw(bus, {"name": "typed", "version": 123, "artifact_uri": "x"})
        await publish_raw(bus, {"name": "after", "version": "1.0.0", "artifact_uri": f"file://{model}"})
        event = await outcome_of(client, "after", "1.0.0")
        assert event.subject == "model.registered.after"

        async def two_letters():
            letters = await stored_events(client, "deadletter.registry")
            return letters if len(letters) == 2 else None

        letters = await wait_for(two_letters)
        assert "malformed" in letters[0].message.error
        assert "$.version" in letters[1].message.error
        assert letters[0].message.payload.startswith("{not json")
        alerts = await stored_events(client, "alerts.pipeline.deadletter.registry")
        assert len(alerts) == 2 and alerts[0].message.severity == "critical"


async def test_reply_to_outside_an_inbox_is_not_used(
    settings: Settings, client: Client, bus: Bus, imports: Path
) -> None:
    model = mlp(imports / "m.onnx")
    received: list[bytes] = []

    async def spy(msg) -> None:
        received.append(msg.data)

    sub = await bus.nc.subscribe("model.registered.forged", cb=spy)
    async with running(settings, RegistryService):
        await publish_raw(
            bus,
            {
                "name": "real",
                "version": "1.0.0",
                "artifact_uri": f"file://{model}",
                "reply_to": "model.registered.forged",
            },
        )
        await outcome_of(client, "real", "1.0.0")
        await asyncio.sleep(0.3)
    await sub.unsubscribe()
    assert received == []


async def test_registered_fact_is_valid_for_every_reader(settings: Settings, client: Client, tmp_path: Path) -> None:
    async with running(settings, RegistryService):
        await client.register(mlp(tmp_path / "m.onnx"), name="schema", version="1.0.0")
    [event] = await stored_events(client, "model.registered.schema")
    assert msgspec.json.decode(event.raw)["type"] == "model.registered"
    assert event.data["sha256"] == event.message.record.sha256
