"""A model that crashes, hangs or exhausts the verifier ends as a precise rejection; the
registry keeps serving, other registrations are untouched, nothing is dead-lettered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.registry.service import RegistryService
from shared.config import Settings
from shared.errors import Rejected
from shared.sdk import Client
from tests.support.models import mlp
from tests.support.sandbox_models import allocating_model, endless_model
from tests.support.services import running


def _registry(service: object) -> RegistryService:
    assert isinstance(service, RegistryService)
    return service


async def test_a_verifier_crash_rejects_the_model_and_the_registry_keeps_serving(
    settings: Settings, tmp_path: Path
) -> None:
    model = mlp(tmp_path / "m.onnx")
    async with running(settings, RegistryService) as service, await Client.connect(settings) as client:
        registry = _registry(service)
        registry.sandbox.inject_fault = "segv"
        with pytest.raises(Rejected) as caught:
            await client.register(model, name="crashy", version="1.0.0")
        assert caught.value.code == "runtime_crashed"
        assert "SIGSEGV" in caught.value.message and "verification" in caught.value.message
        view = await client.register(model, name="fine", version="1.0.0")
        assert view.ref == "fine@1.0.0"
        worker = registry.workers[0]
        assert worker.dead_lettered == 0 and worker.failed == 0


async def test_a_verification_past_its_timeout_is_rejected_as_timed_out(settings: Settings, tmp_path: Path) -> None:
    settings = settings.with_overrides(sandbox_verify_timeout_s=1.0)
    model = mlp(tmp_path / "m.onnx")
    async with running(settings, RegistryService) as service, await Client.connect(settings) as client:
        registry = _registry(service)
        registry.sandbox.inject_fault = "hang"
        hanging = asyncio.create_task(client.register(model, name="hung", version="1.0.0"))
        # The other registration starts once the hung one's first sandbox task has taken the
        # fault, so it is the hung one that hangs, with the other in flight beside it.
        async with asyncio.timeout(30):
            while registry.sandbox.inject_fault is not None:  # noqa: ASYNC110 (the pool has no event for it)
                await asyncio.sleep(0.01)
        fine, hung = await asyncio.gather(
            client.register(model, name="other", version="1.0.0"), hanging, return_exceptions=True
        )
        assert isinstance(hung, Rejected) and hung.code == "timed_out", hung
        assert not isinstance(fine, BaseException), fine
        assert registry.workers[0].dead_lettered == 0


@pytest.mark.slow
async def test_a_model_that_never_finishes_is_rejected_at_registration_as_timed_out(
    settings: Settings, tmp_path: Path
) -> None:
    """It loads and verifies, but the trial runs that resolve its inputs never end."""
    settings = settings.with_overrides(sandbox_verify_timeout_s=3.0)
    async with running(settings, RegistryService) as service, await Client.connect(settings) as client:
        registry = _registry(service)
        with pytest.raises(Rejected) as caught:
            await client.register(endless_model(tmp_path / "endless.onnx"), name="endless", version="1.0.0")
        assert caught.value.code == "timed_out" and "input resolution" in caught.value.message, caught.value
        view = await client.register(mlp(tmp_path / "m.onnx"), name="fine", version="1.0.0")
        assert view.ref == "fine@1.0.0"
        assert registry.workers[0].dead_lettered == 0


async def test_a_model_past_every_memory_limit_is_rejected_at_registration_as_out_of_memory(
    settings: Settings, tmp_path: Path
) -> None:
    """It loads and verifies, but every trial run needs 10^11 floats: refused, not registered
    as needing an input spec; the registry carries on."""
    settings = settings.with_overrides(sandbox_memory_bytes=1 << 30)
    async with running(settings, RegistryService) as service, await Client.connect(settings) as client:
        registry = _registry(service)
        with pytest.raises(Rejected) as caught:
            await client.register(allocating_model(tmp_path / "huge.onnx"), name="huge", version="1.0.0")
        assert caught.value.code == "out_of_memory", caught.value
        view = await client.register(mlp(tmp_path / "m.onnx"), name="fine", version="1.0.0")
        assert view.ref == "fine@1.0.0"
        assert registry.workers[0].dead_lettered == 0
