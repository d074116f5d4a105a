"""End to end through NATS: the registry and the converter in-process against a real
nats-server, real models, real ONNX Runtime, and the ``inferlab`` CLI as a child process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import msgspec
import pytest

from services.converter.service import ConverterService
from services.registry.service import RegistryService
from shared.artifacts import ArtifactStore, parse_object_uri
from shared.bus import Bus
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.base import new_id
from shared.contracts.conversion import (
    ConversionFailed,
    ConversionPlan,
    ConversionProgress,
    ConversionSkipped,
    ConvertModel,
    ModelConverted,
    Tolerance,
)
from shared.contracts.registry import ListModels, ModelRegistered
from shared.sdk import Client
from tests.support import converter_models as cm
from tests.support.cli import cli as _cli
from tests.support.models import digits_dataset, mlp
from tests.support.services import ServiceProcess, running


def _fast(settings: Settings, **changes: object) -> Settings:
    return settings.with_overrides(converter_parity_samples=64, **changes)


async def stored(client: Client, subject: str, idle: float = 0.5) -> list:
    return [e async for e in client.events(subject, replay=True, idle_timeout=idle)]


async def wait_for_events(client: Client, subject: str, count: int, timeout: float = 60.0) -> list:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        events = await stored(client, subject, idle=0.3)
        if len(events) >= count or loop.time() > deadline:
            return events
        await asyncio.sleep(0.2)


async def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    return await _cli(settings, *args, timeout=120.0, columns=220)


@pytest.mark.slow
async def test_registration_triggers_default_profiles_and_lineage(settings: Settings, tmp_path: Path) -> None:
    settings = _fast(settings, converter_profiles=("ort-opt", "fp16", "int8-dynamic", "trt-fp16"))
    model = cm.skl_mlp_classifier(tmp_path / "sklc.onnx")
    dataset = digits_dataset(tmp_path / "digits.npz")
    async with (
        running(settings, RegistryService),
        running(settings, ConverterService),
        await Client.connect(settings) as client,
    ):
        await client.register(model, name="digits", version="1.0.0", task="classification", dataset=dataset)
        converted = await wait_for_events(client, "model.converted.digits", 3)
        assert sorted(e.message.profile for e in converted) == ["fp16", "int8-dynamic", "ort-opt"]
        for event in converted:
            report = event.message.report
            assert report.parity is not None and report.parity.passed
            assert report.parity.input_source == "dataset"
            assert report.size_after_bytes and report.duration_s > 0 and report.key
        skipped = await wait_for_events(client, "model.conversion_skipped.digits", 1)
        assert [(s.message.profile, s.message.reason) for s in skipped] == [("trt-fp16", "unavailable_on_host")]

        tree = await client.lineage("digits@1.0.0")
        assert tree.ref == "digits@1.0.0" and tree.report is None
        assert sorted(c.variant for c in tree.children) == ["fp16", "int8-dynamic", "ort-opt"]
        fp16 = next(c for c in tree.children if c.variant == "fp16")
        assert fp16.profile == "fp16" and fp16.report is not None and fp16.report.parity.passed
        assert fp16.size_bytes < tree.size_bytes
        view = await client.get("digits@1.0.0+fp16")
        assert view.record.parent == "digits@1.0.0" and view.record.dataset_uri
        # the registered variants come back as model.registered but are not converted again
        await asyncio.sleep(0.5)
        assert len(await stored(client, "model.converted.digits")) == 3
        # a skipped TensorRT profile raises no alert
        assert not await stored(client, "alerts.conversion.>")


@pytest.mark.slow
async def test_explicit_convert_with_progress_and_every_kind_of_outcome(settings: Settings, tmp_path: Path) -> None:
    settings = _fast(settings, converter_profiles=())
    model = cm.skl_mlp_classifier(tmp_path / "sklc.onnx")
    dataset = digits_dataset(tmp_path / "digits.npz")
    async with (
        running(settings, RegistryService),
        running(settings, ConverterService),
        await Client.connect(settings) as client,
    ):
        await client.register(model, name="digits", version="1.0.0", task="classification", dataset=dataset)
        seen: list = []
        outcomes = await client.convert(
            "digits@1.0.0",
            profiles=["int8-static", "trt-int8", "nonsense"],
            target_opset=19,
            on_progress=seen.append,
            timeout=120,
        )
        by_profile = {o.profile: o for o in outcomes}
        assert set(by_profile) == {"int8-static", "trt-int8", "nonsense", "opset-19"}
        assert isinstance(by_profile["int8-static"], ModelConverted)
        assert by_profile["int8-static"].report.parity.calibration_source == "dataset"
        assert isinstance(by_profile["opset-19"], ModelConverted)
        assert by_profile["opset-19"].report.details["opset_after"] == 19
        assert isinstance(by_profile["trt-int8"], ConversionSkipped)
        assert isinstance(by_profile["nonsense"], ConversionFailed)
        assert by_profile["nonsense"].reason == "unknown_profile"
        assert isinstance(seen[0], ConversionPlan) and seen[0].profiles[-1] == "opset-19"
        stages = [(m.profile, m.stage) for m in seen if isinstance(m, ConversionProgress)]
        assert ("int8-static", "converting") in stages and ("int8-static", "registering") in stages
        record = (await client.get("digits@1.0.0+int8-static")).record
        assert record.metadata["conversion"]["parity"]["passed"] is True
        assert record.tags["profile"] == "int8-static"


@pytest.mark.slow
async def test_failures_raise_alerts_with_reason_and_report(settings: Settings, tmp_path: Path) -> None:
    settings = _fast(settings, converter_profiles=())
    async with (
        running(settings, RegistryService),
        running(settings, ConverterService),
        await Client.connect(settings) as client,
    ):
        await client.register(mlp(tmp_path / "mlp.onnx"), name="mlp", version="1.0.0")
        outcomes = await client.convert("mlp@1.0.0", profiles=["int8-static"], timeout=60)
        assert isinstance(outcomes[0], ConversionFailed) and outcomes[0].reason == "needs_calibration_data"

        outcomes = await client.convert(
            "mlp@1.0.0", profiles=["fp16"], tolerance=Tolerance(atol=0.0, rtol=0.0), timeout=60
        )
        failed = outcomes[0]
        assert isinstance(failed, ConversionFailed) and failed.reason == "parity_failed"
        assert failed.report is not None and failed.report.parity is not None
        assert not failed.report.parity.passed and failed.report.size_after_bytes

        alerts = await wait_for_events(client, "alerts.conversion.failed.mlp", 2)
        reasons = sorted(a.message.reason for a in alerts)
        assert reasons == ["needs_calibration_data", "parity_failed"]
        parity_alert = next(a.message for a in alerts if a.message.reason == "parity_failed")
        assert parity_alert.ref == "mlp@1.0.0" and parity_alert.profile == "fp16"
        assert parity_alert.report is not None and parity_alert.report.parity is not None
        failures = await stored(client, "model.conversion_failed.mlp")
        assert len(failures) == 2
        # nothing was registered for either
        listed = await client.list(ListModels(name="mlp"))
        assert [v.record.variant for v in listed.models] == ["base"]

        # With calibration data sent in the request, int8-static converts.
        calib = tmp_path / "calib.npz"
        import numpy as np

        np.savez(calib, input=np.random.default_rng(0).random((64, 16), dtype=np.float32))
        outcomes = await client.convert("mlp@1.0.0", profiles=["int8-static"], calibration=calib, timeout=60)
        assert isinstance(outcomes[0], ModelConverted)
        assert outcomes[0].report.parity.input_source == "calibration"


async def test_bad_requests_get_precise_reasons_and_the_service_keeps_working(
    settings: Settings, tmp_path: Path
) -> None:
    settings = _fast(settings, converter_profiles=())
    async with (
        running(settings, RegistryService),
        running(settings, ConverterService),
        await Client.connect(settings) as client,
    ):
        await client.register(mlp(tmp_path / "mlp.onnx"), name="mlp", version="1.0.0")
        cases = [
            ({"ref": "ghost@1.0.0", "profiles": ["fp16"]}, "unknown_model"),
            ({"ref": "Not A Ref", "profiles": ["fp16"]}, "invalid_request"),
            ({"ref": "mlp@1.0.0", "profiles": ["opset-999"]}, "invalid_request"),
            ({"ref": "mlp@1.0.0", "profiles": ["fp16"], "options": {"fp16": {"colour": "red"}}}, "invalid_request"),
            ({"ref": "mlp@1.0.0", "profiles": ["fp16"], "tolerance": {"atol": -1.0}}, "invalid_request"),
            (
                {"ref": "mlp@1.0.0", "profiles": ["int8-static"], "calibration_uri": "nats-obj://artifacts/nope"},
                "invalid_dataset",
            ),
            (
                {"ref": "mlp@1.0.0", "profiles": ["fp16"], "shapes": {"input": [4, 99]}},
                "invalid_request",
            ),
        ]
        for fields, reason in cases:
            command = msgspec.convert({**fields, "event_id": new_id()}, ConvertModel)
            replies = await client.send_and_collect(
                subjects.CONVERT,
                command,
                timeout=30,
                until=lambda got: any(g.get("type") == "model.conversion_failed" for g in got),
            )
            failure = next(r for r in replies if r["type"] == "model.conversion_failed")
            assert failure["reason"] == reason, (fields, failure)
            assert failure["message"]
        # The source artifact vanished from the object store: a precise failure, no retry loop.
        gone = await client.register(mlp(tmp_path / "gone.onnx", seed=5), name="gone", version="1.0.0")
        bucket, name = parse_object_uri(gone.artifact_uri)
        await ArtifactStore(client.bus, bucket).delete(name)
        outcomes = await client.convert("gone@1.0.0", profiles=["fp16"], timeout=60)
        assert isinstance(outcomes[0], ConversionFailed) and outcomes[0].reason == "artifact_error"
        assert "no object" in outcomes[0].message

        outcomes = await client.convert("mlp@1.0.0", profiles=["fp16"], timeout=60)
        assert isinstance(outcomes[0], ModelConverted)


@pytest.mark.slow
async def test_repeated_and_redelivered_conversions_register_once(settings: Settings, bus: Bus, tmp_path: Path) -> None:
    settings = _fast(settings, converter_profiles=("fp16",))
    async with (
        running(settings, RegistryService),
        running(settings, ConverterService),
        await Client.connect(settings) as client,
    ):
        await client.register(mlp(tmp_path / "mlp.onnx"), name="mlp", version="1.0.0")
        first = await wait_for_events(client, "model.converted.mlp", 1)
        assert len(first) == 1
        # The same conversion asked again (a repeated request) answers the existing variant.
        outcomes = await client.convert("mlp@1.0.0", profiles=["fp16"], timeout=60)
        again = outcomes[0]
        assert isinstance(again, ModelConverted)
        assert again.event_id == first[0].message.event_id and again.sha256 == first[0].message.sha256
        # A redelivered registration (past the duplicate window: a new stream message).
        registered = await stored(client, "model.registered.mlp")
        base_event = next(e.message for e in registered if e.message.variant == "base")
        replay = msgspec.structs.replace(base_event, event_id=new_id())
        await bus.publish(subjects.registered("mlp"), replay)
        await asyncio.sleep(1.5)
        listed = await client.list(ListModels(name="mlp"))
        assert sorted(v.record.variant for v in listed.models) == ["base", "fp16"]
        fp16_announcements = [
            e
            for e in await stored(client, "model.registered.mlp")
            if isinstance(e.message, ModelRegistered) and e.message.variant == "fp16"
        ]
        assert len(fp16_announcements) == 1
        # every converted announcement carries the same deterministic id, deduplicated by JetStream
        assert len(await stored(client, "model.converted.mlp")) == 1


@pytest.mark.slow
async def test_cli_convert_lineage_and_profiles(settings: Settings, tmp_path: Path) -> None:
    settings = _fast(settings, converter_profiles=())
    model = cm.skl_mlp_classifier(tmp_path / "sklc.onnx")
    dataset = digits_dataset(tmp_path / "digits.npz")
    async with running(settings, RegistryService), running(settings, ConverterService):
        async with await Client.connect(settings) as client:
            await client.register(model, name="digits", version="1.0.0", task="classification", dataset=dataset)
        rc, out, err = await cli(
            settings, "convert", "digits@1.0.0", "-p", "fp16", "-p", "int8-dynamic", "-p", "trt-fp16", "--wait"
        )
        assert rc == 0, err
        assert "converted" in out and "digits@1.0.0+fp16" in out and "skipped" in out and "top1" in out
        rc, out, err = await cli(
            settings, "convert", "digits@1.0.0", "-p", "ort-opt", "--tolerance", "atol=0,rtol=0", "--wait", "--json"
        )
        assert rc == 0, err  # ort-opt is exact on this model
        body = json.loads(out)
        assert body["status"] == "done" and body["outcomes"][0]["type"] == "model.converted"
        rc, out, err = await cli(settings, "convert", "digits@1.0.0", "-p", "fp16", "--tolerance", "atol=-1", "--wait")
        assert rc == 1 and "invalid_request" in out
        rc, out, err = await cli(settings, "convert", "digits@1.0.0", "--tolerance", "bogus=1")
        assert rc == 1 and err.startswith("error:") and "Traceback" not in err

        rc, out, err = await cli(settings, "lineage", "digits@1.0.0")
        assert rc == 0, err
        assert "digits@1.0.0+fp16" in out and "profile int8-dynamic" in out and "parity:" in out
        rc, out, err = await cli(settings, "lineage", "digits@1.0.0", "--json")
        tree = json.loads(out)
        assert sorted(c["variant"] for c in tree["children"]) == ["fp16", "int8-dynamic", "ort-opt"]

        rc, out, err = await cli(settings, "profiles", "--json")
        assert rc == 0, err
        listing = json.loads(out)
        ids = {p["id"]: p for p in listing["profiles"]}
        assert {"ort-opt", "fp16", "int8-dynamic", "int8-static", "trt-fp16", "trt-int8"} <= set(ids)
        assert ids["fp16"]["available"] is True
        rc, out, err = await cli(settings, "profiles")
        assert rc == 0 and "int8-static" in out and "available" in out


@pytest.mark.fault
async def test_converter_killed_mid_conversion_registers_the_variant_once(settings: Settings, tmp_path: Path) -> None:
    """kill -9 while a conversion runs; the restarted converter gets the command again after
    ack_wait and the variant ends up registered and announced exactly once."""
    settings = _fast(settings, converter_profiles=(), ack_wait_s=2.0)
    model = cm.big_mlp(tmp_path / "big.onnx", target_bytes=16 << 20)
    async with running(settings, RegistryService), await Client.connect(settings) as client:
        await client.register(model, name="big", version="1.0.0")
        first = ServiceProcess("converter", settings, tmp_path / "logs").start()
        try:
            killed = asyncio.Event()

            def on_progress(message: object) -> None:
                if isinstance(message, ConversionProgress) and message.stage == "converting" and not killed.is_set():
                    first.kill()
                    killed.set()

            waiting = asyncio.create_task(
                client.convert("big@1.0.0", profiles=["int8-dynamic"], on_progress=on_progress, timeout=90)
            )
            await asyncio.wait_for(killed.wait(), 60)
            second = ServiceProcess("converter", settings, tmp_path / "logs").start()
            try:
                outcomes = await waiting
                assert isinstance(outcomes[0], ModelConverted), outcomes[0]
            finally:
                second.stop()
        finally:
            first.kill()
        await asyncio.sleep(0.5)
        listed = await client.list(ListModels(name="big"))
        assert sorted(v.record.variant for v in listed.models) == ["base", "int8-dynamic"]
        announced = [
            e for e in await stored(client, "model.registered.big") if e.message and e.message.variant != "base"
        ]
        assert len(announced) == 1
        assert len(await stored(client, "model.converted.big")) == 1


async def test_a_registered_fact_with_an_unfetchable_artifact_fails_precisely(
    settings: Settings, bus: Bus, tmp_path: Path
) -> None:
    """A model.registered whose artifact URI the import policy refuses (or that is no URI at
    all) can never be fetched: one conversion_failed with reason artifact_error, not a retry
    loop into the dead-letter queue."""
    settings = _fast(settings, converter_profiles=("ort-opt",))
    async with (
        running(settings, RegistryService),
        running(settings, ConverterService),
        await Client.connect(settings) as client,
    ):
        real = await client.register(mlp(tmp_path / "mlp.onnx"), name="odd", version="1.0.0")
        for i, uri in enumerate(("file:///etc/passwd", "no-scheme.onnx")):
            sha = str(i) * 64  # bytes the converter's cache has never seen: it must fetch them
            record = msgspec.structs.replace(real, version=f"2.0.{i}", ref=f"odd@2.0.{i}", artifact_uri=uri, sha256=sha)
            event = ModelRegistered(
                event_id=new_id(), name="odd", version=record.version, sha256=record.sha256, record=record
            )
            await bus.publish(subjects.registered("odd"), event)
        failures = await wait_for_events(client, "model.conversion_failed.odd", 2)
        assert sorted(f.message.version for f in failures) == ["2.0.0", "2.0.1"]
        assert {f.message.reason for f in failures} == {"artifact_error"}
        assert await stored(client, "deadletter.converter") == []


@pytest.mark.slow
async def test_an_import_of_third_party_shaped_models_raises_no_alert_for_input_outcomes(
    settings: Settings, tmp_path: Path
) -> None:
    """A VAD with state and sample rate, a /32 detector, a BERT-like graph and a model no
    searched size runs: the first three convert on the inputs resolved at registration; the
    fourth gets ``needs_input_spec`` outcomes that name the fix. Neither kind is an alert."""
    from tests.support import input_models as im

    (tmp_path / "stuck").mkdir()
    settings = _fast(settings, converter_profiles=("ort-opt", "int8-dynamic"))
    async with (
        running(settings, RegistryService),
        running(settings, ConverterService),
        await Client.connect(settings) as client,
    ):
        for name, path in (
            ("vad", im.vad(tmp_path)),
            ("det", im.detector(tmp_path)),
            ("bert", im.bert(tmp_path)),
            ("stuck", im.vad(tmp_path / "stuck", pad=5000)),
        ):
            await client.register(path, name=name, version="1.0.0")
        outcomes: dict[str, list] = {}
        loop = asyncio.get_running_loop()
        for name in ("vad", "det", "bert", "stuck"):
            deadline = loop.time() + 60
            while True:
                events = [
                    e
                    for kind in ("converted", "conversion_skipped", "conversion_failed")
                    for e in await stored(client, f"model.{kind}.{name}", idle=0.2)
                ]
                if len(events) >= 2 or loop.time() > deadline:
                    break
                await asyncio.sleep(0.2)
            outcomes[name] = events
        stuck = [e.message for e in outcomes["stuck"]]
        assert {m.reason for m in stuck} == {"needs_input_spec"} and len(stuck) == 2
        assert "--shape input:NxN" in stuck[0].message
        for name in ("vad", "det", "bert"):
            failed = [e.message for e in outcomes[name] if isinstance(e.message, ConversionFailed)]
            assert not failed, [(m.profile, m.message) for m in failed]
            assert any(isinstance(e.message, ModelConverted) for e in outcomes[name]), name
        assert not await stored(client, "alerts.conversion.>")
