"""How a model is fed, at registration: specs, samples and the resolution the record carries
(through a real nats-server and the registry service)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.registry.service import RegistryService
from shared.cli.registry import format_resolved, parse_input_specs
from shared.config import Settings
from shared.contracts.registry import INPUTS_NEED_SPEC, INPUTS_RESOLVED, InputSpec
from shared.errors import InferlabError, Rejected
from shared.sdk import Client
from tests.support.input_models import bert, vad
from tests.support.services import running


async def test_registration_resolves_inputs_or_says_which_spec_is_needed(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    async with running(settings, RegistryService):
        ok = await client.register(vad(tmp_path), name="vad", version="1.0.0")
        assert ok.input_status == INPUTS_RESOLVED
        shapes = {r.name: r.shape for r in ok.resolved_inputs}
        assert shapes["state"] == [2, 1, 128] and shapes["input"][1] > 64 and shapes["sr"] == []

        stuck = await client.register(vad(tmp_path, pad=5000), name="vad", version="2.0.0")
        assert stuck.input_status == INPUTS_NEED_SPEC and not stuck.resolved_inputs  # registered all the same
        assert "input 'input' dimension 1 ('samples')" in stuck.input_message
        assert "inferlab register MODEL.onnx --name vad --version 2.0.0 --shape input:NxN" in stuck.input_message

        fed = await client.register(
            vad(tmp_path, pad=5000),
            name="vad",
            version="2.0.1",
            input_specs=[InputSpec(name="input", shape=[1, 16000])],
        )
        assert fed.input_status == INPUTS_RESOLVED and fed.input_specs[0].shape == [1, 16000]
        assert {r.name: r.shape for r in fed.resolved_inputs}["input"] == [1, 16000]
        view = await client.get("vad@2.0.1")  # what `inferlab show` prints
        assert "input [1, 16000] float32 (spec)" in format_resolved(view.record)

        # a converted variant (same inputs) is fed as its parent was, without searching again
        variant = await client.register(
            vad(tmp_path, pad=5000), name="vad", version="2.0.1", variant="copy", parent="vad@2.0.1"
        )
        assert [r.shape for r in variant.resolved_inputs] == [r.shape for r in fed.resolved_inputs]

        with pytest.raises(Rejected) as refused:
            await client.register(
                vad(tmp_path), name="vad", version="3.0.0", input_specs=[InputSpec(name="state", shape=[3, 1, 128])]
            )
        assert refused.value.code == "invalid_command" and "fixed to 2" in refused.value.message


async def test_a_sample_of_inputs_feeds_the_model(settings: Settings, client: Client, tmp_path: Path) -> None:
    sample = tmp_path / "sample.npz"
    np.savez(
        sample,
        input_ids=np.array([[3, 50, 7, 9, 11, 12]], np.int64),
        token_type_ids=np.zeros((1, 6), np.int64),
        attention_mask=np.ones((1, 6), np.int64),
    )
    labelled = tmp_path / "labelled.npz"
    np.savez(labelled, input_ids=np.zeros((1, 6), np.int64), labels=np.zeros(1))
    async with running(settings, RegistryService):
        record = await client.register(bert(tmp_path), name="bert", version="1.0.0", sample=sample)
        assert record.sample_uri and record.sample_uri.startswith("nats-obj://artifacts/datasets/")
        got = {r.name: r for r in record.resolved_inputs}
        assert got["input_ids"].shape == [1, 6] and got["input_ids"].source == "sample"
        assert (got["input_ids"].low, got["input_ids"].high) == (3, 50)
        with pytest.raises(Rejected) as refused:
            await client.register(bert(tmp_path), name="bert", version="1.0.1", sample=labelled)
        assert refused.value.code == "invalid_dataset" and "inputs only" in refused.value.message


def test_cli_input_spec_syntax() -> None:
    specs = parse_input_specs(
        ["x:1x3x224x224", "input:0:1x16000"],
        ["y:1x3x32x32,1x3x224x224,8x3x640x640"],
        ["ids:0:30521", "x:-1.5:1.5"],
    )
    by = {s.name: s for s in specs}
    assert by["x"].shape == [1, 3, 224, 224] and (by["x"].low, by["x"].high) == (-1.5, 1.5)
    assert by["input:0"].shape == [1, 16000]  # names may hold ':'
    assert by["y"].min_shape == [1, 3, 32, 32] and by["y"].opt_shape == [1, 3, 224, 224]
    assert by["y"].max_shape == [8, 3, 640, 640]
    assert (by["ids"].low, by["ids"].high) == (0, 30521)
    for bad in (["x:1x0"], ["x:axb"], [":1x2"]):
        with pytest.raises(InferlabError):
            parse_input_specs(bad, None, None)
    with pytest.raises(InferlabError, match="MIN,OPT,MAX"):
        parse_input_specs(None, ["x:1x2,1x3"], None)
    with pytest.raises(InferlabError, match="LOW is above HIGH"):
        parse_input_specs(None, None, ["ids:9:1"])
