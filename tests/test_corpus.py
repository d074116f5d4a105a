"""The real-model corpus, quick subset: third-party models (onnx's model-zoo topologies at IR 3,
onnxruntime's sample models, skl2onnx exports, magika's int32-byte classifier) through a real
platform started as `inferlab up`. What `make corpus` does for all 35, on five of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus.__main__ import SETTINGS
from corpus.follow import CONVERTED, INPUTS, NOT_APPLICABLE, PARITY_LOSS, TOOL, Conversion, Follower, Outcome
from corpus.model import CorpusModel
from corpus.report import render, totals
from corpus.run import PROFILES, run
from corpus.sources import QUICK, QUICK_MODELS


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_quick_corpus_goes_through_the_whole_chain(tmp_path: Path) -> None:
    built, follower, floats = await run(
        QUICK, tmp_path, timeout=600, settings=SETTINGS, only=QUICK_MODELS, say=lambda line: None
    )
    assert {m.name for m in built.models} == QUICK_MODELS, built.skipped
    assert not any(built.ort_loads.values()), built.ort_loads
    assert not follower.pending(), follower.pending()
    for name, outcome in follower.models.items():
        # every model ONNX Runtime runs is registered (the IR-3 ones with checker warnings)
        assert outcome.registered, (name, outcome.rejected)
        assert set(outcome.conversions) == set(PROFILES), name
        tool = {p: c.message for p, c in outcome.conversions.items() if c.status == TOOL}
        assert not tool, (name, tool)
        base = outcome.variants["base"]
        assert base.benchmarked and not base.benchmark_error, (name, base.benchmark_error)
    assert follower.models["ort-mul"].warnings, "IR 3 with a weight that is not an input: a checker warning"
    assert follower.models["zoo-squeezenet"].conversions["ort-opt"].status == CONVERTED
    assert follower.models["ort-logreg-iris"].conversions["int8-dynamic"].status == NOT_APPLICABLE
    text = render(
        built.models, follower.models, list(PROFILES), floats, built.ort_loads, built.skipped, header="# corpus"
    )
    assert "## Totals" in text and "| `magika` |" in text


def test_totals_count_each_outcome_and_the_improved_share(tmp_path: Path) -> None:
    models = [CorpusModel(n, tmp_path / f"{n}.onnx", "pkg", n) for n in ("a", "b", "c")]
    outcomes = {m.name: Outcome(m.name, registered=True) for m in models}
    outcomes["a"].conversions = {
        "fp16": Conversion(CONVERTED, size_before=100, size_after=50),
        "int8-dynamic": Conversion(PARITY_LOSS, "parity_failed", "breaks parity"),
    }
    outcomes["b"].conversions = {"fp16": Conversion(NOT_APPLICABLE), "int8-dynamic": Conversion(INPUTS)}
    outcomes["c"].conversions = {"fp16": Conversion(TOOL)}
    t = totals(models, outcomes, {"a": True, "b": True, "c": False}, {})
    assert t.registered == 3 and t.ort_runs == 3
    assert t.conversions == {CONVERTED: 1, PARITY_LOSS: 1, NOT_APPLICABLE: 1, INPUTS: 1, TOOL: 1}
    assert (t.improved, t.float_models) == (1, 2)


def test_follower_waits_for_every_profile_and_every_variant() -> None:
    from shared.contracts.conversion import ConversionSkipped

    follower = Follower(["m"], "1.0.0", ["fp16"])
    assert follower.pending() == ["m: registration"]
    follower.models["m"].registered = True
    follower.models["m"].variant("base").benchmarked = True
    assert follower.pending() == ["m: fp16", "m+base: validation"]
    follower.feed(ConversionSkipped(name="m", version="1.0.0", profile="fp16", reason="not_applicable", message="x"))
    assert follower.models["m"].conversions["fp16"].status == NOT_APPLICABLE
