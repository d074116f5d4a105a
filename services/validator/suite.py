"""One validation, start to finish, without NATS: decide which checks the inputs allow, run the
model once over the dataset, feed every check from that one pass (plus the extra passes that
parity, noise and the attack need by their nature), judge the requirements and assemble the
report. The checks themselves live in checks.py, one function each over the shared
``SuiteState``; ``run_suite`` only sequences them. The service resolves models, datasets and
requirements and calls ``run_suite`` in a sandbox worker; the benchmark calls it directly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from services.validator import metrics, readiness
from services.validator.checks import CHECK_FUNCTIONS, CLASSIFIERS, plain
from services.validator.errors import UnknownCheck
from services.validator.options import SuiteConfig, check_options, int_option, normalise_task
from services.validator.runner import ClassifierOutput, Runner
from services.validator.state import CheckResult, Classify, Perf, Progress, SuiteFields, SuiteInput, SuiteState
from shared.contracts.registry import INPUTS_NEED_SPEC
from shared.contracts.validation import CHECKS, CheckOutcome, CriterionResult, ValidationReport
from shared.datasets import Dataset

__all__ = [
    "ALL_CHECKS",
    "Perf",
    "SuiteConfig",
    "SuiteFields",
    "SuiteInput",
    "check_options",
    "headline_accuracy",
    "infer_task",
    "plan_checks",
    "run_suite",
]

ALL_CHECKS = CHECKS


def run_suite(inp: SuiteInput, config: SuiteConfig, progress: Progress | None = None) -> ValidationReport:
    started = time.perf_counter()
    plan = _plan(inp, config)
    steps = _Steps(progress, len(plan.checks) + 2)
    state = _first_pass(inp, config, plan, steps)
    results: dict[str, CheckResult] = {}
    for name, check in CHECK_FUNCTIONS.items():
        if name in state.checks:
            steps.advance(name)
            result = check(state)
            if result is not None:
                results[name] = result
    steps.advance("readiness")
    judgement = _judge(state, results, plan.skipped)
    return _report(state, results, plan.skipped, judgement, time.perf_counter() - started)


@dataclass(frozen=True)
class _Plan:
    task: str
    checks: list[str]
    skipped: dict[str, str]  # {check: why it does not run}
    dataset: Dataset | None  # subsampled to config.max_samples


class _Steps:
    """Progress as (stage, step, steps): the one pass, each check, then readiness."""

    def __init__(self, progress: Progress | None, steps: int) -> None:
        self.progress = progress
        self.steps = steps
        self.step = 0

    def advance(self, stage: str) -> None:
        self.step += 1
        if self.progress:
            self.progress(stage, self.step, self.steps)


def _plan(inp: SuiteInput, config: SuiteConfig) -> _Plan:
    opts = inp.options
    check_options(opts)
    runner = inp.runner
    task = infer_task(opts.get("task") or inp.task, runner, inp.dataset)
    if "batch_size" in opts:
        runner.batch_size = runner.fixed_batch or int_option(opts, "batch_size", minimum=1)
        if inp.parent_runner is not None:
            inp.parent_runner.batch_size = inp.parent_runner.fixed_batch or runner.batch_size
    checks, skipped = plan_checks(
        inp.checks, has_parent=inp.parent_runner is not None, task=task, dataset=inp.dataset, runner=runner
    )
    if inp.input_status == INPUTS_NEED_SPEC and inp.dataset is None and not opts.get("shapes"):
        # nothing known runs the model: say so (an outcome for its owner) instead of failing it
        for check in ("structural", "parity"):
            if check in checks:
                checks.remove(check)
                skipped[check] = f"{INPUTS_NEED_SPEC}: {inp.input_message}"
    dataset = _subsample(inp.dataset, config.max_samples, config.seed) if inp.dataset is not None else None
    return _Plan(task=task, checks=checks, skipped=skipped, dataset=dataset)


def _first_pass(inp: SuiteInput, config: SuiteConfig, plan: _Plan, steps: _Steps) -> SuiteState:
    """The one pass over the dataset that metrics, fairness and parity share."""
    runner, dataset = inp.runner, plan.dataset
    state = SuiteState(
        inp=inp,
        config=config,
        task=plan.task,
        checks=plan.checks,
        dataset=dataset,
        feeds=runner.prepare(dataset.inputs) if dataset is not None else None,
        classify=Classify(runner, inp.options),
    )
    steps.advance("inference")
    needs_pass = any(c in plan.checks for c in ("metrics", "fairness", "parity"))
    if dataset is None or state.feeds is None or not needs_pass:
        return state
    state.outputs = runner.run(state.feeds, prepared=True)
    if plan.task in CLASSIFIERS:
        pred = state.classify.read(state.outputs)
        if dataset.labels is not None:
            state.truth, all_classes = metrics.encode(dataset.labels, pred.classes)
            if len(all_classes) > len(pred.classes):
                state.classify.classes = all_classes
                pred = ClassifierOutput(pred.indices, pred.scores, all_classes, pred.score_output, pred.label_output)
        state.pred = pred
    return state


@dataclass(frozen=True)
class _Judgement:
    measured: dict[str, float | None]
    criteria: list[CriterionResult]
    verdict: str
    recommendations: list[str]


def _judge(state: SuiteState, results: dict[str, CheckResult], skipped: dict[str, str]) -> _Judgement:
    """Every requirement against what the checks and the benchmark measured."""
    measured, reasons = _measured(state.inp.perf, results, skipped)
    not_applicable = frozenset(_METRICS_OF_CHECK["parity"]) if state.inp.parent_runner is None else frozenset()
    criteria = readiness.judge(state.inp.requirements, measured, reasons, not_applicable)
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
    verdict = readiness.verdict(criteria, state.dataset is not None, state.config.ready_without_dataset)
    recommendations = readiness.recommend(criteria, _context(state, results))
    if verdict == readiness.NOT_VALIDATED_FOR_ACCURACY:
        recommendations.insert(
            0,
            "not validated for accuracy: structure and performance only; give a labelled dataset "
            "(--dataset) to measure accuracy",
        )
        recommendations = [r for r in recommendations if not r.startswith("ready: meets all")]
    return _Judgement(measured, criteria, verdict, recommendations)


def _measured(
    perf: Perf | None, results: dict[str, CheckResult], skipped: dict[str, str]
) -> tuple[dict[str, float | None], dict[str, str]]:
    """(every figure measured, {metric: why it was not}) from the checks and the benchmark."""
    measured: dict[str, float | None] = {}
    for result in results.values():
        measured.update(result.measured)
    if perf is not None:
        measured["p50_ms"] = perf.p50_ms
        measured["p99_ms"] = perf.p99_ms
        measured["throughput_ips"] = perf.throughput_ips
        measured["memory_mb"] = None if perf.peak_memory_bytes is None else perf.peak_memory_bytes / (1 << 20)
    reasons: dict[str, str] = {}
    for metric in ("p50_ms", "p99_ms", "throughput_ips", "memory_mb"):
        if measured.get(metric) is None:
            reasons[metric] = "no benchmark result for this model yet"
    for check, why in skipped.items():
        for metric in _METRICS_OF_CHECK.get(check, ()):
            reasons.setdefault(metric, why)
    return measured, reasons


def _context(state: SuiteState, results: dict[str, CheckResult]) -> readiness.Context:
    """What the recommendations read: the related variants and the checks' findings."""
    inp = state.inp
    parent = inp.parent
    if parent is None and inp.parent_runner is not None and inp.parent_ref:
        parent = readiness.Candidate(ref=inp.parent_ref, variant=inp.parent_variant or "base")
    found = results.get("metrics")
    structural, parity = results.get("structural"), results.get("parity")
    fairness, noise, attack = results.get("fairness"), results.get("robustness"), results.get("adversarial")
    return readiness.Context(
        ref=inp.ref,
        variant=inp.variant,
        parent=parent,
        siblings=inp.siblings,
        alpha=state.config.alpha,
        accuracy=found.measured.get("accuracy") if found else None,
        cis={k: (v[0], v[1]) for k, v in found.intervals.items() if v and None not in v} if found else {},
        mcnemar=parity.advice if parity else None,
        parity_problems=parity.problems if parity else [],
        structural_problems=structural.problems if structural else [],
        fairness=fairness.advice if fairness else None,
        noise=noise.advice if noise else None,
        attack=attack.advice if attack else None,
    )


def _report(
    state: SuiteState,
    results: dict[str, CheckResult],
    skipped: dict[str, str],
    judgement: _Judgement,
    duration_s: float,
) -> ValidationReport:
    outcomes = {name: result.outcome for name, result in results.items()}
    for check, why in skipped.items():
        outcomes[check] = CheckOutcome(name=check, status="skipped", summary=why)
    intervals: dict[str, list[float]] = {}
    for result in results.values():
        intervals.update(result.intervals)
    headline = {
        k: plain(v)
        for k, v in judgement.measured.items()
        if v is not None and k not in ("structural", "parity", "fairness")
    }
    inp = state.inp
    return ValidationReport(
        dataset_uri=inp.dataset_uri,
        samples=state.dataset.samples if state.dataset is not None else 0,
        checks=[outcomes[c] for c in ALL_CHECKS if c in outcomes],
        criteria=judgement.criteria,
        ready=judgement.verdict == readiness.READY,
        verdict=judgement.verdict,
        recommendations=judgement.recommendations,
        duration_s=round(duration_s, 4),
        task=state.task,
        parent_ref=inp.parent_ref,
        trigger=inp.trigger,
        dataset_sha256=inp.dataset_sha256,
        seed=state.config.seed,
        metrics=headline,
        intervals=plain(intervals),
    )


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
