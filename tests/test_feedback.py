"""Feedback without a terminal and a prompt ``status``: ``bench --wait`` piped prints plain
progress lines on stderr, and ``status`` returns as soon as every service answered instead of
sleeping out a discovery timeout once per instance (about 4 s before, with four services)."""

from __future__ import annotations

import time
from pathlib import Path

from services.benchmarker.service import BenchmarkerService
from services.converter.service import ConverterService
from services.registry.service import RegistryService
from services.validator.service import ValidatorService
from shared.config import Settings
from shared.sdk import Client
from tests.support.models import mlp
from tests.support.services import running
from tests.test_benchmarker_cli import QUICK
from tests.test_cli import cli


async def test_bench_wait_piped_prints_plain_progress_lines(settings: Settings, client: Client, tmp_path: Path) -> None:
    settings = settings.with_overrides(bench_auto=False)
    async with running(settings, RegistryService), running(settings, BenchmarkerService):
        await client.register(mlp(tmp_path / "a.onnx"), name="clim", version="1.0.0")
        rc, out, err = await cli(settings, "bench", "clim@1.0.0", "--batch", "1,4", *QUICK, "--wait")
        assert rc == 0, err
        lines = err.splitlines()
        assert lines[0] == "benchmarking clim@1.0.0 …"  # at once, before any result
        assert any("configurations" in line for line in lines[1:]), err  # then each finished one
        assert "\x1b" not in err  # plain text: no bar, no cursor movement
        assert "batch" in out  # the results table still goes to stdout


async def test_status_returns_once_every_service_answered(settings: Settings, client: Client) -> None:
    async with (
        running(settings, RegistryService),
        running(settings, ConverterService),
        running(settings, BenchmarkerService),
        running(settings, ValidatorService),
    ):
        started = time.monotonic()
        found = await client.status(timeout=3.0)
        took = time.monotonic() - started
        assert {s.name for s in found} == {"registry", "converter", "benchmarker", "validator"}
        assert all(s.stats is not None for s in found)  # statistics asked of each instance
        assert took < 1.0, took  # not the 3 s timeout, nor 3 s per instance

        started = time.monotonic()
        assert await client.status("nosuch", timeout=0.3) == []  # an absent service: the timeout, once
        assert 0.3 <= time.monotonic() - started < 1.0

        rc, out, err = await cli(settings, "status")
        assert rc == 0, err
        assert "not running" not in out and "validator" in out
