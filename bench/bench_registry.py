"""model.register -> model.registered through a registry running as its own process.

- Latency of one registration of a 1 MB model (artifact already in the object store, as the
  SDK and CLI upload first): p50 and p99 over sequential registrations, beside a raw JetStream
  publish + ack round trip of the same command measured in the same run.
  Target: p50 <= 20 ms.
- Throughput: N small-model registrations published at once, until every answer arrived,
  with one registry. Target: >= 200 registrations/s.

usage: python bench/bench_registry.py [--latency-n 200] [--burst 500]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, nats_server, percentile, report

from shared.bus import Bus
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.base import encode, new_id
from shared.contracts.registry import RegisterModel
from shared.sdk import Client
from tests.support.models import mlp, sized_model


async def wait_ready(client: Client) -> None:
    for _ in range(200):
        if await client.status("registry", timeout=0.2):
            return
        await asyncio.sleep(0.1)
    raise SystemExit("registry did not start")


async def register_once(client: Client, name: str, version: str, uri: str, sha: str) -> float:
    cmd = RegisterModel(event_id=new_id(), name=name, version=version, artifact_uri=uri, sha256=sha)
    start = time.perf_counter()
    reply = await client.send_and_wait(subjects.REGISTER, cmd, timeout=60)
    elapsed = time.perf_counter() - start
    assert reply["type"] == "model.registered", reply
    return elapsed


async def main(latency_n: int, burst: int) -> None:
    with nats_server() as (server, tmp):
        settings = Settings(nats_url=server.url, home=str(tmp / "home"), log_level="warning")
        env = {**os.environ, **settings.to_env()}
        registry = subprocess.Popen(  # noqa: ASYNC220 (started once, before timing)
            [sys.executable, "-m", "services.registry"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "registry.log", "wb"),  # noqa: SIM115
        )
        try:
            bus = await Bus.connect(settings, name="bench")
            client = Client(bus)
            await wait_ready(client)
            big = await client.upload(sized_model(tmp / "one-mb.onnx", 1 << 20))
            small = await client.upload(mlp(tmp / "small.onnx"))

            # warm-up (first import of onnx checker paths, caches)
            for i in range(5):
                await register_once(client, "warm", f"0.0.{i}", big.uri, big.sha256)

            latencies, raw = [], []
            for i in range(latency_n):
                latencies.append(await register_once(client, "onemb", f"1.0.{i}", big.uri, big.sha256))
                cmd = RegisterModel(event_id=new_id(), name="raw", version="1.0.0", artifact_uri=big.uri)
                payload = encode(cmd)  # the same command bytes, on a subject no service consumes
                start = time.perf_counter()
                await bus.js.publish("model.benchprobe", payload, headers={"Nats-Msg-Id": cmd.event_id})
                raw.append(time.perf_counter() - start)

            async def one(i: int) -> None:
                await register_once(client, "burst", f"2.0.{i}", small.uri, small.sha256)

            start = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(burst)))
            burst_s = time.perf_counter() - start
            await bus.close()
        finally:
            registry.terminate()
            registry.wait(timeout=30)

    ms = [x * 1000 for x in latencies]
    raw_ms = [x * 1000 for x in raw]
    report(
        f"model.register -> model.registered (registry in its own process, {latency_n} sequential 1 MB models)",
        [
            ("registration p50", f"{percentile(ms, 50):7.2f} ms   (target <= 20 ms)"),
            ("registration p99", f"{percentile(ms, 99):7.2f} ms"),
            ("raw JetStream publish+ack p50", f"{percentile(raw_ms, 50):7.2f} ms"),
            ("raw JetStream publish+ack p99", f"{percentile(raw_ms, 99):7.2f} ms"),
            ("p50 ratio registration / raw", f"{percentile(ms, 50) / percentile(raw_ms, 50):7.1f}x"),
            (f"burst of {burst} small models", f"{burst / burst_s:7.0f} registrations/s   (target >= 200/s)"),
        ],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency-n", type=int, default=200)
    parser.add_argument("--burst", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.latency_n, args.burst))
