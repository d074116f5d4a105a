"""One validation as the service receives it (``Job``, from ``model.validate`` or
``model.benchmarked``), and the pure rules that turn a job and the registry's records into
the suite's settings: options, checks, requirements, benchmark figures, related variants."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.validator.readiness import Candidate
from services.validator.requirements import Policy, Sourced, resolve
from services.validator.state import Perf
from shared.contracts.base import Command
from shared.contracts.benchmark import ConfigResult
from shared.contracts.registry import ModelRecord, ModelView
from shared.contracts.validation import Requirement


@dataclass
class Job:
    ref: str
    trigger: str
    event_id: str
    correlation_id: str
    dataset_uri: str | None = None
    requirements: list[Requirement] | None = None
    checks: list[str] | None = None
    options: dict[str, Any] | None = None
    perf: Perf | None = None
    command: Command | None = None


def perf_from_results(results: list[ConfigResult], source: str = "model.benchmarked") -> Perf | None:
    """The registry's reading of a sweep: latency of the lightest configuration (smallest
    batch x concurrency, fewest threads), the best throughput, the largest peak memory."""
    if not results:
        return None
    reference = min(results, key=lambda r: (r.batch_size * r.concurrency, r.intra_op_threads))
    return Perf(
        p50_ms=reference.latency.p50_ms,
        p99_ms=reference.latency.p99_ms,
        throughput_ips=max(r.throughput_ips for r in results),
        peak_memory_bytes=max(r.peak_memory_bytes for r in results),
        source=source,
    )


def perf_from_signals(view: ModelView) -> Perf | None:
    signals = view.signals
    if signals is None or (
        signals.p99_ms is None and signals.throughput_ips is None and signals.peak_memory_bytes is None
    ):
        return None
    return Perf(
        p50_ms=signals.p50_ms,
        p99_ms=signals.p99_ms,
        throughput_ips=signals.throughput_ips,
        peak_memory_bytes=signals.peak_memory_bytes,
        source="registry signals",
    )


def candidate(view: ModelView) -> Candidate:
    """A related variant with its published figures, for recommendations ("prefer fp16")."""
    signals = view.signals
    return Candidate(
        ref=view.record.ref,
        variant=view.record.variant,
        accuracy=signals.accuracy if signals else None,
        p99_ms=signals.p99_ms if signals else None,
        throughput_ips=signals.throughput_ips if signals else None,
        ready=signals.ready if signals else None,
    )


def job_options(job: Job, record: ModelRecord, policy: Policy | None, default_policy: Policy | None) -> dict[str, Any]:
    """Options by layer, later wins: default policy, the model's policy, its metadata, the job."""
    options: dict[str, Any] = {}
    for layer in (
        default_policy.options if default_policy else {},
        policy.options if policy else {},
        _metadata_options(record),
        job.options or {},
    ):
        options.update(layer)
    return options


def job_checks(job: Job, policy: Policy | None, default_policy: Policy | None) -> list[str]:
    """The job's checks, else the model's policy's, else the default policy's (empty: all)."""
    return list(job.checks or (policy.checks if policy else []) or (default_policy.checks if default_policy else []))


def job_requirements(
    job: Job,
    record: ModelRecord,
    parent: ModelRecord | None,
    policy: Policy | None,
    default_policy: Policy | None,
) -> list[Sourced]:
    metadata, source = record.metadata.get("requirements"), "metadata"
    if metadata is None and parent is not None:
        # a variant is held to its family's requirements unless it states its own
        metadata, source = parent.metadata.get("requirements"), "parent-metadata"
    return resolve(
        request=job.requirements or [],
        metadata=metadata,
        policy=policy,
        default_policy=default_policy,
        metadata_source=source,
    )


def _metadata_options(record: ModelRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    layout = record.metadata.get("detection_layout")
    if isinstance(layout, str):
        out["detection_layout"] = layout
    extra = record.metadata.get("validation_options")
    if isinstance(extra, dict):
        out.update(extra)
    return out
