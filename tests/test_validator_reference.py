"""The validator's figures against the references users trust: detection mAP against
pycocotools' COCOeval, fairness gaps against fairlearn (test-only dependencies, dev extra)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from services.validator.fairness import group_fairness
from services.validator.metrics import Detections, GroundTruth, detection_metrics

pycocotools = pytest.importorskip("pycocotools")
fairlearn = pytest.importorskip("fairlearn")


# --- detection: mAP against COCOeval ------------------------------------------------------------


def _box(rng: np.random.Generator, size: str) -> np.ndarray:
    side = {"small": (4, 32), "medium": (32, 96), "large": (96, 300)}[size]
    w, h = rng.uniform(*side), rng.uniform(*side)
    x, y = rng.uniform(0, 640 - w), rng.uniform(0, 480 - h)
    return np.array([x, y, x + w, y + h])


def _detection_set(seed: int, images: int = 40, classes: int = 4, crowded: int | None = None):
    """Crowd-free ground truth of mixed sizes, and detections: jittered hits (some with the
    wrong class), duplicates, misses and false positives, with distinct scores."""
    rng = np.random.default_rng(seed)
    gts, preds = [], []
    for i in range(images):
        n = int(rng.integers(0, 9))
        gt_boxes = np.array([_box(rng, rng.choice(["small", "medium", "large"])) for _ in range(n)]).reshape(-1, 4)
        gt_cls = rng.integers(0, classes, n)
        boxes, scores, cls = [], [], []
        for b, c in zip(gt_boxes, gt_cls, strict=True):
            if rng.random() < 0.15:
                continue  # missed
            for _ in range(1 + int(rng.random() < 0.2)):  # sometimes a duplicate
                jitter = rng.normal(0, 0.08, 4) * np.r_[b[2] - b[0], b[3] - b[1], b[2] - b[0], b[3] - b[1]]
                boxes.append(b + jitter)
                cls.append(c if rng.random() > 0.1 else rng.integers(0, classes))
        for _ in range(int(rng.integers(0, 5))):  # false positives
            boxes.append(_box(rng, rng.choice(["small", "medium", "large"])))
            cls.append(rng.integers(0, classes))
        if crowded is not None and i == 0:  # more than max_dets detections of one class
            for _ in range(crowded):
                boxes.append(_box(rng, "small"))
                cls.append(0)
        boxes_arr = np.array(boxes).reshape(-1, 4)
        boxes_arr[:, [0, 2]] = np.sort(np.clip(boxes_arr[:, [0, 2]], 0, 640), axis=1)
        boxes_arr[:, [1, 3]] = np.sort(np.clip(boxes_arr[:, [1, 3]], 0, 480), axis=1)
        scores = rng.random(len(boxes_arr))
        gts.append(GroundTruth(gt_boxes, gt_cls.astype(np.int64)))
        preds.append(Detections(boxes_arr, scores, np.array(cls, dtype=np.int64)))
    return preds, gts, classes


def _cocoeval(preds, gts, classes: int, max_dets: int = 100) -> tuple[float, float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b: np.ndarray) -> list[float]:
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    images = [{"id": i, "width": 640, "height": 480} for i in range(len(gts))]
    annotations = []
    for i, gt in enumerate(gts):
        for b, c in zip(gt.boxes, gt.classes, strict=True):
            box = xywh(b)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(c),
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    results = [
        {"image_id": i, "category_id": int(c), "bbox": xywh(b), "score": float(s)}
        for i, p in enumerate(preds)
        for b, s, c in zip(p.boxes, p.scores, p.classes, strict=True)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in range(classes)]}
        coco.createIndex()
        dets = coco.loadRes(results)
        ev = COCOeval(coco, dets, "bbox")
        ev.params.maxDets = [1, 10, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0]), float(ev.stats[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_map_equals_cocoeval(seed: int) -> None:
    preds, gts, classes = _detection_set(seed)
    ours = detection_metrics(preds, gts)
    coco_map, coco_map50 = _cocoeval(preds, gts, classes)
    assert ours["map"] == pytest.approx(coco_map, abs=1e-6)
    assert ours["map50"] == pytest.approx(coco_map50, abs=1e-6)


def test_map_keeps_max_dets_per_image_and_class_as_cocoeval() -> None:
    preds, gts, classes = _detection_set(7, images=12, crowded=150)
    ours = detection_metrics(preds, gts, max_dets=100)
    coco_map, coco_map50 = _cocoeval(preds, gts, classes, max_dets=100)
    assert ours["map"] == pytest.approx(coco_map, abs=1e-6)
    assert ours["map50"] == pytest.approx(coco_map50, abs=1e-6)


# --- fairness: gaps against fairlearn -------------------------------------------------------------


def _fairness_set(seed: int, classes: int):
    rng = np.random.default_rng(seed)
    n = 3000
    groups = rng.choice(np.array(["a", "b", "c"]), n, p=[0.5, 0.3, 0.2])
    truth = rng.integers(0, classes, n)
    # group-dependent error rates, so the gaps are real
    err = np.select([groups == "a", groups == "b"], [0.1, 0.25], 0.4)
    wrong = rng.random(n) < err
    pred = np.where(wrong, rng.integers(0, classes, n), truth)
    return truth, pred, groups


@pytest.mark.parametrize("seed", [0, 1])
def test_binary_gaps_equal_fairlearn(seed: int) -> None:
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )

    truth, pred, groups = _fairness_set(seed, 2)
    ours = group_fairness(truth, pred, groups, 2)
    assert ours.eo_difference == pytest.approx(
        equalized_odds_difference(truth, pred, sensitive_features=groups), abs=1e-12
    )
    assert ours.dp_difference == pytest.approx(
        demographic_parity_difference(truth, pred, sensitive_features=groups), abs=1e-12
    )
    frame = MetricFrame(
        metrics={"tpr": true_positive_rate, "fpr": false_positive_rate, "selection_rate": selection_rate},
        y_true=truth,
        y_pred=pred,
        sensitive_features=groups,
    )
    for group, row in frame.by_group.iterrows():
        mine = ours.per_group[str(group)]
        for key in ("tpr", "fpr", "selection_rate"):
            assert mine[key] == pytest.approx(float(row[key]), abs=1e-12), (group, key)
    assert ours.tpr_difference == pytest.approx(float(frame.difference()["tpr"]), abs=1e-12)
    assert ours.fpr_difference == pytest.approx(float(frame.difference()["fpr"]), abs=1e-12)


def test_multiclass_gaps_are_fairlearns_one_vs_rest_worst_class() -> None:
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    truth, pred, groups = _fairness_set(3, 4)
    ours = group_fairness(truth, pred, groups, 4)
    eo = max(equalized_odds_difference(truth == c, pred == c, sensitive_features=groups) for c in range(4))
    dp = max(demographic_parity_difference(truth == c, pred == c, sensitive_features=groups) for c in range(4))
    assert ours.eo_difference == pytest.approx(eo, abs=1e-12)
    assert ours.dp_difference == pytest.approx(dp, abs=1e-12)
