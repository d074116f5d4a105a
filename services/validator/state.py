"""What the checks of one validation share: the resolved inputs (``SuiteInput``), the state
after the one pass over the dataset (``SuiteState``), and what each check returns
(``CheckResult``). Checks read the state and return results; only ``run_suite`` merges them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from services.validator import metrics
from services.validator.errors import OutputError
from services.validator.options import SuiteConfig
from services.validator.readiness import Candidate
from services.validator.requirements import Sourced
from services.validator.runner import ClassifierOutput, Runner, interpret_classifier
from shared.contracts.registry import ResolvedInput
from shared.contracts.validation import CheckOutcome
from shared.datasets import Dataset

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Perf:
    """Benchmark figures for readiness: from the triggering model.benchmarked event, else the
    registry's latest signals."""

    p50_ms: float | None = None
    p99_ms: float | None = None
    throughput_ips: float | None = None
    peak_memory_bytes: int | None = None
    source: str = ""


@dataclass(kw_only=True)
class SuiteFields:
    """What the service resolved for one validation, apart from the loaded models and the
    parsed dataset (those exist only in the sandbox worker that runs the suite)."""

    ref: str
    variant: str
    requirements: list[Sourced]
    dataset_uri: str | None = None
    dataset_sha256: str | None = None
    task: str | None = None
    parent_ref: str | None = None
    parent_variant: str | None = None
    checks: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    perf: Perf | None = None
    parent: Candidate | None = None
    siblings: list[Candidate] = field(default_factory=list)
    trigger: str = ""
    resolved: list[ResolvedInput] = field(default_factory=list)  # the record's resolved inputs
    input_status: str = ""
    input_message: str = ""


@dataclass(kw_only=True)
class SuiteInput(SuiteFields):
    runner: Runner
    dataset: Dataset | None = None
    parent_runner: Runner | None = None

    @classmethod
    def loaded(
        cls, resolved: SuiteFields, *, runner: Runner, parent_runner: Runner | None, dataset: Dataset | None
    ) -> SuiteInput:
        values = {f.name: getattr(resolved, f.name) for f in fields(SuiteFields)}
        return cls(runner=runner, parent_runner=parent_runner, dataset=dataset, **values)


class Classify:
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
            idx, _ = metrics.encode(out.labels, self.classes)
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


@dataclass
class SuiteState:
    """One validation after its single pass over the (subsampled) dataset. ``outputs``,
    ``pred`` and ``truth`` are None where no check needed the pass or the task has no classes."""

    inp: SuiteInput
    config: SuiteConfig
    task: str
    checks: list[str]
    dataset: Dataset | None
    feeds: dict[str, np.ndarray] | None
    classify: Classify
    outputs: dict[str, Any] | None = None
    pred: ClassifierOutput | None = None
    truth: np.ndarray | None = None

    @property
    def options(self) -> dict[str, Any]:
        return self.inp.options


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome and the figures it adds to the readiness judgement."""

    outcome: CheckOutcome
    measured: dict[str, float | None]
    intervals: dict[str, list[float]] = field(default_factory=dict)
    # what recommendations quote: the structural or parity problems found
    problems: list[str] = field(default_factory=list)
    # figures recommendations read: McNemar (parity), fairness, noise curve, attack
    advice: dict[str, Any] | None = None
