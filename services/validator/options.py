"""Validation options: the ones a request, a policy or model metadata may set, checked up
front (``invalid_options``) rather than halfway through a check, and the suite's configuration
they adjust."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from services.validator.errors import OptionsError
from shared.config import Settings

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
    def from_settings(cls, settings: Settings, options: dict[str, Any]) -> SuiteConfig:
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
            ready_without_dataset=settings.validator_ready_without_dataset,
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
                changes[key] = int_option(options, key, minimum=0 if key == "seed" else 1)
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


def int_option(options: dict[str, Any], key: str, minimum: int = 0) -> int:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < minimum:
        raise OptionsError(f"option {key!r} must be an integer >= {minimum}, not {value!r}")
    return int(value)


def _float_option(options: dict[str, Any], key: str) -> float:
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise OptionsError(f"option {key!r} must be a non-negative number, not {value!r}")
    return float(value)


def normalise_task(task: str | None) -> str | None:
    if task is None:
        return None
    key = task.strip().lower()
    key = _TASK_ALIASES.get(key, key)
    return key if key in TASKS else None
