"""Robustness: accuracy under Gaussian input noise of rising strength, and a black-box
adversarial attack under an L-infinity budget.

Noise strength is a multiple of the input's standard deviation over the dataset (so 0.1 means
noise one tenth as large as the spread of the data itself). The breaking point is the first
tested strength at which accuracy falls more than ``max_drop`` below the clean accuracy.

The attack is score-based random search in the manner of Square Attack (Andriushchenko et
al., 2020): it needs only the model's class scores, starts from a random corner of the
L-infinity ball (vertical stripes for images), and at each step proposes to move one random
window (a square per channel for images, a random subset of features otherwise) to another
corner, keeping the proposal when it lowers the margin ``score[true] - max(score[other])``.
Every model evaluation of one sample counts as one query. The attack is seeded, stops per
sample at its first misclassification, and stops altogether at the query or time budget.
Perturbations stay within ``epsilon`` of the clean input and inside the data's value range.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_NOISE_LEVELS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
DEFAULT_MAX_DROP = 0.05
DEFAULT_REFERENCE_LEVEL = 0.1

PredictFn = Callable[[dict[str, np.ndarray]], np.ndarray]
# (perturbed samples, their row numbers in the attacked set) -> class scores
ScoresFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class NoiseResult:
    levels: list[float]
    accuracies: list[float]
    clean_accuracy: float
    max_drop: float
    breakpoint: float | None
    reference_level: float
    reference_accuracy: float
    samples: int
    scale: dict[str, float]

    def figures(self) -> dict[str, Any]:
        return {
            "curve": [{"strength": lv, "accuracy": acc} for lv, acc in zip(self.levels, self.accuracies, strict=True)],
            "clean_accuracy": self.clean_accuracy,
            "max_drop": self.max_drop,
            "breakpoint": self.breakpoint,
            "reference_strength": self.reference_level,
            "robust_accuracy": self.reference_accuracy,
            "samples": self.samples,
            "input_std": self.scale,
            "strength_unit": "multiple of the input's standard deviation",
        }


def noise_curve(
    predict: PredictFn,
    feeds: dict[str, np.ndarray],
    truth: np.ndarray,
    float_inputs: Sequence[str],
    *,
    levels: Sequence[float] = DEFAULT_NOISE_LEVELS,
    max_drop: float = DEFAULT_MAX_DROP,
    reference_level: float = DEFAULT_REFERENCE_LEVEL,
    seed: int = 0,
) -> NoiseResult:
    """Accuracy of ``predict`` (feeds -> predicted class indices) as Gaussian noise of each
    strength is added to the float inputs."""
    if not float_inputs:
        raise ValueError("noise needs at least one float input")
    levels = sorted({0.0, float(reference_level), *(float(v) for v in levels)})
    scale = {name: float(np.std(feeds[name])) or 1.0 for name in float_inputs}
    accuracies = []
    for i, level in enumerate(levels):
        if level == 0.0:
            noisy = feeds
        else:
            rng = np.random.default_rng([seed, i])
            noisy = dict(feeds)
            for name in float_inputs:
                x = feeds[name]
                dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
                noise = rng.standard_normal(x.shape, dtype=dtype)
                noise *= level * scale[name]
                noisy[name] = (x + noise).astype(x.dtype, copy=False)
        accuracies.append(float(np.mean(predict(noisy) == truth)))
    clean = accuracies[0]
    breakpoint = next((lv for lv, acc in zip(levels, accuracies, strict=True) if acc < clean - max_drop), None)
    return NoiseResult(
        levels=levels,
        accuracies=accuracies,
        clean_accuracy=clean,
        max_drop=max_drop,
        breakpoint=breakpoint,
        reference_level=float(reference_level),
        reference_accuracy=accuracies[levels.index(float(reference_level))],
        samples=len(truth),
        scale=scale,
    )


@dataclass
class AttackResult:
    epsilon: float
    epsilon_abs: float
    samples: int
    clean_accuracy: float
    adversarial_accuracy: float
    success_rate: float
    queries_total: int
    queries_mean_success: float | None
    queries_median_success: float | None
    max_queries: int
    max_perturbation: float
    elapsed_s: float
    stopped_by: str
    per_sample_queries: list[int] = field(default_factory=list, repr=False)

    def figures(self) -> dict[str, Any]:
        return {
            "method": "square-attack random search (score-based, L-infinity)",
            "epsilon": self.epsilon,
            "epsilon_abs": self.epsilon_abs,
            "samples": self.samples,
            "clean_accuracy": self.clean_accuracy,
            "adversarial_accuracy": self.adversarial_accuracy,
            "success_rate": self.success_rate,
            "queries_total": self.queries_total,
            "queries_mean_success": self.queries_mean_success,
            "queries_median_success": self.queries_median_success,
            "max_queries_per_sample": self.max_queries,
            "max_perturbation": self.max_perturbation,
            "elapsed_s": self.elapsed_s,
            "stopped_by": self.stopped_by,
        }


def _margins(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    n = len(y)
    true = scores[np.arange(n), y]
    other = scores.copy()
    other[np.arange(n), y] = -np.inf
    return true - other.max(axis=1)


def _p_schedule(p_init: float, it: int, max_queries: int) -> float:
    """Square Attack's step-size schedule, rescaled to the query budget."""
    it = int(it / max(max_queries, 1) * 10_000)
    for bound, factor in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128)):
        if it <= bound:
            return p_init / factor
    return p_init / (256 if it <= 8000 else 512)


def square_attack(
    scores_fn: ScoresFn,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epsilon: float,
    value_range: tuple[float, float],
    max_queries: int,
    time_budget_s: float,
    seed: int = 0,
    p_init: float = 0.1,
) -> AttackResult:
    """Attack samples ``x`` (n, ...) with true class indices ``y``. ``epsilon`` is a fraction
    of ``value_range`` (the data's min and max, also the clip bounds)."""
    started = time.perf_counter()
    deadline = started + time_budget_s
    rng = np.random.default_rng(seed)
    lo, hi = float(value_range[0]), float(value_range[1])
    eps = float(epsilon) * (hi - lo)
    n = len(x)
    x = np.asarray(x)
    dtype = x.dtype
    queries = np.ones(n, dtype=np.int64)
    clean_scores = scores_fn(x, np.arange(n))
    clean_correct = clean_scores.argmax(axis=1) == y
    broken = ~clean_correct  # already wrong: nothing to attack
    margin = _margins(clean_scores, y)
    sample_shape = x.shape[1:]
    image = len(sample_shape) in (2, 3)
    channels, height, width = (
        (sample_shape[0], sample_shape[1], sample_shape[2])
        if len(sample_shape) == 3
        else (1, sample_shape[0], sample_shape[1])
        if len(sample_shape) == 2
        else (1, 1, int(np.prod(sample_shape)) if sample_shape else 1)
    )
    x_flat = x.reshape(n, channels, height, width).astype(np.float64)

    def clip(candidate: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return np.clip(np.clip(candidate, x_flat[idx] - eps, x_flat[idx] + eps), lo, hi)

    # Initialisation: a random vertex of the ball (vertical stripes for images).
    x_adv = x_flat.copy()
    active = np.flatnonzero(~broken)
    stopped_by = "all_broken"
    if len(active) and eps > 0:
        if image:
            stripes = rng.choice([-eps, eps], size=(len(active), channels, 1, width))
            init = x_flat[active] + stripes
        else:
            init = x_flat[active] + rng.choice([-eps, eps], size=(len(active), channels, height, width))
        init = clip(init, active)
        scores = scores_fn(init.reshape(len(active), *sample_shape).astype(dtype), active)
        queries[active] += 1
        new_margin = _margins(scores, y[active])
        better = new_margin < margin[active]
        x_adv[active[better]] = init[better]
        margin[active[better]] = new_margin[better]
        broken[active] |= scores.argmax(axis=1) != y[active]
    it = 1
    while True:
        active = np.flatnonzero(~broken & (queries < max_queries))
        if len(active) == 0:
            stopped_by = "all_broken" if broken[clean_correct].all() else "queries"
            break
        if time.perf_counter() > deadline:
            stopped_by = "time"
            break
        if eps <= 0:
            stopped_by = "queries"
            break
        p = _p_schedule(p_init, it, max_queries)
        candidate = x_adv[active].copy()
        if image:
            side = max(1, min(height, width, round(np.sqrt(p * height * width))))
            for k in range(len(active)):
                r = rng.integers(0, height - side + 1)
                c = rng.integers(0, width - side + 1)
                signs = rng.choice([-eps, eps], size=(channels, 1, 1))
                candidate[k, :, r : r + side, c : c + side] = x_flat[active[k], :, r : r + side, c : c + side] + signs
        else:
            features = channels * height * width
            count = max(1, round(p * features))
            flat_c = candidate.reshape(len(active), -1)
            base = x_flat[active].reshape(len(active), -1)
            # a random subset of ``count`` features per sample, all samples at once
            idx = np.argpartition(rng.random((len(active), features)), count - 1, axis=1)[:, :count]
            rows = np.arange(len(active))[:, None]
            flat_c[rows, idx] = base[rows, idx] + rng.choice([-eps, eps], size=(len(active), count))
            candidate = flat_c.reshape(candidate.shape)
        candidate = clip(candidate, active)
        scores = scores_fn(candidate.reshape(len(active), *sample_shape).astype(dtype), active)
        queries[active] += 1
        new_margin = _margins(scores, y[active])
        better = new_margin < margin[active]
        x_adv[active[better]] = candidate[better]
        margin[active[better]] = new_margin[better]
        broken[active] |= scores.argmax(axis=1) != y[active]
        it += 1
    succeeded = broken & clean_correct
    success_queries = queries[succeeded]
    perturbation = float(np.abs(x_adv - x_flat).max()) if n else 0.0
    return AttackResult(
        epsilon=float(epsilon),
        epsilon_abs=eps,
        samples=n,
        clean_accuracy=float(clean_correct.mean()) if n else float("nan"),
        adversarial_accuracy=float((~broken).mean()) if n else float("nan"),
        success_rate=float(succeeded.sum() / max(clean_correct.sum(), 1)),
        queries_total=int(queries.sum()),
        queries_mean_success=float(success_queries.mean()) if success_queries.size else None,
        queries_median_success=float(np.median(success_queries)) if success_queries.size else None,
        max_queries=int(max_queries),
        max_perturbation=perturbation,
        elapsed_s=time.perf_counter() - started,
        stopped_by=stopped_by,
        per_sample_queries=queries.tolist(),
    )
