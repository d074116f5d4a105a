"""Parity of a variant with its parent on identical inputs.

Error metrics are the converter's (Polygraphy-style): per output max and mean absolute
error, max and mean relative error, cosine similarity, non-finite values; for classifiers the
top-1 agreement. With labels, McNemar's exact test on per-sample correctness turns "the
accuracy changed" into a statistical statement: only the discordant samples (right for one
model, wrong for the other) carry information, and under "no difference" each discordant
sample is equally likely to go either way, so the count ``b`` of parent-right/variant-wrong
samples is Binomial(b + c, 1/2) (scipy.stats.binomtest, two-sided).

Tolerances per variant family (overridable per request): float32-equivalent variants
(``base``, ``ort-opt``, ``opset-N`` and unknown names) must match elementwise within
rtol = atol = 1e-5; float16 variants within 1e-2 and 99% top-1 agreement; int8 variants are
judged on top-1 agreement (>= 97%) and cosine similarity (>= 0.98) rather than elementwise
error. In every family a significant accuracy loss (McNemar p < alpha with the variant
worse) fails parity.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.stats import binomtest


@dataclass(frozen=True)
class Tolerance:
    family: str
    rtol: float | None  # None: elementwise error is reported, not judged
    atol: float | None
    min_top1: float | None
    min_cosine: float | None
    alpha: float = 0.05


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance("fp32", rtol=1e-5, atol=1e-5, min_top1=None, min_cosine=None),
    "fp16": Tolerance("fp16", rtol=1e-2, atol=1e-2, min_top1=0.99, min_cosine=0.999),
    "int8": Tolerance("int8", rtol=None, atol=None, min_top1=0.97, min_cosine=0.98),
}


def family_of(variant: str) -> str:
    v = variant.lower()
    if "int8" in v or "qdq" in v or "quant" in v:
        return "int8"
    if "fp16" in v or "half" in v or "bf16" in v or "mixed" in v:
        return "fp16"
    return "fp32"


def tolerance_for(variant: str, overrides: dict[str, Any] | None = None) -> Tolerance:
    tol = TOLERANCES[family_of(variant)]
    if overrides:
        known = {"rtol", "atol", "min_top1", "min_cosine", "alpha"}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown parity tolerance(s) {sorted(unknown)}; use {sorted(known)}")
        limits: dict[str, Any] = {k: (None if v is None else float(v)) for k, v in overrides.items()}
        tol = replace(tol, **limits)
    return tol


def error_metrics(reference: np.ndarray, candidate: np.ndarray) -> dict[str, Any]:
    """Elementwise comparison of one float output (relative errors against the reference,
    with a floor so that near-zero references do not explode)."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        return {"shape_mismatch": [list(ref.shape), list(cand.shape)]}
    nonfinite = int((~np.isfinite(cand)).sum())
    ref_nonfinite = int((~np.isfinite(ref)).sum())
    both = np.isfinite(ref) & np.isfinite(cand)
    diff = np.abs(ref - cand)[both]
    scale = np.abs(ref)[both]
    rel = diff / np.maximum(scale, 1e-12)
    a, b = ref[both], cand[both]
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(np.dot(a, b) / norm) if norm > 0 else (1.0 if np.allclose(a, b) else 0.0)
    return {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "mean_abs": float(diff.mean()) if diff.size else 0.0,
        "max_rel": float(rel.max()) if rel.size else 0.0,
        "mean_rel": float(rel.mean()) if rel.size else 0.0,
        "cosine": cosine,
        "nonfinite": nonfinite,
        "reference_nonfinite": ref_nonfinite,
        "elements": int(ref.size),
    }


def within_tolerance(reference: np.ndarray, candidate: np.ndarray, rtol: float, atol: float) -> float:
    """Share of elements with |cand - ref| <= atol + rtol * |ref| (numpy.isclose's rule)."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape or ref.size == 0:
        return 0.0 if ref.shape != cand.shape else 1.0
    return float(np.isclose(cand, ref, rtol=rtol, atol=atol, equal_nan=False).mean())


@dataclass(frozen=True)
class McNemar:
    """``b``: parent right, variant wrong; ``c``: parent wrong, variant right."""

    b: int
    c: int
    n: int
    p_value: float
    parent_accuracy: float
    variant_accuracy: float

    @property
    def accuracy_drop_points(self) -> float:
        return 100.0 * (self.parent_accuracy - self.variant_accuracy)

    def as_dict(self) -> dict[str, Any]:
        return {
            "b_parent_only": self.b,
            "c_variant_only": self.c,
            "n": self.n,
            "p_value": self.p_value,
            "parent_accuracy": self.parent_accuracy,
            "variant_accuracy": self.variant_accuracy,
            "accuracy_drop_points": self.accuracy_drop_points,
        }


def mcnemar_exact(parent_correct: np.ndarray, variant_correct: np.ndarray) -> McNemar:
    p = np.asarray(parent_correct, dtype=bool)
    v = np.asarray(variant_correct, dtype=bool)
    if p.shape != v.shape:
        raise ValueError(f"per-sample correctness differs in length: {p.shape} vs {v.shape}")
    b = int((p & ~v).sum())
    c = int((~p & v).sum())
    p_value = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    n = len(p)
    return McNemar(
        b=b,
        c=c,
        n=n,
        p_value=p_value,
        parent_accuracy=float(p.mean()) if n else float("nan"),
        variant_accuracy=float(v.mean()) if n else float("nan"),
    )


@dataclass
class ParityResult:
    passed: bool
    problems: list[str] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    top1_agreement: float | None = None
    mcnemar: McNemar | None = None
    tolerance: Tolerance | None = None
    inputs: str = ""
    samples: int = 0

    def figures(self) -> dict[str, Any]:
        tol = self.tolerance
        return {
            "inputs": self.inputs,
            "samples": self.samples,
            "tolerance": None
            if tol is None
            else {
                "family": tol.family,
                "rtol": tol.rtol,
                "atol": tol.atol,
                "min_top1": tol.min_top1,
                "min_cosine": tol.min_cosine,
                "alpha": tol.alpha,
            },
            "outputs": self.outputs,
            "top1_agreement": self.top1_agreement,
            "mcnemar": None if self.mcnemar is None else self.mcnemar.as_dict(),
            "problems": self.problems,
        }


def compare(
    parent_outputs: dict[str, Any],
    variant_outputs: dict[str, Any],
    *,
    tolerance: Tolerance,
    parent_labels: np.ndarray | None = None,
    variant_labels: np.ndarray | None = None,
    parent_scores: np.ndarray | None = None,
    variant_scores: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    inputs: str = "",
) -> ParityResult:
    """Judge a variant against its parent. ``*_outputs`` are raw outputs by name (float
    tensors compared elementwise, integer and string tensors by agreement); ``*_labels`` are
    predicted classes and ``*_scores`` class scores when the model is a classifier; ``truth``
    the dataset labels in the same encoding as the predicted labels (for McNemar)."""
    result = ParityResult(passed=True, tolerance=tolerance, inputs=inputs)
    compared: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, ref in parent_outputs.items():
        if name not in variant_outputs:
            result.problems.append(f"output {name!r} of the parent is missing from the variant")
            continue
        if isinstance(ref, np.ndarray) and isinstance(variant_outputs[name], np.ndarray):
            compared[name] = (ref, variant_outputs[name])
    if (
        parent_scores is not None
        and variant_scores is not None
        and not any(r.dtype.kind == "f" for r, _ in compared.values())
    ):
        # Scores only reachable through a non-tensor output (ZipMap): compare them instead.
        compared["class_scores"] = (parent_scores, variant_scores)
    for name, (ref, cand) in compared.items():
        if ref.dtype.kind == "f" or cand.dtype.kind == "f":
            figures = error_metrics(ref, cand)
            if "shape_mismatch" in figures:
                result.problems.append(f"output {name!r} shape {figures['shape_mismatch']}")
            else:
                if figures["nonfinite"] > figures["reference_nonfinite"]:
                    result.problems.append(f"output {name!r} has {figures['nonfinite']} non-finite values")
                if tolerance.rtol is not None and tolerance.atol is not None:
                    share = within_tolerance(ref, cand, tolerance.rtol, tolerance.atol)
                    figures["within_tolerance"] = share
                    if share < 1.0:
                        result.problems.append(
                            f"output {name!r}: {100 * (1 - share):.2f}% of elements beyond rtol={tolerance.rtol:g} "
                            f"atol={tolerance.atol:g} (max abs {figures['max_abs']:.3g})"
                        )
                if tolerance.min_cosine is not None and figures["cosine"] < tolerance.min_cosine:
                    result.problems.append(
                        f"output {name!r}: cosine similarity {figures['cosine']:.4f} < {tolerance.min_cosine}"
                    )
        else:
            same = ref.shape == cand.shape
            agreement = float((ref == cand).mean()) if same and ref.size else (1.0 if same else 0.0)
            figures = {"agreement": agreement, "elements": int(ref.size)}
        result.outputs[name] = figures
    if parent_labels is not None and variant_labels is not None:
        agree = np.asarray(parent_labels) == np.asarray(variant_labels)
        result.top1_agreement = float(agree.mean()) if agree.size else None
        result.samples = int(agree.size)
        if (
            tolerance.min_top1 is not None
            and result.top1_agreement is not None
            and result.top1_agreement < tolerance.min_top1
        ):
            result.problems.append(f"top-1 agreement {result.top1_agreement:.4f} < {tolerance.min_top1}")
        if truth is not None:
            truth = np.asarray(truth)
            result.mcnemar = mcnemar_exact(parent_labels == truth, variant_labels == truth)
            m = result.mcnemar
            if m.p_value < tolerance.alpha and m.variant_accuracy < m.parent_accuracy:
                result.problems.append(
                    f"accuracy falls from {m.parent_accuracy:.4f} to {m.variant_accuracy:.4f} "
                    f"({m.accuracy_drop_points:.1f} points; McNemar p={m.p_value:.2g}, b={m.b}, c={m.c})"
                )
    elif compared:
        first = next(iter(compared.values()))[0]
        result.samples = int(first.shape[0]) if first.ndim else 1
    result.passed = not result.problems
    return result
