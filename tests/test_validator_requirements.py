"""Requirement syntax, policy files and precedence; the readiness verdict and its
recommendations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.validator import readiness
from services.validator import requirements as rq
from services.validator.errors import PolicyError
from shared.contracts.validation import Requirement, parse_requirement


@pytest.mark.parametrize(
    ("text", "metric", "op", "value"),
    [
        ("accuracy>=0.95", "accuracy", ">=", 0.95),
        ("p99_ms<=5", "p99_ms", "<=", 5.0),
        (" p99 <= 5ms ", "p99_ms", "<=", 5.0),
        ("accuracy>=95%", "accuracy", ">=", 0.95),
        ("fairness_gap<0.1", "eo_difference", "<", 0.1),
        ("memory_mb<=512MB", "memory_mb", "<=", 512.0),
        ("top3_accuracy>=.9", "top3_accuracy", ">=", 0.9),
        ("throughput>1e3", "throughput_ips", ">", 1000.0),
        ("mcnemar_p==1", "mcnemar_p", "==", 1.0),
    ],
)
def test_parse_requirement(text: str, metric: str, op: str, value: float) -> None:
    req = parse_requirement(text)
    assert (req.metric, req.op) == (metric, op) and req.value == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("accuracy", "write METRIC OP VALUE"),
        ("accuracy=>0.9", "write METRIC OP VALUE"),
        ("accuracy>=high", "write METRIC OP VALUE"),
        ("speed>=3", "unknown metric 'speed'"),
    ],
)
def test_bad_requirements_are_refused_precisely(text: str, message: str) -> None:
    with pytest.raises(rq.RequirementError, match=message):
        parse_requirement(text)


def test_parse_requirements_accepts_every_documented_shape() -> None:
    expected = ["accuracy>=0.9", "p99_ms<=5"]
    shapes = [
        ["accuracy>=0.9", "p99_ms<=5"],
        [{"metric": "accuracy", "op": ">=", "value": 0.9}, {"metric": "p99", "op": "<=", "value": 5}],
        {"accuracy": ">=0.9", "p99_ms": "<=5"},
        {"accuracy": 0.9, "p99_ms": 5},  # a bare number: at least / at most by the metric's direction
        "accuracy>=0.9, p99_ms<=5",
    ]
    for shape in shapes:
        assert [str(r) for r in rq.parse_requirements(shape, "test")] == expected
    with pytest.raises(rq.RequirementError, match="test: unknown metric"):
        rq.parse_requirements(["bogus>=1"], "test")
    with pytest.raises(rq.RequirementError, match="operator"):
        rq.check_requirement(Requirement(metric="accuracy", op="~", value=1))


def test_precedence_request_over_metadata_over_policies_over_defaults(tmp_path: Path) -> None:
    (tmp_path / "digits.json").write_text(
        json.dumps({"requirements": ["accuracy>=0.8", "p99_ms<=10", "macro_f1>=0.7"], "options": {"seed": 3}})
    )
    (tmp_path / "default.toml").write_text(
        'requirements = ["accuracy>=0.5", "memory_mb<=100", "parity>=0"]\nchecks = ["structural", "metrics"]\n'
    )
    policy = rq.load_policy(tmp_path, "digits")
    default = rq.load_policy(tmp_path, "default")
    assert policy.options == {"seed": 3} and default.checks == ["structural", "metrics"]
    resolved = rq.resolve(
        request=[parse_requirement("accuracy>=0.95")],
        metadata={"p99_ms": "<=4", "accuracy": ">=0.9"},
        policy=policy,
        default_policy=default,
    )
    got = {(s.requirement.metric, s.requirement.op, s.requirement.value, s.source) for s in resolved}
    assert got == {
        ("accuracy", ">=", 0.95, "request"),
        ("p99_ms", "<=", 4.0, "metadata"),
        ("macro_f1", ">=", 0.7, "policy"),
        ("memory_mb", "<=", 100.0, "default-policy"),
        ("parity", ">=", 0.0, "default-policy"),  # a policy may relax a built-in default
        ("structural", ">=", 1.0, "default"),
        ("fairness", ">=", 1.0, "default"),
    }


def test_a_range_from_one_source_keeps_both_bounds() -> None:
    resolved = rq.resolve(
        request=[parse_requirement("p99_ms>=0.1"), parse_requirement("p99_ms<=5")],
        metadata=["p99_ms<=1"],
        policy=None,
        default_policy=None,
    )
    assert sorted(str(s.requirement) for s in resolved if s.requirement.metric == "p99_ms") == [
        "p99_ms<=5",
        "p99_ms>=0.1",
    ]


def test_policy_files_fail_precisely(tmp_path: Path) -> None:
    assert rq.load_policy(tmp_path, "nothing") is None
    assert rq.load_policy(tmp_path, "../etc/passwd") is None  # not a model name: never a path
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(PolicyError, match=r"broken\.json"):
        rq.load_policy(tmp_path, "broken")
    (tmp_path / "odd.json").write_text(json.dumps({"requirement": ["accuracy>=1"]}))
    with pytest.raises(PolicyError, match="unknown keys"):
        rq.load_policy(tmp_path, "odd")
    (tmp_path / "typo.toml").write_text('requirements = ["acuracy>=0.9"]\n')
    with pytest.raises(PolicyError, match="unknown metric 'acuracy'"):
        rq.load_policy(tmp_path, "typo")


# --- readiness ----------------------------------------------------------------------------------


def _sourced(*texts: str, source: str = "request") -> list[rq.Sourced]:
    return [rq.Sourced(parse_requirement(t), source) for t in texts]


def test_judge_pass_fail_unmeasured_and_defaults() -> None:
    reqs = _sourced("accuracy>=0.95", "p99_ms<=5", "throughput_ips>=100") + [
        rq.Sourced(r, "default") for r in rq.BUILTIN_DEFAULTS
    ]
    measured = {"accuracy": 0.97, "p99_ms": 7.3, "structural": 1.0}
    criteria = readiness.judge(reqs, measured, {"throughput_ips": "no benchmark result for this model yet"})
    by = {c.metric: c for c in criteria}
    assert set(by) == {"accuracy", "p99_ms", "throughput_ips", "structural"}  # parity/fairness: not measurable
    assert by["accuracy"].passed is True and by["p99_ms"].passed is False
    assert by["throughput_ips"].passed is None and "no benchmark" in by["throughput_ips"].message
    assert by["p99_ms"].measured == 7.3 and by["p99_ms"].limit == 5.0 and by["p99_ms"].source == "request"
    assert not readiness.is_ready(criteria)
    assert readiness.is_ready([c for c in criteria if c.metric in ("accuracy", "structural")])


def test_recommends_a_faster_sibling_for_a_missed_latency_limit() -> None:
    criteria = readiness.judge(_sourced("p99_ms<=5", "accuracy>=0.9"), {"p99_ms": 7.3, "accuracy": 0.96})
    ctx = readiness.Context(
        ref="digits@1.0.0",
        variant="base",
        accuracy=0.96,
        siblings=[
            readiness.Candidate("digits@1.0.0+int8-dynamic", "int8-dynamic", accuracy=0.90, p99_ms=2.0),
            readiness.Candidate("digits@1.0.0+fp16", "fp16", accuracy=0.959, p99_ms=4.1),
        ],
    )
    recs = readiness.recommend(criteria, ctx)
    assert any("fp16 measures 4.100 ms p99" in r and "deploy digits@1.0.0+fp16" in r for r in recs), recs


def test_recommends_against_a_significantly_worse_variant() -> None:
    criteria = readiness.judge(
        [*_sourced("p99_ms<=5"), rq.Sourced(Requirement(metric="parity", op=">=", value=1), "default")],
        {"p99_ms": 2.0, "parity": 0.0},
    )
    ctx = readiness.Context(
        ref="digits@1.0.0+int8-dynamic",
        variant="int8-dynamic",
        parent=readiness.Candidate("digits@1.0.0", "base", accuracy=0.96, p99_ms=7.0),
        siblings=[readiness.Candidate("digits@1.0.0+fp16", "fp16", accuracy=0.958, p99_ms=4.0)],
        mcnemar={"accuracy_drop_points": 2.1, "p_value": 0.003},
    )
    recs = readiness.recommend(criteria, ctx)
    assert recs[0] == (
        "int8-dynamic meets the latency limit but loses 2.1 points of accuracy, McNemar p=0.003; prefer fp16"
    )


def test_recommendation_reads_the_confidence_interval() -> None:
    criteria = readiness.judge(_sourced("accuracy>=0.95"), {"accuracy": 0.94})
    near = readiness.recommend(criteria, readiness.Context("m@1.0.0", "base", cis={"accuracy": (0.92, 0.96)}))
    far = readiness.recommend(criteria, readiness.Context("m@1.0.0", "base", cis={"accuracy": (0.93, 0.945)}))
    assert "reaches the limit" in near[0] and "whole 95% CI" in far[0]


def test_all_passing_is_ready_with_a_short_note() -> None:
    criteria = readiness.judge(_sourced("accuracy>=0.9"), {"accuracy": 0.96})
    assert readiness.is_ready(criteria)
    assert readiness.recommend(criteria, readiness.Context("m@1.0.0", "base")) == ["ready: meets all 1 requirements"]


def test_without_a_dataset_the_verdict_is_not_validated_for_accuracy() -> None:
    criteria = readiness.judge(_sourced("p99_ms<=5"), {"p99_ms": 1.0, "structural": 1.0})
    assert readiness.is_ready(criteria)  # every requirement met...
    assert readiness.verdict(criteria, has_dataset=False) == readiness.NOT_VALIDATED_FOR_ACCURACY
    assert readiness.verdict(criteria, has_dataset=False, ready_without_dataset=True) == readiness.READY
    assert readiness.verdict(criteria, has_dataset=True) == readiness.READY
    failing = readiness.judge(_sourced("p99_ms<=0.5"), {"p99_ms": 1.0})
    assert readiness.verdict(failing, has_dataset=False) == readiness.NOT_READY


def test_verdict_words_read_old_and_unknown_values_safely() -> None:
    from shared.contracts.validation import ModelValidated, ValidationReport

    def event(ready: bool, verdict: str) -> ModelValidated:
        return ModelValidated(
            name="m", version="1.0.0", ref="m@1.0.0", ready=ready, report=ValidationReport(), verdict=verdict
        )

    assert event(True, "").verdict_words == "READY"  # an older validator
    assert event(False, "").verdict_words == "NOT READY"
    assert event(False, "not_validated_for_accuracy").verdict_words == "NOT VALIDATED FOR ACCURACY"
    assert event(False, "some_future_value").verdict_words == "SOME FUTURE VALUE"
