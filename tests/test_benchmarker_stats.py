"""The benchmarker's statistics against numpy/scipy references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats as sps

from services.benchmarker import stats


def _latencies(n: int, seed: int = 0, scale_ms: float = 2.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.lognormal(np.log(scale_ms), 0.2, n) * 1e6).astype(np.int64)


def test_summary_matches_numpy() -> None:
    ns = _latencies(5000)
    ms = ns / 1e6
    s = stats.summarize(ns, seed=3)
    assert s.samples == 5000
    for q, got in ((50, s.p50_ms), (90, s.p90_ms), (95, s.p95_ms), (99, s.p99_ms)):
        assert got == pytest.approx(np.percentile(ms, q), rel=1e-12)
    assert s.mean_ms == pytest.approx(ms.mean())
    assert s.std_ms == pytest.approx(ms.std(ddof=1))
    assert s.cv == pytest.approx(ms.std(ddof=1) / ms.mean())
    assert (s.min_ms, s.max_ms) == (pytest.approx(ms.min()), pytest.approx(ms.max()))
    q1, q3 = np.percentile(ms, [25, 75])
    fence = 1.5 * (q3 - q1)
    assert s.outliers == int(((ms < q1 - fence) | (ms > q3 + fence)).sum())
    assert s.p50_ci_ms[0] <= s.p50_ms <= s.p50_ci_ms[1]
    assert s.p99_ci_ms[0] <= s.p99_ms <= s.p99_ci_ms[1]


def test_summary_is_reproducible_with_a_seed() -> None:
    ns = _latencies(800)
    assert stats.summarize(ns, seed=7) == stats.summarize(ns, seed=7)


@pytest.mark.parametrize("q", [0.5, 0.99])
def test_bootstrap_ci_matches_scipy_percentile_bootstrap(q: float) -> None:
    x = _latencies(600, seed=1) / 1e6
    ours = stats.bootstrap_quantile_ci(x, q, seed=11, n_resamples=4000)
    ref = sps.bootstrap(
        (x,),
        lambda a, axis: np.quantile(a, q, axis=axis),
        n_resamples=4000,
        method="percentile",
        rng=np.random.default_rng(5),
    ).confidence_interval
    width = ref.high - ref.low
    assert ours[0] == pytest.approx(ref.low, abs=0.15 * width)
    assert ours[1] == pytest.approx(ref.high, abs=0.15 * width)


@pytest.mark.parametrize("q", [0.5, 0.99])
def test_exact_bootstrap_agrees_with_resampling(q: float) -> None:
    """Large samples use the exact bootstrap distribution of the order statistic; on a size
    where both run it must agree with explicit resampling."""
    x = _latencies(4000, seed=2) / 1e6
    resampled = stats.bootstrap_quantile_ci(x, q, seed=0, n_resamples=3000, budget=10**12)
    exact = stats.bootstrap_quantile_ci(x, q, seed=0, n_resamples=3000, budget=0)
    width = resampled[1] - resampled[0]
    assert exact[0] == pytest.approx(resampled[0], abs=0.2 * width)
    assert exact[1] == pytest.approx(resampled[1], abs=0.2 * width)


def test_exact_bootstrap_coverage_of_the_true_median() -> None:
    """Over many samples from a known distribution the 95% interval covers the true median
    about 95% of the time."""
    covered = 0
    trials = 200
    for seed in range(trials):
        x = np.random.default_rng(seed).exponential(1.0, 3000)
        lo, hi = stats.bootstrap_quantile_ci(x, 0.5, budget=0)
        covered += lo <= np.log(2) <= hi
    assert 0.90 <= covered / trials <= 0.99


def test_stability_rule() -> None:
    assert stats.is_stable([1.0, 1.05, 1.02], [100, 104, 101], 0.10)
    assert not stats.is_stable([1.0, 1.2, 1.02], [100, 104, 101], 0.10)  # latency disagrees
    assert not stats.is_stable([1.0, 1.05, 1.02], [100, 130, 101], 0.10)  # throughput disagrees
    assert not stats.is_stable([1.0, 1.0], [100, 100], 0.10)  # fewer than three windows
    assert stats.is_stable([5.0, 1.0, 1.05, 1.02], [1, 100, 104, 101], 0.10)  # only the last three count
    assert not stats.is_stable([1.0, float("nan"), 1.0], [1, 1, 1], 0.10)


def test_a_window_closes_only_with_an_inference_in_it() -> None:
    assert not stats.window_closes(3, 10, budget_spent=False)  # extended to MIN_WINDOW_SAMPLES
    assert stats.window_closes(10, 10, budget_spent=False)
    assert stats.window_closes(1, 10, budget_spent=True)  # the budget ends a short window
    # ... but not an empty one: it would publish a NaN median (null in JSON)
    assert not stats.window_closes(0, 10, budget_spent=True)


@pytest.mark.parametrize("ties", [False, True])
def test_mann_whitney_matches_scipy(ties: bool) -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(10, 1, 300)
    b = rng.normal(10.2, 1, 250)
    if ties:
        a, b = np.round(a), np.round(b)
    ours = stats.mann_whitney(a, b)
    for alternative, got in (("greater", ours.p_greater), ("less", ours.p_less), ("two-sided", ours.p_two_sided)):
        ref = sps.mannwhitneyu(a, b, alternative=alternative, method="asymptotic", use_continuity=True)
        assert got == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
    assert ours.u == pytest.approx(sps.mannwhitneyu(a, b, method="asymptotic").statistic)


def test_regression_decision() -> None:
    base = _latencies(2000, seed=1)
    same = _latencies(2000, seed=2)
    slower = (_latencies(2000, seed=3) * 1.3).astype(np.int64)
    faster = (_latencies(2000, seed=4) * 0.7).astype(np.int64)
    slightly = (_latencies(2000, seed=5) * 1.04).astype(np.int64)
    kw = {"p_threshold": 0.002, "effect_threshold": 1.10}
    assert stats.decide_regression(slower, base, **kw).status == stats.REGRESSION
    assert stats.decide_regression(slower, base, **kw).median_ratio == pytest.approx(1.3, rel=0.05)
    assert stats.decide_regression(same, base, **kw).status == stats.NO_CHANGE
    assert stats.decide_regression(faster, base, **kw).status == stats.IMPROVEMENT
    # Significant but below the effect threshold: not a regression.
    d = stats.decide_regression(slightly, base, **kw)
    assert d.status == stats.NO_CHANGE and d.p_value is not None and d.p_value < 0.002
    assert stats.decide_regression(slower[:10], base, **kw).status == stats.INSUFFICIENT_DATA
    assert stats.decide_regression(slower, base, new_stable=False, **kw).status == stats.INSUFFICIENT_DATA


def test_theil_sen_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    x = np.arange(40, dtype=float)
    y = 2.0 + 0.05 * x + rng.normal(0, 0.1, 40)
    y[5] = 50.0  # an outlier Theil-Sen shrugs off
    got = stats.theil_sen(x, y)
    ref = sps.theilslopes(y, x, alpha=0.95)
    assert (got.slope, got.low, got.high) == (
        pytest.approx(ref.slope),
        pytest.approx(ref.low_slope),
        pytest.approx(ref.high_slope),
    )
    assert got.low < 0.05 < got.high


def test_change_points_find_a_step_and_ignore_noise() -> None:
    rng = np.random.default_rng(1)
    flat = 2.0 * (1 + rng.normal(0, 0.01, 30))
    assert stats.change_points(flat) == []
    step = np.concatenate([2.0 * (1 + rng.normal(0, 0.01, 15)), 2.6 * (1 + rng.normal(0, 0.01, 15))])
    found = stats.change_points(step)
    assert [c.index for c in found] == [15]
    assert found[0].ratio == pytest.approx(1.3, rel=0.03)
    assert stats.change_points(np.array([1.0, 2.0])) == []


def test_holm_matches_definition() -> None:
    p = [0.01, 0.04, 0.03, 0.005]
    m = len(p)
    order = np.argsort(p)
    expected = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        expected[i] = running
    assert stats.holm(p) == pytest.approx(list(expected))
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_compare_groups() -> None:
    rng = np.random.default_rng(2)
    groups = [rng.normal(10, 1, 200), rng.normal(10, 1, 200), rng.normal(12, 1, 200)]
    result = stats.compare_groups(groups)
    h, p = sps.kruskal(*groups)
    assert result.kruskal_h == pytest.approx(h) and result.kruskal_p == pytest.approx(p)
    by_pair = {(r.a, r.b): r for r in result.pairs}
    assert not by_pair[(0, 1)].significant
    assert by_pair[(0, 2)].significant and by_pair[(1, 2)].significant
    raw = [sps.mannwhitneyu(groups[i], groups[j], method="asymptotic").pvalue for i, j in [(0, 1), (0, 2), (1, 2)]]
    assert [r.p_adjusted for r in result.pairs] == pytest.approx(stats.holm(raw))


def test_pareto_front_against_brute_force() -> None:
    rng = np.random.default_rng(3)
    points = [tuple(p) for p in rng.integers(0, 6, size=(40, 3)).astype(float)]
    front = set(stats.pareto_front(points))
    for i, p in enumerate(points):
        dominated = any(
            all(q[k] <= p[k] for k in range(3)) and any(q[k] < p[k] for k in range(3))
            for j, q in enumerate(points)
            if j != i
        )
        assert (i in front) == (not dominated)
    assert stats.pareto_front([(1.0, 5.0), (2.0, 2.0), (3.0, 3.0)]) == [0, 1]


def test_mad_matches_scipy() -> None:
    x = np.random.default_rng(0).normal(0, 3, 1001)
    assert stats.mad(x) == pytest.approx(sps.median_abs_deviation(x, scale="normal"), rel=1e-3)


def test_bootstrap_edge_cases() -> None:
    assert stats.bootstrap_quantile_ci(np.array([3.0]), 0.5) == (3.0, 3.0)
    with pytest.raises(ValueError):
        stats.summarize(np.array([], dtype=np.int64))
    s = stats.summarize(np.array([1_000_000], dtype=np.int64))
    assert s.samples == 1 and s.std_ms == 0.0


def test_pairs_cover_all_combinations() -> None:
    groups = [np.arange(10.0) + k for k in range(4)]
    result = stats.compare_groups(groups)
    assert [(r.a, r.b) for r in result.pairs] == list(itertools.combinations(range(4), 2))


def test_a_tiny_gap_on_many_samples_is_not_a_difference() -> None:
    # 0.7% apart on 200 000 samples each: p is astronomically small, the gap is not practical
    rng = np.random.default_rng(4)
    groups = [rng.normal(10, 0.5, 200_000), rng.normal(10.07, 0.5, 200_000), rng.normal(11, 0.5, 200_000)]
    by_pair = {(r.a, r.b): r for r in stats.compare_groups(groups).pairs}
    assert by_pair[(0, 1)].statistically_significant and not by_pair[(0, 1)].significant
    assert by_pair[(0, 2)].significant and by_pair[(1, 2)].significant  # 10% apart
    strict = {(r.a, r.b): r for r in stats.compare_groups(groups, min_effect=0.005).pairs}
    assert strict[(0, 1)].significant  # the threshold is the caller's to set
    assert stats.relative_difference(1.07) == pytest.approx(stats.relative_difference(1 / 1.07))
