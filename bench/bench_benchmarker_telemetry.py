"""Production telemetry through real NATS into a benchmarker child process.

1. Ingest: 400 messages x 1 000 latencies published to ``telemetry.inference.<name>``; time
   until every sample is in ``production_samples`` (asked through the SQL endpoint). Raw
   baseline: the time to publish the same messages into JetStream (acknowledged), i.e. what the
   stream alone takes. Target: >= 50 k samples/s.
2. Alert latency: 60 independent incidents (one host each): a baseline of 1 000 samples, then one
   message whose 200 slow samples complete an anomalous window. Latency = publish of that
   message -> the ``opened`` AnomalyAlert received by a subscriber on
   ``alerts.performance.anomaly.<name>``. Raw baseline: the same publish -> core-subscriber round
   trip of a telemetry message. Target: p99 <= 250 ms.

    .venv/bin/python bench/bench_benchmarker_telemetry.py
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import _common  # noqa: F401
import msgspec
import numpy as np
from _common import REPO, nats_server, percentile, report

from shared.bus import Bus
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.base import new_id
from shared.contracts.benchmark import InferenceTelemetry
from shared.errors import InferlabError
from shared.sdk import Client

MESSAGES = 400
PER_MESSAGE = 1_000
INCIDENTS = 60


def telemetry(name: str, host: str, latencies: np.ndarray, start: float) -> InferenceTelemetry:
    return InferenceTelemetry(
        event_id=new_id(),
        name=name,
        version="1.0.0",
        host=host,
        timestamps=(start + np.arange(latencies.size) * 0.001).tolist(),
        latencies_ms=latencies.tolist(),
    )


async def wait_count(client: Client, query: str, expected: int, timeout: float = 120.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            if (await client.sql(query)).rows[0][0] >= expected:
                return time.perf_counter()
        except InferlabError:
            pass
        await asyncio.sleep(0.02)
    raise TimeoutError(query)


async def publish_all(bus: Bus, subject: str, messages: list[InferenceTelemetry], window: int = 64) -> None:
    for i in range(0, len(messages), window):
        await asyncio.gather(*(bus.publish(subject, m) for m in messages[i : i + window]))


async def run(settings: Settings) -> list[tuple[str, str]]:
    bus = await Bus.connect(settings, name="bench")
    await bus.ensure_streams()
    client = Client(bus)
    try:
        await wait_count(client, "SELECT 1", 1, timeout=60)
        rng = np.random.default_rng(0)

        # Raw baseline: the same messages into JetStream alone (another subject space).
        raw_msgs = [telemetry("raw", "h", rng.lognormal(np.log(5), 0.05, PER_MESSAGE), 1.8e9) for _ in range(MESSAGES)]
        t0 = time.perf_counter()
        await publish_all(bus, "deadletter.bench-raw", raw_msgs)  # captured by a stream nobody consumes
        raw_s = time.perf_counter() - t0

        msgs = [
            telemetry("ingest", "h", rng.lognormal(np.log(5), 0.05, PER_MESSAGE), 1.8e9 + i) for i in range(MESSAGES)
        ]
        t0 = time.perf_counter()
        await publish_all(bus, subjects.telemetry("ingest"), msgs)
        done = await wait_count(
            client, "SELECT count(*) FROM production_samples WHERE name = 'ingest'", MESSAGES * PER_MESSAGE
        )
        ingest_s = done - t0
        total = MESSAGES * PER_MESSAGE

        # Alert latency.
        received: dict[str, float] = {}
        arrived = asyncio.Event()

        async def on_alert(msg) -> None:
            data = msgspec.json.decode(msg.data)
            if data.get("state") == "opened":
                received[data["host"]] = time.perf_counter()
                arrived.set()

        sub = await bus.nc.subscribe(subjects.alert("performance", "anomaly", "watch"), cb=on_alert)
        echo: list[float] = []

        async def on_echo(msg) -> None:
            echo.append(time.perf_counter())

        echo_sub = await bus.nc.subscribe(subjects.telemetry("watch"), cb=on_echo)
        latencies, round_trips = [], []
        for k in range(INCIDENTS):
            host = f"host-{k}"
            base = telemetry("watch", host, rng.lognormal(np.log(5), 0.05, 1000), 1.9e9)
            await bus.publish(subjects.telemetry("watch"), base)
            await wait_count(client, f"SELECT count(*) FROM production_samples WHERE host = '{host}'", 1000, timeout=30)
            slow = telemetry("watch", host, rng.lognormal(np.log(9), 0.05, 200), 1.9e9 + 1.0)
            before = len(echo)
            arrived.clear()
            sent = time.perf_counter()
            await bus.publish(subjects.telemetry("watch"), slow)
            await asyncio.wait_for(arrived.wait(), 10)
            latencies.append((received[host] - sent) * 1000)
            if len(echo) > before:
                round_trips.append((echo[before] - sent) * 1000)
        await sub.unsubscribe()
        await echo_sub.unsubscribe()
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        rt50 = percentile(round_trips, 50)
        return [
            ("telemetry ingest", f"{total / ingest_s / 1000:.0f} k samples/s ({total:,} samples; target >= 50 k/s)"),
            (
                "raw JetStream publish",
                f"{total / raw_s / 1000:.0f} k samples/s; ratio raw/ingest {ingest_s / raw_s:.2f}x",
            ),
            (
                "alert latency",
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(latencies)} incidents (target p99 <= 250)",
            ),
            ("raw publish -> subscriber", f"p50 {rt50:.2f} ms; alert/raw p50 ratio {p50 / rt50:.1f}x"),
        ]
    finally:
        await bus.close()


def main() -> None:
    with nats_server() as (server, tmp):
        settings = Settings(
            nats_url=server.url,
            home=str(tmp / "home"),
            log_level="warning",
            anomaly_window=200,
            anomaly_min_interval_s=1.0,
            bench_auto=False,
        )
        env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1"}
        service = subprocess.Popen(
            [sys.executable, "-m", "services.benchmarker"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            rows = asyncio.run(run(settings))
        finally:
            service.terminate()
            service.wait(timeout=30)
    report("Production telemetry through NATS (benchmarker in a child process)", rows)


if __name__ == "__main__":
    main()
