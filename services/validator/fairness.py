"""Fairness across the groups a dataset names (its ``groups`` array).

Per group: accuracy, true-positive rate, false-positive rate and selection rate. Rates are
one-vs-rest per class; a binary task reports them for its positive class, a multi-class task
the mean over classes (macro). The two gaps follow fairlearn's definitions, taken over every
class one-vs-rest (for a binary task both classes give the same value, so it reduces to the
usual one):

- demographic-parity difference: the largest spread (max - min over groups) of the share of
  samples predicted as a class;
- equalized-odds difference: the largest spread of the TPR or the FPR.

With a positive class (binary tasks, or ``positive_label``) the spreads are the positive
class's alone.

Worst-group accuracy is the lowest group accuracy. A disparity is *detected* when the
equalized-odds difference exceeds ``max_gap`` and a chi-square test of independence between
group and correctness rejects at ``alpha``: a large gap measured on a handful of samples is
reported but not called a finding. The gaps and per-group rates equal fairlearn's
(``equalized_odds_difference``, ``demographic_parity_difference``, ``MetricFrame``), which
tests/test_validator_reference.py checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import chi2_contingency

DEFAULT_MAX_GAP = 0.1
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class FairnessResult:
    per_group: dict[str, dict[str, Any]]
    dp_difference: float
    eo_difference: float
    tpr_difference: float
    fpr_difference: float
    worst_group: str
    worst_group_accuracy: float
    best_group_accuracy: float
    p_value: float
    detected: bool
    max_gap: float
    alpha: float
    positive: Any = None

    def figures(self) -> dict[str, Any]:
        return {
            "per_group": self.per_group,
            "dp_difference": self.dp_difference,
            "eo_difference": self.eo_difference,
            "tpr_difference": self.tpr_difference,
            "fpr_difference": self.fpr_difference,
            "worst_group": self.worst_group,
            "worst_group_accuracy": self.worst_group_accuracy,
            "best_group_accuracy": self.best_group_accuracy,
            "accuracy_gap": self.best_group_accuracy - self.worst_group_accuracy,
            "p_value": self.p_value,
            "detected": self.detected,
            "max_gap": self.max_gap,
            "alpha": self.alpha,
            "positive_class": self.positive,
        }


def _rates(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-vs-rest TPR, FPR and selection rate per class (NaN where undefined)."""
    cm = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    n = cm.sum()
    tp = np.diag(cm).astype(np.float64)
    pos = cm.sum(axis=1).astype(np.float64)
    pred = cm.sum(axis=0).astype(np.float64)
    fp = pred - tp
    neg = n - pos
    with np.errstate(divide="ignore", invalid="ignore"):
        tpr = np.where(pos > 0, tp / pos, np.nan)
        fpr = np.where(neg > 0, fp / neg, np.nan)
        sel = pred / n if n else np.full(n_classes, np.nan)
    return tpr, fpr, sel


def _spread(values: np.ndarray) -> float:
    """max - min over groups (axis 0), then the largest over classes; NaNs are ignored."""
    with np.errstate(all="ignore"):
        finite = np.where(np.isfinite(values), values, np.nan)
        if np.all(np.isnan(finite)):
            return 0.0
        per_class = np.nanmax(finite, axis=0) - np.nanmin(finite, axis=0)
    per_class = per_class[np.isfinite(per_class)]
    return float(per_class.max()) if per_class.size else 0.0


def group_fairness(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    groups: np.ndarray,
    n_classes: int,
    *,
    positive: int | None = None,
    classes: np.ndarray | None = None,
    max_gap: float = DEFAULT_MAX_GAP,
    alpha: float = DEFAULT_ALPHA,
) -> FairnessResult:
    """``y_true`` and ``y_pred`` are class indices; ``positive`` the index of the positive
    class for a binary task (default: index 1 when there are exactly two classes)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    groups = np.asarray(groups)
    if not (len(y_true) == len(y_pred) == len(groups)):
        raise ValueError("labels, predictions and groups differ in length")
    names, gidx = np.unique(groups.astype(str) if groups.dtype.kind in "USO" else groups, return_inverse=True)
    binary = n_classes == 2
    if positive is None and binary:
        positive = 1
    tprs, fprs, sels = [], [], []
    per_group: dict[str, dict[str, Any]] = {}
    table = []
    for g, name in enumerate(names):
        mask = gidx == g
        t, p = y_true[mask], y_pred[mask]
        tpr, fpr, sel = _rates(t, p, n_classes)
        tprs.append(tpr)
        fprs.append(fpr)
        sels.append(sel)
        correct = int((t == p).sum())
        table.append([correct, int(mask.sum()) - correct])
        if positive is not None:
            g_tpr, g_fpr, g_sel = tpr[positive], fpr[positive], sel[positive]
        else:
            g_tpr, g_fpr, g_sel = _nanmean(tpr), _nanmean(fpr), np.nan
        per_group[_key(name)] = {
            "n": int(mask.sum()),
            "accuracy": correct / int(mask.sum()),
            "tpr": _none_if_nan(g_tpr),
            "fpr": _none_if_nan(g_fpr),
            "selection_rate": _none_if_nan(g_sel),
        }
    tpr_arr, fpr_arr, sel_arr = np.array(tprs), np.array(fprs), np.array(sels)
    if positive is not None:  # binary (or a chosen class): the positive class's rates only
        tpr_arr, fpr_arr, sel_arr = tpr_arr[:, [positive]], fpr_arr[:, [positive]], sel_arr[:, [positive]]
    tpr_diff, fpr_diff = _spread(tpr_arr), _spread(fpr_arr)
    accuracies = {k: v["accuracy"] for k, v in per_group.items()}
    worst = min(accuracies, key=accuracies.__getitem__)
    p_value = _independence_p(np.array(table))
    eo = max(tpr_diff, fpr_diff)
    return FairnessResult(
        per_group=per_group,
        dp_difference=_spread(sel_arr),
        eo_difference=eo,
        tpr_difference=tpr_diff,
        fpr_difference=fpr_diff,
        worst_group=worst,
        worst_group_accuracy=accuracies[worst],
        best_group_accuracy=max(accuracies.values()),
        p_value=p_value,
        detected=bool(eo > max_gap and p_value < alpha),
        max_gap=max_gap,
        alpha=alpha,
        positive=None if positive is None or classes is None else _plain(classes[positive]),
    )


def _independence_p(table: np.ndarray) -> float:
    """Chi-square test that correctness does not depend on the group (1.0 when a margin is
    empty, i.e. every sample right or every sample wrong)."""
    if table.shape[0] < 2 or (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(chi2_contingency(table, correction=table.shape[0] == 2).pvalue)


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _none_if_nan(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _key(name: Any) -> str:
    return str(name.item() if hasattr(name, "item") else name)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
