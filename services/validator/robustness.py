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
    margins: np.ndarray = true - other.max(axis=1)
    return margins


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
    rng = np.random.default_rng(seed)
    lo, hi = float(value_range[0]), float(value_range[1])
    x = np.asarray(x)
    n = len(x)
    clean_scores = scores_fn(x, np.arange(n))
    clean_correct = clean_scores.argmax(axis=1) == y
    sample_shape = tuple(int(d) for d in x.shape[1:])
    layout = _layout(sample_shape)
    x_flat = x.reshape(n, *layout).astype(np.float64)
    attack = _Attack(
        scores_fn=scores_fn,
        y=y,
        x_flat=x_flat,
        x_adv=x_flat.copy(),
        margin=_margins(clean_scores, y),
        broken=~clean_correct,  # already wrong: nothing to attack
        queries=np.ones(n, dtype=np.int64),
        eps=float(epsilon) * (hi - lo),
        bounds=(lo, hi),
        sample_shape=sample_shape,
        dtype=x.dtype,
        layout=layout,
    )
    active = np.flatnonzero(~attack.broken)
    if len(active) and attack.eps > 0:
        attack.propose(_random_corner(attack, active, rng), active)
    stopped_by = _search(attack, clean_correct, rng, max_queries, p_init, started + time_budget_s)
    succeeded = attack.broken & clean_correct
    success_queries = attack.queries[succeeded]
    return AttackResult(
        epsilon=float(epsilon),
        epsilon_abs=attack.eps,
        samples=n,
        clean_accuracy=float(clean_correct.mean()) if n else float("nan"),
        adversarial_accuracy=float((~attack.broken).mean()) if n else float("nan"),
        success_rate=float(succeeded.sum() / max(clean_correct.sum(), 1)),
        queries_total=int(attack.queries.sum()),
        queries_mean_success=float(success_queries.mean()) if success_queries.size else None,
        queries_median_success=float(np.median(success_queries)) if success_queries.size else None,
        max_queries=int(max_queries),
        max_perturbation=float(np.abs(attack.x_adv - x_flat).max()) if n else 0.0,
        elapsed_s=time.perf_counter() - started,
        stopped_by=stopped_by,
        per_sample_queries=attack.queries.tolist(),
    )


@dataclass
class _Attack:
    """The attack's state over its samples, held as (n, channels, height, width) floats."""

    scores_fn: ScoresFn
    y: np.ndarray
    x_flat: np.ndarray
    x_adv: np.ndarray  # the best (lowest-margin) perturbed sample so far
    margin: np.ndarray
    broken: np.ndarray  # misclassified (clean or perturbed)
    queries: np.ndarray
    eps: float
    bounds: tuple[float, float]
    sample_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    layout: tuple[int, int, int]  # channels, height, width

    @property
    def image(self) -> bool:
        return len(self.sample_shape) in (2, 3)

    def propose(self, candidate: np.ndarray, active: np.ndarray) -> None:
        """Query ``candidate`` for the ``active`` samples (clipped to the ball and the value
        range); keep it where it lowers the margin."""
        lo, hi = self.bounds
        base = self.x_flat[active]
        candidate = np.clip(np.clip(candidate, base - self.eps, base + self.eps), lo, hi)
        scores = self.scores_fn(candidate.reshape(len(active), *self.sample_shape).astype(self.dtype), active)
        self.queries[active] += 1
        new_margin = _margins(scores, self.y[active])
        better = new_margin < self.margin[active]
        self.x_adv[active[better]] = candidate[better]
        self.margin[active[better]] = new_margin[better]
        self.broken[active] |= scores.argmax(axis=1) != self.y[active]


def _layout(sample_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width): images as they are, anything else as one row of features."""
    if len(sample_shape) == 3:
        return sample_shape[0], sample_shape[1], sample_shape[2]
    if len(sample_shape) == 2:
        return 1, sample_shape[0], sample_shape[1]
    return 1, 1, int(np.prod(sample_shape)) if sample_shape else 1


def _random_corner(attack: _Attack, active: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The start: a random vertex of the ball (vertical stripes for images)."""
    channels, height, width = attack.layout
    eps = attack.eps
    if attack.image:
        stripes = rng.choice([-eps, eps], size=(len(active), channels, 1, width))
        start: np.ndarray = attack.x_flat[active] + stripes
        return start
    corner: np.ndarray = attack.x_flat[active] + rng.choice([-eps, eps], size=(len(active), channels, height, width))
    return corner


def _search(
    attack: _Attack,
    clean_correct: np.ndarray,
    rng: np.random.Generator,
    max_queries: int,
    p_init: float,
    deadline: float,
) -> str:
    """Random-search steps until every sample is broken or out of queries, or the time is
    up; what stopped it."""
    it = 1
    while True:
        active = np.flatnonzero(~attack.broken & (attack.queries < max_queries))
        if len(active) == 0:
            return "all_broken" if attack.broken[clean_correct].all() else "queries"
        if time.perf_counter() > deadline:
            return "time"
        if attack.eps <= 0:
            return "queries"
        p = _p_schedule(p_init, it, max_queries)
        step = _square_step if attack.image else _feature_step
        attack.propose(step(attack, active, p, rng), active)
        it += 1


def _square_step(attack: _Attack, active: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Move one random square window per sample (all channels) to a corner of the ball."""
    channels, height, width = attack.layout
    eps = attack.eps
    candidate: np.ndarray = attack.x_adv[active].copy()
    side = max(1, min(height, width, round(np.sqrt(p * height * width))))
    for k in range(len(active)):
        r = rng.integers(0, height - side + 1)
        c = rng.integers(0, width - side + 1)
        signs = rng.choice([-eps, eps], size=(channels, 1, 1))
        candidate[k, :, r : r + side, c : c + side] = attack.x_flat[active[k], :, r : r + side, c : c + side] + signs
    return candidate


def _feature_step(attack: _Attack, active: np.ndarray, p: float, rng: np.random.Generator) -> np.ndarray:
    """Move a random subset of features per sample (all samples at once) to a corner."""
    channels, height, width = attack.layout
    features = channels * height * width
    count = max(1, round(p * features))
    candidate = attack.x_adv[active].copy()
    flat_c = candidate.reshape(len(active), -1)
    base = attack.x_flat[active].reshape(len(active), -1)
    idx = np.argpartition(rng.random((len(active), features)), count - 1, axis=1)[:, :count]
    rows = np.arange(len(active))[:, None]
    flat_c[rows, idx] = base[rows, idx] + rng.choice([-attack.eps, attack.eps], size=(len(active), count))
    moved: np.ndarray = flat_c.reshape(candidate.shape)
    return moved
