"""Validator wiring: the ``validator`` durable consumer of ``model.benchmarked.*`` and
``model.validate``, resolution of models, parents, datasets and policies through the registry
and the artifact store, and the outcomes it publishes. The checks run in a sandbox worker
(isolated.py, suite.py); the events are built by pure functions (outcomes.py, failures.py).

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
from pathlib import Path

from services.validator.errors import CheckFailed, UnknownDataset, UnknownParent, UnsupportedFormat, ValidationFailure
from services.validator.failures import failure_event
from services.validator.isolated import SuiteFiles, run_suite_isolated
from services.validator.jobs import (
    Job,
    candidate,
    job_checks,
    job_options,
    job_requirements,
    perf_from_results,
    perf_from_signals,
)
from services.validator.outcomes import fit_report, outcome_events
from services.validator.readiness import Candidate
from services.validator.requirements import Policy, load_policy
from services.validator.state import Progress, SuiteFields
from services.validator.suite import SuiteConfig
from shared.artifacts import SCHEME, ArtifactStore, object_uri, parse_object_uri
from shared.bus import Bus
from shared.cache import ArtifactCache
from shared.clients.validation import DATASET_SCHEME, NAMED_DATASET_PREFIX
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.benchmark import ModelBenchmarked
from shared.contracts.registry import FORMAT_ONNX, ModelRecord, ModelView
from shared.contracts.validation import (
    ModelValidated,
    ValidateModel,
    ValidationErrored,
    ValidationProgress,
    ValidationReport,
)
from shared.endpoints import Endpoint
from shared.errors import (
    ArtifactNotFound,
    InferlabError,
    InvalidReference,
    NativeFailure,
    NotFound,
    ServiceUnavailable,
    UnknownModel,
)
from shared.fetch import public_uri
from shared.log import get_logger
from shared.sandbox import SandboxPool, limits_for, pool_size
from shared.sdk import Client
from shared.worker import Delivery, Route, Worker

SERVICE = "validator"
# Room left for the envelope when a report is trimmed to the message size limit.
_MESSAGE_MARGIN = 16 * 1024


def named_dataset_object(name: str) -> str:
    return f"{NAMED_DATASET_PREFIX}/{name}"


class ValidatorService:
    name = SERVICE
    description = "inferlab validator: structural, parity, task metrics, fairness, robustness and readiness"

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self.bus = bus
        self.settings = settings
        self.registry = Client(bus)
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
            preload=["onnxruntime", "services.validator.isolated"],
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

    def endpoints(self) -> list[Endpoint]:
        return []

    async def stop(self) -> None:
        await self.sandbox.close()

    # --- triggers -------------------------------------------------------------------------

    async def on_validate(self, delivery: Delivery[ValidateModel]) -> None:
        command = delivery.message
        await self.handle(
            Job(
                ref=command.ref,
                trigger=subjects.VALIDATE,
                event_id=command.event_id,
                correlation_id=command.correlation_id,
                dataset_uri=command.dataset_uri,
                requirements=list(command.requirements),
                checks=list(command.checks),
                options=dict(command.options),
                command=command,
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
        """The error edge: an error of the hierarchy becomes ``model.validation_failed``;
        a transport failure raises, so the trigger is redelivered."""
        try:
            record, report = await self.validate(job)
        except ServiceUnavailable:
            raise
        except InferlabError as exc:
            errored = failure_event(job, exc)
            await self.bus.publish(subjects.validation_failed(errored.name), errored)
            self.log.info("validation_errored", ref=job.ref, reason=errored.reason, message=errored.message)
            await self.bus.reply(job.command, errored)
            return errored
        outcome = outcome_events(job, record, report, self.settings.max_message_bytes - _MESSAGE_MARGIN)
        await self.bus.publish(subjects.validated(record.name), outcome.validated)
        if outcome.alert is not None:
            await self.bus.publish(subjects.alert("validation", "failed", record.name), outcome.alert)
        self.log.info(
            "validated",
            ref=record.ref,
            ready=report.ready,
            accuracy=outcome.validated.accuracy,
            trigger=job.trigger,
            failed=[c.metric for c in outcome.unmet],
            duration_s=report.duration_s,
        )
        await self.bus.reply(job.command, outcome.validated)
        return outcome.validated

    # --- one validation -----------------------------------------------------------------------

    async def validate(self, job: Job) -> tuple[ModelRecord, ValidationReport]:
        """Resolve what ``job`` names, run the suite on it in a sandbox worker: the record
        validated and its report."""
        started = time.perf_counter()
        view = await self._get(job.ref, "model")
        record = view.record
        if record.format != FORMAT_ONNX:
            raise UnsupportedFormat(
                f"{record.ref} is a {record.format}; the validator runs ONNX models with ONNX Runtime "
                f"(validate its parent {record.parent} instead)"
            )
        parent_view = await self._get(record.parent, "parent") if record.parent else None
        parent = parent_view.record if parent_view else None
        policy, default_policy = self._policy(record.name), self._policy("default")
        options = job_options(job, record, policy, default_policy)
        checks = job_checks(job, policy, default_policy)
        config = SuiteConfig.from_settings(self.settings, options)
        requirements = job_requirements(job, record, parent, policy, default_policy)
        model_path = await self._artifact(record, "model")
        parent_path = await self._artifact(parent, "parent") if parent else None
        dataset_uri, dataset_path = await self._dataset(
            job.dataset_uri or record.dataset_uri or (parent.dataset_uri if parent else None)
        )
        files = SuiteFiles(
            model=model_path,
            ref=record.ref,
            parent=parent_path,
            parent_ref=parent.ref if parent else None,
            dataset=dataset_path,
            dataset_shown=dataset_uri or "",
            batch_size=self.settings.validator_batch_size,
        )
        fields = SuiteFields(
            ref=record.ref,
            variant=record.variant,
            requirements=requirements,
            dataset_uri=dataset_uri,
            dataset_sha256=dataset_path.stem if dataset_path else None,
            task=record.task or (parent.task if parent else None),
            parent_ref=parent.ref if parent else None,
            parent_variant=parent.variant if parent else None,
            checks=checks,
            options=options,
            perf=job.perf or perf_from_signals(view),
            parent=candidate(parent_view) if parent_view else None,
            siblings=await self._siblings(record),
            trigger=job.trigger,
            resolved=list(record.resolved_inputs),
            input_status=record.input_status,
            input_message=record.input_message,
        )
        model_bytes = record.size_bytes + (parent.size_bytes if parent else 0)
        report = await self._run_suite(job, record, files, fields, config, model_bytes)
        report.duration_s = round(time.perf_counter() - started, 4)
        return record, report

    async def _run_suite(
        self,
        job: Job,
        record: ModelRecord,
        files: SuiteFiles,
        fields: SuiteFields,
        config: SuiteConfig,
        model_bytes: int,
    ) -> ValidationReport:
        try:
            return await self.sandbox.run(
                run_suite_isolated,
                files,
                fields,
                config,
                limits=limits_for(self.settings, self.settings.sandbox_validate_timeout_s, model_bytes=model_bytes),
                step="validation suite",
                progress=self._progress(job, record.ref),
            )
        except NativeFailure as exc:
            self.log.warning("validation_native_failure", ref=record.ref, reason=exc.code)
            raise ValidationFailure.within(record.ref, exc) from None
        except (ValueError, TypeError, IndexError, FloatingPointError, MemoryError) as exc:
            # A check met data it cannot handle: report it rather than retry a deterministic failure.
            self.log.exception("check_failed", ref=record.ref)
            raise CheckFailed(f"{type(exc).__name__}: {exc}") from None

    def _progress(self, job: Job, ref: str) -> Progress:
        """Progress messages to the command's ``reply_to``, sent from the sandbox's thread."""
        loop = asyncio.get_running_loop()

        def progress(stage: str, step: int, steps: int) -> None:
            if job.command is None or not job.command.reply_to:
                return
            message = ValidationProgress(
                event_id=f"{job.event_id}-progress-{step}",
                correlation_id=job.correlation_id,
                ref=ref,
                stage=stage,
                step=step,
                steps=steps,
            )
            asyncio.run_coroutine_threadsafe(self.bus.reply(job.command, message), loop)

        return progress

    # --- resolution ---------------------------------------------------------------------------

    async def _get(self, ref: str, what: str) -> ModelView:
        try:
            return await self.registry.get(ref)
        except (InvalidReference, ServiceUnavailable):
            raise
        except NotFound as exc:
            unknown = UnknownModel if what == "model" else UnknownParent
            raise unknown(f"{what} {ref}: {exc.message}") from None
        except InferlabError as exc:
            raise ValidationFailure.within(f"{what} {ref}", exc) from None

    def _policy(self, name: str) -> Policy | None:
        return load_policy(self.policy_dir, name)

    async def _artifact(self, record: ModelRecord, what: str) -> Path:
        try:
            return await self.cache.get(record.artifact_uri, record.sha256)
        except ServiceUnavailable:
            raise
        except InferlabError as exc:
            raise ValidationFailure.within(f"{what} {record.ref} artifact", exc) from None

    async def _dataset(self, uri: str | None) -> tuple[str | None, Path | None]:
        """(the dataset's URI as shown, its local file), or (``uri``, None) without one."""
        if not uri:
            return uri, None
        fetchable = await self._resolve_dataset(uri)
        # Shown in errors, logs and the report without user info or query (credentials).
        shown = public_uri(uri)
        return shown, await self._fetch_dataset(fetchable, shown)

    async def _resolve_dataset(self, uri: str) -> str:
        """``dataset://<name>``: the named dataset uploaded with ``put_dataset`` (object
        ``datasets/named/<name>``), else the dataset registered with model ``<name>`` (a
        reference such as ``digits@1.0.0`` works too). Any other URI is fetched as it is."""
        if not uri.startswith(f"{DATASET_SCHEME}://"):
            return uri
        name = uri[len(DATASET_SCHEME) + 3 :].strip("/")
        if not name:
            raise UnknownDataset(f"{uri!r} names no dataset")
        store = ArtifactStore(self.bus)
        if "@" not in name and "+" not in name:
            info = await store.info(named_dataset_object(name))
            if info is not None:
                return object_uri(store.bucket, info.name)
        try:
            view = await self.registry.get(name)
        except (InvalidReference, NotFound):
            raise UnknownDataset(
                f"no dataset named {name!r}: upload one with `inferlab dataset put {name} FILE.npz`, "
                "or name a registered model that has a dataset"
            ) from None
        if not view.record.dataset_uri:
            raise UnknownDataset(f"{uri}: model {view.record.ref} was registered without a dataset")
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
            raise UnknownDataset(f"dataset {shown}: {exc.message}") from None
        except InferlabError as exc:
            raise ValidationFailure.within(f"dataset {shown}", exc) from None

    async def _siblings(self, record: ModelRecord) -> list[Candidate]:
        """Other variants of the same version, with their published figures, for
        recommendations ("prefer fp16")."""
        try:
            listing = await self.registry.list(name=record.name, limit=200)
        except InferlabError:
            return []
        return [
            candidate(v) for v in listing.models if v.record.version == record.version and v.record.ref != record.ref
        ]


__all__ = ["SERVICE", "Job", "ValidatorService", "fit_report", "perf_from_results"]
