"""The registry's in-memory index (services/registry/store.py) stays whole when its KV watch
stops receiving: what a replica sees when the server holding the watch's ordered consumer dies
and nats-py's one re-creation per heartbeat check loses to a leader election."""

from __future__ import annotations

import asyncio

import pytest

from services.registry import store as store_module
from services.registry.store import RegistryStore
from shared.bus import Bus
from shared.contracts.registry import ModelRecord


def record(name: str) -> ModelRecord:
    uri = f"nats-obj://artifacts/sha256/{'0' * 64}"
    return ModelRecord(
        name=name,
        version="1.0.0",
        ref=f"{name}@1.0.0",
        sha256="0" * 64,
        size_bytes=1,
        artifact_uri=uri,
        source_uri=uri,
        registered_event_id=f"e-{name}",
    )


async def test_a_watch_that_stopped_receiving_is_started_again_and_the_index_catches_up(
    bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "INDEX_CHECK_S", 0.2)
    reader = await RegistryStore(bus).open()
    writer = await RegistryStore(bus).open(watch=False)
    try:
        await writer.create(record("before"))
        for _ in range(50):
            if ("before", "1.0.0", "base") in reader.index.records:
                break
            await asyncio.sleep(0.1)
        # Cut the watch's delivery without a word, as a dead server does.
        stream = f"KV_{reader.bucket}"
        for sub in list(bus.nc._subs.values()):
            jsi = getattr(sub, "_jsi", None)
            if jsi is not None and getattr(jsi, "_stream", None) == stream:
                await bus.nc._send_unsubscribe(sub._id)
        await writer.create(record("after"))
        await writer.kv.delete("models.before.1.0.0.base")
        for _ in range(100):
            if ("after", "1.0.0", "base") in reader.index.records:
                break
            await asyncio.sleep(0.1)
        assert set(reader.index.records) == {("after", "1.0.0", "base")}
    finally:
        await reader.close()
        await writer.close()
