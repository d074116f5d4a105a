"""The production monitor on generated telemetry: one incident per step change, hysteresis,
drift, rate limiting, restart."""

from __future__ import annotations

import numpy as np

from services.benchmarker.monitor import OPENED, RESOLVED, Key, Monitor, MonitorConfig

KEY = Key("resnet", "1.0.0", "base", "host-a")


def _stream(levels: list[tuple[float, int]], *, seed: int = 0, noise: float = 0.05, start: float = 1_700_000_000.0):
    """Latencies (ms) around each (level, samples) segment, lognormal noise, 1 ms apart."""
    rng = np.random.default_rng(seed)
    lat = np.concatenate([level * rng.lognormal(0.0, noise, n) for level, n in levels])
    ts = start + np.arange(lat.size) * 0.001
    return ts, lat


def _feed(monitor: Monitor, ts: np.ndarray, lat: np.ndarray, batch: int = 137, key: Key = KEY):
    decisions = []
    for i in range(0, lat.size, batch):
        decisions += monitor.observe(key, ts[i : i + batch], lat[i : i + batch])
    return decisions


def test_step_change_opens_and_resolves_exactly_one_incident() -> None:
    monitor = Monitor(MonitorConfig(window=200))
    ts, lat = _stream([(10.0, 6000), (15.0, 3000), (10.0, 6000)])
    decisions = _feed(monitor, ts, lat)
    assert [d.state for d in decisions] == [OPENED, RESOLVED]
    opened, resolved = decisions
    assert opened.incident_id == resolved.incident_id
    assert opened.detector == "robust_z" and opened.score > 4.0
    assert opened.window_median_ms > 14.0 and 9.5 < opened.baseline_median_ms < 10.5
    # The opening window is the first one made only of slow samples (or the one straddling).
    assert 6.0 <= opened.window_end - ts[0] <= 6.0 + 0.4
    assert resolved.window_end > ts[9000]
    assert monitor.open_incident(KEY) is None


def test_steady_noise_raises_nothing() -> None:
    monitor = Monitor(MonitorConfig(window=200))
    ts, lat = _stream([(10.0, 40_000)], noise=0.2, seed=3)
    assert _feed(monitor, ts, lat) == []


def test_slow_drift_is_caught_by_the_ewma() -> None:
    monitor = Monitor(MonitorConfig(window=200))
    rng = np.random.default_rng(1)
    base = 10.0 * rng.lognormal(0, 0.05, 4000)
    # +2.5% shift: below the robust-z threshold (4 x 2% floor = 8%) in every single window,
    # but persistent: the EWMA of the z-scores crosses its limit.
    shifted = 10.25 * rng.lognormal(0, 0.05, 8000)
    lat = np.concatenate([base, shifted])
    ts = 1_700_000_000.0 + np.arange(lat.size) * 0.001
    decisions = _feed(monitor, ts, lat)
    assert decisions and decisions[0].state == OPENED and decisions[0].detector == "ewma"


def test_flapping_is_rate_limited() -> None:
    monitor = Monitor(MonitorConfig(window=100, min_interval_s=60.0, resolve_windows=2))
    segments = [(10.0, 2000)]
    for _ in range(4):
        segments += [(20.0, 300), (10.0, 600)]
    ts, lat = _stream(segments)  # all within a few seconds: one incident, then suppressed
    decisions = _feed(monitor, ts, lat)
    assert [d.state for d in decisions] == [OPENED, RESOLVED]
    # Later (event time), a new incident may open again, and reports what was suppressed.
    ts2, lat2 = _stream([(20.0, 300), (10.0, 600)], start=ts[-1] + 120.0, seed=9)
    later = _feed(monitor, ts2, lat2)
    assert [d.state for d in later] == [OPENED, RESOLVED]
    assert later[0].suppressed >= 1


def test_hosts_are_separate_incidents() -> None:
    monitor = Monitor(MonitorConfig(window=200))
    other = Key("resnet", "1.0.0", "base", "host-b")
    ts, slow = _stream([(10.0, 3000), (15.0, 2000), (10.0, 2000)])
    _, calm = _stream([(10.0, 7000)], seed=5)
    assert [d.state for d in _feed(monitor, ts, slow)] == [OPENED, RESOLVED]
    assert _feed(monitor, ts, calm, key=other) == []


def test_warm_rebuilds_baseline_and_resume_owes_a_resolution() -> None:
    ts, lat = _stream([(10.0, 3000)])
    first = Monitor(MonitorConfig(window=200))
    decisions = _feed(first, *_stream([(10.0, 3000), (15.0, 1000)]))
    assert [d.state for d in decisions] == [OPENED]
    opened = decisions[0]

    restarted = Monitor(MonitorConfig(window=200))
    restarted.warm(KEY, ts, lat)
    restarted.resume(KEY, opened.incident_id, opened.opened_at, opened.detector)
    after = _feed(restarted, *_stream([(10.0, 2000)], start=opened.window_end + 1, seed=4))
    assert [(d.state, d.incident_id) for d in after] == [(RESOLVED, opened.incident_id)]


def test_bad_values_are_ignored() -> None:
    monitor = Monitor(MonitorConfig(window=50))
    ts, lat = _stream([(10.0, 2000)])
    lat[::7] = np.nan
    lat[::11] = -1.0
    assert _feed(monitor, ts, lat) == []
