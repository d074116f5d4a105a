"""Artifact transfer through the JetStream object store.

- Download of a 256 MB object with ArtifactStore.get_to_file (to disk, sha256-verified) against
  a raw read of the same chunks through an ordered consumer (no disk, no hashing) in the same
  run: target throughput ratio >= 0.8. nats-py's ObjectStore.get(writeinto=) shown for context.
- Upload with ArtifactStore.put_file: target >= 100 MB/s, printed beside sha256 speed and a raw
  pipelined JetStream publish of the same chunks.

usage: python bench/bench_artifacts.py [--mb 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, nats_server, report

from shared.artifacts import CHUNK_SIZE, ArtifactStore, sha256_file
from shared.bus import Bus
from shared.config import Settings


async def raw_chunk_read(bus: Bus, bucket: str, nuid: str, size: int, into: Path | None = None) -> float:
    """The baseline: the object's chunks read straight off an ordered consumer, kept in no
    file (``into`` None) or written to one, with no hashing and no verification."""
    sub = await bus.js.subscribe(f"$O.{bucket}.C.{nuid}", ordered_consumer=True)
    out = open(into, "wb") if into else None  # noqa: SIM115
    start = time.perf_counter()
    received = 0
    while received < size:
        msg = await sub.next_msg(timeout=30)
        received += len(msg.data)
        if out:
            out.write(msg.data)
    if out:
        out.close()
    elapsed = time.perf_counter() - start
    await sub.unsubscribe()
    if into:
        into.unlink()
    return elapsed


async def raw_publish(bus: Bus, path: Path) -> float:
    subject = "$O.artifacts.C.rawbaseline"
    start = time.perf_counter()
    pending = []
    with open(path, "rb") as f:
        while block := f.read(CHUNK_SIZE):
            pending.append(await bus.js.publish_async(subject, block, wait_stall=30.0))
            if len(pending) >= 256:
                await asyncio.gather(*pending)
                pending.clear()
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - start
    await bus.js.purge_stream("OBJ_artifacts", subject=subject)
    return elapsed


async def main(mb: int, repeat: int) -> None:
    with nats_server() as (server, tmp):
        settings = Settings(nats_url=server.url, home=str(tmp / "home"))
        bus = await Bus.connect(settings, name="bench")
        store = ArtifactStore(bus)
        await store.ensure()
        blob = tmp / "blob.bin"
        with open(blob, "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(1 << 20))
        size = blob.stat().st_size

        sha_times, put_times, raw_put_times, get_times, raw_get_times, natspy_times = [], [], [], [], [], []
        raw_disk_times = []
        for i in range(repeat):
            start = time.perf_counter()
            digest = sha256_file(blob)
            sha_times.append(time.perf_counter() - start)

            start = time.perf_counter()
            stored = await store.put_file(blob, f"bench/{i}", sha256=digest, skip_if_same=False)
            put_times.append(time.perf_counter() - start)
            raw_put_times.append(await raw_publish(bus, blob))

            meta = await store._meta(stored.name)
            assert meta is not None
            # Alternate measured and baseline reads so that drifting load hits both alike.
            for _ in range(3):
                raw_get_times.append(await raw_chunk_read(bus, "artifacts", meta["nuid"], size))
                dest = tmp / f"out-{i}.bin"
                start = time.perf_counter()
                await store.get_to_file(stored.name, dest, sha256=digest)
                get_times.append(time.perf_counter() - start)
                dest.unlink()
                raw_disk_times.append(await raw_chunk_read(bus, "artifacts", meta["nuid"], size, into=tmp / "raw.bin"))

            if i == 0:
                obs = await bus.js.object_store("artifacts")
                with open(tmp / "natspy.bin", "wb") as out:
                    start = time.perf_counter()
                    await obs.get(stored.name, writeinto=out)
                    natspy_times.append(time.perf_counter() - start)
                (tmp / "natspy.bin").unlink()
            await store.delete(stored.name)

        def mbps(seconds: float) -> float:
            return size / seconds / 1e6

        get_tp, raw_get_tp = mbps(median(get_times)), mbps(median(raw_get_times))
        raw_disk_tp = mbps(median(raw_disk_times))
        put_tp, raw_put_tp = mbps(median(put_times)), mbps(median(raw_put_times))
        report(
            f"artifact transfer, {size / 1e6:.0f} MB object, medians over {repeat} uploads x 3 alternating downloads",
            [
                ("sha256 (hashlib, from disk)", f"{mbps(median(sha_times)):8.0f} MB/s"),
                ("upload  ArtifactStore.put_file", f"{put_tp:8.0f} MB/s   (target >= 100 MB/s)"),
                ("upload  raw pipelined publish", f"{raw_put_tp:8.0f} MB/s   ratio {put_tp / raw_put_tp:.2f}"),
                ("download ArtifactStore.get_to_file", f"{get_tp:8.0f} MB/s   (to disk, sha256-verified)"),
                ("download raw chunk read, in memory", f"{raw_get_tp:8.0f} MB/s   (no disk, no hash)"),
                ("download raw chunk read, to disk", f"{raw_disk_tp:8.0f} MB/s   (no hash, no verification)"),
                ("download ratio vs in-memory read", f"{get_tp / raw_get_tp:8.2f}   (target >= 0.8)"),
                ("download ratio vs to-disk read", f"{get_tp / raw_disk_tp:8.2f}"),
                ("nats-py ObjectStore.get(writeinto=)", f"{mbps(natspy_times[0]):8.0f} MB/s   (for context)"),
            ],
        )
        await bus.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.mb, args.repeat))
