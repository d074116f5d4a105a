"""The suite's checks, one function each: ``check(state) -> CheckResult | None`` (None when the
state lacks what the check reads; ``plan_checks`` keeps that from happening). Each reads the
shared ``SuiteState`` and returns its outcome and figures; none writes into another's.

Seeded choices (rows, noise, the attack) use the config's seed with a salt per check, so every
figure is reproducible."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from msgspec.structs import replace as replace_struct

from services.validator import fairness, metrics, parity, robustness
from services.validator.errors import OptionsError, OutputError, ValidationFailure
from services.validator.runner import (
    ClassifierOutput,
    interpret_detections,
    regression_values,
    seeded_inputs,
)
from services.validator.state import CheckResult, Classify, SuiteInput, SuiteState
from services.validator.structural import check_structure
from shared import inputs as resolved_inputs
from shared.contracts.validation import CheckOutcome
from shared.datasets import Dataset
from shared.errors import InferlabError, InvalidDataset

CONFUSION_MAX_CLASSES = 50
# Parity on a model without a batch axis: at most this many single-sample calls each.
UNBATCHED_PARITY_CALLS = 16
CLASSIFIERS = ("classification", "text-classification")


# --- structural ---------------------------------------------------------------------------


def structural_check(state: SuiteState) -> CheckResult:
    """The model runs on seeded inputs (else seeded dataset rows), finite and deterministic."""
    inp, config, runner, dataset = state.inp, state.config, state.inp.runner, state.dataset
    n = config.structural_samples
    try:
        seeded, run_fn, batched = _seeded(inp, n, config.seed)
        source = "seeded synthetic inputs"
        if inp.resolved and not state.options.get("shapes"):
            source += " at the shapes resolved at registration"
    except InferlabError:
        if dataset is None:
            raise
        seeded, run_fn, batched = _rows(dataset.inputs, _seeded_rows(dataset.samples, n, config.seed, 2)), None, True
        source = "seeded dataset rows"
    result = check_structure(
        run_fn or (lambda f: runner.run(f)),
        runner.inputs,
        runner.declared_outputs,
        seeded,
        call_rows=runner.fixed_batch or runner.batch_size,
        batched=batched,
    )
    figures = result.figures()
    figures["inputs"] = source
    warned = f"; {len(result.warnings)} warnings: {'; '.join(result.warnings[:2])}" if result.warnings else ""
    one_call = " (one call at a time)" if not batched or runner.fixed_batch else ""
    summary = (
        f"runs on {result.samples} {source}{one_call}; outputs finite; deterministic{warned}"
        if result.passed
        else "; ".join(result.problems[:3])
    )
    outcome = CheckOutcome(
        name="structural", status="passed" if result.passed else "failed", summary=summary, figures=plain(figures)
    )
    return CheckResult(outcome, {"structural": 1.0 if result.passed else 0.0}, problems=result.problems)


# --- task metrics -------------------------------------------------------------------------


def metrics_check(state: SuiteState) -> CheckResult | None:
    """Task metrics on the one pass: mAP for detectors, errors for regressors, accuracy,
    macro-F1 and top-k (with bootstrap intervals) for classifiers."""
    dataset, outputs = state.dataset, state.outputs
    if dataset is None or outputs is None:
        return None
    if state.task == "detection":
        return _detection_metrics(dataset, outputs, state)
    if state.task == "regression":
        return _regression_metrics(dataset, outputs, state)
    if state.pred is None or state.truth is None:
        return None
    return _classification_metrics(state.pred, state.truth, state)


def _detection_metrics(dataset: Dataset, outputs: dict[str, Any], state: SuiteState) -> CheckResult:
    opts, config = state.options, state.config
    detections = interpret_detections(outputs, opts)
    try:
        gts = metrics.split_ground_truth(
            dataset.extras["gt_boxes"], dataset.extras["gt_classes"], dataset.extras["gt_counts"]
        )
    except (KeyError, ValueError) as exc:
        raise InvalidDataset(f"detection ground truth: {exc}") from None
    if len(gts) != len(detections):
        raise InvalidDataset(f"detection ground truth covers {len(gts)} images, the model saw {len(detections)}")
    found = metrics.detection_metrics(
        detections,
        gts,
        max_dets=int(opts.get("max_dets", 100)),
        n_boot=min(config.bootstrap, 200),
        seed=config.seed,
    )
    intervals = {key: found[f"{key}_ci"] for key in ("map50", "map") if f"{key}_ci" in found}
    outcome = CheckOutcome(
        name="metrics",
        status="passed",
        summary=f"mAP@0.5 {found['map50']:.4f}, mAP@[.5:.95] {found['map']:.4f} on {found['images']} images",
        figures=plain({**found, "layout": opts.get("detection_layout", "boxes_scores_classes")}),
    )
    return CheckResult(outcome, {"map50": found["map50"], "map": found["map"]}, intervals)


def _regression_metrics(dataset: Dataset, outputs: dict[str, Any], state: SuiteState) -> CheckResult:
    config = state.config
    if dataset.labels is None:
        raise InvalidDataset("regression metrics need 'labels'")
    values = regression_values(outputs, state.options.get("regression_output"))
    y = np.asarray(dataset.labels, dtype=np.float64)
    if values.size != y.size:
        values = values.reshape(len(y), -1)
    errors = metrics.regression_metrics(y, values.reshape(y.shape))
    squared = ((values.reshape(y.shape) - y).reshape(len(y), -1) ** 2).mean(axis=1)
    rmse_ci = metrics.bootstrap_statistic(
        lambda w: float(np.sqrt((w * squared).sum() / w.sum())),
        len(y),
        n_boot=min(config.bootstrap, 500),
        seed=config.seed,
    )
    outcome = CheckOutcome(
        name="metrics",
        status="passed",
        summary=f"RMSE {errors['rmse']:.4g}, MAE {errors['mae']:.4g}, R2 {errors['r2']:.4f} on {len(y)} samples",
        figures=plain(errors),
    )
    return CheckResult(outcome, dict(errors), {"rmse": rmse_ci.as_list()})


def _classification_metrics(pred: ClassifierOutput, truth: np.ndarray, state: SuiteState) -> CheckResult:
    config = state.config
    ks = [int(k) for k in state.options.get("top_k", [5])]
    scored = metrics.classification_metrics(truth, pred.indices, pred.classes, pred.scores, ks)
    n_classes = len(pred.classes)
    acc_ci = metrics.bootstrap_proportion(truth == pred.indices, n_boot=config.bootstrap, seed=config.seed)
    f1_ci = metrics.bootstrap_macro_f1(truth, pred.indices, n_classes, n_boot=config.bootstrap, seed=config.seed)
    intervals = {"accuracy": acc_ci.as_list(), "macro_f1": f1_ci.as_list()}
    measured: dict[str, float | None] = {"accuracy": scored.accuracy, "macro_f1": scored.macro_f1}
    for k, value in scored.top_k.items():
        measured[f"top{k}_accuracy"] = value
        hits = metrics.top_k_hits(truth, pred.scores, k) if pred.scores is not None else None
        if hits is not None:
            intervals[f"top{k}_accuracy"] = metrics.bootstrap_proportion(
                hits, n_boot=config.bootstrap, seed=config.seed + k
            ).as_list()
    spread = metrics.fold_spread(truth, pred.indices, n_classes, k=config.folds, seed=config.seed)
    figures: dict[str, Any] = {
        "accuracy": scored.accuracy,
        "accuracy_ci": acc_ci.as_list(),
        "macro_f1": scored.macro_f1,
        "macro_f1_ci": f1_ci.as_list(),
        "top_k": {str(k): v for k, v in scored.top_k.items()},
        "per_class": scored.per_class(),
        "fold_spread": spread,
        "bootstrap": config.bootstrap,
        "classes": len(pred.classes),
        "score_output": pred.score_output,
        "label_output": pred.label_output,
    }
    if n_classes <= CONFUSION_MAX_CLASSES:
        figures["confusion_matrix"] = {"classes": pred.classes, "rows_true_cols_predicted": scored.confusion}
    top = "".join(f", top-{k} {v:.4f}" for k, v in scored.top_k.items())
    sd = f" (fold std {spread['accuracy']['std']:.4f})" if spread else ""
    summary = (
        f"accuracy {scored.accuracy:.4f} [95% CI {acc_ci.low:.4f}, {acc_ci.high:.4f}]{sd}, macro-F1 "
        f"{scored.macro_f1:.4f}{top} on {len(truth)} samples"
    )
    outcome = CheckOutcome(name="metrics", status="passed", summary=summary, figures=plain(figures))
    return CheckResult(outcome, measured, intervals)


# --- parity -------------------------------------------------------------------------------


def parity_check(state: SuiteState) -> CheckResult | None:
    """The variant against its parent on the dataset (else seeded inputs) within its
    precision family's tolerance, with McNemar's test on the labels where it has them."""
    inp = state.inp
    if inp.parent_runner is None:
        return None
    tolerance = _parity_tolerance(state)
    parent_out, cand_out, source = _parity_outputs(state)
    on_pass = cand_out is state.outputs
    p_labels = v_labels = p_scores = v_scores = None
    if state.task in CLASSIFIERS:
        try:
            v_pred = (
                state.pred if (state.pred is not None and on_pass) else Classify(inp.runner, inp.options).read(cand_out)
            )
            p_cls = Classify(inp.parent_runner, inp.options)
            p_cls.classes = v_pred.classes
            p_pred = p_cls.read(parent_out)
            p_labels, v_labels = p_pred.indices, v_pred.indices
            p_scores, v_scores = p_pred.scores, v_pred.scores
        except OutputError:
            pass
    result = parity.compare(
        parent_out,
        cand_out,
        tolerance=tolerance,
        parent_labels=p_labels,
        variant_labels=v_labels,
        parent_scores=p_scores,
        variant_scores=v_scores,
        truth=state.truth if (state.truth is not None and on_pass) else None,
        inputs=source,
    )
    return _parity_result(result, tolerance, source, inp.parent_ref)


def _parity_tolerance(state: SuiteState) -> parity.Tolerance:
    overrides = state.options.get("parity")
    if overrides is not None and not isinstance(overrides, dict):
        raise OptionsError("option 'parity' must be a table of tolerances")
    try:
        tolerance = parity.tolerance_for(state.inp.variant, overrides)
    except ValueError as exc:
        raise OptionsError(str(exc)) from None
    if overrides and "alpha" not in overrides:
        tolerance = replace(tolerance, alpha=state.config.alpha)
    return tolerance


def _parity_outputs(state: SuiteState) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(parent outputs, variant outputs, what they ran on): the dataset pass where there is
    one, else seeded inputs (one call per sample for a model without a batch axis)."""
    inp, config, runner, parent = state.inp, state.config, state.inp.runner, state.inp.parent_runner
    assert parent is not None  # parity_check runs only on variants
    if state.dataset is not None and state.feeds is not None and state.outputs is not None:
        source = f"dataset ({len(next(iter(state.feeds.values())))} samples)"
        try:
            parent_out = parent.run(parent.prepare(state.dataset.inputs), prepared=True)
        except InferlabError as exc:
            raise ValidationFailure.within(f"the parent {inp.parent_ref}", exc) from None
        return parent_out, state.outputs, source
    n = max(config.structural_samples, 64)
    seeded, _, batched = _seeded(inp, n, config.seed)
    if batched:
        cand_out, parent_out = runner.run(seeded), parent.run(seeded)
    else:  # no batch axis: one call per seeded sample, outputs stacked sample by sample
        n = min(n, UNBATCHED_PARITY_CALLS)
        dtypes = {s.name: s.dtype for s in runner.inputs}
        calls = [resolved_inputs.feeds(inp.resolved, 1, config.seed + i, dtypes=dtypes) for i in range(n)]
        cand_out = _stack([runner.call(f) for f in calls])
        parent_out = _stack([parent.call(f) for f in calls])
    return parent_out, cand_out, f"seeded synthetic inputs ({n} samples)"


def _parity_result(
    result: parity.ParityResult, tolerance: parity.Tolerance, source: str, parent_ref: str | None
) -> CheckResult:
    measured: dict[str, float | None] = {"parity": 1.0 if result.passed else 0.0}
    if result.top1_agreement is not None:
        measured["top1_agreement"] = result.top1_agreement
    mcnemar = result.mcnemar
    if mcnemar is not None:
        measured["accuracy_drop"] = mcnemar.accuracy_drop_points
        measured["mcnemar_p"] = mcnemar.p_value
    if result.passed:
        parts = [f"matches {parent_ref} within the {tolerance.family} tolerance on {source}"]
        if result.top1_agreement is not None:
            parts.append(f"top-1 agreement {result.top1_agreement:.4f}")
    else:
        parts = [p for p in result.problems[:3] if not p.startswith("accuracy falls")]
    if mcnemar is not None:
        parts.append(
            f"accuracy {mcnemar.parent_accuracy:.4f} -> {mcnemar.variant_accuracy:.4f}, "
            f"McNemar p={mcnemar.p_value:.2g} (b={mcnemar.b}, c={mcnemar.c})"
        )
    figures = result.figures()
    figures["parent"] = parent_ref
    outcome = CheckOutcome(
        name="parity", status="passed" if result.passed else "failed", summary="; ".join(parts), figures=plain(figures)
    )
    advice = mcnemar.as_dict() if mcnemar is not None else None
    return CheckResult(outcome, measured, problems=result.problems, advice=advice)


# --- fairness -----------------------------------------------------------------------------


def fairness_check(state: SuiteState) -> CheckResult | None:
    """Per-group rates of a classifier and the largest gaps between groups."""
    dataset, pred, truth, opts = state.dataset, state.pred, state.truth, state.options
    if dataset is None or dataset.groups is None or pred is None or truth is None:
        return None
    positive = None
    if "positive_label" in opts:
        idx, _ = metrics.encode(np.array([opts["positive_label"]]), pred.classes)
        positive = int(idx[0])
        if positive >= len(pred.classes):
            raise OptionsError(f"positive_label {opts['positive_label']!r} is not one of the model's classes")
    gaps = fairness.group_fairness(
        truth,
        pred.indices,
        dataset.groups,
        len(pred.classes),
        positive=positive,
        classes=pred.classes,
        max_gap=float(opts.get("fairness_max_gap", fairness.DEFAULT_MAX_GAP)),
        alpha=state.config.alpha,
    )
    figures = plain(gaps.figures())
    outcome = CheckOutcome(
        name="fairness",
        status="failed" if gaps.detected else "passed",
        summary=(
            f"{len(gaps.per_group)} groups; equalized-odds difference {gaps.eo_difference:.3f}, demographic-parity "
            f"difference {gaps.dp_difference:.3f}; worst group {gaps.worst_group!r} accuracy "
            f"{gaps.worst_group_accuracy:.3f} (p={gaps.p_value:.2g})"
            + ("; disparity detected" if gaps.detected else "")
        ),
        figures=figures,
    )
    measured: dict[str, float | None] = {
        "eo_difference": gaps.eo_difference,
        "dp_difference": gaps.dp_difference,
        "worst_group_accuracy": gaps.worst_group_accuracy,
        "fairness": 0.0 if gaps.detected else 1.0,
    }
    return CheckResult(outcome, measured, advice=figures)


# --- robustness: noise --------------------------------------------------------------------


def noise_check(state: SuiteState) -> CheckResult | None:
    """Accuracy under Gaussian noise of growing strength on the float inputs."""
    dataset, feeds, classify, opts = state.dataset, state.feeds, state.classify, state.options
    if dataset is None or dataset.labels is None or feeds is None:
        return None
    config, runner = state.config, state.inp.runner
    index = _seeded_rows(dataset.samples, config.noise_samples, config.seed, 3)
    if classify.classes is None:  # no full pass ran: learn the class order from one sample
        classify.read(runner.run(_rows(feeds, index[:1]), prepared=True))
    assert classify.classes is not None  # read() sets it
    noise_truth, _ = metrics.encode(dataset.labels[index], classify.classes)
    levels = [float(v) for v in opts.get("noise_levels", robustness.DEFAULT_NOISE_LEVELS)]
    levels += [float(s.requirement.value) for s in state.inp.requirements if s.requirement.metric == "noise_breakpoint"]
    curve = robustness.noise_curve(
        classify.predict,
        _rows(feeds, index),
        noise_truth,
        runner.float_inputs,
        levels=levels,
        max_drop=float(opts.get("noise_max_drop", robustness.DEFAULT_MAX_DROP)),
        reference_level=float(opts.get("noise_reference", robustness.DEFAULT_REFERENCE_LEVEL)),
        seed=config.seed,
    )
    figures = plain(curve.figures())
    bp = curve.breakpoint
    falls = (
        f"falls by more than {100 * curve.max_drop:.0f} points at {bp:g}x std"
        if bp is not None
        else f"never falls by more than {100 * curve.max_drop:.0f} points up to {max(curve.levels):g}x std"
    )
    outcome = CheckOutcome(
        name="robustness",
        status="passed",
        summary=(
            f"accuracy {curve.clean_accuracy:.3f} clean, {curve.reference_accuracy:.3f} at noise "
            f"{curve.reference_level:g}x std; {falls}"
        ),
        figures=figures,
    )
    measured: dict[str, float | None] = {
        "robust_accuracy": curve.reference_accuracy,
        "noise_breakpoint": bp if bp is not None else max(curve.levels),
    }
    return CheckResult(outcome, measured, advice=figures)


# --- robustness: adversarial --------------------------------------------------------------


def attack_check(state: SuiteState) -> CheckResult | None:
    """A score-based black-box attack within an L-inf budget on one float input."""
    dataset, feeds, classify, opts = state.dataset, state.feeds, state.classify, state.options
    if dataset is None or dataset.labels is None or feeds is None:
        return None
    config, runner = state.config, state.inp.runner
    name = opts.get("attack_input") or runner.float_inputs[0]
    if name not in runner.float_inputs:
        raise OptionsError(f"attack_input {name!r} is not a float input of the model ({runner.float_inputs})")
    index = _seeded_rows(dataset.samples, config.attack_samples, config.seed, 4)
    sub = _rows(feeds, index)
    if classify.classes is None:
        classify.read(runner.run(_rows(feeds, index[:1]), prepared=True))
    assert classify.classes is not None  # read() sets it
    truth, _ = metrics.encode(dataset.labels[index], classify.classes)
    x_all = feeds[name]
    value_range = (float(np.min(x_all)), float(np.max(x_all)))

    def scores_fn(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        # other inputs (masks, side features) follow the rows still under attack
        return classify.scores({**_rows(sub, rows), name: x})

    attack = robustness.square_attack(
        scores_fn,
        sub[name],
        truth,
        epsilon=config.attack_epsilon,
        value_range=value_range,
        max_queries=config.attack_queries,
        time_budget_s=config.attack_time_s,
        seed=config.seed,
        p_init=float(opts.get("attack_p_init", 0.1)),
    )
    figures = attack.figures()
    figures["input"] = name
    figures["value_range"] = list(value_range)
    q = f", median {attack.queries_median_success:.0f} queries per success" if attack.queries_median_success else ""
    outcome = CheckOutcome(
        name="adversarial",
        status="passed",
        summary=(
            f"accuracy {attack.clean_accuracy:.3f} -> {attack.adversarial_accuracy:.3f} under an L-inf attack with "
            f"epsilon {attack.epsilon:g} of the input range ({attack.samples} samples{q}; stopped by "
            f"{attack.stopped_by})"
        ),
        figures=plain(figures),
    )
    return CheckResult(outcome, {"adversarial_accuracy": attack.adversarial_accuracy}, advice=plain(figures))


# The checks in the order they run (the report lists them in the order of contracts CHECKS).
CHECK_FUNCTIONS: dict[str, Callable[[SuiteState], CheckResult | None]] = {
    "structural": structural_check,
    "metrics": metrics_check,
    "parity": parity_check,
    "fairness": fairness_check,
    "robustness": noise_check,
    "adversarial": attack_check,
}


# --- helpers ------------------------------------------------------------------------------


def _stack(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Outputs of one call per sample, stacked on a new leading axis (lists concatenated)."""
    out: dict[str, Any] = {}
    for name in parts[0]:
        values = [p[name] for p in parts]
        if all(isinstance(v, np.ndarray) for v in values) and len({v.shape for v in values}) == 1:
            out[name] = np.stack(values)
        elif all(isinstance(v, list) for v in values):
            out[name] = [item for v in values for item in v]
        else:
            out[name] = values[0]
    return out


def _seeded(inp: SuiteInput, n: int, seed: int) -> tuple[dict[str, np.ndarray], Callable[..., Any] | None, bool]:
    """Seeded inputs for ``n`` samples, fed at a batch the model accepts: (feeds, a run
    function for a model without a batch axis or None for ``runner.run``, batched). The
    record's resolved inputs (shared/inputs.py) give shapes and value ranges; a request's
    ``shapes`` option wins."""
    runner = inp.runner
    shapes = inp.options.get("shapes")
    if shapes or not inp.resolved:
        return seeded_inputs(runner.inputs, n, seed, shapes=shapes, int_bounds=runner.facts.int_bounds), None, True
    dtypes = {s.name: s.dtype for s in runner.inputs}
    if resolved_inputs.fixed_batch(inp.resolved):
        if runner.fixed_batch is None:  # no batch axis at all: one call on one resolved sample
            return resolved_inputs.feeds(inp.resolved, 1, seed, dtypes=dtypes), runner.call, False
        # a fixed leading size (batch 1): stack samples on it; Runner.run feeds one call at a time
        table = [
            replace_struct(r, batch_axis=0) if r.shape and r.shape[0] == runner.fixed_batch else r for r in inp.resolved
        ]
        return resolved_inputs.feeds(table, n, seed, dtypes=dtypes), None, True
    return resolved_inputs.feeds(inp.resolved, n, seed, dtypes=dtypes), None, True


def plain(obj: Any) -> Any:
    """JSON-safe builtins: numpy scalars and arrays unwrapped, NaN and inf as None."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        return plain(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _rows(feeds: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in feeds.items()}


def _seeded_rows(n_total: int, n: int, seed: int, salt: int) -> np.ndarray:
    if n >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng([seed, salt])
    return np.sort(rng.choice(n_total, size=n, replace=False))
