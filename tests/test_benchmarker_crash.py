"""The benchmarker's measuring child: a crash, a memory blow-up or a hang there is a final
``benchmark_failed`` with reason ``crashed`` / ``out_of_memory`` / ``timed_out``, and the service
carries on."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.benchmarker.protocol import MeasureSpec, measure_isolated
from services.benchmarker.service import BenchmarkerService
from services.registry.service import RegistryService
from shared.clients.benchmark import BenchmarkFailedError
from shared.config import Settings
from shared.contracts.benchmark import BenchmarkConfig
from shared.errors import NativeTimeout
from shared.sandbox import FAULT_ENV, Limits
from shared.sdk import Client
from tests.support.models import mlp
from tests.support.sandbox_models import allocating_model, endless_model
from tests.support.services import running

QUICK = BenchmarkConfig(warmup_s=0.1, window_s=0.2, min_duration_s=0.6, max_duration_s=1.5)


@pytest.mark.slow
async def test_a_crash_or_a_memory_blow_up_fails_the_benchmark_and_the_service_carries_on(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The registry's trial runs must fit the 3 GB model (else it is refused at registration as
    # out_of_memory, see test_registry_crash.py); the benchmarker gets 1 GiB.
    registry_settings = settings.with_overrides(bench_auto=False, sandbox_memory_bytes=8 << 30)
    settings = settings.with_overrides(bench_auto=False, sandbox_memory_bytes=1 << 30)
    async with (
        running(registry_settings, RegistryService),
        running(settings, BenchmarkerService) as service,
        await Client.connect(settings) as client,
    ):
        await client.register(mlp(tmp_path / "m.onnx"), name="m", version="1.0.0")
        await client.register(
            allocating_model(tmp_path / "big.onnx", elements=(30_000, 25_000)), name="big", version="1.0.0"
        )
        with monkeypatch.context() as patch:
            patch.setenv(FAULT_ENV, "segv")  # inherited by the measuring child only while set
            with pytest.raises(BenchmarkFailedError) as crashed:
                await client.benchmark("m@1.0.0", QUICK)
        assert crashed.value.code == "crashed" and "SIGSEGV" in crashed.value.message
        with pytest.raises(BenchmarkFailedError) as oom:
            await client.benchmark("big@1.0.0", QUICK)
        assert oom.value.code == "out_of_memory", oom.value.message
        result = await client.benchmark("m@1.0.0", QUICK)
        assert result.results
        assert all(w.dead_lettered == 0 for w in service.workers)


def test_a_measurement_past_its_time_limit_is_a_timeout(tmp_path: Path) -> None:
    spec = MeasureSpec(
        model_path=str(endless_model(tmp_path / "endless.onnx")),
        provider="CPUExecutionProvider",
        batch_size=1,
        intra_op_threads=1,
        concurrency=1,
        warmup_s=0.1,
        window_s=0.2,
        min_duration_s=0.6,
        max_duration_s=1.0,
        stability_threshold=0.1,
        seed=0,
    )
    with pytest.raises(NativeTimeout) as caught:
        measure_isolated(spec, timeout_s=3.0, limits=Limits(memory_bytes=1 << 30))
    assert caught.value.code == "timed_out"
