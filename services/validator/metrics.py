"""Task metrics, their bootstrap confidence intervals and stratified k-fold spread.

Pure numpy: every function takes arrays and returns plain figures, so tests compare them with
scikit-learn and hand-computed examples.

Conventions
- Classification works on class *indices* (``encode_labels`` maps label values onto the
  model's class order). Macro-F1 follows scikit-learn's ``f1_score(average="macro")``: the
  mean over classes present in the truth or the predictions, a class with no true and no
  predicted positives scoring 0.
- Bootstrap intervals are percentile intervals over resamples of the evaluated samples (with
  replacement). A resample's confusion matrix is distributed exactly as
  ``Multinomial(n, cells / n)`` and a resampled accuracy as ``Binomial(n, acc) / n``, so we
  draw those directly instead of re-indexing the samples B times: same distribution,
  O(B * classes^2) instead of O(B * n).
- Detection follows COCO's evaluation: per image and class, detections in descending score
  order (at most ``max_dets`` per image and class, as COCOeval keeps them) are greedily
  matched to the unmatched ground-truth box of highest IoU at or above the threshold; AP is
  the mean of the precision envelope sampled at 101 recall points; classes without ground
  truth are left out of the mean. ``map50`` is AP at IoU 0.5, ``map`` the mean over IoU
  0.50:0.05:0.95. Checked against pycocotools' COCOeval (tests/test_validator_reference.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

COCO_IOU_THRESHOLDS = np.round(np.linspace(0.5, 0.95, 10), 2)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)

# Confusion matrices are drawn as one multinomial per resample up to this many cells; above
# it (thousands of classes) resampling indices is cheaper.
_MULTINOMIAL_MAX_CELLS = 10_000


# --- labels ---------------------------------------------------------------------------------


def encode_labels(values: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map label values onto indices of ``classes`` (the model's score columns). Values the
    model does not know get new indices after the model's classes (they can never be
    predicted, which is what they are). Returns (indices, all_classes)."""
    values = np.asarray(values)
    classes = np.asarray(classes)
    if values.dtype.kind in "USO" or classes.dtype.kind in "USO":
        values, classes = values.astype(str), classes.astype(str)
    index = {v.item() if hasattr(v, "item") else v: i for i, v in enumerate(classes)}
    extra: dict[Any, int] = {}
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values.tolist()):
        j = index.get(v)
        if j is None:
            j = extra.setdefault(v, len(classes) + len(extra))
        out[i] = j
    if extra:
        classes = np.concatenate([classes, np.array(list(extra), dtype=classes.dtype)])
    return out, classes


def _fast_encode(values: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Vectorised ``encode_labels`` for the common case: integer labels that are all known."""
    values, classes = np.asarray(values), np.asarray(classes)
    if values.dtype.kind not in "iu" or classes.dtype.kind not in "iu":
        return None
    order = np.argsort(classes, kind="stable")
    pos = np.searchsorted(classes[order], values)
    pos = np.clip(pos, 0, len(classes) - 1)
    found = classes[order][pos] == values
    if not found.all():
        return None
    return order[pos].astype(np.int64), classes


def encode(values: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _fast_encode(values, classes) or encode_labels(values, classes)


# --- classification -------------------------------------------------------------------------


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def _prf(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and a "class present" mask from confusion matrices of
    shape (..., K, K)."""
    tp = np.diagonal(cm, axis1=-2, axis2=-1).astype(np.float64)
    support = cm.sum(axis=-1).astype(np.float64)
    predicted = cm.sum(axis=-2).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        denom = support + predicted
        f1 = np.where(denom > 0, 2 * tp / denom, 0.0)
    present = (support + predicted) > 0
    return precision, recall, f1, present


def macro_f1_from_confusion(cm: np.ndarray) -> np.ndarray | float:
    _, _, f1, present = _prf(cm)
    counted = present.sum(axis=-1)
    return np.where(counted > 0, (f1 * present).sum(axis=-1) / np.maximum(counted, 1), 0.0)


def top_k_accuracy(y_true: np.ndarray, scores: np.ndarray, k: int) -> float:
    """Share of samples whose true class is among the ``k`` highest scores (a true class
    outside the score columns never counts)."""
    return float(top_k_hits(y_true, scores, k).mean()) if len(y_true) else float("nan")


def top_k_hits(y_true: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    n, c = scores.shape
    known = y_true < c
    true_scores = np.where(known, scores[np.arange(n), np.minimum(y_true, c - 1)], -np.inf)
    # rank = number of classes scoring strictly higher than the true class
    higher = (scores > true_scores[:, None]).sum(axis=1)
    hits: np.ndarray = known & (higher < k)
    return hits


@dataclass(frozen=True)
class ClassificationResult:
    accuracy: float
    macro_f1: float
    top_k: dict[int, float]
    confusion: np.ndarray
    classes: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray

    def per_class(self, limit: int = 100) -> list[dict[str, Any]]:
        predicted = self.confusion.sum(axis=0)
        rows = [
            {
                "class": _plain_scalar(self.classes[i]),
                "precision": float(self.precision[i]),
                "recall": float(self.recall[i]),
                "f1": float(self.f1[i]),
                "support": int(self.support[i]),
            }
            for i in range(len(self.classes))
            if self.support[i] > 0 or predicted[i] > 0
        ]
        if len(rows) > limit:  # keep the worst classes: they are what someone needs to see
            rows = sorted(rows, key=lambda r: r["f1"])[:limit]
        return rows


def classification_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray | None = None,
    ks: Sequence[int] = (5,),
) -> ClassificationResult:
    """``y_true``/``y_pred`` are indices into ``classes``; ``scores`` columns follow the
    model's classes (top-k only for k below the number of score columns)."""
    k_all = len(classes)
    cm = confusion_matrix(y_true, y_pred, k_all)
    precision, recall, f1, _ = _prf(cm)
    accuracy = float(np.trace(cm) / max(len(y_true), 1)) if len(y_true) else float("nan")
    top_k = {}
    if scores is not None and scores.ndim == 2:
        for k in ks:
            if 1 < k < scores.shape[1]:
                top_k[k] = top_k_accuracy(y_true, scores, k)
    return ClassificationResult(
        accuracy=accuracy,
        macro_f1=float(macro_f1_from_confusion(cm)),
        top_k=top_k,
        confusion=cm,
        classes=classes,
        precision=precision,
        recall=recall,
        f1=f1,
        support=cm.sum(axis=1),
    )


# --- bootstrap and k-fold ---------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    level: float = 0.95

    def as_list(self) -> list[float]:
        return [float(self.low), float(self.high)]


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> Interval:
    alpha = (1.0 - level) / 2.0
    finite = samples[np.isfinite(samples)]
    if len(finite) == 0:
        return Interval(float("nan"), float("nan"), level)
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return Interval(float(low), float(high), level)


def bootstrap_proportion(hits: np.ndarray, *, n_boot: int, seed: int, level: float = 0.95) -> Interval:
    """CI of a mean of 0/1 outcomes (accuracy, top-k): the count of hits in a resample is
    Binomial(n, p_hat)."""
    n = len(hits)
    if n == 0:
        return Interval(float("nan"), float("nan"), level)
    rng = np.random.default_rng(seed)
    draws = rng.binomial(n, float(np.mean(hits)), size=n_boot) / n
    return percentile_interval(draws, level)


def bootstrap_confusions(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, *, n_boot: int, seed: int
) -> np.ndarray:
    """``n_boot`` confusion matrices of resamples, shape (n_boot, K, K)."""
    n = len(y_true)
    rng = np.random.default_rng(seed)
    cells = n_classes * n_classes
    if cells <= _MULTINOMIAL_MAX_CELLS:
        cm = confusion_matrix(y_true, y_pred, n_classes).ravel()
        draws = rng.multinomial(n, cm / n, size=n_boot)
        return draws.reshape(n_boot, n_classes, n_classes)
    # Many classes: re-index in chunks (the multinomial would need B * K^2 cells).
    flat = y_true * n_classes + y_pred
    out = np.empty((n_boot, n_classes, n_classes), dtype=np.int64)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        out[b] = np.bincount(flat[idx], minlength=cells).reshape(n_classes, n_classes)
    return out


def bootstrap_macro_f1(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, *, n_boot: int, seed: int, level: float = 0.95
) -> Interval:
    if len(y_true) == 0:
        return Interval(float("nan"), float("nan"), level)
    cms = bootstrap_confusions(y_true, y_pred, n_classes, n_boot=n_boot, seed=seed)
    return percentile_interval(np.asarray(macro_f1_from_confusion(cms)), level)


def bootstrap_statistic(
    statistic: Callable[[np.ndarray], float], n: int, *, n_boot: int, seed: int, level: float = 0.95
) -> Interval:
    """Generic percentile bootstrap: ``statistic(weights)`` gets each resample as per-sample
    multiplicities (how often each sample was drawn)."""
    if n == 0:
        return Interval(float("nan"), float("nan"), level)
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        weights = np.bincount(rng.integers(0, n, n), minlength=n)
        values[b] = statistic(weights)
    return percentile_interval(values, level)


def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number of each sample: every class is spread evenly over the ``k`` folds (as
    scikit-learn's StratifiedKFold would), in a seeded random order."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(y), dtype=np.int64)
    offset = 0
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        rng.shuffle(members)
        # continue round-robin where the previous class stopped, so fold sizes stay balanced
        folds[members] = (np.arange(len(members)) + offset) % k
        offset = (offset + len(members)) % k
    return folds


def fold_spread(
    y_true: np.ndarray, y_pred: np.ndarray, n_classes: int, *, k: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Accuracy and macro-F1 on each of ``k`` stratified folds: how much the headline figure
    moves between disjoint subsets of the data of this size."""
    k = int(min(k, len(y_true)))
    if k < 2:
        return {}
    folds = stratified_folds(y_true, k, seed)
    acc, f1 = [], []
    for f in range(k):
        mask = folds == f
        cm = confusion_matrix(y_true[mask], y_pred[mask], n_classes)
        acc.append(float(np.trace(cm) / max(mask.sum(), 1)))
        f1.append(float(macro_f1_from_confusion(cm)))
    return {
        "accuracy": {"k": k, "mean": float(np.mean(acc)), "std": float(np.std(acc, ddof=1)), "folds": acc},
        "macro_f1": {"k": k, "mean": float(np.mean(f1)), "std": float(np.std(f1, ddof=1)), "folds": f1},
    }


# --- regression -----------------------------------------------------------------------------


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    y_true = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    y_pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    err = y_pred - y_true
    ss_res = float((err**2).sum())
    ss_tot = float(((y_true - y_true.mean(axis=0)) ** 2).sum())
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
    }


# --- detection ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detections:
    """One image's detections: ``boxes`` (D, 4) as x1, y1, x2, y2; ``scores`` (D,);
    ``classes`` (D,) integer class ids."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray


@dataclass(frozen=True)
class GroundTruth:
    boxes: np.ndarray
    classes: np.ndarray


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (M, 4) with every box in ``b`` (N, 4), x1 y1 x2 y2."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass(frozen=True)
class _Matches:
    """Every detection, matched once per IoU threshold: the expensive part of mAP, which a
    bootstrap over images can reuse with per-image weights."""

    image: np.ndarray  # (D,) image index of each detection
    cls: np.ndarray  # (D,)
    score: np.ndarray  # (D,)
    tp: np.ndarray  # (T, D) bool
    gt_per_image_class: dict[int, np.ndarray]  # class -> (images,) ground-truth counts
    thresholds: np.ndarray


def _match(preds: Sequence[Detections], gts: Sequence[GroundTruth], thresholds: np.ndarray, max_dets: int) -> _Matches:
    images, classes_all, scores_all, tps = [], [], [], []
    gt_counts: dict[int, np.ndarray] = {}
    n_images = len(gts)
    for i, gt in enumerate(gts):
        for c in np.unique(gt.classes).tolist():
            gt_counts.setdefault(int(c), np.zeros(n_images, dtype=np.int64))[i] = int((gt.classes == c).sum())
    for i, (det, gt) in enumerate(zip(preds, gts, strict=True)):
        if len(det.scores) == 0:
            continue
        order = np.argsort(-det.scores, kind="mergesort")
        # COCOeval keeps the ``max_dets`` best detections per image *and class*
        ordered_cls = det.classes[order].astype(np.int64)
        rank = np.zeros(len(order), dtype=np.int64)
        for c in np.unique(ordered_cls).tolist():
            where = np.flatnonzero(ordered_cls == c)
            rank[where] = np.arange(len(where))
        keep = order[rank < max_dets]
        boxes, scores, cls = det.boxes[keep], det.scores[keep], det.classes[keep].astype(np.int64)
        tp = np.zeros((len(thresholds), len(keep)), dtype=bool)
        for c in np.unique(cls).tolist():
            d_idx = np.flatnonzero(cls == c)  # already in descending score order
            g_mask = gt.classes == c
            if not g_mask.any():
                continue
            ious = iou_matrix(boxes[d_idx], gt.boxes[g_mask])
            for t, thr in enumerate(thresholds):
                taken = np.zeros(ious.shape[1], dtype=bool)
                for row, d in enumerate(d_idx):
                    # COCO: best IoU among unmatched ground truth, at least the threshold
                    candidates = np.where(taken, -1.0, ious[row])
                    j = int(np.argmax(candidates))
                    if candidates[j] >= min(thr, 1 - 1e-10):
                        taken[j] = True
                        tp[t, d] = True
        images.append(np.full(len(keep), i))
        classes_all.append(cls)
        scores_all.append(scores.astype(np.float64))
        tps.append(tp)
    if images:
        image = np.concatenate(images)
        cls_arr = np.concatenate(classes_all)
        score = np.concatenate(scores_all)
        tp_arr = np.concatenate(tps, axis=1)
    else:
        image = cls_arr = np.zeros(0, dtype=np.int64)
        score = np.zeros(0)
        tp_arr = np.zeros((len(thresholds), 0), dtype=bool)
    return _Matches(image, cls_arr, score, tp_arr, gt_counts, thresholds)


def _average_precision(tp: np.ndarray, weights: np.ndarray, npos: float) -> float:
    """COCO 101-point interpolated AP for detections already in descending score order;
    ``weights`` are each detection's multiplicity (1 without bootstrap)."""
    if npos <= 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    tps = np.cumsum(tp * weights)
    fps = np.cumsum((~tp) * weights)
    recall = tps / npos
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")
    sampled = np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)
    return float(sampled.mean())


def _map_from_matches(m: _Matches, image_weights: np.ndarray | None = None) -> dict[str, Any]:
    n_thr = len(m.thresholds)
    per_class: dict[int, np.ndarray] = {}
    for c, counts in m.gt_per_image_class.items():
        w_img = image_weights if image_weights is not None else np.ones(len(counts))
        npos = float((counts * w_img).sum())
        if npos <= 0:
            continue
        sel = np.flatnonzero(m.cls == c)
        order = sel[np.argsort(-m.score[sel], kind="mergesort")]
        w = w_img[m.image[order]] if len(order) else np.zeros(0)
        keep = w > 0
        order, w = order[keep], w[keep]
        per_class[c] = np.array([_average_precision(m.tp[t, order], w, npos) for t in range(n_thr)])
    if not per_class:
        return {"map": float("nan"), "map50": float("nan"), "per_class_ap50": {}}
    aps = np.stack(list(per_class.values()))  # (classes, thresholds)
    t50 = int(np.argmin(np.abs(m.thresholds - 0.5)))
    return {
        "map": float(aps.mean()),
        "map50": float(aps[:, t50].mean()),
        "per_class_ap50": {int(c): float(v[t50]) for c, v in per_class.items()},
    }


def detection_metrics(
    preds: Sequence[Detections],
    gts: Sequence[GroundTruth],
    *,
    thresholds: np.ndarray = COCO_IOU_THRESHOLDS,
    max_dets: int = 100,
    n_boot: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """``map50`` and ``map`` (COCO mAP@[.5:.95]) with per-class AP@0.5, and, with ``n_boot``,
    95% bootstrap intervals over images."""
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions for {len(gts)} images")
    matches = _match(preds, gts, np.asarray(thresholds, dtype=np.float64), max_dets)
    out = _map_from_matches(matches)
    out["images"] = len(gts)
    out["ground_truth_boxes"] = int(sum(len(g.classes) for g in gts))
    out["detections"] = len(matches.score)
    if n_boot > 0 and len(gts) > 1:
        rng = np.random.default_rng(seed)
        m50, m = np.empty(n_boot), np.empty(n_boot)
        for b in range(n_boot):
            w = np.bincount(rng.integers(0, len(gts), len(gts)), minlength=len(gts)).astype(np.float64)
            res = _map_from_matches(matches, w)
            m50[b], m[b] = res["map50"], res["map"]
        out["map50_ci"] = percentile_interval(m50).as_list()
        out["map_ci"] = percentile_interval(m).as_list()
    return out


def split_ground_truth(boxes: np.ndarray, classes: np.ndarray, counts: np.ndarray) -> list[GroundTruth]:
    """Per-image ground truth from the dataset layout: ``gt_boxes`` (G, 4) and ``gt_classes``
    (G,) concatenated over images, ``gt_counts`` (N,) boxes per image."""
    counts = np.asarray(counts, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes).astype(np.int64).reshape(-1)
    if counts.sum() != len(boxes) or len(boxes) != len(classes):
        raise ValueError(
            f"gt_counts sum to {int(counts.sum())} but gt_boxes has {len(boxes)} rows and gt_classes {len(classes)}"
        )
    ends = np.cumsum(counts)
    starts = ends - counts
    return [GroundTruth(boxes[s:e], classes[s:e]) for s, e in zip(starts, ends, strict=True)]


def _plain_scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
