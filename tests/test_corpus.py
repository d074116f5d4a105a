"""The real-model corpus, quick subset: third-party models (onnx's model-zoo topologies at IR 3,
onnxruntime's sample models, skl2onnx exports, magika's int32-byte classifier) through a real
platform started as `inferlab up`. What `make corpus` does for all 35, on five of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus.__main__ import SETTINGS
from corpus.follow import CONVERTED, INPUTS, NOT_APPLICABLE, PARITY_LOSS, TOOL, Conversion, Follower, Outcome
from corpus.model import CorpusModel
from corpus.report import faster, improved, render, smaller, totals
from corpus.run import PROFILES, run
from corpus.sources import QUICK, QUICK_MODELS
from corpus.speed import MIN_EFFECT, NotCompared, SpeedCheck, speed_check


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
    # every converted variant of a float model was measured against its base back to back
    for profile in ("ort-opt", "fp16"):
        variant = follower.models["zoo-squeezenet"].variants[profile]
        assert len(variant.speed) == 2 or variant.speed_error, (profile, variant)


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
    assert (t.improved, t.smaller, t.faster, t.float_models) == (1, 1, 0, 2)


FASTER = SpeedCheck(ratio=0.80, p_adjusted=1e-6, significant=True)
SAME = SpeedCheck(ratio=0.97, p_adjusted=1e-6, significant=False)  # significant, but under 5%
NOISE = SpeedCheck(ratio=0.85, p_adjusted=0.2, significant=False)  # a lower median the test does not back


def _outcome(size_after: int, checks: list[SpeedCheck], p50: float = 1.0) -> Outcome:
    o = Outcome("m", registered=True)
    o.conversions = {"ort-opt": Conversion(CONVERTED, size_before=100, size_after=size_after)}
    o.variant("base").p50_ms = 2.0
    o.variant("ort-opt").p50_ms = p50
    o.variant("ort-opt").speed = checks
    return o


def test_faster_is_a_measured_claim_not_a_lower_p50() -> None:
    # a p50 half the base's, measured by the chain minutes apart, counts for nothing alone
    assert not improved(_outcome(100, []))
    assert not faster(_outcome(100, [NOISE, NOISE]))
    assert not faster(_outcome(100, [SAME, SAME]))
    # both bracketing base runs must agree
    assert not faster(_outcome(100, [FASTER, NOISE]))
    assert faster(_outcome(100, [FASTER, FASTER], p50=3.0))
    assert not faster(_outcome(100, [SpeedCheck(1.3, 1e-6, True)] * 2))  # significantly slower
    assert smaller(_outcome(90, [])) and not smaller(_outcome(91, []))
    assert improved(_outcome(90, [])) and improved(_outcome(100, [FASTER, FASTER]))
    # a variant that was not converted counts for nothing, whatever its measurements
    o = _outcome(50, [FASTER, FASTER])
    o.conversions["ort-opt"].status = PARITY_LOSS
    assert not improved(o)


def test_speed_check_reads_the_benchmarkers_comparison_of_the_runs_just_measured() -> None:
    from shared.contracts.benchmark import CompareEntry, ComparisonReport, PairResult

    def entry(ref: str, run: str, median: float) -> CompareEntry:
        return CompareEntry(
            ref=ref,
            run_id=run,
            samples=500,
            median_ms=median,
            median_ci_ms=(median, median),
            p99_ms=median,
            throughput_ips=1000 / median,
        )

    def report(base_run: str, ratio_gap: float) -> ComparisonReport:
        variant_median = 1.0 - ratio_gap
        return ComparisonReport(
            config_key="CPUExecutionProvider|b1|t1|c1",
            hardware_id="h",
            # sorted by rank: the faster first, so the pair is (variant, base)
            entries=[entry("m@1+fp16", "v1", variant_median), entry("m@1", base_run, 1.0)],
            pairs=[
                PairResult(
                    a="m@1+fp16",
                    b="m@1",
                    p_value=1e-9,
                    p_adjusted=1e-9,
                    significant=1 / variant_median - 1 >= MIN_EFFECT,
                    median_ratio=variant_median,
                )
            ],
        )

    check = speed_check(report("b1", 0.2), "b1", "v1")
    assert check.ratio == pytest.approx(0.8) and check.faster
    assert not speed_check(report("b1", 0.02), "b1", "v1").faster  # significant, under the threshold
    with pytest.raises(NotCompared):  # compare fell back to an older accepted run of the base
        speed_check(report("b0", 0.2), "b1", "v1")


def test_follower_waits_for_every_profile_and_every_variant() -> None:
    from shared.contracts.conversion import ConversionSkipped

    follower = Follower(["m"], "1.0.0", ["fp16"])
    assert follower.pending() == ["m: registration"]
    follower.models["m"].registered = True
    follower.models["m"].variant("base").benchmarked = True
    assert follower.pending() == ["m: fp16", "m+base: validation"]
    follower.feed(ConversionSkipped(name="m", version="1.0.0", profile="fp16", reason="not_applicable", message="x"))
    assert follower.models["m"].conversions["fp16"].status == NOT_APPLICABLE
