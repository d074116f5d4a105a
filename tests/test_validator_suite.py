"""The whole suite without NATS, on every task: text classification on token ids, detection,
regression, string class labels, subsampling, and trimming a report to the message limit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from services.validator import metrics as m
from services.validator import requirements as rq
from services.validator.errors import OptionsError, UnknownCheck
from services.validator.outcomes import fit_report
from services.validator.runner import Runner
from services.validator.suite import SuiteConfig, SuiteInput, headline_accuracy, run_suite
from shared.contracts.base import encode
from shared.contracts.validation import CheckOutcome, ModelValidated, ValidationReport, parse_requirement
from shared.datasets import load_dataset
from tests.support import validator_models as vm

FAST = SuiteConfig(bootstrap=200, noise_samples=300, attack_samples=30, attack_queries=100, attack_time_s=5)


def _reqs(*texts: str) -> list[rq.Sourced]:
    return rq.resolve(request=[parse_requirement(t) for t in texts], metadata=None, policy=None, default_policy=None)


def _suite(model: Path, data: Path | None, *texts: str, **kwargs) -> ValidationReport:
    runner = Runner(model)
    dataset = load_dataset(data, runner.inputs) if data else None
    config = kwargs.pop("config", FAST)
    return run_suite(
        SuiteInput(ref="m@1.0.0", variant="base", runner=runner, requirements=_reqs(*texts), dataset=dataset, **kwargs),
        config,
    )


def _status(report: ValidationReport) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def test_text_classification_on_token_ids(tmp_path: Path) -> None:
    report = _suite(vm.token_classifier(tmp_path / "t.onnx"), vm.token_dataset(tmp_path / "t.npz"), "macro_f1>=0.8")
    assert report.task == "text-classification"
    assert report.metrics["accuracy"] > 0.9 and report.metrics["macro_f1"] > 0.9
    assert _status(report)["robustness"] == "skipped" and _status(report)["adversarial"] == "skipped"
    skipped = next(c for c in report.checks if c.name == "robustness")
    assert "token ids" in skipped.summary
    structural = next(c for c in report.checks if c.name == "structural")
    assert structural.status == "passed" and structural.figures["inputs"] == "seeded synthetic inputs"
    assert report.ready


def test_detection_map_through_the_suite(tmp_path: Path) -> None:
    path, arrays = vm.detection_dataset(tmp_path / "det.npz", images=40)
    report = _suite(vm.passthrough_detector(tmp_path / "det.onnx"), path, "map50>=0.5")
    assert report.task == "detection"
    gts = m.split_ground_truth(arrays["gt_boxes"], arrays["gt_classes"], arrays["gt_counts"])
    preds = []
    for x in arrays["x"]:
        keep = x[:, 4] >= 0
        preds.append(m.Detections(x[keep, :4].astype(float), x[keep, 4].astype(float), x[keep, 5].astype(int)))
    direct = m.detection_metrics(preds, gts)
    assert report.metrics["map50"] == pytest.approx(direct["map50"])
    assert report.metrics["map"] == pytest.approx(direct["map"])
    assert report.intervals["map50"][0] <= report.metrics["map50"] <= report.intervals["map50"][1]
    assert headline_accuracy(report) == pytest.approx(direct["map50"])
    assert {c.metric: c.passed for c in report.criteria}["map50"] is True
    # subsampling keeps each image's ground truth with it
    small = _suite(
        vm.passthrough_detector(tmp_path / "det2.onnx"),
        path,
        config=SuiteConfig(max_samples=15, bootstrap=50),
        checks=["metrics"],
    )
    assert small.samples == 15 and next(c for c in small.checks if c.name == "metrics").figures["images"] == 15


def test_regression_metrics_match_sklearn(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score

    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    model = Ridge(alpha=0.1).fit(x[:300], y[:300])
    onnx.save(to_onnx(model, x[:1], target_opset=17), str(tmp_path / "r.onnx"))
    np.savez(tmp_path / "r.npz", X=x[300:], labels=y[300:])
    report = _suite(tmp_path / "r.onnx", tmp_path / "r.npz", "r2>=0.3", task="regression")
    assert report.task == "regression"
    assert report.metrics["r2"] == pytest.approx(r2_score(y[300:], model.predict(x[300:])), rel=1e-4)
    assert report.intervals["rmse"][0] < report.metrics["rmse"] < report.intervals["rmse"][1]
    assert _status(report)["fairness"] == "skipped" and headline_accuracy(report) is None


def test_string_class_labels(tmp_path: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x_train, y_train, x_test, y_test = vm.split("iris")
    names = np.array(["setosa", "versicolor", "virginica"])
    model = LogisticRegression(max_iter=1000).fit(x_train, names[y_train])
    onx = to_onnx(model, x_train[:1], options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    onnx.save(onx, str(tmp_path / "s.onnx"))
    np.savez(tmp_path / "s.npz", X=x_test, labels=names[y_test])
    report = _suite(tmp_path / "s.onnx", tmp_path / "s.npz", checks=["metrics"])
    assert report.metrics["accuracy"] == pytest.approx((model.predict(x_test) == names[y_test]).mean())
    per_class = next(c for c in report.checks if c.name == "metrics").figures["per_class"]
    assert [r["class"] for r in per_class] == list(names)


def test_noise_breakpoint_requirement_is_measured_at_its_limit(tmp_path: Path) -> None:
    report = _suite(
        vm.sk_classifier(tmp_path / "d.onnx"),
        vm.sk_dataset(tmp_path / "d.npz"),
        "noise_breakpoint>=0.35",
        "robust_accuracy>=0.9",
        checks=["robustness"],
    )
    curve = next(c for c in report.checks if c.name == "robustness").figures["curve"]
    assert 0.35 in [p["strength"] for p in curve]
    by = {c.metric: c for c in report.criteria}
    assert by["noise_breakpoint"].passed is not None and by["robust_accuracy"].passed is True


def test_parity_without_a_dataset_uses_seeded_inputs(tmp_path: Path) -> None:
    base = vm.sk_classifier(tmp_path / "d.onnx")
    runner, parent = Runner(vm.damaged_variant(base, tmp_path / "bad.onnx")), Runner(base)
    report = run_suite(
        SuiteInput(
            ref="m@1.0.0+fp16",
            variant="fp16",
            runner=runner,
            parent_runner=parent,
            parent_ref="m@1.0.0",
            requirements=_reqs(),
        ),
        FAST,
    )
    parity = next(c for c in report.checks if c.name == "parity")
    assert parity.status == "failed" and "seeded synthetic inputs" in parity.figures["inputs"]
    assert parity.figures["mcnemar"] is None  # no labels: no McNemar
    assert {c.metric: c.passed for c in report.criteria}["parity"] is False and not report.ready


def test_bad_checks_and_options_are_refused(tmp_path: Path) -> None:
    model = vm.sk_classifier(tmp_path / "d.onnx")
    with pytest.raises(UnknownCheck, match="spelling"):
        _suite(model, None, checks=["spelling"])
    with pytest.raises(OptionsError, match="unknown option"):
        _suite(model, None, options={"sed": 1})
    with pytest.raises(OptionsError, match="seed"):
        SuiteConfig().with_options({"seed": -1})
    for bad, match in (
        ({"noise_levels": "lots"}, "noise_levels"),
        ({"top_k": [0]}, "top_k"),
        ({"task": "painting"}, "task"),
        ({"fairness_max_gap": "wide"}, "fairness_max_gap"),
        ({"shapes": {"X": [0]}}, "shapes"),
        ({"parity": 0.1}, "parity"),
    ):
        with pytest.raises(OptionsError, match=match):
            _suite(model, None, options=bad)


def test_reports_are_trimmed_to_the_message_limit() -> None:
    big = {"confusion_matrix": [[1] * 400] * 400, "per_class": [{"class": i} for i in range(5000)], "accuracy": 0.9}
    report = ValidationReport(
        checks=[CheckOutcome(name="metrics", status="passed", summary="s", figures=big)], metrics={"accuracy": 0.9}
    )
    event = ModelValidated(name="m", version="1.0.0", ref="m@1.0.0", ready=True, accuracy=0.9, report=report)
    assert len(encode(event)) > 300_000
    fit_report(event, 200_000)
    assert len(encode(event)) <= 200_000
    assert report.truncated[0] == "metrics.confusion_matrix"
    assert report.checks[0].figures["accuracy"] == 0.9  # small figures survive


def test_without_a_dataset_the_suite_is_not_ready_by_default(tmp_path: Path) -> None:
    model = vm.token_classifier(tmp_path / "t.onnx")
    report = _suite(model, None)
    assert _status(report)["structural"] == "passed"
    assert not report.ready and report.verdict == "not_validated_for_accuracy"
    assert report.recommendations[0].startswith("not validated for accuracy: structure and performance only")
    opted_in = _suite(model, None, config=SuiteConfig(bootstrap=200, ready_without_dataset=True))
    assert opted_in.ready and opted_in.verdict == "ready"
