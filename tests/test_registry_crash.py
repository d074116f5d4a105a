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
        hung, fine = await asyncio.gather(
            client.register(model, name="hung", version="1.0.0"),
            client.register(model, name="other", version="1.0.0"),
            return_exceptions=True,
        )
        assert isinstance(hung, Rejected) and hung.code == "timed_out", hung
        assert not isinstance(fine, BaseException), fine
        assert registry.workers[0].dead_lettered == 0
