"""The validator's checks on real models made locally: structural rules, parity and McNemar,
fairness, noise robustness and the black-box attack, output interpretation."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binom

from services.validator import fairness, parity, robustness
from services.validator.errors import ModelLoadError, OutputError
from services.validator.metrics import encode
from services.validator.runner import (
    DETECTION_ADAPTERS,
    Runner,
    interpret_classifier,
    interpret_detections,
    register_detection_adapter,
    seeded_inputs,
)
from services.validator.structural import check_structure
from tests.support import validator_models as vm


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("validator-models")
    base = vm.sk_classifier(d / "digits.onnx")
    return {
        "digits": base,
        "digits_zipmap": vm.sk_classifier(d / "digits_zipmap.onnx", zipmap=True),
        "damaged": vm.damaged_variant(base, d / "damaged.onnx"),
        "breast_cancer": vm.sk_classifier(d / "bc.onnx", "breast_cancer"),
        "iris": vm.sk_classifier(d / "iris.onnx", "iris", zipmap=True),
        "wine": vm.sk_classifier(d / "wine.onnx", "wine"),
        "tokens": vm.token_classifier(d / "tokens.onnx"),
        "detector": vm.passthrough_detector(d / "detector.onnx"),
    }


def _predict(runner: Runner, x: np.ndarray, name: str = "X") -> np.ndarray:
    return interpret_classifier(runner.run({name: x}), class_labels=runner.facts.class_labels).labels


# --- runner and output interpretation -------------------------------------------------------


@pytest.mark.parametrize("dataset", ["digits", "breast_cancer", "iris", "wine"])
def test_classifier_outputs_read_as_sklearn_predicts(models, dataset: str) -> None:
    runner = Runner(models[dataset], batch_size=64)
    _, _, x_test, y_test = vm.split(dataset)
    out = interpret_classifier(runner.run({"X": x_test}), class_labels=runner.facts.class_labels)
    assert out.scores is not None and out.scores.shape == (len(y_test), len(np.unique(vm.tabular(dataset)[1])))
    # the model's own label output is the decision; argmax of its probabilities agrees
    assert (out.classes[out.scores.argmax(axis=1)] == out.labels).mean() > 0.99
    assert (out.labels == y_test).mean() > 0.85


def test_zipmap_and_tensor_outputs_agree(models) -> None:
    _, _, x, _ = vm.split("digits")
    plain = interpret_classifier(Runner(models["digits"]).run({"X": x}))
    zipped_runner = Runner(models["digits_zipmap"])
    zipped = interpret_classifier(zipped_runner.run({"X": x}), class_labels=zipped_runner.facts.class_labels)
    np.testing.assert_array_equal(plain.labels, zipped.labels)
    np.testing.assert_allclose(plain.scores, zipped.scores, rtol=1e-5)
    assert zipped.score_output == "output_probability" and zipped.label_output == "output_label"


def test_batching_joins_outputs_and_fixed_batch_pads(models, tmp_path: Path) -> None:
    _, _, x, _ = vm.split("digits")
    whole = Runner(models["digits"], batch_size=10_000).run({"X": x})
    batched = Runner(models["digits"], batch_size=7).run({"X": x})
    np.testing.assert_array_equal(whole["label"], batched["label"])
    np.testing.assert_allclose(whole["probabilities"], batched["probabilities"], rtol=1e-6)
    fixed = vm.mlp_fixed_batch(tmp_path / "fixed.onnx", batch=4)
    runner = Runner(fixed)
    assert runner.fixed_batch == 4
    out = runner.run({"input": np.random.default_rng(0).standard_normal((10, 16)).astype(np.float32)})
    assert out["logits"].shape == (10, 4)


def test_unloadable_model_raises_model_load_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="Mystery"):
        Runner(vm.unloadable_model(tmp_path / "m.onnx"))


def test_seeded_inputs_respect_types_and_embedding_bounds(models) -> None:
    runner = Runner(models["tokens"])
    assert runner.facts.int_bounds == {"input_ids": 40}
    feeds = seeded_inputs(runner.inputs, 32, seed=1, int_bounds=runner.facts.int_bounds)
    ids = feeds["input_ids"]
    assert ids.dtype == np.int64 and ids.shape == (32, 12) and ids.min() >= 0 and ids.max() < 40
    np.testing.assert_array_equal(
        ids, seeded_inputs(runner.inputs, 32, seed=1, int_bounds={"input_ids": 40})["input_ids"]
    )
    assert runner.run(feeds)["logits"].shape == (32, 3)


def test_detection_adapters(models, tmp_path: Path) -> None:
    _path, arrays = vm.detection_dataset(tmp_path / "det.npz", images=5)
    runner = Runner(models["detector"])
    outputs = runner.run({"x": arrays["x"]})
    dets = interpret_detections(outputs, {})
    assert len(dets) == 5
    for i, det in enumerate(dets):
        valid = arrays["x"][i, :, 4] >= 0
        np.testing.assert_allclose(det.boxes, arrays["x"][i, valid, :4], rtol=1e-6)
        np.testing.assert_array_equal(det.classes, arrays["x"][i, valid, 5].astype(int))
    packed = interpret_detections({"detections": arrays["x"]}, {"detection_layout": "packed"})
    np.testing.assert_allclose(packed[0].boxes, dets[0].boxes, rtol=1e-6)
    xywh = interpret_detections(
        {"boxes": np.array([[[1.0, 2.0, 3.0, 4.0]]]), "scores": np.array([[0.5]]), "classes": np.array([[0]])},
        {"box_format": "xywh"},
    )
    np.testing.assert_allclose(xywh[0].boxes, [[1, 2, 4, 6]])

    def yolo_like(outputs, options):  # an adapter for another layout
        return interpret_detections({"d": outputs["raw"]}, {"detection_layout": "packed"})

    register_detection_adapter("yolo-like", yolo_like)
    try:
        assert len(interpret_detections({"raw": arrays["x"]}, {"detection_layout": "yolo-like"})) == 5
    finally:
        DETECTION_ADAPTERS.pop("yolo-like")
    with pytest.raises(OutputError, match="unknown detection_layout"):
        interpret_detections(outputs, {"detection_layout": "nope"})


def test_regression_like_outputs_are_not_read_as_classes() -> None:
    with pytest.raises(OutputError, match="no output reads as class scores"):
        interpret_classifier({"y": np.zeros((3, 4, 5), dtype=np.float32)})


# --- structural -------------------------------------------------------------------------------


def test_structural_passes_a_sound_model(models) -> None:
    runner = Runner(models["digits_zipmap"])
    res = check_structure(runner.run, runner.inputs, runner.declared_outputs, seeded_inputs(runner.inputs, 16, 0))
    assert res.passed, res.problems
    assert res.deterministic and res.max_run_difference == 0.0
    assert res.batch_consistency_max_abs is not None and res.batch_consistency_max_abs < 1e-5


@pytest.mark.parametrize(
    ("factory", "expected"),
    [
        (vm.nan_model, "non-finite"),
        (vm.random_model, "two runs on the same inputs differ"),
    ],
)
def test_structural_catches_broken_models(tmp_path: Path, factory, expected: str) -> None:
    runner = Runner(factory(tmp_path / "m.onnx"))
    res = check_structure(runner.run, runner.inputs, runner.declared_outputs, seeded_inputs(runner.inputs, 8, 0))
    assert not res.passed
    assert any(expected in p for p in res.problems), res.problems


def test_a_declared_shape_the_model_does_not_honour_is_a_warning_with_figures(tmp_path: Path) -> None:
    runner = Runner(vm.wrong_shape_model(tmp_path / "m.onnx"))
    res = check_structure(runner.run, runner.inputs, runner.declared_outputs, seeded_inputs(runner.inputs, 8, 0))
    assert res.passed and not res.problems
    assert any("dimension 1 is 4, declared 3" in w for w in res.warnings), res.warnings
    assert res.figures()["warnings"] == res.warnings


def test_fixed_batch_one_models_are_fed_one_sample_at_a_time(tmp_path: Path) -> None:
    """16 samples through a model fixed at batch 1 (output declared [1, C]): shapes are read
    on one call, so no 'dimension 0 is 16, declared 1' appears."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["prob_1"], axis=1)],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5])],
        [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, [1, 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    import onnx

    onnx.save(model, str(tmp_path / "fixed.onnx"))
    runner = Runner(tmp_path / "fixed.onnx")
    feeds = seeded_inputs(runner.inputs, 16, 0)
    res = check_structure(
        runner.run, runner.inputs, runner.declared_outputs, feeds, call_rows=runner.fixed_batch or runner.batch_size
    )
    assert res.passed and res.samples == 16 and not res.warnings and not res.problems
    assert res.outputs["prob_1"]["shape"] == [16, 5]  # all 16 samples ran, one call each


def test_a_fixed_batch_model_gets_its_recurrent_state_whole(tmp_path: Path) -> None:
    """Silero VAD's OpenVINO build: audio fixed at [1, 576] beside a state [2, 1, 128] whose
    leading 2 is not the batch. Sliced by rows with the audio, the state became [1, 1, 128]
    and every call failed: the base was NOT READY (structural) and its variants errored."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[1]),
            helper.make_node("Tanh", ["m"], ["y"]),
            helper.make_node("Add", ["state", "m"], ["state_next"]),
        ],
        "vad",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, 4]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("state_next", TensorProto.FLOAT, [2, 1, 4]),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "vad.onnx"))
    runner = Runner(tmp_path / "vad.onnx")
    assert runner.fixed_batch == 1 and runner.whole_inputs == {"state"}
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((16, 8)).astype(np.float32), "state": np.zeros((2, 1, 4), np.float32)}
    out = runner.run(feeds)
    assert out["y"].shape == (16, 1) and out["state_next"].shape == (2, 1, 4)
    res = check_structure(runner.run, runner.inputs, runner.declared_outputs, feeds, call_rows=runner.fixed_batch)
    assert res.passed, res.problems


# --- parity -----------------------------------------------------------------------------------


def test_mcnemar_exact_against_binomial() -> None:
    parent = np.array([1] * 30 + [0] * 10 + [1] * 5 + [0] * 5, dtype=bool)
    variant = np.array([0] * 30 + [1] * 10 + [1] * 5 + [0] * 5, dtype=bool)
    res = parity.mcnemar_exact(parent, variant)
    assert (res.b, res.c) == (30, 10)
    expected = min(1.0, 2 * binom.cdf(10, 40, 0.5))  # two-sided exact test on the 40 discordant pairs
    assert res.p_value == pytest.approx(expected)
    assert parity.mcnemar_exact(parent, parent).p_value == 1.0


def test_parity_identical_models_pass_fp32_tolerance(models) -> None:
    _, _, x, y = vm.split("digits")
    a, b = Runner(models["digits"]), Runner(models["digits"])
    oa, ob = a.run({"X": x}), b.run({"X": x})
    pa, pb = interpret_classifier(oa), interpret_classifier(ob)
    truth, _ = encode(y, pa.classes)
    res = parity.compare(
        oa,
        ob,
        tolerance=parity.tolerance_for("ort-opt"),
        parent_labels=pa.indices,
        variant_labels=pb.indices,
        truth=truth,
    )
    assert res.passed, res.problems
    assert res.top1_agreement == 1.0 and res.mcnemar.p_value == 1.0
    assert res.outputs["probabilities"]["max_abs"] == 0.0


def test_damaged_variant_fails_parity_and_mcnemar(models) -> None:
    _, _, x, y = vm.split("digits")
    parent, variant = Runner(models["digits"]), Runner(models["damaged"])
    op, ov = parent.run({"X": x}), variant.run({"X": x})
    pp, pv = interpret_classifier(op), interpret_classifier(ov)
    truth, _ = encode(y, pp.classes)
    for name in ("fp16", "int8-dynamic", "ort-opt"):
        res = parity.compare(
            op,
            ov,
            tolerance=parity.tolerance_for(name),
            parent_labels=pp.indices,
            variant_labels=pv.indices,
            truth=truth,
        )
        assert not res.passed
        assert res.mcnemar.p_value < 1e-6
        assert res.mcnemar.variant_accuracy < res.mcnemar.parent_accuracy - 0.1
        assert any("McNemar" in p for p in res.problems)
    assert res.top1_agreement < 0.9


def test_tolerance_families_and_overrides() -> None:
    assert parity.family_of("int8-static") == "int8" and parity.family_of("trt-fp16") == "fp16"
    assert parity.family_of("ort-opt") == "fp32" and parity.family_of("opset-19") == "fp32"
    tol = parity.tolerance_for("fp16", {"atol": 0.5, "min_top1": 0.9})
    assert tol.atol == 0.5 and tol.min_top1 == 0.9 and tol.rtol == 1e-2
    with pytest.raises(ValueError, match="unknown parity tolerance"):
        parity.tolerance_for("fp16", {"tolerance": 1})
    ref = np.array([1.0, 2.0, 3.0])
    assert parity.within_tolerance(ref, ref + 1e-6, 1e-5, 1e-5) == 1.0
    assert parity.within_tolerance(ref, ref + np.array([0, 0, 1.0]), 1e-5, 1e-5) == pytest.approx(2 / 3)
    figures = parity.error_metrics(ref, ref * 1.01)
    assert figures["max_rel"] == pytest.approx(0.01) and figures["cosine"] == pytest.approx(1.0)


# --- fairness ---------------------------------------------------------------------------------


def test_group_fairness_hand_computed() -> None:
    # group a: TP=3 FN=1 FP=1 TN=3 ; group b: TP=1 FN=3 FP=0 TN=4
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0] * 2)
    pred = np.array([1, 1, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    groups = np.array(["a"] * 8 + ["b"] * 8)
    res = fairness.group_fairness(y, pred, groups, 2)
    a, b = res.per_group["a"], res.per_group["b"]
    assert (a["tpr"], a["fpr"], a["selection_rate"], a["accuracy"]) == (0.75, 0.25, 0.5, 0.75)
    assert (b["tpr"], b["fpr"], b["selection_rate"], b["accuracy"]) == (0.25, 0.0, 0.125, 0.625)
    assert res.dp_difference == pytest.approx(0.375)
    assert res.eo_difference == pytest.approx(0.5)  # max(|0.75-0.25|, |0.25-0|)
    assert res.worst_group == "b" and res.worst_group_accuracy == 0.625


def test_disadvantaged_group_detected_balanced_not(models, tmp_path: Path) -> None:
    from shared.datasets import load_dataset

    runner = Runner(models["breast_cancer"])
    found = {}
    for disadvantaged in (True, False):
        path = vm.fairness_dataset(tmp_path / f"f{disadvantaged}.npz", disadvantaged=disadvantaged)
        data = load_dataset(path, runner.inputs, require_labels=True)
        out = interpret_classifier(runner.run(data.inputs), class_labels=runner.facts.class_labels)
        truth, _ = encode(data.labels, out.classes)
        found[disadvantaged] = fairness.group_fairness(truth, out.indices, data.groups, len(out.classes))
    bad, fair = found[True], found[False]
    assert bad.detected and bad.worst_group == "b"
    assert bad.eo_difference > 0.1 and bad.p_value < 0.05
    assert bad.per_group["b"]["accuracy"] < bad.per_group["a"]["accuracy"] - 0.1
    assert not fair.detected and fair.eo_difference < bad.eo_difference


# --- robustness -------------------------------------------------------------------------------


def test_noise_curve_falls_as_noise_rises(models) -> None:
    runner = Runner(models["digits"])
    _, _, x, y = vm.split("digits")

    def predict(feeds):
        return interpret_classifier(runner.run(feeds)).labels

    res = robustness.noise_curve(predict, {"X": x}, y, ["X"], levels=(0, 0.25, 0.5, 1.0, 2.0, 4.0), seed=0)
    acc = res.accuracies
    assert acc[0] > 0.9 and acc[-1] < 0.5
    assert all(b <= a + 0.02 for a, b in itertools.pairwise(acc))  # falls (up to sampling noise)
    assert res.breakpoint is not None and acc[res.levels.index(res.breakpoint)] < acc[0] - 0.05
    again = robustness.noise_curve(predict, {"X": x}, y, ["X"], levels=(0, 0.25, 0.5, 1.0, 2.0, 4.0), seed=0)
    assert again.accuracies == acc  # seeded


def test_attack_lowers_accuracy_within_budget(models) -> None:
    runner = Runner(models["digits"])
    _, _, x, y = vm.split("digits")
    x, y = x[:80], y[:80]
    perturbed: list[np.ndarray] = []

    def scores_fn(batch: np.ndarray, rows: np.ndarray) -> np.ndarray:
        perturbed.append(np.abs(batch - x[rows]).max())
        return interpret_classifier(runner.run({"X": batch})).scores

    res = robustness.square_attack(
        scores_fn, x, y, epsilon=0.1, value_range=(0.0, 1.0), max_queries=300, time_budget_s=30, seed=0
    )
    assert res.clean_accuracy > 0.9
    assert res.adversarial_accuracy < res.clean_accuracy - 0.2
    assert res.max_perturbation <= 0.1 + 1e-6 and max(perturbed) <= 0.1 + 1e-6
    assert max(res.per_sample_queries) <= 300 and res.queries_total == sum(res.per_sample_queries)
    assert res.queries_median_success is not None and res.queries_median_success < 300
    again = robustness.square_attack(
        scores_fn, x, y, epsilon=0.1, value_range=(0.0, 1.0), max_queries=300, time_budget_s=30, seed=0
    )
    assert again.adversarial_accuracy == res.adversarial_accuracy  # seeded


def test_attack_respects_time_budget_and_zero_epsilon(models) -> None:
    runner = Runner(models["digits"])
    _, _, x, y = vm.split("digits")

    def scores_fn(batch, rows):
        return interpret_classifier(runner.run({"X": batch})).scores

    started = time.perf_counter()
    res = robustness.square_attack(
        scores_fn, x[:200], y[:200], epsilon=0.01, value_range=(0, 1), max_queries=100_000, time_budget_s=0.5, seed=0
    )
    assert time.perf_counter() - started < 3.0 and res.stopped_by == "time"
    none = robustness.square_attack(
        scores_fn, x[:50], y[:50], epsilon=0.0, value_range=(0, 1), max_queries=100, time_budget_s=5, seed=0
    )
    assert none.adversarial_accuracy == none.clean_accuracy and none.max_perturbation == 0.0


def test_attack_on_images_uses_squares() -> None:
    # a linear "image" classifier on 1x8x8 inputs: score_c = <w_c, x>
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 64))
    x = rng.random((40, 1, 8, 8)).astype(np.float32)
    y = (x.reshape(40, -1) @ w.T).argmax(axis=1)

    def scores_fn(batch, rows):
        return batch.reshape(len(batch), -1) @ w.T

    res = robustness.square_attack(
        scores_fn, x, y, epsilon=0.05, value_range=(0, 1), max_queries=500, time_budget_s=20, seed=1
    )
    assert res.clean_accuracy == 1.0 and res.adversarial_accuracy < 0.9
    assert res.max_perturbation <= 0.05 + 1e-6
