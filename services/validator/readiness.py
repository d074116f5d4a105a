"""The deployment-readiness verdict: each requirement judged pass/fail with its measured value
and limit, ``ready`` only when every one passes, and concrete recommendations.

A requirement that cannot be measured (no dataset, no benchmark yet) is not passed: it is
listed with ``passed = None`` and the reason, and the model is not ready. Built-in default
requirements are the exception: they only apply where they can be measured (parity only for
variants, fairness only when the dataset has groups); so do parity requirements from metadata
or policy files on a model that has no parent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.validator.requirements import METRICS, Sourced
from shared.contracts.validation import CriterionResult

LATENCY_METRICS = ("p50_ms", "p99_ms", "throughput_ips", "memory_mb")
QUALITY_METRICS = ("accuracy", "macro_f1", "map50", "map", "r2", "mae", "rmse")


def meets(measured: float, op: str, limit: float) -> bool:
    if op == ">=":
        return measured >= limit
    if op == "<=":
        return measured <= limit
    if op == ">":
        return measured > limit
    if op == "<":
        return measured < limit
    if op == "==":
        return abs(measured - limit) <= 1e-9 * max(1.0, abs(limit))
    raise ValueError(f"unknown operator {op!r}")


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    if metric in ("structural", "parity", "fairness"):
        return "passed" if value >= 1 else "failed"
    if metric.endswith("_ms"):
        return f"{value:.3f} ms" if abs(value) >= 0.1 else f"{value:.2g} ms"
    if metric == "mcnemar_p":
        return f"{value:.3g}"
    if metric == "accuracy_drop":
        return f"{value:.2f} points"
    if metric == "throughput_ips":
        return f"{value:.1f}/s"
    if metric == "memory_mb":
        return f"{value:.1f} MiB"
    return f"{value:.4g}"


def judge(
    requirements: list[Sourced],
    measured: dict[str, float | None],
    reasons: dict[str, str] | None = None,
    not_applicable: frozenset[str] = frozenset(),
) -> list[CriterionResult]:
    """``not_applicable``: metrics that can never be measured for this model (parity figures
    of a model without a parent); a policy's requirement on them is left out, so one fleet-wide
    policy serves base models and variants alike. The request's own requirements are kept."""
    reasons = reasons or {}
    out = []
    for item in requirements:
        req = item.requirement
        value = measured.get(req.metric)
        if value is None or value != value:  # None or NaN
            if item.source == "default" or (req.metric in not_applicable and item.source != "request"):
                continue  # applies only where it can be measured
            why = reasons.get(req.metric, "not measured")
            out.append(
                CriterionResult(
                    metric=req.metric,
                    op=req.op,
                    limit=req.value,
                    measured=None,
                    passed=None,
                    message=f"{req.metric} could not be measured: {why}",
                    source=item.source,
                )
            )
            continue
        passed = meets(value, req.op, req.value)
        verb = "meets" if passed else "fails"
        if req.metric in ("structural", "parity", "fairness"):
            text = f"{req.metric} check {'passed' if value >= 1 else 'failed'}"
            if req.value != 1.0 or req.op != ">=":
                text += f" ({verb} {req.op} {req.value:g})"
        else:
            text = f"{req.metric} {_fmt(req.metric, value)} {verb} {req.op} {_fmt(req.metric, req.value)}"
        out.append(
            CriterionResult(
                metric=req.metric,
                op=req.op,
                limit=req.value,
                measured=float(value),
                passed=passed,
                message=text,
                source=item.source,
            )
        )
    return out


def is_ready(criteria: list[CriterionResult]) -> bool:
    return all(c.passed is True for c in criteria)


READY = "ready"
NOT_READY = "not_ready"
NOT_VALIDATED_FOR_ACCURACY = "not_validated_for_accuracy"
VERDICT_WORDS = {
    READY: "READY",
    NOT_READY: "NOT READY",
    NOT_VALIDATED_FOR_ACCURACY: "NOT VALIDATED FOR ACCURACY",
}


def verdict(criteria: list[CriterionResult], has_dataset: bool, ready_without_dataset: bool = False) -> str:
    """Without a dataset nothing shows the model answers right: meeting every structural and
    performance requirement is then "not validated for accuracy", not READY (a verdict needs
    evidence), unless the operator opted in (``validator_ready_without_dataset``). A failed or
    unmeasured requirement is NOT READY either way."""
    if not is_ready(criteria):
        return NOT_READY
    if not has_dataset and not ready_without_dataset:
        return NOT_VALIDATED_FOR_ACCURACY
    return READY


@dataclass(frozen=True)
class Candidate:
    """What the registry knows of a related variant (its latest published figures)."""

    ref: str
    variant: str
    accuracy: float | None = None
    p99_ms: float | None = None
    throughput_ips: float | None = None
    ready: bool | None = None


@dataclass
class Context:
    ref: str
    variant: str
    parent: Candidate | None = None
    siblings: list[Candidate] = field(default_factory=list)
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    mcnemar: dict[str, Any] | None = None  # parity.McNemar.as_dict()
    alpha: float = 0.05
    parity_problems: list[str] = field(default_factory=list)
    structural_problems: list[str] = field(default_factory=list)
    fairness: dict[str, Any] | None = None
    noise: dict[str, Any] | None = None
    attack: dict[str, Any] | None = None
    cis: dict[str, tuple[float, float]] = field(default_factory=dict)


def _faster_alternatives(ctx: Context, limit: float, metric: str) -> list[Candidate]:
    """Related variants measured to meet a latency limit, not known to be less accurate."""
    out = []
    for c in [*ctx.siblings, *([ctx.parent] if ctx.parent else [])]:
        if c.ref == ctx.ref:
            continue
        value = c.p99_ms if metric == "p99_ms" else c.throughput_ips if metric == "throughput_ips" else None
        if value is None or not meets(value, "<=" if metric == "p99_ms" else ">=", limit):
            continue
        if ctx.accuracy is not None and c.accuracy is not None and c.accuracy < ctx.accuracy - 0.005:
            continue
        out.append(c)
    return sorted(out, key=lambda c: (-(c.accuracy or 0.0), c.p99_ms or float("inf")))


def _accurate_alternatives(ctx: Context, latency_limits: dict[str, float]) -> list[Candidate]:
    """Related variants that keep the parent's accuracy (within half a point) and meet the
    latency limits where measured; fastest first."""
    if ctx.parent is None or ctx.parent.accuracy is None:
        return []
    floor = ctx.parent.accuracy - 0.005
    out = []
    for c in ctx.siblings:
        if c.ref in (ctx.ref, ctx.parent.ref) or c.accuracy is None or c.accuracy < floor:
            continue
        p99_limit = latency_limits.get("p99_ms")
        if p99_limit is not None and (c.p99_ms is None or c.p99_ms > p99_limit):
            continue
        out.append(c)
    return sorted(out, key=lambda c: c.p99_ms if c.p99_ms is not None else float("inf"))


def recommend(criteria: list[CriterionResult], ctx: Context) -> list[str]:
    """Concrete next steps, most important first."""
    failed = {c.metric: c for c in criteria if c.passed is False}
    passed = {c.metric: c for c in criteria if c.passed is True}
    recs: list[str] = []
    if "structural" in failed and ctx.structural_problems:
        recs.append(f"fix the model before anything else: {ctx.structural_problems[0]}")
    recs += _parity_advice(ctx, criteria, failed, passed)
    recs += _latency_advice(ctx, failed)
    recs += _quality_advice(ctx, failed)
    recs += _finding_advice(ctx, failed)
    for c in criteria:
        if c.passed is None:
            hint = (
                "run the benchmarker (or publish model.benchmarked) first"
                if c.metric in LATENCY_METRICS
                else "give a labelled dataset (--dataset) with the arrays this check needs"
            )
            recs.append(f"{c.message}; {hint}")
    if not recs and criteria and is_ready(criteria):
        recs.append(f"ready: meets all {len(criteria)} requirements")
    return recs


def _parity_advice(
    ctx: Context,
    criteria: list[CriterionResult],
    failed: dict[str, CriterionResult],
    passed: dict[str, CriterionResult],
) -> list[str]:
    """A variant against its parent: a significant accuracy loss, a parity failure, or the
    news that it keeps the parent's accuracy."""
    mcnemar = ctx.mcnemar
    if mcnemar is None or ctx.parent is None:
        if ctx.parity_problems and "parity" in failed:
            return [f"parity with the parent fails: {ctx.parity_problems[0]}"]
        return []
    drop = float(mcnemar["accuracy_drop_points"])
    p = float(mcnemar["p_value"])
    if p < ctx.alpha and drop > 0:
        latency_limits = {c.metric: c.limit for c in criteria if c.metric in LATENCY_METRICS}
        meets_latency = [k for k in latency_limits if k in passed]
        alternatives = _accurate_alternatives(ctx, latency_limits)
        prefer = (
            f"prefer {alternatives[0].variant}"
            if alternatives
            else f"prefer {ctx.parent.variant} ({ctx.parent.ref})"
            if "int8" not in ctx.variant
            else "recalibrate (int8-static with more calibration data) or prefer "
            f"{ctx.parent.variant} ({ctx.parent.ref})"
        )
        lead = (
            f"{ctx.variant} meets the latency limit but loses"
            if meets_latency and "p99_ms" in passed
            else f"{ctx.variant} loses"
        )
        return [f"{lead} {drop:.1f} points of accuracy, McNemar p={p:.2g}; {prefer}"]
    if ctx.parity_problems and "parity" in failed:
        return [
            f"{ctx.variant} differs from {ctx.parent.variant}: {ctx.parity_problems[0]}; if this precision "
            "legitimately differs that much, relax the tolerance with options.parity"
        ]
    return [
        f"{ctx.variant} keeps {ctx.parent.variant}'s accuracy ({-drop:+.1f} points, McNemar p={p:.2g}, not significant)"
    ]


def _latency_advice(ctx: Context, failed: dict[str, CriterionResult]) -> list[str]:
    """A missed latency, throughput or memory limit: a related variant that meets it, else
    what would help."""
    recs: list[str] = []
    for metric in ("p99_ms", "p50_ms", "throughput_ips", "memory_mb"):
        c = failed.get(metric)
        if c is None or c.measured is None:
            continue
        alternatives = _faster_alternatives(ctx, c.limit, metric) if metric in ("p99_ms", "throughput_ips") else []
        if alternatives:
            alt = alternatives[0]
            figure = f"{_fmt('p99_ms', alt.p99_ms)} p99" if metric == "p99_ms" else f"{alt.throughput_ips:.1f}/s"
            acc = f", accuracy {alt.accuracy:.4f}" if alt.accuracy is not None else ""
            recs.append(
                f"{metric} {_fmt(metric, c.measured)} misses the limit {_fmt(metric, c.limit)}; "
                f"{alt.variant} measures {figure}{acc}: deploy {alt.ref}"
            )
        elif metric.endswith("_ms"):
            over = 100.0 * (c.measured / c.limit - 1.0) if c.limit else float("inf")
            recs.append(
                f"{metric} {_fmt(metric, c.measured)} is {over:.0f}% over the {_fmt(metric, c.limit)} limit: "
                "convert to a faster variant (ort-opt, fp16 on GPU, int8-dynamic) or benchmark with more "
                "intra-op threads"
            )
        elif metric == "throughput_ips":
            recs.append(
                f"throughput {_fmt(metric, c.measured)} is below {_fmt(metric, c.limit)}: larger batches, more "
                "concurrency or a quantised variant"
            )
        else:
            recs.append(
                f"peak memory {_fmt(metric, c.measured)} exceeds {_fmt(metric, c.limit)}: an int8 or fp16 variant "
                "roughly halves or quarters the weights"
            )
    return recs


def _quality_advice(ctx: Context, failed: dict[str, CriterionResult]) -> list[str]:
    """A missed quality limit, and whether the 95% interval says more data would tell."""
    recs: list[str] = []
    for metric in QUALITY_METRICS + tuple(k for k in failed if k.startswith("top") and k.endswith("_accuracy")):
        c = failed.get(metric)
        if c is None or c.measured is None:
            continue
        ci = ctx.cis.get(metric)
        hib = METRICS.get(metric, ("", "", True))[2]
        if ci is not None:
            low, high = ci
            beyond = high < c.limit if hib else low > c.limit
            where = (
                f"the whole 95% CI [{low:.4f}, {high:.4f}] misses it: retrain or relax the requirement"
                if beyond
                else f"the 95% CI [{low:.4f}, {high:.4f}] reaches the limit: a larger evaluation set would tell"
            )
        else:
            where = "retrain or relax the requirement"
        recs.append(f"{metric} {_fmt(metric, c.measured)} misses {c.op} {_fmt(metric, c.limit)}; {where}")
    return recs


def _finding_advice(ctx: Context, failed: dict[str, CriterionResult]) -> list[str]:
    """What the fairness, noise and attack checks found, where a requirement on them failed."""
    recs: list[str] = []
    gaps = ctx.fairness
    if gaps and any(k in failed for k in ("fairness", "eo_difference", "dp_difference", "worst_group_accuracy")):
        recs.append(
            f"group {gaps['worst_group']!r} is disadvantaged: accuracy {gaps['worst_group_accuracy']:.3f} vs "
            f"{gaps['best_group_accuracy']:.3f} for the best group (equalized-odds difference "
            f"{gaps['eo_difference']:.3f}, p={gaps['p_value']:.2g}); collect or reweight training data for that "
            "group, or calibrate per-group thresholds"
        )
    noise = ctx.noise
    if noise and any(k in failed for k in ("robust_accuracy", "noise_breakpoint")):
        where = (
            f"accuracy falls by more than {100 * noise['max_drop']:.0f} points at noise {noise['breakpoint']:g}x std"
            if noise.get("breakpoint") is not None
            else f"accuracy at noise {noise['reference_strength']:g}x std is {noise['robust_accuracy']:.3f}"
        )
        recs.append(f"{where}: train with noise augmentation or denoise inputs upstream")
    attack = ctx.attack
    if attack and "adversarial_accuracy" in failed:
        queries = attack.get("queries_median_success")
        q = f" with a median of {queries:.0f} queries" if queries is not None else ""
        recs.append(
            f"a black-box attack within epsilon {attack['epsilon']:g} breaks {100 * attack['success_rate']:.0f}% "
            f"of correctly classified samples{q}: consider adversarial training, input quantisation or "
            "rate-limiting queries"
        )
    return recs
