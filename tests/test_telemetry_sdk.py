"""Production telemetry without NATS code: ``client.report_latency``, ``LatencyReporter`` and
``inferlab telemetry send``, against a real nats-server, registry and benchmarker."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.benchmarker.service import BenchmarkerService
from services.benchmarker.telemetry import telemetry_batch
from services.registry.service import RegistryService
from shared.bus import Bus
from shared.cli import main
from shared.cli.serving import read_samples
from shared.config import Settings
from shared.contracts.benchmark import InferenceTelemetry
from shared.docgen import example
from shared.errors import UnknownAlias, UnknownModel
from shared.sdk import Client
from shared.telemetry import InvalidLatency, LatencyReporter, TelemetryKey, batches, check_sample
from tests.support.models import mlp
from tests.support.services import running

KEY = TelemetryKey("digits", "1.0.0", "base", "web-1")


def test_samples_are_checked_by_the_benchmarkers_rules() -> None:
    now = time.time()
    assert check_sample(12, now) == (now, 12.0)
    with pytest.raises(InvalidLatency, match="negative"):
        check_sample(-1.0, now)
    with pytest.raises(InvalidLatency, match="finite"):
        check_sample(float("nan"), now)
    with pytest.raises(InvalidLatency, match="milliseconds"):
        check_sample(1.0, now * 1000)  # a timestamp in milliseconds


def test_batches_split_by_size_and_each_one_passes_the_benchmarkers_consumer() -> None:
    samples = [(1_800_000_000.0 + i, float(i % 7)) for i in range(2_500)]
    messages = batches(samples, KEY, 1_000)
    assert [len(m.latencies_ms) for m in messages] == [1_000, 1_000, 500]
    assert len({m.event_id for m in messages}) == 3
    for message in messages:
        batch = telemetry_batch(message)  # what services/benchmarker does with each delivery
        assert batch.name == "digits" and batch.host == "web-1" and batch.version == "1.0.0"
    assert messages[2].timestamps[0] == 1_800_000_000.0 + 2_000


def test_the_documented_example_is_a_recent_unix_timestamp() -> None:
    (ts,) = example(InferenceTelemetry)["timestamps"]
    assert 1_700_000_000 < ts < 2_000_000_000  # 2023..2033, not 1970
    telemetry_batch(InferenceTelemetry(**{k: v for k, v in example(InferenceTelemetry).items() if k != "type"}))


def test_the_buffer_is_bounded_and_counts_what_it_drops() -> None:
    reporter = LatencyReporter(None, KEY, max_batch=10, max_buffer=100)  # type: ignore[arg-type]
    reporter.record_many([float(i) for i in range(150)])  # no event loop: nothing is flushed
    assert reporter.pending == 100 and reporter.dropped == 50
    with pytest.raises(InvalidLatency, match="parallel"):
        reporter.record_many([1.0, 2.0], [time.time()])
    with pytest.raises(InvalidLatency):
        reporter.record_many([1.0, -2.0])  # all or nothing
    assert reporter.pending == 100


def test_cli_latency_files_read_ms_or_timestamp_and_ms() -> None:
    stamps, values = read_samples(["# comment", "12.5", "", "1800000000.5, 9"], now=1_800_000_001.0)
    assert stamps == [1_800_000_001.0, 1_800_000_000.5] and values == [12.5, 9.0]
    with pytest.raises(InvalidLatency, match="line 2"):
        read_samples(["1", "abc"], now=1.0)


async def _production_count(client: Client, name: str, expect: int, timeout: float = 30.0) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rows = (await client.sql(f"SELECT count(*) FROM production_samples WHERE name = '{name}'")).rows
        if rows[0][0] >= expect or loop.time() > deadline:
            return int(rows[0][0])
        await asyncio.sleep(0.2)


async def test_report_latency_refuses_unknown_models_and_lands_in_the_history(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    async with running(settings, RegistryService), running(settings, BenchmarkerService):
        record = await client.register(mlp(tmp_path / "m.onnx"), name="prod", version="1.0.0")
        with pytest.raises(UnknownModel, match="prodd"):
            await client.report_latency("prodd", 10.0)  # a typo fails at once
        with pytest.raises(UnknownModel):
            await client.report_latency("prod@9.9.9", 10.0)
        with pytest.raises(UnknownAlias):
            await client.report_latency("prod@production", 10.0)
        with pytest.raises(InvalidLatency):
            await client.report_latency("prod@1.0.0", -3.0)

        reporter = await client.report_latency("prod@1.0.0", 12.5, host="web-1")
        start = time.time()
        await client.report_latency("prod@1.0.0", [10.0 + i % 5 for i in range(2_499)], host="web-1")
        for _ in range(100):  # full batches go out at once, well before the 5 s interval
            if reporter.sent >= 2_000:
                break
            await asyncio.sleep(0.02)
        assert reporter.sent == 2_000 and reporter.pending == 500
        await client.flush_telemetry()
        assert reporter.sent == 2_500 and reporter.pending == 0 and reporter.batches_sent == 3
        assert await _production_count(client, "prod", 2_500) == 2_500
        rows = (
            await client.sql(
                "SELECT version, variant, host, min(epoch(ts)), max(latency_ms) FROM production_samples GROUP BY ALL"
            )
        ).rows
        assert rows == [[record.version, "base", "web-1", pytest.approx(start, abs=60), 14.0]]

        # Closing the client publishes what is still buffered.
        other = await Client.connect(settings)
        await other.report_latency("prod", [20.0, 21.0])
        await other.close()
        assert await _production_count(client, "prod", 2_502) == 2_502


async def test_cli_telemetry_send(settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = ["--nats-url", settings.nats_url]
    path = tmp_path / "latencies.csv"
    path.write_text(f"{time.time() - 5:.3f},11.5\n12.5\n")
    async with running(settings, RegistryService):
        async with await Client.connect(settings) as client:
            await client.register(mlp(tmp_path / "m.onnx"), name="cli-prod", version="1.0.0")
        code = await asyncio.to_thread(
            main, [*url, "telemetry", "send", "cli-prod", "10", "11", "--file", str(path), "--json"]
        )
        assert code == 0
        assert json.loads(capsys.readouterr().out) == {"ref": "cli-prod@1.0.0", "sent": 4, "batches": 1}
        code = await asyncio.to_thread(main, [*url, "telemetry", "send", "cli-prd", "10"])
        assert code == 1
        assert "unknown model" in capsys.readouterr().err
    async with await Client.connect(settings) as client:
        (event,) = [e async for e in client.events("telemetry.>", replay=True, stored_only=True)]
    assert event.subject == "telemetry.inference.cli-prod"
    assert isinstance(event.message, InferenceTelemetry) and event.message.latencies_ms == [10.0, 11.0, 11.5, 12.5]


async def test_a_slowdown_reported_through_the_sdk_raises_one_anomaly_incident(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    settings = settings.with_overrides(anomaly_window=200)
    async with running(settings, RegistryService), running(settings, BenchmarkerService):
        await client.register(mlp(tmp_path / "m.onnx"), name="slow", version="1.0.0")
        rng = np.random.default_rng(0)
        levels = np.concatenate([10.0 * np.ones(4_000), 16.0 * np.ones(2_000), 10.0 * np.ones(3_000)])
        latencies = (levels * rng.lognormal(0.0, 0.05, levels.size)).tolist()
        stamps = (time.time() - 60 + np.arange(levels.size) * 0.005).tolist()
        await client.report_latency("slow@1.0.0", latencies, at=stamps, host="web-1")
        await client.flush_telemetry()
        alerts: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(alerts) < 2 and loop.time() < deadline:
            alerts = [
                e.message
                async for e in client.alerts("alerts.performance.anomaly.slow", idle_timeout=0.5, stored_only=True)
            ]
            await asyncio.sleep(0.2)
        assert [a.state for a in alerts] == ["opened", "resolved"]
        assert alerts[0].ref == "slow@1.0.0" and alerts[0].host == "web-1" and alerts[0].window_median_ms > 14


async def test_raw_telemetry_for_a_model_nobody_registered_is_dead_lettered_with_its_reason(
    settings: Settings, client: Client, bus: Bus, tmp_path: Path
) -> None:
    """Telemetry published without the SDK (any NATS client) is checked by the benchmarker
    itself: a typo'd name is refused with ``unknown_model``, never stored silently."""
    async with running(settings, RegistryService), running(settings, BenchmarkerService):
        await client.register(mlp(tmp_path / "m.onnx"), name="known", version="1.0.0")
        now = time.time()
        for name in ("knwon", "known"):
            batch = InferenceTelemetry(name=name, version="1.0.0", host="h", timestamps=[now], latencies_ms=[3.0])
            await bus.publish(f"telemetry.inference.{name}", batch)
        assert await _production_count(client, "known", 1) == 1
        letters: list[Any] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not letters and loop.time() < deadline:
            letters = [e.message async for e in client.events("deadletter.>", replay=True, stored_only=True)]
            await asyncio.sleep(0.2)
        (letter,) = letters
        assert letter.details["reason"] == "unknown_model" and "knwon@1.0.0" in letter.error
        assert await _production_count(client, "knwon", 0, timeout=0) == 0


async def test_telemetry_is_stored_unchecked_while_the_registry_is_down(
    settings: Settings, client: Client, bus: Bus
) -> None:
    """Production monitoring does not stop because the registry restarts: the batch is stored
    (the check is skipped for a while, and a warning logged)."""
    async with running(settings, BenchmarkerService):
        batch = InferenceTelemetry(name="solo", version="1.0.0", host="h", timestamps=[time.time()], latencies_ms=[3.0])
        await bus.publish("telemetry.inference.solo", batch)
        assert await _production_count(client, "solo", 1) == 1
