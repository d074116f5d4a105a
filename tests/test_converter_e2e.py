"""End to end through NATS: the registry and the converter in-process against a real
nats-server, real models, real ONNX Runtime."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest

from services.converter.service import ConverterService
from services.registry.service import RegistryService
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.alerts import ConversionFailedAlert
from shared.contracts.conversion import (
    ConversionFailed,
    ConversionSkipped,
    ConvertModel,
    ModelConverted,
    Tolerance,
)
from shared.contracts.registry import ListModels
from shared.sdk import Client
from tests.support import converter_models as cm
from tests.support.models import digits_classifier, digits_dataset, mlp
from tests.support.services import running


def _fast(settings: Settings, **changes: object) -> Settings:
    return settings.with_overrides(converter_parity_samples=64, **changes)


async def _collect(client: Client, subject: str, count: int, timeout: float = 60.0) -> list:
    out = []

    async def read() -> None:
        async for event in client.events(subject, replay=True, idle_timeout=timeout):
            out.append(event)
            if len(out) >= count:
                return

    await asyncio.wait_for(read(), timeout=timeout + 5)
    return out


async def test_registration_triggers_default_profiles_and_lineage(settings: Settings, tmp_path: Path) -> None:
    settings = _fast(settings, converter_profiles=("ort-opt", "fp16", "int8-dynamic", "trt-fp16"))
    model = cm.skl_mlp_classifier(tmp_path / "sklc.onnx")
    dataset = digits_dataset(tmp_path / "digits.npz")
    async with running(settings, RegistryService), running(settings, ConverterService):
        async with await Client.connect(settings) as client:
            await client.register(model, name="digits", version="1.0.0", task="classification", dataset=dataset)
            converted = await _collect(client, "model.converted.digits", 3)
            profiles = sorted(e.message.profile for e in converted)
            assert profiles == ["fp16", "int8-dynamic", "ort-opt"]
            for event in converted:
                report = event.message.report
                assert report.parity is not None and report.parity.passed
                assert report.parity.input_source == "dataset"
                assert report.size_after_bytes and report.duration_s > 0
            skipped = await _collect(client, "model.conversion_skipped.digits", 1)
            assert skipped[0].message.profile == "trt-fp16"
            assert skipped[0].message.reason == "unavailable_on_host"

            tree = await client.lineage("digits@1.0.0")
            assert tree.ref == "digits@1.0.0"
            assert sorted(c.variant for c in tree.children) == ["fp16", "int8-dynamic", "ort-opt"]
            fp16 = next(c for c in tree.children if c.variant == "fp16")
            assert fp16.report is not None and fp16.report.parity.passed
            assert fp16.size_bytes < tree.size_bytes
            view = await client.get("digits@1.0.0+fp16")
            assert view.record.parent == "digits@1.0.0"
            # no alert for the skipped TensorRT profile
            alerts = [e async for e in client.alerts(replay=True, idle_timeout=0.5)]
            assert not [a for a in alerts if "conversion" in a.subject]
