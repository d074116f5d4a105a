"""Task metrics against scikit-learn and hand-computed examples; bootstrap intervals and
stratified folds; COCO-style mAP."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from services.validator import metrics as m


@pytest.fixture
def predictions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    n, c = 800, 6
    y = rng.integers(0, c, n)
    scores = rng.random((n, c)) + np.eye(c)[y] * rng.random(n)[:, None] * 1.2
    pred = scores.argmax(axis=1)
    return y, pred, scores


def test_classification_metrics_match_sklearn(predictions) -> None:
    y, pred, scores = predictions
    res = m.classification_metrics(y, pred, np.arange(6), scores, ks=(3, 5))
    assert res.accuracy == pytest.approx(skm.accuracy_score(y, pred))
    assert res.macro_f1 == pytest.approx(skm.f1_score(y, pred, average="macro"))
    np.testing.assert_array_equal(res.confusion, skm.confusion_matrix(y, pred, labels=np.arange(6)))
    np.testing.assert_allclose(res.precision, skm.precision_score(y, pred, average=None, zero_division=0))
    np.testing.assert_allclose(res.recall, skm.recall_score(y, pred, average=None, zero_division=0))
    for k in (3, 5):
        assert res.top_k[k] == pytest.approx(skm.top_k_accuracy_score(y, scores, k=k, labels=np.arange(6)))
    rows = res.per_class()
    assert [r["class"] for r in rows] == list(range(6))
    assert sum(r["support"] for r in rows) == len(y)


def test_macro_f1_skips_absent_classes_like_sklearn() -> None:
    # class 3 is neither true nor predicted; class 2 is predicted but never true
    y = np.array([0, 0, 1, 1, 1, 0])
    pred = np.array([0, 1, 1, 2, 1, 0])
    res = m.classification_metrics(y, pred, np.arange(4))
    assert res.macro_f1 == pytest.approx(skm.f1_score(y, pred, average="macro"))


def test_encode_maps_labels_onto_model_classes() -> None:
    idx, classes = m.encode(np.array([10, 30, 20, 10]), np.array([10, 20, 30]))
    assert idx.tolist() == [0, 2, 1, 0]
    idx, classes = m.encode(np.array(["cat", "dog", "emu"]), np.array(["cat", "dog"]))
    assert idx.tolist() == [0, 1, 2] and classes.tolist() == ["cat", "dog", "emu"]
    idx, classes = m.encode(np.array([0, 1, 7]), np.array([0, 1]))  # 7: unknown to the model
    assert idx.tolist() == [0, 1, 2] and classes.tolist() == [0, 1, 7]


def test_bootstrap_intervals_cover_point_and_match_resampling(predictions) -> None:
    y, pred, _ = predictions
    hits = y == pred
    ci = m.bootstrap_proportion(hits, n_boot=2000, seed=1)
    assert ci.low < hits.mean() < ci.high
    assert ci == m.bootstrap_proportion(hits, n_boot=2000, seed=1)  # seeded
    # The binomial shortcut has the spread of explicit index resampling.
    rng = np.random.default_rng(2)
    explicit = np.array([hits[rng.integers(0, len(hits), len(hits))].mean() for _ in range(2000)])
    lo, hi = np.quantile(explicit, [0.025, 0.975])
    assert ci.low == pytest.approx(lo, abs=0.01) and ci.high == pytest.approx(hi, abs=0.01)

    f1_ci = m.bootstrap_macro_f1(y, pred, 6, n_boot=1000, seed=1)
    f1 = skm.f1_score(y, pred, average="macro")
    assert f1_ci.low < f1 < f1_ci.high
    explicit_f1 = []
    for _ in range(400):
        idx = rng.integers(0, len(y), len(y))
        explicit_f1.append(skm.f1_score(y[idx], pred[idx], average="macro"))
    lo, hi = np.quantile(explicit_f1, [0.025, 0.975])
    assert f1_ci.low == pytest.approx(lo, abs=0.015) and f1_ci.high == pytest.approx(hi, abs=0.015)


def test_bootstrap_many_classes_uses_index_resampling() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 150, 3000)
    pred = np.where(rng.random(3000) < 0.7, y, rng.integers(0, 150, 3000))
    cms = m.bootstrap_confusions(y, pred, 150, n_boot=5, seed=0)
    assert cms.shape == (5, 150, 150) and (cms.sum(axis=(1, 2)) == 3000).all()


def test_stratified_folds_balance_every_class() -> None:
    y = np.repeat(np.arange(4), [50, 30, 20, 13])
    folds = m.stratified_folds(y, 5, seed=0)
    for cls in range(4):
        counts = np.bincount(folds[y == cls], minlength=5)
        assert counts.max() - counts.min() <= 1
    sizes = np.bincount(folds, minlength=5)
    assert sizes.max() - sizes.min() <= 1
    spread = m.fold_spread(y, y, 4, k=5, seed=0)
    assert spread["accuracy"]["mean"] == 1.0 and spread["accuracy"]["std"] == 0.0
    assert len(spread["macro_f1"]["folds"]) == 5


def test_regression_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(4)
    y = rng.normal(size=200)
    pred = y + rng.normal(scale=0.3, size=200)
    res = m.regression_metrics(y, pred)
    assert res["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert res["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, pred)))
    assert res["r2"] == pytest.approx(skm.r2_score(y, pred))


def test_iou() -> None:
    iou = m.iou_matrix(np.array([[0, 0, 10, 10]]), np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]]))
    np.testing.assert_allclose(iou, [[1.0, 25 / 175, 0.0]])


def _hand_example() -> tuple[list[m.Detections], list[m.GroundTruth]]:
    """One class, two images, three ground-truth boxes, four detections:
    d1 (0.9) hits A exactly; d2 (0.8) overlaps B with IoU 81/119 = 0.68; d3 (0.7) hits
    nothing; d4 (0.6) hits C exactly."""
    gts = [
        m.GroundTruth(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([0, 0])),
        m.GroundTruth(np.array([[0, 0, 10, 10]], float), np.array([0])),
    ]
    preds = [
        m.Detections(np.array([[0, 0, 10, 10], [21, 21, 31, 31]], float), np.array([0.9, 0.8]), np.array([0, 0])),
        m.Detections(np.array([[50, 50, 60, 60], [0, 0, 10, 10]], float), np.array([0.7, 0.6]), np.array([0, 0])),
    ]
    return preds, gts


def test_map_matches_hand_computed_example() -> None:
    preds, gts = _hand_example()
    res = m.detection_metrics(preds, gts)
    # IoU 0.50-0.65 (4 thresholds): TP TP FP TP -> precision envelope 1 up to recall 2/3
    # (67 of the 101 recall points), 0.75 after: AP = (67 + 34 * 0.75) / 101.
    ap_low = (67 + 34 * 0.75) / 101
    # IoU 0.70-0.95 (6 thresholds): TP FP FP TP -> 1 up to recall 1/3 (34 points), 0.5 up to
    # 2/3 (33 points), 0 beyond: AP = (34 + 33 * 0.5) / 101 = 0.5.
    ap_high = (34 + 33 * 0.5) / 101
    assert res["map50"] == pytest.approx(ap_low)
    assert res["map"] == pytest.approx((4 * ap_low + 6 * ap_high) / 10)
    assert res["ground_truth_boxes"] == 3 and res["detections"] == 4


def test_map_per_class_and_missing_classes() -> None:
    gts = [m.GroundTruth(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([0, 1]))]
    # class 1 detected perfectly, class 0 missed; a class-2 detection has no ground truth at all
    preds = [m.Detections(np.array([[20, 20, 30, 30], [0, 0, 5, 5]], float), np.array([0.9, 0.5]), np.array([1, 2]))]
    res = m.detection_metrics(preds, gts)
    assert res["per_class_ap50"] == {0: 0.0, 1: 1.0}
    assert res["map50"] == pytest.approx(0.5)


def test_map_bootstrap_interval_contains_point() -> None:
    rng = np.random.default_rng(5)
    preds, gts = [], []
    for _ in range(30):
        box = rng.uniform(0, 50, 2)
        gt = np.array([[*box, *(box + 10)]])
        gts.append(m.GroundTruth(gt, np.array([0])))
        jitter = gt + rng.normal(0, 2.5, 4)
        preds.append(m.Detections(jitter, np.array([rng.random()]), np.array([0])))
    res = m.detection_metrics(preds, gts, n_boot=100, seed=0)
    assert res["map_ci"][0] <= res["map"] <= res["map_ci"][1]
    assert res["map50_ci"][0] <= res["map50"] <= res["map50_ci"][1]


def test_split_ground_truth_checks_counts() -> None:
    parts = m.split_ground_truth(np.zeros((3, 4)), np.array([0, 1, 1]), np.array([2, 0, 1]))
    assert [len(p.classes) for p in parts] == [2, 0, 1]
    with pytest.raises(ValueError, match="gt_counts"):
        m.split_ground_truth(np.zeros((3, 4)), np.array([0, 1, 1]), np.array([2, 2]))
