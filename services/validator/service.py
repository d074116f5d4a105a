"""Validator wiring: the ``validator`` durable consumer of ``model.benchmarked.*`` and
``model.validate``, resolution of models, parents, datasets and requirements, and the
outcomes it publishes. The checks themselves live in the pure modules (see suite.py).

Outcomes, each with an event id derived from the trigger's, so a redelivered trigger
re-publishes duplicates that JetStream drops:
- ``model.validated.<name>`` (``validated-<trigger id>``): the report and the verdict;
- ``alerts.validation.failed.<name>`` (``validation-alert-<trigger id>``) when a requirement
  failed or could not be measured;
- ``model.validation_failed.<name>`` (``validation-errored-<trigger id>``) when validation
  could not run (unknown model or dataset, a model that will not load, bad requirements);
- every outcome also to the command's ``reply_to`` inbox, preceded by progress messages.

Transport failures (NATS or the registry unreachable) raise, so the trigger is redelivered.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.validator import requirements as rq
from services.validator.readiness import Candidate
from services.validator.runner import Runner
from services.validator.suite import Perf, SuiteConfig, SuiteInput, check_options, headline_accuracy, run_suite
from shared import sandbox
from shared.artifacts import SCHEME, ArtifactStore, object_uri, parse_object_uri
from shared.bus import Bus
from shared.cache import ArtifactCache
from shared.clients.validation import DATASET_SCHEME, NAMED_DATASET_PREFIX
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.alerts import ValidationFailedAlert
from shared.contracts.base import Command, encode
from shared.contracts.benchmark import ConfigResult, ModelBenchmarked
from shared.contracts.identity import ModelRef
from shared.contracts.registry import FORMAT_ONNX, INPUTS_NEED_SPEC, ModelRecord, ModelView
from shared.contracts.validation import (
    ModelValidated,
    Requirement,
    ValidateModel,
    ValidationErrored,
    ValidationProgress,
    ValidationReport,
)
from shared.datasets import Dataset, load_dataset
from shared.errors import (
    ArtifactNotFound,
    InferlabError,
    InvalidDataset,
    InvalidReference,
    NativeFailure,
    NotFound,
    ServiceUnavailable,
)
from shared.fetch import public_uri
from shared.log import get_logger
from shared.sandbox import SandboxPool, limits_for, pool_size
from shared.sdk import Client
from shared.worker import Delivery, Route, Worker

SERVICE = "validator"
# Parsed datasets kept in memory between validations (least recently used dropped first).
DATASET_MEMORY_BYTES = 512 << 20
# Room left for the envelope when a report is trimmed to the message size limit.
_MESSAGE_MARGIN = 16 * 1024


class ValidationFailure(Exception):
    """Validation cannot run; becomes a ``model.validation_failed`` event."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


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


def named_dataset_object(name: str) -> str:
    return f"{NAMED_DATASET_PREFIX}/{name}"


class ValidatorService:
    name = SERVICE
    description = "inferlab validator: structural, parity, task metrics, fairness, robustness and readiness"

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self.bus = bus
        self.settings = settings
        self.client = Client(bus)
        self.cache = ArtifactCache(bus, settings.home_path / "cache" / SERVICE)
        self.policy_dir = (
            Path(settings.validator_policy_dir).expanduser()
            if settings.validator_policy_dir
            else (settings.home_path / "policies")
        )
        self.log = get_logger()
        self.workers: list[Worker] = []
        # Loading the model and the whole suite's inference run in workers (native code on a
        # user's model); datasets are parsed and cached there too.
        self.sandbox = SandboxPool(
            SERVICE,
            size=pool_size(settings, settings.validator_concurrency),
            preload=["onnxruntime", "services.validator.service"],
            max_tasks=settings.sandbox_max_tasks,
        )

    async def start(self) -> None:
        await self.sandbox.start()
        await ArtifactStore(self.bus).ensure()
        self.workers = [
            Worker(
                self.bus,
                service=SERVICE,
                stream="MODELS",
                durable=SERVICE,
                routes=[
                    Route("model.benchmarked.*", ModelBenchmarked, self.on_benchmarked),
                    Route(subjects.VALIDATE, ValidateModel, self.on_validate),
                ],
                concurrency=self.settings.validator_concurrency,
            )
        ]

    def endpoints(self) -> list:
        return []

    async def stop(self) -> None:
        await self.sandbox.close()

    # --- triggers -------------------------------------------------------------------------

    async def on_validate(self, delivery: Delivery[ValidateModel]) -> None:
        cmd = delivery.message
        await self.handle(
            Job(
                ref=cmd.ref,
                trigger=subjects.VALIDATE,
                event_id=cmd.event_id,
                correlation_id=cmd.correlation_id,
                dataset_uri=cmd.dataset_uri,
                requirements=list(cmd.requirements),
                checks=list(cmd.checks),
                options=dict(cmd.options),
                command=cmd,
            )
        )

    async def on_benchmarked(self, delivery: Delivery[ModelBenchmarked]) -> None:
        event = delivery.message
        await self.handle(
            Job(
                ref=event.ref,
                trigger="model.benchmarked",
                event_id=event.event_id,
                correlation_id=event.correlation_id,
                perf=perf_from_results(event.results),
            )
        )

    async def handle(self, job: Job) -> ModelValidated | ValidationErrored:
        try:
            outcome: ModelValidated | ValidationErrored = await self.validate(job)
        except ValidationFailure as failure:
            outcome = self._errored(job, failure)
            await self.bus.publish(subjects.validation_failed(outcome.name), outcome)
            self.log.info("validation_errored", ref=job.ref, reason=failure.reason, message=failure.message)
        await self.bus.reply(job.command, outcome)
        return outcome

    def _errored(self, job: Job, failure: ValidationFailure) -> ValidationErrored:
        try:
            parsed = ModelRef.parse(job.ref)
            name, version, variant = parsed.name, parsed.version or parsed.alias or "", parsed.variant
        except InvalidReference:
            name, version, variant = subjects.INVALID_NAME_TOKEN, "", "base"
        return ValidationErrored(
            event_id=f"validation-errored-{job.event_id}",
            correlation_id=job.correlation_id,
            name=name,
            version=version,
            variant=variant,
            ref=job.ref,
            reason=failure.reason,
            message=failure.message,
        )

    # --- one validation -----------------------------------------------------------------------

    async def validate(self, job: Job) -> ModelValidated:
        started = time.perf_counter()
        view = await self._get(job.ref, "model")
        record = view.record
        if record.format != FORMAT_ONNX:
            raise ValidationFailure(
                "unsupported_format",
                f"{record.ref} is a {record.format}; the validator runs ONNX models with ONNX Runtime "
                f"(validate its parent {record.parent} instead)",
            )
        parent_view = await self._get(record.parent, "parent") if record.parent else None

        policy = self._policy(record.name)
        default_policy = self._policy("default")
        options: dict[str, Any] = {}
        for layer in (
            default_policy.options if default_policy else {},
            policy.options if policy else {},
            _metadata_options(record),
            job.options or {},
        ):
            options.update(layer)
        checks = list(
            job.checks or (policy.checks if policy else []) or (default_policy.checks if default_policy else [])
        )
        try:
            check_options(options)
            config = SuiteConfig.from_settings(self.settings, options)
            metadata_reqs, metadata_source = record.metadata.get("requirements"), "metadata"
            if metadata_reqs is None and parent_view is not None:
                # a variant is held to its family's requirements unless it states its own
                metadata_reqs, metadata_source = parent_view.record.metadata.get("requirements"), "parent-metadata"
            requirements = rq.resolve(
                request=job.requirements or [],
                metadata=metadata_reqs,
                policy=policy,
                default_policy=default_policy,
                metadata_source=metadata_source,
            )
        except InferlabError as exc:
            raise ValidationFailure(exc.code, exc.message) from None

        dataset_uri = job.dataset_uri or record.dataset_uri or (parent_view.record.dataset_uri if parent_view else None)
        model_path = await self._artifact(record, "model")
        parent_path = await self._artifact(parent_view.record, "parent") if parent_view else None
        dataset_path = dataset_sha = None
        if dataset_uri:
            fetchable = await self._resolve_dataset(dataset_uri)
            # Shown in errors, logs and the report without user info or query (credentials).
            dataset_uri = public_uri(dataset_uri)
            dataset_path = await self._fetch_dataset(fetchable, dataset_uri)
            dataset_sha = dataset_path.stem
        files = SuiteFiles(
            model=model_path,
            ref=record.ref,
            parent=parent_path if parent_view else None,
            parent_ref=parent_view.record.ref if parent_view else None,
            dataset=dataset_path,
            dataset_shown=dataset_uri or "",
            batch_size=self.settings.validator_batch_size,
        )

        perf = job.perf or _perf_from_signals(view)
        siblings = await self._siblings(record)
        parent_candidate = _candidate(parent_view) if parent_view else None
        suite_fields: dict[str, Any] = dict(
            ref=record.ref,
            variant=record.variant,
            requirements=requirements,
            dataset_uri=dataset_uri,
            dataset_sha256=dataset_sha,
            task=record.task or (parent_view.record.task if parent_view else None),
            parent_ref=parent_view.record.ref if parent_view else None,
            parent_variant=parent_view.record.variant if parent_view else None,
            checks=checks,
            options=options,
            perf=perf,
            parent=parent_candidate,
            siblings=siblings,
            trigger=job.trigger,
            resolved=list(record.resolved_inputs),
            input_status=record.input_status,
            input_message=record.input_message,
        )
        loop = asyncio.get_running_loop()

        def progress(stage: str, step: int, steps: int) -> None:
            if job.command is None or not job.command.reply_to:
                return
            message = ValidationProgress(
                event_id=f"{job.event_id}-progress-{step}",
                correlation_id=job.correlation_id,
                ref=record.ref,
                stage=stage,
                step=step,
                steps=steps,
            )
            asyncio.run_coroutine_threadsafe(self.bus.reply(job.command, message), loop)

        model_bytes = record.size_bytes + (parent_view.record.size_bytes if parent_view else 0)
        try:
            report = await self.sandbox.run(
                run_suite_isolated,
                files,
                suite_fields,
                config,
                limits=limits_for(self.settings, self.settings.sandbox_validate_timeout_s, model_bytes=model_bytes),
                step="validation suite",
                progress=progress,
            )
        except NativeFailure as exc:
            self.log.warning("validation_native_failure", ref=record.ref, reason=exc.code)
            raise ValidationFailure(exc.code, f"{record.ref}: {exc.message}") from None
        except InferlabError as exc:
            raise ValidationFailure(exc.code, exc.message) from None
        except (ValueError, TypeError, IndexError, FloatingPointError, MemoryError) as exc:
            # A check met data it cannot handle: report it rather than retry a deterministic failure.
            self.log.exception("check_failed", ref=record.ref)
            raise ValidationFailure("check_failed", f"{type(exc).__name__}: {exc}") from None
        report.duration_s = round(time.perf_counter() - started, 4)
        event = ModelValidated(
            event_id=f"validated-{job.event_id}",
            correlation_id=job.correlation_id,
            name=record.name,
            version=record.version,
            variant=record.variant,
            ref=record.ref,
            ready=report.ready,
            accuracy=headline_accuracy(report),
            report=report,
            verdict=report.verdict,
        )
        fit_report(event, self.settings.max_message_bytes - _MESSAGE_MARGIN)
        await self.bus.publish(subjects.validated(record.name), event)
        unmet = [c for c in report.criteria if c.passed is not True]
        # a model nobody has said how to feed is an outcome for its owner, not an alert
        needs_spec = record.input_status == INPUTS_NEED_SPEC and all(c.passed is None for c in unmet)
        if unmet and not needs_spec:
            alert = ValidationFailedAlert(
                event_id=f"validation-alert-{job.event_id}",
                correlation_id=job.correlation_id,
                severity="critical" if any(c.metric == "structural" for c in unmet) else "warning",
                name=record.name,
                summary=f"{record.ref} is not ready: " + "; ".join(c.message for c in unmet[:4]),
                ref=record.ref,
                version=record.version,
                variant=record.variant,
                failed=unmet,
                recommendations=report.recommendations,
                validated_event_id=event.event_id,
            )
            await self.bus.publish(subjects.alert("validation", "failed", record.name), alert)
        self.log.info(
            "validated",
            ref=record.ref,
            ready=report.ready,
            accuracy=event.accuracy,
            trigger=job.trigger,
            failed=[c.metric for c in unmet],
            duration_s=report.duration_s,
        )
        return event

    # --- resolution ---------------------------------------------------------------------------

    async def _get(self, ref: str, what: str) -> ModelView:
        try:
            return await self.client.get(ref)
        except InvalidReference as exc:
            raise ValidationFailure("invalid_ref", exc.message) from None
        except NotFound as exc:
            reason = "unknown_model" if what == "model" else "unknown_parent"
            raise ValidationFailure(reason, f"{what} {ref}: {exc.message}") from None
        except ServiceUnavailable:
            raise
        except InferlabError as exc:
            raise ValidationFailure(exc.code, f"{what} {ref}: {exc.message}") from None

    def _policy(self, name: str) -> rq.Policy | None:
        try:
            return rq.load_policy(self.policy_dir, name)
        except rq.PolicyError as exc:
            raise ValidationFailure(exc.code, exc.message) from None

    async def _artifact(self, record: ModelRecord, what: str) -> Path:
        try:
            return await self.cache.get(record.artifact_uri, record.sha256)
        except ServiceUnavailable:
            raise
        except InferlabError as exc:
            raise ValidationFailure(exc.code, f"{what} {record.ref} artifact: {exc.message}") from None

    async def _resolve_dataset(self, uri: str) -> str:
        """``dataset://<name>``: the named dataset uploaded with ``put_dataset`` (object
        ``datasets/named/<name>``), else the dataset registered with model ``<name>`` (a
        reference such as ``digits@1.0.0`` works too). Any other URI is fetched as it is."""
        if not uri.startswith(f"{DATASET_SCHEME}://"):
            return uri
        name = uri[len(DATASET_SCHEME) + 3 :].strip("/")
        if not name:
            raise ValidationFailure("unknown_dataset", f"{uri!r} names no dataset")
        store = ArtifactStore(self.bus)
        if "@" not in name and "+" not in name:
            info = await store.info(named_dataset_object(name))
            if info is not None:
                return object_uri(store.bucket, info.name)
        try:
            view = await self.client.get(name)
        except (InvalidReference, NotFound):
            raise ValidationFailure(
                "unknown_dataset",
                f"no dataset named {name!r}: upload one with `inferlab dataset put {name} FILE.npz`, "
                "or name a registered model that has a dataset",
            ) from None
        if not view.record.dataset_uri:
            raise ValidationFailure(
                "unknown_dataset", f"{uri}: model {view.record.ref} was registered without a dataset"
            )
        return view.record.dataset_uri

    async def _fetch_dataset(self, uri: str, shown: str) -> Path:
        try:
            sha256 = None
            if uri.startswith(f"{SCHEME}://"):
                # The object's digest makes the local cache hit: a dataset shared by every
                # variant of a model is downloaded once, not once per validation.
                bucket, name = parse_object_uri(uri)
                info = await ArtifactStore(self.bus, bucket).info(name)
                if info is None:
                    raise ArtifactNotFound(f"no object {name!r} in bucket {bucket!r}")
                sha256 = info.sha256 or None
            return await self.cache.get(uri, sha256, suffix=".npz", max_bytes=self.settings.max_dataset_bytes)
        except ServiceUnavailable:
            raise
        except ArtifactNotFound as exc:
            raise ValidationFailure("unknown_dataset", f"dataset {shown}: {exc.message}") from None
        except InferlabError as exc:
            raise ValidationFailure(exc.code, f"dataset {shown}: {exc.message}") from None

    async def _siblings(self, record: ModelRecord) -> list[Candidate]:
        """Other variants of the same version, with their published figures, for
        recommendations ("prefer fp16")."""
        try:
            listing = await self.client.list(name=record.name, limit=200)
        except InferlabError:
            return []
        return [
            _candidate(v) for v in listing.models if v.record.version == record.version and v.record.ref != record.ref
        ]


# --- in a sandbox worker ------------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteFiles:
    """The local files one validation runs on, handed to a sandbox worker."""

    model: Path
    ref: str
    parent: Path | None
    parent_ref: str | None
    dataset: Path | None
    dataset_shown: str
    batch_size: int


# Parsed datasets kept in a worker between validations (sibling variants share one dataset).
_DATASETS: OrderedDict[tuple, Dataset] = OrderedDict()


def run_suite_isolated(
    files: SuiteFiles, fields: dict[str, Any], config: SuiteConfig, progress: Any = None
) -> ValidationReport:
    """Load the model (and its parent) in ONNX Runtime, parse the dataset and run the suite:
    everything that runs native code on the user's model, in one sandbox task."""
    sandbox.step("loading the model")
    runner = _open_runner(files.model, files.ref, files.batch_size)
    parent_runner = None
    if files.parent is not None and files.parent_ref is not None:
        sandbox.step("loading the parent model")
        parent_runner = _open_runner(files.parent, files.parent_ref, files.batch_size)
    dataset = _load_dataset(files.dataset, runner, files.dataset_shown) if files.dataset is not None else None
    sandbox.step("validation suite")
    suite_input = SuiteInput(runner=runner, parent_runner=parent_runner, dataset=dataset, **fields)
    return run_suite(suite_input, config, progress)


def _open_runner(path: Path, ref: str, batch_size: int) -> Runner:
    try:
        return Runner(path, batch_size=batch_size)
    except InferlabError as exc:
        raise ValidationFailure(exc.code, f"{ref}: {exc.message}") from None


def _load_dataset(path: Path, runner: Runner, shown: str) -> Dataset:
    """Parse (and check against the model's inputs) once per dataset and input layout; the
    suite never writes into dataset arrays, so validations of sibling variants share them."""
    specs = [s for s in runner.inputs if s.is_tensor]
    key = (path.stem, tuple((s.name, s.dtype, tuple(s.shape or ())) for s in specs))
    cached = _DATASETS.get(key)
    if cached is not None:
        _DATASETS.move_to_end(key)
        return cached
    try:
        dataset = load_dataset(path, specs, require_labels=False)
    except InvalidDataset as exc:
        raise ValidationFailure("invalid_dataset", f"dataset {shown}: {exc.message}") from None
    for array in [*dataset.inputs.values(), dataset.labels, dataset.groups, *dataset.extras.values()]:
        if array is not None:
            array.flags.writeable = False  # shared between validations: never written
    size = _dataset_bytes(dataset)
    if size <= DATASET_MEMORY_BYTES:
        _DATASETS[key] = dataset
        while sum(_dataset_bytes(d) for d in _DATASETS.values()) > DATASET_MEMORY_BYTES:
            _DATASETS.popitem(last=False)
    return dataset


def _dataset_bytes(dataset: Dataset) -> int:
    arrays = [*dataset.inputs.values(), dataset.labels, dataset.groups, *dataset.extras.values()]
    return sum(a.nbytes for a in arrays if a is not None)


def _metadata_options(record: ModelRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    layout = record.metadata.get("detection_layout")
    if isinstance(layout, str):
        out["detection_layout"] = layout
    extra = record.metadata.get("validation_options")
    if isinstance(extra, dict):
        out.update(extra)
    return out


def _candidate(view: ModelView) -> Candidate:
    s = view.signals
    return Candidate(
        ref=view.record.ref,
        variant=view.record.variant,
        accuracy=s.accuracy if s else None,
        p99_ms=s.p99_ms if s else None,
        throughput_ips=s.throughput_ips if s else None,
        ready=s.ready if s else None,
    )


def _perf_from_signals(view: ModelView) -> Perf | None:
    s = view.signals
    if s is None or (s.p99_ms is None and s.throughput_ips is None and s.peak_memory_bytes is None):
        return None
    return Perf(
        p50_ms=s.p50_ms,
        p99_ms=s.p99_ms,
        throughput_ips=s.throughput_ips,
        peak_memory_bytes=s.peak_memory_bytes,
        source="registry signals",
    )


# Figures dropped, in order, until a report fits the message size limit.
_TRIM_ORDER = (
    ("metrics", "confusion_matrix"),
    ("metrics", "per_class"),
    ("fairness", "per_group"),
    ("metrics", "fold_spread"),
    ("parity", "outputs"),
    ("structural", "outputs"),
    ("robustness", "curve"),
)


def fit_report(event: ModelValidated, max_bytes: int) -> None:
    """Drop the bulkiest figures (listed in ``report.truncated``) until the event fits."""
    report: ValidationReport = event.report
    if len(encode(event)) <= max_bytes:
        return
    by_name = {c.name: c for c in report.checks}
    for check, key in _TRIM_ORDER:
        outcome = by_name.get(check)
        if outcome is not None and key in outcome.figures:
            figures = dict(outcome.figures)
            figures.pop(key)
            outcome.figures = figures
            report.truncated.append(f"{check}.{key}")
            if len(encode(event)) <= max_bytes:
                return
    for outcome in report.checks:  # still too large: keep summaries only
        if outcome.figures:
            outcome.figures = {}
            report.truncated.append(f"{outcome.name}.*")
    report.recommendations = report.recommendations[:20]


__all__ = ["SERVICE", "ValidatorService", "fit_report", "perf_from_results"]
