"""Production latency monitoring: pure, deterministic, driven by the producers' sample
timestamps (so replaying a stream gives the same incidents).

Per (model name, version, variant, host):

- Samples are cut into consecutive windows of ``window`` samples in arrival order. Each
  completed window's median is the observation.
- Baseline: the medians of the last ``history_windows`` normal windows (the first
  ``baseline_windows`` only learn). Centre = their median; scale = their MAD x 1.4826, floored at
  ``min_relative_scale`` x centre, because a quiet service has a MAD near zero and would page on
  every wiggle.
- Detectors: the robust z-score of the window median against the baseline (``robust_z``; fires at
  ``|z| >= z_threshold``), and an EWMA of those z-scores (clipped at the z threshold so one spike
  does not dominate) that catches slow drift no single window shows (``ewma``; fires when the EWMA
  leaves ``ewma_threshold`` standard deviations of its own stationary spread, ``L *
  sqrt(lambda / (2 - lambda))``).
- Hysteresis: an incident opens on the first anomalous window and resolves only after
  ``resolve_windows`` consecutive windows with ``|z| < z_resolve`` (lower than the opening
  threshold); the baseline is frozen while an incident is open. So one incident is one ``opened``
  and one ``resolved`` alert.
- Rate limit: no new incident opens within ``min_interval_s`` of the previous alert for the same
  key (anomalous windows meanwhile are counted in ``suppressed`` of the next alert). A
  ``resolved`` alert is never held back: every ``opened`` gets its ``resolved``.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

OPENED = "opened"
RESOLVED = "resolved"


@dataclass(frozen=True)
class MonitorConfig:
    window: int = 200
    z_threshold: float = 4.0
    z_resolve: float = 2.0
    resolve_windows: int = 3
    baseline_windows: int = 5
    history_windows: int = 50
    ewma_lambda: float = 0.2
    ewma_threshold: float = 3.0
    min_interval_s: float = 60.0
    min_relative_scale: float = 0.02

    @property
    def ewma_limit(self) -> float:
        lam = self.ewma_lambda
        return self.ewma_threshold * math.sqrt(lam / (2.0 - lam))


@dataclass(frozen=True)
class Key:
    name: str
    version: str
    variant: str
    host: str


@dataclass(frozen=True)
class Decision:
    """An alert to raise."""

    key: Key
    state: str
    incident_id: str
    detector: str
    window_median_ms: float
    baseline_median_ms: float
    score: float
    threshold: float
    window_end: float  # Unix seconds of the window's last sample
    opened_at: float
    windows_anomalous: int
    window_samples: int
    suppressed: int = 0


@dataclass
class _Incident:
    incident_id: str
    opened_at: float
    detector: str
    windows_anomalous: int = 1
    clean_streak: int = 0


@dataclass
class _State:
    baseline: deque[float]
    pending_ts: list[np.ndarray] = field(default_factory=list)
    pending_lat: list[np.ndarray] = field(default_factory=list)
    pending_n: int = 0
    ewma: float = 0.0
    incident: _Incident | None = None
    last_alert_at: float | None = None
    suppressed: int = 0
    windows: int = 0


class Monitor:
    def __init__(self, config: MonitorConfig | None = None) -> None:
        self.config = config or MonitorConfig()
        self._states: dict[Key, _State] = {}

    def state(self, key: Key) -> _State:
        st = self._states.get(key)
        if st is None:
            st = self._states[key] = _State(baseline=deque(maxlen=self.config.history_windows))
        return st

    def keys(self) -> list[Key]:
        return list(self._states)

    def open_incident(self, key: Key) -> str | None:
        st = self._states.get(key)
        return st.incident.incident_id if st and st.incident else None

    def observe(self, key: Key, timestamps: np.ndarray, latencies_ms: np.ndarray) -> list[Decision]:
        """Feed one batch of samples; returns the alerts the completed windows raise."""
        return self._feed(key, timestamps, latencies_ms, silent=False)

    def warm(self, key: Key, timestamps: np.ndarray, latencies_ms: np.ndarray) -> None:
        """Rebuild a key's baseline from stored samples (after a restart) without alerting."""
        self._feed(key, timestamps, latencies_ms, silent=True)
        st = self.state(key)
        st.pending_ts.clear()
        st.pending_lat.clear()
        st.pending_n = 0

    def resume(self, key: Key, incident_id: str, opened_at: float, detector: str) -> None:
        """Continue an incident that was open when the service stopped (its ``resolved`` alert
        is still owed)."""
        st = self.state(key)
        st.incident = _Incident(incident_id=incident_id, opened_at=opened_at, detector=detector)
        st.last_alert_at = opened_at

    def _feed(self, key: Key, timestamps: np.ndarray, latencies_ms: np.ndarray, *, silent: bool) -> list[Decision]:
        ts = np.asarray(timestamps, dtype=np.float64)
        lat = np.asarray(latencies_ms, dtype=np.float64)
        if ts.size != lat.size:
            raise ValueError("timestamps and latencies must have the same length")
        finite = np.isfinite(lat) & np.isfinite(ts) & (lat >= 0)
        ts, lat = ts[finite], lat[finite]
        st = self.state(key)
        st.pending_ts.append(ts)
        st.pending_lat.append(lat)
        st.pending_n += lat.size
        size = self.config.window
        out: list[Decision] = []
        if st.pending_n < size:
            return out
        all_ts = np.concatenate(st.pending_ts)
        all_lat = np.concatenate(st.pending_lat)
        full = (all_lat.size // size) * size
        for start in range(0, full, size):
            decision = self._window(key, st, all_ts[start : start + size], all_lat[start : start + size], silent)
            if decision is not None:
                out.append(decision)
        st.pending_ts = [all_ts[full:]]
        st.pending_lat = [all_lat[full:]]
        st.pending_n = all_lat.size - full
        return out

    def _window(self, key: Key, st: _State, ts: np.ndarray, lat: np.ndarray, silent: bool) -> Decision | None:
        cfg = self.config
        st.windows += 1
        median = float(np.median(lat))
        end = float(ts.max())
        if len(st.baseline) < cfg.baseline_windows and st.incident is None:
            st.baseline.append(median)
            return None
        base = np.asarray(st.baseline)
        centre = float(np.median(base))
        scale = max(1.4826 * float(np.median(np.abs(base - centre))), cfg.min_relative_scale * centre, 1e-9)
        z = (median - centre) / scale
        clipped = max(-cfg.z_threshold, min(cfg.z_threshold, z))
        if st.incident is not None:
            return self._while_open(key, st, z, median, centre, end, lat.size, silent)
        st.ewma = cfg.ewma_lambda * clipped + (1.0 - cfg.ewma_lambda) * st.ewma
        if abs(z) >= cfg.z_threshold:
            detector, score, threshold = "robust_z", z, cfg.z_threshold
        elif abs(st.ewma) >= cfg.ewma_limit:
            detector, score, threshold = "ewma", st.ewma, cfg.ewma_limit
        else:
            st.baseline.append(median)
            return None
        if silent:
            return None
        if st.last_alert_at is not None and end - st.last_alert_at < cfg.min_interval_s:
            st.suppressed += 1
            return None
        incident_id = _incident_id(key, end)
        st.incident = _Incident(incident_id=incident_id, opened_at=end, detector=detector)
        st.last_alert_at = end
        suppressed, st.suppressed = st.suppressed, 0
        return Decision(
            key=key,
            state=OPENED,
            incident_id=incident_id,
            detector=detector,
            window_median_ms=median,
            baseline_median_ms=centre,
            score=score,
            threshold=threshold,
            window_end=end,
            opened_at=end,
            windows_anomalous=1,
            window_samples=int(lat.size),
            suppressed=suppressed,
        )

    def _while_open(
        self, key: Key, st: _State, z: float, median: float, centre: float, end: float, n: int, silent: bool
    ) -> Decision | None:
        cfg = self.config
        incident = st.incident
        assert incident is not None
        if abs(z) < cfg.z_resolve:
            incident.clean_streak += 1
        else:
            incident.clean_streak = 0
            incident.windows_anomalous += 1
        if incident.clean_streak < cfg.resolve_windows:
            return None
        st.incident = None
        st.ewma = 0.0
        if silent:
            return None
        st.last_alert_at = end
        return Decision(
            key=key,
            state=RESOLVED,
            incident_id=incident.incident_id,
            detector=incident.detector,
            window_median_ms=median,
            baseline_median_ms=centre,
            score=z,
            threshold=cfg.z_resolve,
            window_end=end,
            opened_at=incident.opened_at,
            windows_anomalous=incident.windows_anomalous,
            window_samples=n,
        )


def _incident_id(key: Key, opened_at: float) -> str:
    text = f"{key.name}|{key.version}|{key.variant}|{key.host}|{opened_at:.6f}"
    return hashlib.sha256(text.encode()).hexdigest()[:20]
