"""One validation, start to finish, without NATS: decide which checks the inputs allow, run the
model once over the dataset, feed every check from that one pass (plus the extra passes that
parity, noise and the attack need by their nature), judge the requirements and assemble the
report. The service resolves models, datasets and requirements and calls ``run_suite``; the
benchmark calls it directly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from msgspec.structs import replace as replace_struct

from services.validator import fairness as fairness_mod
from services.validator import metrics as m
from services.validator import parity as parity_mod
from services.validator import readiness, robustness
from services.validator.requirements import Sourced
from services.validator.runner import (
    ClassifierOutput,
    OutputError,
    Runner,
    interpret_classifier,
    interpret_detections,
    regression_values,
    seeded_inputs,
)
from services.validator.structural import check_structure
from shared import inputs as inputs_mod
from shared.contracts.registry import INPUTS_NEED_SPEC, ResolvedInput
from shared.contracts.validation import CHECKS, CheckOutcome, CriterionResult, ValidationReport
from shared.datasets import Dataset
from shared.errors import InferlabError

ALL_CHECKS = CHECKS
TASKS = ("classification", "text-classification", "detection", "regression")
_TASK_ALIASES = {
    "image-classification": "classification",
    "tabular-classification": "classification",
    "classifier": "classification",
    "object-detection": "detection",
    "detector": "detection",
    "text_classification": "text-classification",
    "sentiment": "text-classification",
    "regressor": "regression",
    "tabular-regression": "regression",
}
KNOWN_OPTIONS = {
    "task": "classification, text-classification, detection or regression (default: the model's task)",
    "seed": "seed of every random choice (default 0)",
    "score_output": "output holding class scores",
    "label_output": "output holding predicted labels",
    "regression_output": "output holding regression values",
    "positive_label": "positive class of a binary task, for fairness rates",
    "top_k": "k values for top-k accuracy (default [5])",
    "bootstrap": "bootstrap resamples",
    "folds": "stratified folds",
    "max_samples": "most dataset samples used",
    "structural_samples": "seeded samples for the structural check",
    "shapes": "{input: shape} for dynamic dimensions of seeded inputs",
    "batch_size": "samples per inference call",
    "alpha": "significance level of the statistical tests (default 0.05)",
    "parity": "parity tolerances {rtol, atol, min_top1, min_cosine, alpha}",
    "fairness_max_gap": "equalized-odds difference above which a significant disparity fails (default 0.1)",
    "noise_levels": "noise strengths as multiples of the input std",
    "noise_max_drop": "accuracy drop that marks the noise breaking point (default 0.05)",
    "noise_reference": "noise strength at which robust_accuracy is read (default 0.1)",
    "noise_samples": "samples for the noise curve",
    "attack_epsilon": "L-inf budget as a fraction of the input range",
    "attack_queries": "most queries per attacked sample",
    "attack_samples": "samples attacked",
    "attack_time_s": "time budget of the attack",
    "attack_input": "float input to perturb (default: the first)",
    "attack_p_init": "initial share of features changed per attack step (default 0.1)",
    "detection_layout": "detector output adapter (boxes_scores_classes, packed, ...)",
    "box_format": "xyxy, xywh or cxcywh",
    "boxes_output": "detector output with boxes",
    "scores_output": "detector output with scores",
    "classes_output": "detector output with classes",
    "count_output": "detector output with valid-detection counts",
    "detections_output": "packed detector output",
    "max_dets": "detections per image and class kept for mAP, as COCOeval (default 100)",
}
CONFUSION_MAX_CLASSES = 50


class OptionsError(InferlabError):
    code = "invalid_options"


class UnknownCheck(InferlabError):
    code = "unknown_check"


@dataclass
class SuiteConfig:
    seed: int = 0
    max_samples: int = 10_000
    structural_samples: int = 16
    bootstrap: int = 1_000
    folds: int = 5
    noise_samples: int = 2_000
    attack_epsilon: float = 0.05
    attack_queries: int = 2_000
    attack_samples: int = 100
    attack_time_s: float = 20.0
    alpha: float = 0.05
    ready_without_dataset: bool = False

    @classmethod
    def from_settings(cls, settings: Any, options: dict[str, Any]) -> SuiteConfig:
        config = cls(
            max_samples=settings.validator_max_samples,
            structural_samples=settings.validator_structural_samples,
            bootstrap=settings.validator_bootstrap,
            folds=settings.validator_folds,
            noise_samples=settings.validator_noise_samples,
            attack_epsilon=settings.validator_attack_epsilon,
            attack_queries=settings.validator_attack_queries,
            attack_samples=settings.validator_attack_samples,
            attack_time_s=settings.validator_attack_time_s,
            ready_without_dataset=bool(getattr(settings, "validator_ready_without_dataset", False)),
        )
        return config.with_options(options)

    def with_options(self, options: dict[str, Any]) -> SuiteConfig:
        check_options(options)
        changes: dict[str, Any] = {}
        for key in (
            "seed",
            "max_samples",
            "structural_samples",
            "bootstrap",
            "folds",
            "noise_samples",
            "attack_queries",
            "attack_samples",
        ):
            if key in options:
                changes[key] = _int_option(options, key, minimum=0 if key == "seed" else 1)
        for key in ("attack_epsilon", "attack_time_s", "alpha"):
            if key in options:
                changes[key] = _float_option(options, key)
        return replace(self, **changes)


_NUMBER_OPTIONS = ("alpha", "fairness_max_gap", "noise_max_drop", "noise_reference", "attack_p_init")
_NAME_OPTIONS = (
    "task",
    "score_output",
    "label_output",
    "regression_output",
    "attack_input",
    "detection_layout",
    "box_format",
    "boxes_output",
    "scores_output",
    "classes_output",
    "count_output",
    "detections_output",
)


def check_options(options: dict[str, Any]) -> None:
    """Refuse unknown options and values of the wrong kind up front (``invalid_options``),
    rather than failing halfway through a check."""
    unknown = sorted(set(options) - set(KNOWN_OPTIONS))
    if unknown:
        raise OptionsError(f"unknown option(s) {unknown}; known: {', '.join(sorted(KNOWN_OPTIONS))}")
    for key in _NUMBER_OPTIONS:
        if key in options:
            _float_option(options, key)
    for key in _NAME_OPTIONS:
        if key in options and not isinstance(options[key], str):
            raise OptionsError(f"option {key!r} must be a text, not {options[key]!r}")
    if "task" in options and normalise_task(options["task"]) is None:
        raise OptionsError(f"option 'task' must be one of {', '.join(TASKS)}, not {options['task']!r}")
    for key, minimum in (("noise_levels", 0.0), ("top_k", 1)):
        if key in options:
            values = options[key]
            if (
                not isinstance(values, list)
                or not values
                or not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= minimum for v in values)
            ):
                raise OptionsError(f"option {key!r} must be a non-empty list of numbers >= {minimum}, not {values!r}")
    if "shapes" in options:
        shapes = options["shapes"]
        if not isinstance(shapes, dict) or not all(
            isinstance(v, list) and all(isinstance(d, int) and d > 0 for d in v) for v in shapes.values()
        ):
            raise OptionsError(f"option 'shapes' must map input names to lists of positive sizes, not {shapes!r}")
    if "parity" in options and not isinstance(options["parity"], dict):
        raise OptionsError("option 'parity' must be a table of tolerances {rtol, atol, min_top1, min_cosine, alpha}")


def _int_option(options: dict[str, Any], key: str, minimum: int = 0) -> int:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < minimum:
        raise OptionsError(f"option {key!r} must be an integer >= {minimum}, not {value!r}")
    return int(value)


def _float_option(options: dict[str, Any], key: str) -> float:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise OptionsError(f"option {key!r} must be a non-negative number, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class Perf:
    """Benchmark figures for readiness: from the triggering model.benchmarked event, else the
    registry's latest signals."""

    p50_ms: float | None = None
    p99_ms: float | None = None
    throughput_ips: float | None = None
    peak_memory_bytes: int | None = None
    source: str = ""


@dataclass
class SuiteInput:
    ref: str
    variant: str
    runner: Runner
    requirements: list[Sourced]
    dataset: Dataset | None = None
    dataset_uri: str | None = None
    dataset_sha256: str | None = None
    task: str | None = None
    parent_runner: Runner | None = None
    parent_ref: str | None = None
    parent_variant: str | None = None
    checks: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    perf: Perf | None = None
    parent: readiness.Candidate | None = None
    siblings: list[readiness.Candidate] = field(default_factory=list)
    trigger: str = ""
    resolved: list[ResolvedInput] = field(default_factory=list)  # the record's resolved inputs
    input_status: str = ""
    input_message: str = ""


Progress = Callable[[str, int, int], None]


# --- helpers ----------------------------------------------------------------------------------


UNBATCHED_PARITY_CALLS = 16


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
    if inputs_mod.fixed_batch(inp.resolved):
        if runner.fixed_batch is None:  # no batch axis at all: one call on one resolved sample
            return inputs_mod.feeds(inp.resolved, 1, seed, dtypes=dtypes), runner.call, False
        # a fixed leading size (batch 1): stack samples on it; Runner.run feeds one call at a time
        table = [
            replace_struct(r, batch_axis=0) if r.shape and r.shape[0] == runner.fixed_batch else r for r in inp.resolved
        ]
        return inputs_mod.feeds(table, n, seed, dtypes=dtypes), None, True
    return inputs_mod.feeds(inp.resolved, n, seed, dtypes=dtypes), None, True


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


def normalise_task(task: str | None) -> str | None:
    if task is None:
        return None
    key = task.strip().lower()
    key = _TASK_ALIASES.get(key, key)
    return key if key in TASKS else None


def infer_task(explicit: str | None, runner: Runner, dataset: Dataset | None) -> str:
    """The option, else the registered task, else what the dataset and outputs suggest."""
    if explicit is not None:
        task = normalise_task(explicit)
        if task is not None:
            return task
    if dataset is not None and "gt_boxes" in dataset.extras:
        return "detection"
    outputs = runner.outputs
    looks_classifier = any(
        not o.is_tensor
        or o.dtype.startswith(("int", "str"))
        or (o.shape is not None and len(o.shape) == 2 and (not isinstance(o.shape[1], int) or o.shape[1] >= 2))
        for o in outputs
    )
    if dataset is not None and dataset.labels is not None and dataset.labels.dtype.kind == "f":
        looks_classifier = looks_classifier and np.array_equal(dataset.labels, np.round(dataset.labels))
    if not looks_classifier:
        return "regression"
    if runner.inputs and all(s.dtype.startswith(("int", "uint")) for s in runner.inputs):
        return "text-classification"
    return "classification"


def _subsample(dataset: Dataset, limit: int, seed: int) -> Dataset:
    if dataset.samples <= limit:
        return dataset
    rng = np.random.default_rng([seed, 1])
    index = np.sort(rng.choice(dataset.samples, size=limit, replace=False))
    return dataset.subset(index)


def _rows(feeds: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in feeds.items()}


def _seeded_rows(n_total: int, n: int, seed: int, salt: int) -> np.ndarray:
    if n >= n_total:
        return np.arange(n_total)
    rng = np.random.default_rng([seed, salt])
    return np.sort(rng.choice(n_total, size=n, replace=False))


class _Classify:
    """Predicted class indices in one fixed class order (the first pass's), so later passes
    (noise, attack, the parent) are comparable with it."""

    def __init__(self, runner: Runner, options: dict[str, Any]) -> None:
        self.runner = runner
        self.options = options
        self.classes: np.ndarray | None = None

    def read(self, outputs: dict[str, Any]) -> ClassifierOutput:
        out = interpret_classifier(
            outputs,
            class_labels=self.runner.facts.class_labels,
            score_output=self.options.get("score_output"),
            label_output=self.options.get("label_output"),
        )
        if self.classes is None:
            self.classes = out.classes
        elif not np.array_equal(out.classes.astype(str), self.classes.astype(str)):
            # Rare: a label outside the known classes appeared in this pass. Re-encode.
            idx, _ = m.encode(out.labels, self.classes)
            out = ClassifierOutput(idx, out.scores, self.classes, out.score_output, out.label_output)
        return out

    def predict(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        return self.read(self.runner.run(feeds, prepared=True)).indices

    def scores(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        out = self.read(self.runner.run(feeds, prepared=True))
        if out.scores is None:
            raise OutputError("the attack needs class scores; the model only outputs labels")
        return out.scores


# --- the suite --------------------------------------------------------------------------------


def plan_checks(
    requested: list[str], *, has_parent: bool, task: str, dataset: Dataset | None, runner: Runner
) -> tuple[list[str], dict[str, str]]:
    """(checks to run, {check: why skipped}). Empty ``requested``: every check the inputs
    allow; named checks that cannot run are reported as skipped with the reason."""
    unknown = [c for c in requested if c not in ALL_CHECKS]
    if unknown:
        raise UnknownCheck(f"unknown check(s) {unknown}; choose from {', '.join(ALL_CHECKS)}")
    labelled = dataset is not None and (
        dataset.labels is not None or (task == "detection" and "gt_boxes" in dataset.extras)
    )
    classifier = task in ("classification", "text-classification")
    why: dict[str, str] = {}
    if not has_parent:
        why["parity"] = "the model has no parent (it is not a variant)"
    if dataset is None:
        for c in ("metrics", "fairness", "robustness", "adversarial"):
            why[c] = "no dataset (give one with --dataset, or register the model with one)"
    elif not labelled:
        for c in ("metrics", "fairness", "robustness", "adversarial"):
            why[c] = "the dataset has no labels" if task != "detection" else "the dataset has no gt_boxes"
    else:
        if dataset.groups is None:
            why["fairness"] = "the dataset has no 'groups' array"
        elif not classifier:
            why["fairness"] = f"fairness rates are defined for classifiers, not {task}"
        if not classifier:
            why.setdefault("robustness", f"the noise curve reads accuracy; not defined for {task}")
            why.setdefault("adversarial", f"the attack needs class scores; not defined for {task}")
        elif not runner.float_inputs:
            why["robustness"] = "the model has no float inputs (token ids cannot take Gaussian noise)"
            why["adversarial"] = "the model has no float inputs to perturb"
    wanted = list(requested) or list(ALL_CHECKS)
    run = [c for c in ALL_CHECKS if c in wanted and c not in why]
    skipped = {c: why[c] for c in wanted if c in why}
    return run, skipped


def run_suite(inp: SuiteInput, config: SuiteConfig, progress: Progress | None = None) -> ValidationReport:
    started = time.perf_counter()
    opts = inp.options
    check_options(opts)
    runner = inp.runner
    dataset = inp.dataset
    task = infer_task(opts.get("task") or inp.task, runner, dataset)
    if "batch_size" in opts:
        runner.batch_size = runner.fixed_batch or _int_option(opts, "batch_size", minimum=1)
        if inp.parent_runner is not None:
            inp.parent_runner.batch_size = inp.parent_runner.fixed_batch or runner.batch_size
    checks, skipped = plan_checks(
        inp.checks, has_parent=inp.parent_runner is not None, task=task, dataset=dataset, runner=runner
    )
    if inp.input_status == INPUTS_NEED_SPEC and dataset is None and not opts.get("shapes"):
        # nothing known runs the model: say so (an outcome for its owner) instead of failing it
        for check in ("structural", "parity"):
            if check in checks:
                checks.remove(check)
                skipped[check] = f"{INPUTS_NEED_SPEC}: {inp.input_message}"
    if dataset is not None:
        dataset = _subsample(dataset, config.max_samples, config.seed)
    steps = len(checks) + 2
    step = 0

    def advance(stage: str) -> None:
        nonlocal step
        step += 1
        if progress:
            progress(stage, step, steps)

    outcomes: dict[str, CheckOutcome] = {}
    measured: dict[str, float | None] = {}
    reasons: dict[str, str] = {}
    intervals: dict[str, list[float]] = {}
    parent_candidate = inp.parent
    if parent_candidate is None and inp.parent_runner is not None and inp.parent_ref:
        parent_candidate = readiness.Candidate(ref=inp.parent_ref, variant=inp.parent_variant or "base")
    ctx = readiness.Context(
        ref=inp.ref,
        variant=inp.variant,
        parent=parent_candidate,
        siblings=inp.siblings,
        alpha=config.alpha,
    )

    # --- one pass over the dataset ---
    feeds = truth = None
    classify = _Classify(runner, opts)
    pred: ClassifierOutput | None = None
    outputs: dict[str, Any] | None = None
    needs_pass = dataset is not None and any(c in checks for c in ("metrics", "fairness", "parity"))
    if dataset is not None:
        feeds = runner.prepare(dataset.inputs)
    advance("inference")
    if needs_pass and feeds is not None:
        outputs = runner.run(feeds, prepared=True)
        if task in ("classification", "text-classification"):
            pred = classify.read(outputs)
            if dataset.labels is not None:
                truth, all_classes = m.encode(dataset.labels, pred.classes)
                if len(all_classes) > len(pred.classes):
                    classify.classes = all_classes
                    pred = ClassifierOutput(
                        pred.indices, pred.scores, all_classes, pred.score_output, pred.label_output
                    )

    # --- structural ---
    if "structural" in checks:
        advance("structural")
        n = config.structural_samples
        try:
            seeded, run_fn, batched = _seeded(inp, n, config.seed)
            source = "seeded synthetic inputs"
            if inp.resolved and not opts.get("shapes"):
                source += " at the shapes resolved at registration"
        except InferlabError:
            if dataset is None:
                raise
            seeded, run_fn, batched = (
                _rows(dataset.inputs, _seeded_rows(dataset.samples, n, config.seed, 2)),
                None,
                True,
            )
            source = "seeded dataset rows"
        result = check_structure(
            run_fn or (lambda f: runner.run(f)),
            runner.inputs,
            runner.declared_outputs,
            seeded,
            call_rows=runner.fixed_batch or runner.batch_size,
            batched=batched,
        )
        n = result.samples
        figures = result.figures()
        figures["inputs"] = source
        warned = f"; {len(result.warnings)} warnings: {'; '.join(result.warnings[:2])}" if result.warnings else ""
        outcomes["structural"] = CheckOutcome(
            name="structural",
            status="passed" if result.passed else "failed",
            summary=(
                f"runs on {n} {source}{' (one call at a time)' if not batched or runner.fixed_batch else ''}; "
                f"outputs finite; deterministic{warned}"
                if result.passed
                else "; ".join(result.problems[:3])
            ),
            figures=plain(figures),
        )
        measured["structural"] = 1.0 if result.passed else 0.0
        ctx.structural_problems = result.problems

    # --- task metrics ---
    if "metrics" in checks and dataset is not None:
        advance("metrics")
        outcomes["metrics"] = _metrics_check(task, dataset, outputs, pred, truth, opts, config, measured, intervals)
        ctx.accuracy = measured.get("accuracy")
        ctx.cis = {k: (v[0], v[1]) for k, v in intervals.items() if v and None not in v}

    # --- parity ---
    if "parity" in checks and inp.parent_runner is not None:
        advance("parity")
        outcomes["parity"] = _parity_check(inp, task, dataset, feeds, outputs, pred, truth, config, measured, ctx)

    # --- fairness ---
    if "fairness" in checks and dataset is not None and pred is not None and truth is not None:
        advance("fairness")
        positive = None
        if "positive_label" in opts:
            idx, _ = m.encode(np.array([opts["positive_label"]]), pred.classes)
            positive = int(idx[0])
            if positive >= len(pred.classes):
                raise OptionsError(f"positive_label {opts['positive_label']!r} is not one of the model's classes")
        res = fairness_mod.group_fairness(
            truth,
            pred.indices,
            dataset.groups,
            len(pred.classes),
            positive=positive,
            classes=pred.classes,
            max_gap=float(opts.get("fairness_max_gap", fairness_mod.DEFAULT_MAX_GAP)),
            alpha=config.alpha,
        )
        figures = res.figures()
        outcomes["fairness"] = CheckOutcome(
            name="fairness",
            status="failed" if res.detected else "passed",
            summary=(
                f"{len(res.per_group)} groups; equalized-odds difference {res.eo_difference:.3f}, demographic-parity "
                f"difference {res.dp_difference:.3f}; worst group {res.worst_group!r} accuracy "
                f"{res.worst_group_accuracy:.3f} (p={res.p_value:.2g})"
                + ("; disparity detected" if res.detected else "")
            ),
            figures=plain(figures),
        )
        measured.update(
            eo_difference=res.eo_difference,
            dp_difference=res.dp_difference,
            worst_group_accuracy=res.worst_group_accuracy,
            fairness=0.0 if res.detected else 1.0,
        )
        ctx.fairness = plain(figures)

    # --- robustness: noise ---
    if "robustness" in checks and dataset is not None and feeds is not None:
        advance("robustness")
        index = _seeded_rows(dataset.samples, config.noise_samples, config.seed, 3)
        if classify.classes is None:  # no full pass ran: learn the class order from one sample
            classify.read(runner.run(_rows(feeds, index[:1]), prepared=True))
        noise_truth, _ = m.encode(dataset.labels[index], classify.classes)
        levels = [float(v) for v in opts.get("noise_levels", robustness.DEFAULT_NOISE_LEVELS)]
        for item in inp.requirements:
            if item.requirement.metric == "noise_breakpoint":
                levels.append(float(item.requirement.value))
        res_noise = robustness.noise_curve(
            classify.predict,
            _rows(feeds, index),
            noise_truth,
            runner.float_inputs,
            levels=levels,
            max_drop=float(opts.get("noise_max_drop", robustness.DEFAULT_MAX_DROP)),
            reference_level=float(opts.get("noise_reference", robustness.DEFAULT_REFERENCE_LEVEL)),
            seed=config.seed,
        )
        figures = res_noise.figures()
        bp = res_noise.breakpoint
        outcomes["robustness"] = CheckOutcome(
            name="robustness",
            status="passed",
            summary=(
                f"accuracy {res_noise.clean_accuracy:.3f} clean, {res_noise.reference_accuracy:.3f} at noise "
                f"{res_noise.reference_level:g}x std; "
                + (
                    f"falls by more than {100 * res_noise.max_drop:.0f} points at {bp:g}x std"
                    if bp is not None
                    else f"never falls by more than {100 * res_noise.max_drop:.0f} points up to "
                    f"{max(res_noise.levels):g}x std"
                )
            ),
            figures=plain(figures),
        )
        measured["robust_accuracy"] = res_noise.reference_accuracy
        measured["noise_breakpoint"] = bp if bp is not None else max(res_noise.levels)
        ctx.noise = plain(figures)

    # --- robustness: adversarial ---
    if "adversarial" in checks and dataset is not None and feeds is not None:
        advance("adversarial")
        outcomes["adversarial"] = _attack_check(classify, dataset, feeds, opts, config, measured, ctx)

    # --- latency figures and readiness ---
    perf = inp.perf
    if perf is not None:
        measured["p50_ms"] = perf.p50_ms
        measured["p99_ms"] = perf.p99_ms
        measured["throughput_ips"] = perf.throughput_ips
        measured["memory_mb"] = None if perf.peak_memory_bytes is None else perf.peak_memory_bytes / (1 << 20)
    for metric in ("p50_ms", "p99_ms", "throughput_ips", "memory_mb"):
        if measured.get(metric) is None:
            reasons[metric] = "no benchmark result for this model yet"
    for check, why in skipped.items():
        for metric in _METRICS_OF_CHECK.get(check, ()):
            reasons.setdefault(metric, why)
    advance("readiness")
    not_applicable = frozenset(_METRICS_OF_CHECK["parity"]) if inp.parent_runner is None else frozenset()
    criteria = readiness.judge(inp.requirements, measured, reasons, not_applicable)
    if skipped.get("structural", "").startswith(INPUTS_NEED_SPEC) and not any(
        c.metric == "structural" for c in criteria
    ):
        # never READY on nothing: the built-in structural requirement stays open until it runs
        criteria.insert(
            0,
            CriterionResult(
                metric="structural",
                op=">=",
                limit=1.0,
                measured=None,
                passed=None,
                message=f"structural could not be measured: {skipped['structural']}",
                source="default",
            ),
        )
    verdict = readiness.verdict(criteria, dataset is not None, config.ready_without_dataset)
    ready = verdict == readiness.READY
    recommendations = readiness.recommend(criteria, ctx)
    if verdict == readiness.NOT_VALIDATED_FOR_ACCURACY:
        recommendations.insert(
            0,
            "not validated for accuracy: structure and performance only; give a labelled dataset "
            "(--dataset) to measure accuracy",
        )
        recommendations[:] = [r for r in recommendations if not r.startswith("ready: meets all")]

    for check, why in skipped.items():
        outcomes[check] = CheckOutcome(name=check, status="skipped", summary=why)
    ordered = [outcomes[c] for c in ALL_CHECKS if c in outcomes]
    headline = {
        k: plain(v) for k, v in measured.items() if v is not None and k not in ("structural", "parity", "fairness")
    }
    return ValidationReport(
        dataset_uri=inp.dataset_uri,
        samples=dataset.samples if dataset is not None else 0,
        checks=ordered,
        criteria=criteria,
        ready=ready,
        verdict=verdict,
        recommendations=recommendations,
        duration_s=round(time.perf_counter() - started, 4),
        task=task,
        parent_ref=inp.parent_ref,
        trigger=inp.trigger,
        dataset_sha256=inp.dataset_sha256,
        seed=config.seed,
        metrics=headline,
        intervals=plain(intervals),
    )


_METRICS_OF_CHECK = {
    "metrics": ("accuracy", "macro_f1", "map50", "map", "mae", "rmse", "r2", "top5_accuracy"),
    "parity": ("top1_agreement", "accuracy_drop", "mcnemar_p", "parity"),
    "fairness": ("eo_difference", "dp_difference", "worst_group_accuracy", "fairness"),
    "robustness": ("robust_accuracy", "noise_breakpoint"),
    "adversarial": ("adversarial_accuracy",),
}


def headline_accuracy(report: ValidationReport) -> float | None:
    """The figure ``model.validated`` carries as ``accuracy``: classification accuracy, or a
    detector's mAP@0.5 (so the registry can rank every task by one number)."""
    value = report.metrics.get("accuracy")
    if value is None and report.task == "detection":
        value = report.metrics.get("map50")
    return None if value is None else float(value)


def _metrics_check(
    task: str,
    dataset: Dataset,
    outputs: dict[str, Any] | None,
    pred: ClassifierOutput | None,
    truth: np.ndarray | None,
    opts: dict[str, Any],
    config: SuiteConfig,
    measured: dict[str, float | None],
    intervals: dict[str, list[float]],
) -> CheckOutcome:
    assert outputs is not None
    if task == "detection":
        detections = interpret_detections(outputs, opts)
        try:
            gts = m.split_ground_truth(
                dataset.extras["gt_boxes"], dataset.extras["gt_classes"], dataset.extras["gt_counts"]
            )
        except (KeyError, ValueError) as exc:
            raise InferlabError(f"detection ground truth: {exc}", code="invalid_dataset") from None
        if len(gts) != len(detections):
            raise InferlabError(
                f"detection ground truth covers {len(gts)} images, the model saw {len(detections)}",
                code="invalid_dataset",
            )
        res = m.detection_metrics(
            detections,
            gts,
            max_dets=int(opts.get("max_dets", 100)),
            n_boot=min(config.bootstrap, 200),
            seed=config.seed,
        )
        measured["map50"], measured["map"] = res["map50"], res["map"]
        for key in ("map50", "map"):
            if f"{key}_ci" in res:
                intervals[key] = res[f"{key}_ci"]
        return CheckOutcome(
            name="metrics",
            status="passed",
            summary=f"mAP@0.5 {res['map50']:.4f}, mAP@[.5:.95] {res['map']:.4f} on {res['images']} images",
            figures=plain({**res, "layout": opts.get("detection_layout", "boxes_scores_classes")}),
        )
    if task == "regression":
        if dataset.labels is None:
            raise InferlabError("regression metrics need 'labels'", code="invalid_dataset")
        values = regression_values(outputs, opts.get("regression_output"))
        y = np.asarray(dataset.labels, dtype=np.float64)
        if values.size != y.size:
            values = values.reshape(len(y), -1)
        res = m.regression_metrics(y, values.reshape(y.shape))
        measured.update(res)
        err = (values.reshape(y.shape) - y).reshape(len(y), -1)
        sq = (err**2).mean(axis=1)
        ci = m.bootstrap_statistic(
            lambda w: float(np.sqrt((w * sq).sum() / w.sum())),
            len(y),
            n_boot=min(config.bootstrap, 500),
            seed=config.seed,
        )
        intervals["rmse"] = ci.as_list()
        return CheckOutcome(
            name="metrics",
            status="passed",
            summary=f"RMSE {res['rmse']:.4g}, MAE {res['mae']:.4g}, R2 {res['r2']:.4f} on {len(y)} samples",
            figures=plain(res),
        )
    assert pred is not None and truth is not None
    ks = [int(k) for k in opts.get("top_k", [5])]
    res = m.classification_metrics(truth, pred.indices, pred.classes, pred.scores, ks)
    n_classes = len(pred.classes)
    acc_ci = m.bootstrap_proportion(truth == pred.indices, n_boot=config.bootstrap, seed=config.seed)
    f1_ci = m.bootstrap_macro_f1(truth, pred.indices, n_classes, n_boot=config.bootstrap, seed=config.seed)
    intervals["accuracy"] = acc_ci.as_list()
    intervals["macro_f1"] = f1_ci.as_list()
    measured["accuracy"] = res.accuracy
    measured["macro_f1"] = res.macro_f1
    for k, value in res.top_k.items():
        measured[f"top{k}_accuracy"] = value
        hits = m.top_k_hits(truth, pred.scores, k) if pred.scores is not None else None
        if hits is not None:
            intervals[f"top{k}_accuracy"] = m.bootstrap_proportion(
                hits, n_boot=config.bootstrap, seed=config.seed + k
            ).as_list()
    spread = m.fold_spread(truth, pred.indices, n_classes, k=config.folds, seed=config.seed)
    figures: dict[str, Any] = {
        "accuracy": res.accuracy,
        "accuracy_ci": acc_ci.as_list(),
        "macro_f1": res.macro_f1,
        "macro_f1_ci": f1_ci.as_list(),
        "top_k": {str(k): v for k, v in res.top_k.items()},
        "per_class": res.per_class(),
        "fold_spread": spread,
        "bootstrap": config.bootstrap,
        "classes": len(pred.classes),
        "score_output": pred.score_output,
        "label_output": pred.label_output,
    }
    if n_classes <= CONFUSION_MAX_CLASSES:
        figures["confusion_matrix"] = {"classes": pred.classes, "rows_true_cols_predicted": res.confusion}
    top = "".join(f", top-{k} {v:.4f}" for k, v in res.top_k.items())
    sd = f" (fold std {spread['accuracy']['std']:.4f})" if spread else ""
    return CheckOutcome(
        name="metrics",
        status="passed",
        summary=(
            f"accuracy {res.accuracy:.4f} [95% CI {acc_ci.low:.4f}, {acc_ci.high:.4f}]{sd}, macro-F1 "
            f"{res.macro_f1:.4f}{top} on {len(truth)} samples"
        ),
        figures=plain(figures),
    )


def _parity_check(
    inp: SuiteInput,
    task: str,
    dataset: Dataset | None,
    feeds: dict[str, np.ndarray] | None,
    outputs: dict[str, Any] | None,
    pred: ClassifierOutput | None,
    truth: np.ndarray | None,
    config: SuiteConfig,
    measured: dict[str, float | None],
    ctx: readiness.Context,
) -> CheckOutcome:
    parent = inp.parent_runner
    assert parent is not None
    runner = inp.runner
    overrides = inp.options.get("parity")
    if overrides is not None and not isinstance(overrides, dict):
        raise OptionsError("option 'parity' must be a table of tolerances")
    try:
        tolerance = parity_mod.tolerance_for(inp.variant, overrides)
    except ValueError as exc:
        raise OptionsError(str(exc)) from None
    if overrides and "alpha" not in overrides:
        tolerance = replace(tolerance, alpha=config.alpha)
    if feeds is not None and outputs is not None:
        source = f"dataset ({len(next(iter(feeds.values())))} samples)"
        cand_out = outputs
        try:
            parent_out = parent.run(parent.prepare(dataset.inputs), prepared=True)  # type: ignore[union-attr]
        except InferlabError as exc:
            raise InferlabError(f"the parent {inp.parent_ref}: {exc.message}", code=exc.code) from None
    else:
        n = max(config.structural_samples, 64)
        seeded, _, batched = _seeded(inp, n, config.seed)
        if batched:
            cand_out, parent_out = runner.run(seeded), parent.run(seeded)
        else:  # no batch axis: one call per seeded sample, outputs stacked sample by sample
            n = min(n, UNBATCHED_PARITY_CALLS)
            dtypes = {s.name: s.dtype for s in runner.inputs}
            calls = [inputs_mod.feeds(inp.resolved, 1, config.seed + i, dtypes=dtypes) for i in range(n)]
            cand_out = _stack([runner.call(f) for f in calls])
            parent_out = _stack([parent.call(f) for f in calls])
        source = f"seeded synthetic inputs ({n} samples)"
    p_labels = v_labels = p_scores = v_scores = None
    if task in ("classification", "text-classification"):
        try:
            v_pred = (
                pred if (pred is not None and cand_out is outputs) else _Classify(runner, inp.options).read(cand_out)
            )
            p_cls = _Classify(parent, inp.options)
            p_cls.classes = v_pred.classes
            p_pred = p_cls.read(parent_out)
            p_labels, v_labels = p_pred.indices, v_pred.indices
            p_scores, v_scores = p_pred.scores, v_pred.scores
        except OutputError:
            pass
    result = parity_mod.compare(
        parent_out,
        cand_out,
        tolerance=tolerance,
        parent_labels=p_labels,
        variant_labels=v_labels,
        parent_scores=p_scores,
        variant_scores=v_scores,
        truth=truth if (truth is not None and cand_out is outputs) else None,
        inputs=source,
    )
    measured["parity"] = 1.0 if result.passed else 0.0
    if result.top1_agreement is not None:
        measured["top1_agreement"] = result.top1_agreement
    if result.mcnemar is not None:
        measured["accuracy_drop"] = result.mcnemar.accuracy_drop_points
        measured["mcnemar_p"] = result.mcnemar.p_value
        ctx.mcnemar = result.mcnemar.as_dict()
    ctx.parity_problems = result.problems
    if result.passed:
        parts = [f"matches {inp.parent_ref} within the {tolerance.family} tolerance on {source}"]
        if result.top1_agreement is not None:
            parts.append(f"top-1 agreement {result.top1_agreement:.4f}")
    else:
        parts = [p for p in result.problems[:3] if not p.startswith("accuracy falls")]
    if result.mcnemar is not None:
        mc = result.mcnemar
        parts.append(
            f"accuracy {mc.parent_accuracy:.4f} -> {mc.variant_accuracy:.4f}, "
            f"McNemar p={mc.p_value:.2g} (b={mc.b}, c={mc.c})"
        )
    figures = result.figures()
    figures["parent"] = inp.parent_ref
    return CheckOutcome(
        name="parity", status="passed" if result.passed else "failed", summary="; ".join(parts), figures=plain(figures)
    )


def _attack_check(
    classify: _Classify,
    dataset: Dataset,
    feeds: dict[str, np.ndarray],
    opts: dict[str, Any],
    config: SuiteConfig,
    measured: dict[str, float | None],
    ctx: readiness.Context,
) -> CheckOutcome:
    runner = classify.runner
    name = opts.get("attack_input") or runner.float_inputs[0]
    if name not in runner.float_inputs:
        raise OptionsError(f"attack_input {name!r} is not a float input of the model ({runner.float_inputs})")
    index = _seeded_rows(dataset.samples, config.attack_samples, config.seed, 4)
    sub = _rows(feeds, index)
    if classify.classes is None:
        classify.read(runner.run(_rows(feeds, index[:1]), prepared=True))
    truth, _ = m.encode(dataset.labels[index], classify.classes)
    x_all = feeds[name]
    value_range = (float(np.min(x_all)), float(np.max(x_all)))

    def scores_fn(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
        # other inputs (masks, side features) follow the rows still under attack
        return classify.scores({**_rows(sub, rows), name: x})

    res = robustness.square_attack(
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
    measured["adversarial_accuracy"] = res.adversarial_accuracy
    figures = res.figures()
    figures["input"] = name
    figures["value_range"] = list(value_range)
    ctx.attack = plain(figures)
    q = f", median {res.queries_median_success:.0f} queries per success" if res.queries_median_success else ""
    return CheckOutcome(
        name="adversarial",
        status="passed",
        summary=(
            f"accuracy {res.clean_accuracy:.3f} -> {res.adversarial_accuracy:.3f} under an L-inf attack with "
            f"epsilon {res.epsilon:g} of the input range ({res.samples} samples{q}; stopped by {res.stopped_by})"
        ),
        figures=plain(figures),
    )
