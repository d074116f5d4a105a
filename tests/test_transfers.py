"""Chunked transfers out of JetStream (shared/artifacts.py) survive a read that stalls: the
read starts again from the first chunk on a new subscription, as it must when the server
holding its ordered consumer dies during a cluster node's failover."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from shared import artifacts
from shared.artifacts import ArtifactStore, Staging, _receive
from shared.bus import UPLOADS_STREAM, Bus
from shared.errors import ArtifactError


async def test_a_stalled_read_starts_again_and_delivers_every_byte_once(bus: Bus, tmp_path: Path) -> None:
    await bus.ensure_streams()
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(3 * artifacts.CHUNK_SIZE + 123))
    staged = await Staging(bus).put_file(source)
    subscriptions: list[str] = []

    async def subscribe(on_chunk: Any) -> Any:
        # The first subscription listens where nothing arrives: the read stalls, as one whose
        # consumer died with its server does.
        subject = "upload.nothing-here" if not subscriptions else staged.subject
        subscriptions.append(subject)
        return await bus.js.subscribe(subject, stream=UPLOADS_STREAM, ordered_consumer=True, cb=on_chunk)

    dest = tmp_path / "out" / "model.bin"
    received, sha256 = await _receive(bus, "upload", subscribe, staged.size, dest, idle_timeout=0.5)

    assert len(subscriptions) == 2
    assert (received, sha256) == (staged.size, hashlib.sha256(source.read_bytes()).hexdigest())
    assert dest.with_name("model.bin.partial").read_bytes() == source.read_bytes()


async def test_a_read_that_never_resumes_fails_with_fetch_failed(
    bus: Bus, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await bus.ensure_streams()
    monkeypatch.setattr(artifacts, "TRANSIENT_RETRY_S", 1.0)

    async def subscribe(on_chunk: Any) -> Any:
        return await bus.js.subscribe("upload.nothing-here", stream=UPLOADS_STREAM, ordered_consumer=True, cb=on_chunk)

    with pytest.raises(ArtifactError, match=r"upload stalled at 0 of 100 bytes") as caught:
        await _receive(bus, "upload", subscribe, 100, tmp_path / "x.bin", idle_timeout=0.3)
    assert caught.value.code == "fetch_failed"


async def test_object_store_and_staging_round_trip_through_the_shared_reader(bus: Bus, tmp_path: Path) -> None:
    await bus.ensure_streams()
    store = ArtifactStore(bus)
    await store.ensure()
    source = tmp_path / "blob.bin"
    source.write_bytes(os.urandom(2 * artifacts.CHUNK_SIZE + 7))
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    seen: list[int] = []
    stored = await store.put_file(source, "blobs/one")
    fetched = await store.get_to_file(stored.name, tmp_path / "a" / "blob.bin", sha256=digest, progress=seen.append)
    assert (fetched.size, fetched.sha256, sum(seen)) == (source.stat().st_size, digest, source.stat().st_size)
    staged = await Staging(bus).put_file(source)
    copied = await Staging(bus).get_to_file(staged, tmp_path / "b" / "blob.bin")
    assert (tmp_path / "b" / "blob.bin").read_bytes() == source.read_bytes() and copied.sha256 == digest
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert (await Staging(bus).get_to_file(await Staging(bus).put_file(empty), tmp_path / "c" / "e")).size == 0
