"""``register --until ready`` and ``Client.wait_for_verdict`` against the real services: the
whole chain (conversion, benchmark, validation of the base and its variant) is awaited, the
verdict table printed, the exit status says whether the version is READY."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.benchmarker.service import BenchmarkerService
from services.converter.service import ConverterService
from services.registry.service import RegistryService
from services.validator.service import ValidatorService
from shared.config import Settings
from shared.sdk import Client
from tests.support import validator_models as vm
from tests.support.cli import cli
from tests.support.services import running

pytestmark = pytest.mark.slow


async def test_until_ready_waits_for_the_chain_and_exits_on_the_verdict(settings: Settings, tmp_path: Path) -> None:
    settings = settings.with_overrides(
        converter_profiles=("ort-opt",),
        bench_warmup_s=0.1,
        bench_window_s=0.2,
        bench_min_duration_s=0.4,
        bench_max_duration_s=1.5,
        validator_attack_queries=100,
        validator_attack_samples=20,
        validator_attack_time_s=2.0,
        validator_bootstrap=200,
        validator_noise_samples=200,
    )
    model = vm.sk_classifier(tmp_path / "iris.onnx", "iris")
    async with (
        running(settings, RegistryService),
        running(settings, ConverterService),
        running(settings, BenchmarkerService),
        running(settings, ValidatorService),
    ):
        # No dataset: it runs and is measured, but nothing shows it answers right.
        rc, out, err = await cli(
            settings, "register", str(model), "--name", "iris", "--version", "1.0.0", "--until", "ready",
            "--timeout", "150", timeout=200,
        )  # fmt: skip
        assert rc == 1, out + err
        assert "verdict of iris@1.0.0" in out and "NOT VALIDATED FOR ACCURACY" in out
        assert "iris@1.0.0+ort-opt" in out  # the variant was followed too
        assert "iris@1.0.0: not_validated_for_accuracy" in err  # progress on stderr, for pipes

        # With a labelled dataset: READY, exit 0; the SDK answers the same, typed.
        data = vm.sk_dataset(tmp_path / "iris.npz", "iris")
        rc, out, err = await cli(
            settings, "register", str(model), "--name", "iris", "--version", "2.0.0", "--dataset", str(data),
            "--until", "ready", "--timeout", "150", "--json", timeout=200,
        )  # fmt: skip
        assert rc == 0, out + err
        doc = json.loads(out)
        assert doc["status"] == "ready" and doc["chain"]["complete"]
        assert {r["ref"] for r in doc["chain"]["rows"]} == {"iris@2.0.0", "iris@2.0.0+ort-opt"}
        async with await Client.connect(settings) as client:
            result = await client.wait_for_verdict("iris@2.0.0", timeout=30)
            assert result.ready and result.complete and result.verdict == "ready"
            older = await client.wait_for_verdict("iris@1.0.0", timeout=30)
            assert older.complete and not older.ready and older.verdict == "not_validated_for_accuracy"
