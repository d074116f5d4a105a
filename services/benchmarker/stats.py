"""The benchmarker's statistics: pure functions over numpy arrays, unit-tested against
numpy/scipy references.

Latency samples are nanoseconds (int64) as the protocol records them; summaries are reported in
milliseconds. Every random procedure takes a seed so that a result can be reproduced exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from shared.contracts.benchmark import LatencySummary

# scipy is imported inside the functions that need it: the measuring child process uses only
# the stopping rule, and scipy would add tens of megabytes to the memory it reports.

NS_PER_MS = 1e6

# Percentile bootstrap by explicit resampling costs O(n_resamples * n). Above this many drawn
# values, the exact bootstrap distribution of the order statistic is used instead (the limit of
# the resampling bootstrap as n_resamples grows; see ``bootstrap_quantile_ci``).
RESAMPLE_BUDGET = 8_000_000

# Tukey's fences: a sample beyond 1.5 IQR from the quartiles counts as an outlier.
TUKEY_K = 1.5


def summarize(
    latencies_ns: np.ndarray, *, seed: int = 0, n_resamples: int = 2000, confidence: float = 0.95
) -> LatencySummary:
    """Descriptive statistics of one run's latencies, in milliseconds: percentiles (numpy's
    linear interpolation), mean, sample std (ddof=1), coefficient of variation, seeded
    bootstrap confidence intervals of the median and the p99, and the Tukey outlier count."""
    x = np.asarray(latencies_ns, dtype=np.float64) / NS_PER_MS
    n = int(x.size)
    if n == 0:
        raise ValueError("no latency samples to summarize")
    p50, p90, p95, p99 = np.percentile(x, [50, 90, 95, 99])
    mean = float(x.mean())
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    return LatencySummary(
        samples=n,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        mean_ms=mean,
        std_ms=std,
        cv=std / mean if mean > 0 else 0.0,
        min_ms=float(x.min()),
        max_ms=float(x.max()),
        p50_ci_ms=bootstrap_quantile_ci(x, 0.50, seed=seed, n_resamples=n_resamples, confidence=confidence),
        p99_ci_ms=bootstrap_quantile_ci(x, 0.99, seed=seed + 1, n_resamples=n_resamples, confidence=confidence),
        outliers=count_outliers(x),
    )


def count_outliers(x: np.ndarray, k: float = TUKEY_K) -> int:
    q1, q3 = np.percentile(x, [25, 75])
    iqr = q3 - q1
    return int(np.count_nonzero((x < q1 - k * iqr) | (x > q3 + k * iqr)))


def bootstrap_quantile_ci(
    x: np.ndarray,
    q: float,
    *,
    seed: int = 0,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    budget: int = RESAMPLE_BUDGET,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the ``q`` quantile.

    Small samples are resampled explicitly with a seeded generator (``n_resamples`` resamples,
    numpy's linear-interpolation quantile of each). When ``n * n_resamples`` exceeds
    ``budget`` the interval comes from the exact bootstrap distribution of the resample's
    order statistic instead: the k-th smallest of n draws with replacement is at most the j-th
    smallest sample exactly when at least k draws fall at or below it, so
    ``P(X*_(k) <= x_(j)) = P(Binomial(n, (j+1)/n) >= k) = I_{(j+1)/n}(k, n-k+1)``. That is the
    distribution the resampling bootstrap estimates, without Monte-Carlo error, in O(n); for
    the sample sizes where it is used the linear-interpolation and order-statistic quantiles
    differ by less than the spacing of neighbouring samples.
    """
    data = np.asarray(x, dtype=np.float64)
    n = data.size
    if n == 0:
        raise ValueError("no samples")
    if n == 1:
        return (float(data[0]), float(data[0]))
    alpha = (1.0 - confidence) / 2.0
    if n * n_resamples <= budget:
        rng = np.random.default_rng(seed)
        chunk = max(1, budget // (4 * n))
        values = np.empty(n_resamples)
        for start in range(0, n_resamples, chunk):
            stop = min(n_resamples, start + chunk)
            idx = rng.integers(0, n, size=(stop - start, n))
            values[start:stop] = np.quantile(data[idx], q, axis=1)
        low, high = np.quantile(values, [alpha, 1.0 - alpha])
        return (float(low), float(high))
    from scipy import special

    ordered = np.sort(data)
    k = min(n, max(1, math.ceil(q * n)))
    p = np.arange(1, n + 1) / n
    cdf = special.betainc(k, n - k + 1, p)
    lo_index = int(np.searchsorted(cdf, alpha, side="left"))
    hi_index = int(np.searchsorted(cdf, 1.0 - alpha, side="left"))
    return (float(ordered[min(lo_index, n - 1)]), float(ordered[min(hi_index, n - 1)]))


# --- the measurement protocol's stopping rule ------------------------------------------------


def windows_agree(values: list[float] | np.ndarray, threshold: float, last: int = 3) -> bool:
    """perf_analyzer's rule: the last ``last`` windows agree when the largest is within
    ``threshold`` (a fraction) of the smallest."""
    tail = np.asarray(values[-last:], dtype=np.float64)
    if tail.size < last or not np.all(np.isfinite(tail)) or tail.min() <= 0:
        return False
    return bool(tail.max() / tail.min() - 1.0 <= threshold)


def window_closes(samples: int, min_samples: int, budget_spent: bool) -> bool:
    """Whether a measurement window that reached its end time may close with ``samples``
    inferences completed in it: once it holds ``min_samples``, or once the time budget is spent
    and it holds at least one. A window with none has no median (NaN, which JSON carries as
    null and the contracts refuse); on a loaded host one slow inference can outlast the budget's
    last stretch, so that window waits for it."""
    return samples >= min_samples or (budget_spent and samples > 0)


def is_stable(medians: list[float], throughputs: list[float], threshold: float, last: int = 3) -> bool:
    """Stable when the last three windows agree on median latency *and* throughput."""
    return windows_agree(medians, threshold, last) and windows_agree(throughputs, threshold, last)


# --- regression decision ----------------------------------------------------------------


@dataclass(frozen=True)
class MannWhitney:
    u: float  # U statistic of the first sample
    p_greater: float  # H1: the first sample tends to be larger (slower)
    p_less: float  # H1: the first sample tends to be smaller (faster)
    p_two_sided: float


def mann_whitney(a: np.ndarray, b: np.ndarray) -> MannWhitney:
    """Mann-Whitney U with tie correction and continuity correction, normal approximation
    (scipy's ``method="asymptotic"``), computing both one-sided p-values from one ranking."""
    from scipy import stats as sps

    x = np.asarray(a)
    y = np.asarray(b)
    n1, n2 = x.size, y.size
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples must be non-empty")
    both = np.concatenate([x, y])
    ranks = sps.rankdata(both)
    r1 = float(ranks[:n1].sum())
    u1 = r1 - n1 * (n1 + 1) / 2.0
    mu = n1 * n2 / 2.0
    _, counts = np.unique(both, return_counts=True)
    n = n1 + n2
    tie_term = float((counts.astype(np.float64) ** 3 - counts).sum()) / (n * (n - 1)) if n > 1 else 0.0
    sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie_term))
    if sigma == 0.0:
        return MannWhitney(u=u1, p_greater=1.0, p_less=1.0, p_two_sided=1.0)
    z_greater = (u1 - mu - 0.5) / sigma
    z_less = (u1 - mu + 0.5) / sigma
    p_greater = float(sps.norm.sf(z_greater))
    p_less = float(sps.norm.cdf(z_less))
    z_two = (abs(u1 - mu) - 0.5) / sigma
    p_two = float(min(1.0, 2.0 * sps.norm.sf(z_two)))
    return MannWhitney(u=u1, p_greater=p_greater, p_less=p_less, p_two_sided=p_two)


REGRESSION = "regression"
IMPROVEMENT = "improvement"
NO_CHANGE = "no_change"
NO_BASELINE = "no_baseline"
INSUFFICIENT_DATA = "insufficient_data"


def fmt_p(p: float) -> str:
    """A p-value for people: ``p=0`` would claim certainty the normal approximation cannot give."""
    return "p<1e-300" if p < 1e-300 else f"p={p:.2g}"


@dataclass(frozen=True)
class Decision:
    status: str
    p_value: float | None = None
    median_ratio: float | None = None
    message: str = ""


def decide_regression(
    new: np.ndarray,
    baseline: np.ndarray,
    *,
    p_threshold: float,
    effect_threshold: float,
    min_samples: int = 30,
    new_stable: bool = True,
    baseline_stable: bool = True,
) -> Decision:
    """A regression needs both a significant one-sided Mann-Whitney U test (new slower than
    baseline, p < ``p_threshold``) and a median ratio above ``effect_threshold`` (asv's rule):
    with tens of thousands of samples a test alone flags 1% shifts that nobody should be paged
    for, and consecutive latencies are autocorrelated, which makes p-values optimistic. An
    improvement is the mirror image. Too few samples, or an unstable run, decide nothing."""
    n_new, n_base = int(np.size(new)), int(np.size(baseline))
    if n_new < min_samples or n_base < min_samples:
        return Decision(
            INSUFFICIENT_DATA,
            message=f"too few samples to decide ({n_new} new, {n_base} baseline; need {min_samples} each)",
        )
    ratio = float(np.median(new) / np.median(baseline)) if np.median(baseline) > 0 else math.inf
    if not new_stable or not baseline_stable:
        which = "this run" if not new_stable else "the baseline run"
        return Decision(
            INSUFFICIENT_DATA,
            median_ratio=ratio,
            message=f"{which} did not reach stability; no verdict (median ratio {ratio:.3f})",
        )
    test = mann_whitney(new, baseline)
    if test.p_greater < p_threshold and ratio > effect_threshold:
        return Decision(
            REGRESSION,
            p_value=test.p_greater,
            median_ratio=ratio,
            message=f"median {ratio:.2f}x the baseline ({fmt_p(test.p_greater)} < {p_threshold})",
        )
    if test.p_less < p_threshold and ratio < 1.0 / effect_threshold:
        return Decision(
            IMPROVEMENT,
            p_value=test.p_less,
            median_ratio=ratio,
            message=f"median {ratio:.2f}x the baseline, faster ({fmt_p(test.p_less)})",
        )
    return Decision(
        NO_CHANGE,
        p_value=test.p_greater,
        median_ratio=ratio,
        message=f"median {ratio:.3f}x the baseline: within the {effect_threshold:.2f}x effect threshold "
        f"or not significant ({fmt_p(test.p_greater)})",
    )


# --- trend ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slope:
    slope: float
    intercept: float
    low: float
    high: float


def theil_sen(x: np.ndarray, y: np.ndarray, confidence: float = 0.95) -> Slope:
    """Theil-Sen slope with its confidence interval (scipy.stats.theilslopes)."""
    from scipy import stats as sps

    res = sps.theilslopes(np.asarray(y, dtype=np.float64), np.asarray(x, dtype=np.float64), alpha=confidence)
    return Slope(float(res.slope), float(res.intercept), float(res.low_slope), float(res.high_slope))


@dataclass(frozen=True)
class ChangePoint:
    index: int  # first point of the new segment
    before: float  # median of the segment before
    after: float  # median of the segment after
    ratio: float


def change_points(
    y: np.ndarray,
    *,
    min_size: int = 2,
    penalty: float | None = None,
    min_relative_change: float = 0.05,
    noise_floor: float = 0.005,
) -> list[ChangePoint]:
    """Change points in a positive series (a model's medians over time) with ruptures' PELT
    (least-squares cost) on ``log(y)`` scaled by a robust noise estimate.

    The noise is the MAD of first differences / sqrt(2) (insensitive to the level shifts being
    sought), floored at ``noise_floor`` (0.5% relative) so that near-constant series do not make
    every wiggle significant. The penalty defaults to ``3 log n`` per change point, a little
    stricter than BIC. Changes smaller than ``min_relative_change`` are dropped: they are noise
    for a latency history even when statistically detectable.
    """
    import ruptures

    values = np.asarray(y, dtype=np.float64)
    n = values.size
    if n < 2 * min_size or np.any(values <= 0) or not np.all(np.isfinite(values)):
        return []
    z = np.log(values)
    diffs = np.diff(z)
    sigma = 1.4826 * float(np.median(np.abs(diffs - np.median(diffs)))) / math.sqrt(2.0)
    sigma = max(sigma, noise_floor)
    pen = penalty if penalty is not None else 3.0 * math.log(n)
    algo = ruptures.Pelt(model="l2", min_size=min_size, jump=1).fit((z / sigma).reshape(-1, 1))
    ends = algo.predict(pen=pen)
    bounds = [0, *ends]
    out: list[ChangePoint] = []
    for i in range(1, len(bounds) - 1):
        before = float(np.median(values[bounds[i - 1] : bounds[i]]))
        after = float(np.median(values[bounds[i] : bounds[i + 1]]))
        ratio = after / before
        if abs(ratio - 1.0) >= min_relative_change:
            out.append(ChangePoint(index=int(bounds[i]), before=before, after=after, ratio=ratio))
    return out


# --- comparison of several models ---------------------------------------------------------------


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone), in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class Pairwise:
    a: int
    b: int
    p_value: float
    p_adjusted: float
    significant: bool  # statistically significant AND at least the practical threshold apart
    median_ratio: float  # median(a) / median(b)
    statistically_significant: bool = False  # Holm-adjusted p < alpha, whatever the size


DEFAULT_MIN_EFFECT = 0.05


def relative_difference(ratio: float) -> float:
    """How far apart two medians are, whichever is slower: 1.07 and 1/1.07 are both 7%."""
    if not math.isfinite(ratio) or ratio <= 0:
        return math.inf
    return max(ratio, 1.0 / ratio) - 1.0


@dataclass(frozen=True)
class Comparison:
    kruskal_h: float | None
    kruskal_p: float | None
    pairs: list[Pairwise] = field(default_factory=list)


def compare_groups(groups: list[np.ndarray], alpha: float = 0.05, min_effect: float = DEFAULT_MIN_EFFECT) -> Comparison:
    """Kruskal-Wallis across all groups, then two-sided Mann-Whitney U for every pair with
    Holm's correction for the number of pairs. A pair is ``significant`` only when the test
    says so and the medians are at least ``min_effect`` (relative) apart: with hundreds of
    thousands of samples any gap, however small, is statistically significant."""
    from scipy import stats as sps

    if len(groups) < 2:
        return Comparison(None, None, [])
    h, p = sps.kruskal(*groups)
    raw: list[tuple[int, int, float, float]] = []
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            test = mann_whitney(groups[i], groups[j])
            ratio = float(np.median(groups[i]) / np.median(groups[j])) if np.median(groups[j]) > 0 else math.inf
            raw.append((i, j, test.p_two_sided, ratio))
    adjusted = holm([r[2] for r in raw])
    pairs = [
        Pairwise(
            a=i,
            b=j,
            p_value=p_raw,
            p_adjusted=p_adj,
            significant=p_adj < alpha and relative_difference(ratio) >= min_effect,
            median_ratio=ratio,
            statistically_significant=p_adj < alpha,
        )
        for (i, j, p_raw, ratio), p_adj in zip(raw, adjusted, strict=True)
    ]
    return Comparison(float(h), float(p), pairs)


def pareto_front(points: list[tuple[float, ...]]) -> list[int]:
    """Indices of the points no other point dominates (every objective minimised: at least as
    good in all and strictly better in one)."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.size == 0:
        return []
    front = []
    for i in range(arr.shape[0]):
        others = np.delete(arr, i, axis=0)
        dominated = np.any(np.all(others <= arr[i], axis=1) & np.any(others < arr[i], axis=1))
        if not dominated:
            front.append(i)
    return front


# --- robust location and scale --------------------------------------------------------------------


def mad(x: np.ndarray) -> float:
    """Median absolute deviation, scaled (x1.4826) to estimate a normal standard deviation."""
    arr = np.asarray(x, dtype=np.float64)
    return 1.4826 * float(np.median(np.abs(arr - np.median(arr))))
