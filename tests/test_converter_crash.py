"""A model that crashes, hangs or exhausts the runtime during a conversion ends that profile as
``conversion_failed`` with reason ``crashed`` / ``timed_out`` / ``out_of_memory``; the other
profiles of the job and the converter itself carry on; nothing is redelivered or dead-lettered."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from services.converter.service import ConverterService
from services.registry.service import RegistryService
from shared.config import Settings
from shared.contracts.conversion import ConversionFailed, ModelConverted
from shared.sdk import Client
from tests.support.events import stored
from tests.support.models import mlp
from tests.support.sandbox_models import allocating_model, nchwc_crash_model
from tests.support.services import running


def _quick(settings: Settings, **changes: object) -> Settings:
    return settings.with_overrides(converter_parity_samples=32, converter_profiles=(), **changes)


async def test_a_crash_fails_one_profile_and_the_rest_of_the_job_converts(settings: Settings, tmp_path: Path) -> None:
    settings = _quick(settings)
    async with (
        running(settings, RegistryService),
        running(settings, ConverterService) as service,
        await Client.connect(settings) as client,
    ):
        assert isinstance(service, ConverterService)
        await client.register(mlp(tmp_path / "m.onnx"), name="crashy", version="1.0.0")
        service.sandbox.inject_fault = "segv"
        outcomes = await client.convert("crashy@1.0.0", profiles=["fp16", "ort-opt"], timeout=120)
        by_profile = {o.profile: o for o in outcomes}
        crashed = by_profile["fp16"]
        assert isinstance(crashed, ConversionFailed) and crashed.reason == "crashed", crashed
        assert "SIGSEGV" in crashed.message and "fp16" in crashed.message
        assert isinstance(by_profile["ort-opt"], ModelConverted)
        assert service.workers[0].dead_lettered == 0 and service.workers[0].failed == 0
        assert len(await stored(client, "model.conversion_failed.crashy")) == 1
        assert await stored(client, "alerts.pipeline.deadletter.>") == []


@pytest.mark.slow
async def test_a_model_that_allocates_past_the_limit_is_out_of_memory(settings: Settings, tmp_path: Path) -> None:
    # The registry's trial runs must fit the 3 GB model (a model past every limit is refused at
    # registration, see test_registry_crash.py); the converter gets 1 GiB.
    registry_settings = _quick(settings, sandbox_memory_bytes=8 << 30)
    settings = _quick(settings, sandbox_memory_bytes=1 << 30)
    async with (
        running(registry_settings, RegistryService),
        running(settings, ConverterService) as service,
        await Client.connect(settings) as client,
    ):
        assert isinstance(service, ConverterService)
        await client.register(
            allocating_model(tmp_path / "big.onnx", elements=(30_000, 25_000)), name="big", version="1.0.0"
        )
        (outcome,) = await client.convert("big@1.0.0", profiles=["ort-opt"], timeout=120)
        assert isinstance(outcome, ConversionFailed) and outcome.reason == "out_of_memory", outcome
        assert "memory limit" in outcome.message and "ort-opt" in outcome.message, outcome.message
        await client.register(mlp(tmp_path / "m.onnx"), name="fine", version="1.0.0")
        (fine,) = await client.convert("fine@1.0.0", profiles=["ort-opt"], timeout=120)
        assert isinstance(fine, ModelConverted)
        assert service.workers[0].dead_lettered == 0


@pytest.mark.slow
async def test_a_conversion_that_never_finishes_times_out(settings: Settings, tmp_path: Path) -> None:
    """A hang inside the conversion (injected into the worker: a model that never finishes is
    already refused at registration, whose trial runs time out, see test_registry_crash.py)."""
    settings = _quick(settings, sandbox_convert_timeout_s=3.0)
    async with (
        running(settings, RegistryService),
        running(settings, ConverterService) as service,
        await Client.connect(settings) as client,
    ):
        assert isinstance(service, ConverterService)
        await client.register(mlp(tmp_path / "m.onnx"), name="endless", version="1.0.0")
        service.sandbox.inject_fault = "hang"
        (outcome,) = await client.convert("endless@1.0.0", profiles=["ort-opt"], timeout=120)
        assert isinstance(outcome, ConversionFailed) and outcome.reason == "timed_out", outcome
        assert "3 s" in outcome.message
        assert service.workers[0].dead_lettered == 0


@pytest.mark.slow
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="NchwcTransformer runs on x86_64 only")
async def test_issue_15_encoder_fp16_variant_crashes_the_runtime_and_is_reported(
    settings: Settings, tmp_path: Path
) -> None:
    """The real reproducer: the fp16 variant of a recurrent encoder makes ONNX Runtime segfault
    while loading it (microsoft/onnxruntime#28392); the profile fails as ``crashed``, saying
    where, and the job's other profile converts."""
    settings = _quick(settings)
    async with (
        running(settings, RegistryService),
        running(settings, ConverterService) as service,
        await Client.connect(settings) as client,
    ):
        assert isinstance(service, ConverterService)
        await client.register(nchwc_crash_model(tmp_path / "encoder.onnx"), name="encoder", version="1.0.0")
        outcomes = await client.convert("encoder@1.0.0", profiles=["fp16", "ort-opt"], timeout=120)
        by_profile = {o.profile: o for o in outcomes}
        crashed = by_profile["fp16"]
        assert isinstance(crashed, ConversionFailed) and crashed.reason == "crashed", crashed
        # fp16 loads what it made to keep it loadable, so the crash may come inside the conversion
        assert "SIGSEGV" in crashed.message and "fp16" in crashed.message, crashed.message
        assert isinstance(by_profile["ort-opt"], ModelConverted)
        assert service.workers[0].dead_lettered == 0
