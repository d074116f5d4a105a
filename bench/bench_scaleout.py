"""Throughput with one and with two replicas of every service (real processes sharing their
durable consumers), the one-replica run being the baseline of the ratio.

- registrations: N small models (all different) published at once as model.register, until
  every one is announced as model.registered; registry replicas only.
- pipeline: M models published at once through all four services (registry, converter with
  the ort-opt profile, benchmarker with short windows, validator), until every base model and
  its ort-opt variant is validated.

Each run gets its own nats-server (or, with --cluster, its own three-node cluster with
INFERLAB_STREAM_REPLICAS=3). Replicas help as long as there are cores to run them: the
machine's core count is printed with the figures. Benchmarks on one host run one at a time
whatever the replica count (the benchmarker's host lock, for clean numbers), so a second
benchmarker replica on the same host adds no measuring capacity.

usage: python bench/bench_scaleout.py [--registrations 300] [--models 12] [--cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report

from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.base import new_id
from shared.contracts.registry import RegisterModel
from shared.embedded import EmbeddedCluster, EmbeddedNats
from shared.sdk import Client
from tests.support.cluster import SERVICES, Fleet, quick
from tests.support.models import mlp


@contextlib.contextmanager
def nats(root: Path, cluster: bool) -> Iterator[tuple[str, int]]:
    if cluster:
        with EmbeddedCluster(root / "cluster") as c:
            yield c.url, 3
    else:
        with EmbeddedNats(root / "js", log_file=root / "nats.log") as server:
            yield server.url, 1


async def count(client: Client, subject: str) -> int:
    info = await client.bus.js.stream_info("MODELS", subjects_filter=subject)
    return sum((info.state.subjects or {}).values())


async def run(workload: str, replicas: int, items: int, cluster: bool) -> float:
    """Seconds from publishing ``items`` registrations to the workload's last event."""
    with tempfile.TemporaryDirectory(prefix="inferlab-scaleout-") as tmp, nats(Path(tmp), cluster) as (url, r):
        root = Path(tmp)
        imports = root / "imports"
        imports.mkdir()
        settings = quick(
            Settings(
                nats_url=url,
                home=str(root / "home"),
                import_roots=(str(imports),),
                stream_replicas=r,
                log_level="warning",
                ack_wait_s=30.0,
            )
        )
        names = [f"m{i:04d}" for i in range(items)]
        paths = [mlp(imports / f"{n}.onnx", seed=i, hidden=8) for i, n in enumerate(names)]
        client = await Client.connect(settings)
        await client.bus.ensure_streams()
        fleet = Fleet(settings, root / "logs")
        try:
            for service in ("registry",) if workload == "registrations" else SERVICES:
                fleet.start(service, replicas)
            await fleet.wait_healthy(client, timeout=120)
            commands = [
                RegisterModel(event_id=new_id(), name=n, version="1.0.0", artifact_uri=f"file://{p}")
                for n, p in zip(names, paths, strict=True)
            ]
            started = time.perf_counter()
            await asyncio.gather(*(client.send(subjects.REGISTER, c) for c in commands))
            if workload == "registrations":
                subject, expected = "model.registered.>", items
            else:
                subject, expected = "model.validated.>", 2 * items  # base + ort-opt
            while await count(client, subject) < expected:
                if time.perf_counter() - started > 900:
                    raise SystemExit(f"{workload} with {replicas} replica(s) did not finish:\n{fleet.logs()}")
                await asyncio.sleep(0.05 if workload == "registrations" else 0.5)
            return time.perf_counter() - started
        finally:
            fleet.stop()
            await client.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registrations", type=int, default=300)
    parser.add_argument("--models", type=int, default=12)
    parser.add_argument("--cluster", action="store_true", help="a three-node cluster, streams with three replicas")
    args = parser.parse_args()
    topology = "three-node cluster, R=3" if args.cluster else "single nats-server"
    rows: list[tuple[str, str]] = [("host", f"{os.cpu_count()} cores; {topology}")]
    for workload, items, unit in (
        ("registrations", args.registrations, "registrations/s"),
        ("pipeline", args.models, "models/min (registered, converted, 2x benchmarked, 2x validated)"),
    ):
        seconds = {}
        for replicas in (1, 2):
            seconds[replicas] = await run(workload, replicas, items, args.cluster)
        scale = 1.0 if workload == "registrations" else 60.0
        for replicas in (1, 2):
            rate = items / seconds[replicas] * scale
            rows.append(
                (f"{workload}, {replicas} replica(s)", f"{rate:8.1f} {unit} ({items} in {seconds[replicas]:.1f} s)")
            )
        rows.append((f"{workload}, ratio 2 vs 1", f"{seconds[1] / seconds[2]:.2f}x"))
    report("Scale-out: throughput with one and two replicas per service", rows)


if __name__ == "__main__":
    asyncio.run(main())
