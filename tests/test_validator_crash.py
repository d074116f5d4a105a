"""A model that crashes, hangs or exhausts the runtime during validation ends as
``validation_failed`` with reason ``crashed`` / ``timed_out`` / ``out_of_memory``; the validator
keeps serving and nothing is dead-lettered."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.registry.service import RegistryService
from services.validator.service import ValidatorService
from shared.config import Settings
from shared.errors import Rejected
from shared.sdk import Client
from tests.support.sandbox_models import allocating_model
from tests.support.services import running
from tests.support.validator_models import sk_classifier, sk_dataset


def _quick(settings: Settings, **changes: object) -> Settings:
    return settings.with_overrides(
        validator_bootstrap=50, validator_folds=2, validator_noise_samples=64, converter_profiles=(), **changes
    )


@pytest.mark.slow
async def test_crash_out_of_memory_and_timeout_are_precise_and_the_validator_carries_on(
    settings: Settings, tmp_path: Path
) -> None:
    # The registry's trial runs must fit the 3 GB model (a model past every limit is refused at
    # registration, see test_registry_crash.py); the validator gets 1 GiB.
    registry_settings = _quick(settings, sandbox_memory_bytes=8 << 30)
    settings = _quick(settings, sandbox_memory_bytes=1 << 30, sandbox_validate_timeout_s=4.0)
    async with (
        running(registry_settings, RegistryService),
        running(settings, ValidatorService) as service,
        await Client.connect(settings) as client,
    ):
        assert isinstance(service, ValidatorService)
        dataset = sk_dataset(tmp_path / "digits.npz")
        await client.register(sk_classifier(tmp_path / "m.onnx"), name="m", version="1.0.0", dataset=dataset)
        await client.register(
            allocating_model(tmp_path / "big.onnx", elements=(30_000, 25_000)), name="big", version="1.0.0"
        )

        service.sandbox.inject_fault = "segv"
        with pytest.raises(Rejected) as crashed:
            await client.validate("m@1.0.0", checks=["structural", "metrics"], timeout=120)
        assert crashed.value.code == "crashed" and "SIGSEGV" in crashed.value.message
        with pytest.raises(Rejected) as oom:
            await client.validate("big@1.0.0", checks=["structural"], timeout=120)
        assert oom.value.code == "out_of_memory", oom.value.message
        # a model that never finishes is refused at registration (its trial runs time out), so
        # the hang is injected into the validator's worker
        service.sandbox.inject_fault = "hang"
        with pytest.raises(Rejected) as hung:
            await client.validate("m@1.0.0", checks=["structural"], timeout=120)
        assert hung.value.code == "timed_out", hung.value.message

        validated = await client.validate("m@1.0.0", checks=["structural", "metrics"], timeout=120)
        assert validated.report.checks  # the same model, on a fresh worker: validated
        assert all(w.dead_lettered == 0 and w.failed == 0 for w in service.workers)
        failures = [
            e async for e in client.events("model.validation_failed.>", replay=True, idle_timeout=0.5, stored_only=True)
        ]
        assert sorted(e.message.reason for e in failures) == ["crashed", "out_of_memory", "timed_out"]
