"""Alerts (``alerts.>``, long retention so a late subscriber can replay) and dead letters.

Every alert shares ``severity``, ``summary`` and the subject's last token (``name``: a model
name, or a service name for pipeline alerts), so a generic subscriber can show any of them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.contracts.base import Event, Message
from shared.contracts.benchmark import ConfigResult, LatencySummary
from shared.contracts.conversion import ConversionReport
from shared.contracts.validation import CriterionResult


class Alert(Event, kw_only=True):
    severity: str = "warning"  # "info", "warning" or "critical"
    name: str
    summary: str


class RegressionAlert(Alert, kw_only=True, tag="alert.performance.regression"):
    """``alerts.performance.regression.<name>``: both runs' figures, p-value and ratio.

    ``run`` is the new configuration result (its ``latency`` and ``throughput_ips``);
    ``baseline_latency``/``baseline_throughput_ips`` are the baseline run's. ``p_value`` is the
    one-sided Mann-Whitney U p-value (new slower than baseline) on the raw samples and
    ``median_ratio`` = new median / baseline median; both thresholds were exceeded."""

    ref: str
    baseline_ref: str
    run: ConfigResult
    baseline_run_id: str
    baseline_latency: LatencySummary
    p_value: float
    median_ratio: float
    p_threshold: float
    effect_threshold: float
    version: str = ""
    variant: str = "base"
    config_key: str = ""
    hardware_id: str = ""
    baseline_throughput_ips: float | None = None
    baseline_started_at: datetime | None = None


class AnomalyAlert(Alert, kw_only=True, tag="alert.performance.anomaly"):
    """``alerts.performance.anomaly.<name>``: an incident ``opened`` then ``resolved``.

    One incident per (model version and variant, host): ``opened`` when a completed window of
    ``window_samples`` production latencies leaves the baseline (``detector`` says which rule
    fired: ``robust_z`` on the window median, or ``ewma`` of those z-scores for slow drift),
    ``resolved`` (same ``incident_id``) after enough windows back within bounds. ``score`` is the
    z-score (or EWMA) of the window that triggered the alert, ``threshold`` the limit it crossed.
    Timestamps in ``window_end`` are the producer's sample times."""

    ref: str
    incident_id: str
    state: str  # "opened" or "resolved"
    detector: str  # "robust_z", "ewma" or "cusum"
    window_median_ms: float
    baseline_median_ms: float
    score: float
    threshold: float
    host: str | None = None
    version: str = ""
    variant: str = "base"
    window_samples: int = 0
    window_end: datetime | None = None
    opened_at: datetime | None = None
    windows_anomalous: int = 0
    suppressed: int = 0  # incidents not raised because of the rate limit since the last alert


class ValidationFailedAlert(Alert, kw_only=True, tag="alert.validation.failed"):
    """``alerts.validation.failed.<name>``: the failed readiness criteria (and those that could
    not be measured, ``passed`` None), with the recommendations and the ``event_id`` of the
    ``model.validated`` event carrying the full report."""

    ref: str
    failed: list[CriterionResult]
    version: str = ""
    variant: str = "base"
    recommendations: list[str] = []
    validated_event_id: str = ""


class ConversionFailedAlert(Alert, kw_only=True, tag="alert.conversion.failed"):
    """``alerts.conversion.failed.<name>``."""

    ref: str
    profile: str
    reason: str
    report: ConversionReport | None = None


class DeadLetterAlert(Alert, kw_only=True, tag="alert.pipeline.deadletter"):
    """``alerts.pipeline.deadletter.<service>``: ``name`` is the service."""

    subject: str
    error: str
    deliveries: int
    stream_seq: int | None = None


class DeadLetter(Message, kw_only=True, tag="deadletter"):
    """``deadletter.<service>``: a message a service gave up on, with why. The original stays
    in its stream at ``stream_seq``; ``payload`` holds its first bytes (UTF-8, replaced where
    not decodable) so the dead letter itself stays under the payload limit."""

    service: str
    subject: str
    stream: str | None = None
    stream_seq: int | None = None
    deliveries: int = 1
    error_type: str
    error: str
    payload: str
    payload_bytes: int
    headers: dict[str, str] = {}
    details: dict[str, Any] = {}
