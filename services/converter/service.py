"""Converter wiring: the durable consumer of ``model.registered.*`` (base ONNX variants, with
the configured default profiles) and ``model.convert`` (explicit), and the
``converter.profiles`` endpoint. Domain logic lives in pipeline.py (convert + parity),
parity.py, inputs.py, tolerances.py, keys.py and profiles/.

Per profile: fetch the source through the content-addressed cache, convert and check parity
in a worker thread, upload the variant, register it through the registry (``model.register``
with ``parent`` and ``variant``, waiting for the registry's answer), then publish
``model.converted``. Failures publish ``model.conversion_failed`` plus
``alerts.conversion.failed``; a profile that cannot run here, or has nothing to do on this
model, publishes ``model.conversion_skipped``. Every outcome is also answered to the
command's ``reply_to``.

Transient trouble (NATS, the registry not answering) raises, so the worker naks and the
command is redelivered; the idempotency key makes the retry re-announce what was done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from services.converter import keys
from services.converter.pipeline import ConversionFailure, DataPlan, ProfileRun, References, run_profile_isolated
from services.converter.profiles import InvalidOptions, Profile, ProfileError, all_profiles, get_profile
from services.converter.tolerances import check_tolerance
from shared.artifacts import ArtifactStore, content_name
from shared.bus import Bus
from shared.cache import ArtifactCache
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.alerts import ConversionFailedAlert
from shared.contracts.base import new_id
from shared.contracts.conversion import (
    CONVERTER_PROFILES,
    REASON_ARTIFACT_ERROR,
    REASON_CONVERSION_ERROR,
    REASON_INVALID_DATASET,
    REASON_INVALID_REQUEST,
    REASON_NEEDS_INPUT_SPEC,
    REASON_REGISTRATION_REJECTED,
    REASON_UNAVAILABLE_ON_HOST,
    REASON_UNKNOWN_MODEL,
    REASON_UNSUPPORTED_MODEL,
    REASON_VARIANT_EXISTS,
    ConversionFailed,
    ConversionPlan,
    ConversionProgress,
    ConversionReport,
    ConversionSkipped,
    ConvertModel,
    ListProfiles,
    ModelConverted,
    ProfileInfo,
    ProfileList,
    Tolerance,
)
from shared.contracts.identity import BASE_VARIANT, ModelRef
from shared.contracts.registry import (
    FORMAT_ONNX,
    FORMAT_TENSORRT,
    INPUTS_NEED_SPEC,
    ModelRecord,
    ModelRegistered,
    RegisterModel,
)
from shared.datasets import load_dataset
from shared.endpoints import Endpoint
from shared.errors import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactTooLarge,
    ImportNotAllowed,
    IntegrityError,
    InvalidDataset,
    InvalidReference,
    NativeFailure,
    NotFound,
)
from shared.inputs import DATASET, InputError, InputSet, dataset_inputs, synthetic_inputs
from shared.log import get_logger
from shared.sandbox import SandboxPool, limits_for, pool_size
from shared.sdk import Client
from shared.worker import Delivery, Route, Worker

SERVICE = "converter"
_CONTENT_NAME = re.compile(r"^nats-obj://[^/]+/(?:[a-z0-9_-]+/)?([0-9a-f]{64})$")
REGISTER_TIMEOUT_S = 300.0
# Outcomes for the model's owner, not incidents: published as failed, never alerted.
NO_ALERT_REASONS = frozenset({REASON_NEEDS_INPUT_SPEC})

Outcome = ModelConverted | ConversionFailed | ConversionSkipped


@dataclass
class Job:
    """Profiles to run on one source record, with the command that asked (None when the job
    comes from a registration)."""

    record: ModelRecord
    profiles: list[str]
    command: ConvertModel | None
    correlation_id: str
    workdir: Path
    source: Path | None = None
    calibration: InputSet | None = None
    calibration_sha256: str | None = None
    dataset: InputSet | None = None
    data_error: ConversionFailure | None = None
    plan: DataPlan | None = None
    references: References | None = None

    @property
    def ref(self) -> str:
        return self.record.ref

    @property
    def tolerance(self) -> Tolerance | None:
        return self.command.tolerance if self.command else None

    @property
    def output_tolerances(self) -> dict[str, Tolerance]:
        return self.command.output_tolerances if self.command else {}

    @property
    def shapes(self) -> dict[str, list[int]]:
        return self.command.shapes if self.command else {}

    @property
    def seed(self) -> int:
        return self.command.seed if self.command else 0


def planned_profiles(cmd: ConvertModel, defaults: tuple[str, ...]) -> list[str]:
    """The command's profiles (the defaults when none), plus ``opset-<target_opset>``, each once."""
    wanted = list(cmd.profiles) or list(defaults)
    if cmd.target_opset is not None:
        wanted.append(f"opset-{cmd.target_opset}")
    seen: list[str] = []
    for profile in wanted:
        if profile not in seen:
            seen.append(profile)
    return seen


class ConverterService:
    name = SERVICE
    description = "inferlab converter: optimised, float16, int8 and TensorRT variants, each checked for parity"

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self.bus = bus
        self.settings = settings
        self.client = Client(bus)
        self.store = ArtifactStore(bus)
        self.cache = ArtifactCache(bus, settings.home_path / "cache" / "converter")
        self.trt_cache = settings.home_path / "cache" / "converter-tensorrt"
        self.scratch = settings.home_path / "scratch" / SERVICE
        self.host = socket.gethostname()
        self.log = get_logger()
        self.workers: list[Worker] = []
        # Every conversion and parity check runs native code on a user's model: in workers.
        self.sandbox = SandboxPool(
            SERVICE,
            size=pool_size(settings, settings.converter_concurrency),
            preload=["onnxruntime", "services.converter.pipeline", "services.converter.profiles"],
            max_tasks=settings.sandbox_max_tasks,
        )

    async def start(self) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        await self.sandbox.start()
        self.trt_cache.mkdir(parents=True, exist_ok=True)
        await self.store.ensure()
        self.workers = [
            Worker(
                self.bus,
                service=SERVICE,
                stream="MODELS",
                durable="converter",
                routes=[
                    Route("model.registered.*", ModelRegistered, self.on_registered),
                    Route(subjects.CONVERT, ConvertModel, self.on_convert),
                ],
                concurrency=self.settings.converter_concurrency,
            )
        ]

    async def stop(self) -> None:
        await self.sandbox.close()

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint(
                "profiles",
                CONVERTER_PROFILES,
                ListProfiles,
                self.ep_profiles,
                "conversion profiles and whether each can run on this converter's host",
            )
        ]

    async def ep_profiles(self, _: ListProfiles) -> ProfileList:
        defaults = list(self.settings.converter_profiles)
        return ProfileList(host=self.host, profiles=profile_infos(), default_profiles=defaults)

    # --- triggers ---------------------------------------------------------------------------

    async def on_registered(self, delivery: Delivery[ModelRegistered]) -> None:
        record = delivery.message.record
        if record.variant != BASE_VARIANT or record.format != FORMAT_ONNX or not self.settings.converter_profiles:
            return
        job = self._job(record, list(self.settings.converter_profiles), None, delivery.message.correlation_id)
        await self.run_job(job)

    async def on_convert(self, delivery: Delivery[ConvertModel]) -> None:
        cmd = delivery.message
        profiles = planned_profiles(cmd, self.settings.converter_profiles)
        plan = ConversionPlan(event_id=new_id(), correlation_id=cmd.correlation_id, ref=cmd.ref, profiles=profiles)
        await self.bus.reply(cmd, plan)
        problem = self._check_command(cmd)
        record: ModelRecord | None = None
        if problem is None:
            try:
                record = (await self.client.get(cmd.ref)).record
            except InvalidReference as exc:
                problem = (REASON_INVALID_REQUEST, exc.message)
            except NotFound as exc:
                problem = (REASON_UNKNOWN_MODEL, exc.message)
        if record is not None and record.format != FORMAT_ONNX:
            problem = (REASON_UNSUPPORTED_MODEL, f"{record.ref} is a {record.format}; profiles convert ONNX models")
        if problem is not None or record is None:
            reason, message = problem or (REASON_UNKNOWN_MODEL, f"{cmd.ref} not found")
            for profile in profiles:
                await self._emit(self._unresolved_failure(cmd, profile, reason, message), cmd, alert_ref=cmd.ref)
            return
        await self.run_job(self._job(record, profiles, cmd, cmd.correlation_id))

    def _check_command(self, cmd: ConvertModel) -> tuple[str, str] | None:
        try:
            ModelRef.parse(cmd.ref)
        except InvalidReference as exc:
            return REASON_INVALID_REQUEST, exc.message
        problems = []
        for tol in [cmd.tolerance, *cmd.output_tolerances.values()]:
            if tol is not None:
                problems += check_tolerance(tol)
        if cmd.parity_samples is not None and cmd.parity_samples <= 0:
            problems.append("parity_samples must be positive")
        if problems:
            return REASON_INVALID_REQUEST, "; ".join(problems)
        return None

    def _unresolved_failure(self, cmd: ConvertModel, profile: str, reason: str, message: str) -> ConversionFailed:
        try:
            parsed = ModelRef.parse(cmd.ref)
            name, version, variant = parsed.name, parsed.version or parsed.alias or "", parsed.variant
        except InvalidReference:
            name, version, variant = cmd.ref, "", BASE_VARIANT
        return ConversionFailed(
            event_id=keys.event_id("convfail", cmd.event_id, profile),
            correlation_id=cmd.correlation_id,
            name=name,
            version=version,
            source_variant=variant,
            profile=profile,
            reason=reason,
            message=message,
        )

    def _job(self, record: ModelRecord, profiles: list[str], cmd: ConvertModel | None, correlation_id: str) -> Job:
        workdir = self.scratch / f"{record.sha256[:16]}-{new_id()[:8]}"
        return Job(record=record, profiles=profiles, command=cmd, correlation_id=correlation_id, workdir=workdir)

    # --- one job ----------------------------------------------------------------------------

    async def run_job(self, job: Job) -> None:
        try:
            await self._load_request_data(job)
            for profile_id in job.profiles:
                outcome = await self.run_profile(job, profile_id)
                await self._emit(outcome, job.command, alert_ref=job.ref)
        finally:
            await asyncio.to_thread(shutil.rmtree, job.workdir, True)

    async def _load_request_data(self, job: Job) -> None:
        """Calibration data named by the command: fetched once per job (its sha256 enters the
        idempotency key). A problem with it fails every profile of the job with its reason."""
        if job.command is None or not job.command.calibration_uri:
            return
        try:
            path = await self._fetch_data(job.command.calibration_uri)
        except ArtifactError as exc:
            job.data_error = ConversionFailure(REASON_INVALID_DATASET, f"calibration data: {exc.message}")
            return
        job.calibration_sha256 = path.stem
        try:
            job.calibration = await asyncio.to_thread(self._input_set, path, job, "calibration")
        except (InvalidDataset, InputError) as exc:
            job.data_error = ConversionFailure(REASON_INVALID_DATASET, f"calibration data: {exc.message}")

    async def _fetch_data(self, uri: str) -> Path:
        """A dataset through the cache; content-addressed object names give the sha256, so a
        dataset already cached is not downloaded again."""
        match = _CONTENT_NAME.search(uri)
        return await self.cache.get(
            uri, match.group(1) if match else None, suffix=".npz", max_bytes=self.settings.max_dataset_bytes
        )

    def _samples(self, job: Job) -> int:
        asked = job.command.parity_samples if job.command and job.command.parity_samples else None
        return min(asked or self.settings.converter_parity_samples, self.settings.converter_parity_samples * 16)

    def _input_set(self, path: Path, job: Job, source: str) -> InputSet:
        dataset = load_dataset(path, job.record.inputs)
        return dataset_inputs(dataset, job.record.inputs, samples=self._samples(job), source=source, shapes=job.shapes)

    async def _prepare_source(self, job: Job) -> None:
        """Source model and registered dataset, fetched when the first conversion needs them."""
        if job.source is not None:
            return
        job.source = await self.cache.get(job.record.artifact_uri, job.record.sha256)
        if job.record.dataset_uri and job.data_error is None:
            try:
                path = await self._fetch_data(job.record.dataset_uri)
                job.dataset = await asyncio.to_thread(self._input_set, path, job, DATASET)
            except (ArtifactError, InvalidDataset, InputError) as exc:
                job.data_error = ConversionFailure(REASON_INVALID_DATASET, f"registered dataset: {exc.message}")
        record = job.record
        samples, seed, shapes = self._samples(job), job.seed, job.shapes
        job.plan = DataPlan(
            dataset=job.dataset,
            calibration=job.calibration,
            # A partial of a module-level function: the plan travels to a sandbox worker.
            synthetic=functools.partial(_synthetic_inputs, record, samples, seed, shapes),
        )
        job.references = References(job.source)

    async def run_profile(self, job: Job, profile_id: str) -> Outcome:
        record = job.record
        variant = keys.variant_name(record.variant, profile_id)
        failure_id = keys.event_id(
            "convfail", record.ref, record.sha256, profile_id, job.command.event_id if job.command else ""
        )
        try:
            profile = get_profile(profile_id)
            options = profile.normalize_options(self._options_for(job, profile_id))
        except ProfileError as exc:
            return self._failed(job, profile_id, exc.reason, exc.message, None, failure_id)
        if not keys.valid_variant(variant):
            return self._failed(
                job, profile_id, REASON_INVALID_REQUEST, f"variant name {variant!r} is not valid", None, failure_id
            )
        unavailable = profile.availability()
        if unavailable is not None:
            return self._skipped(job, profile_id, REASON_UNAVAILABLE_ON_HOST, unavailable, record.sha256)
        if job.data_error is not None:
            return self._failed(job, profile_id, job.data_error.reason, job.data_error.message, None, failure_id)
        key = keys.conversion_key(
            source_sha256=record.sha256,
            profile=profile_id,
            options=options,
            tolerance=job.tolerance,
            output_tolerances=job.output_tolerances,
            dataset_uri=record.dataset_uri,
            calibration_sha256=job.calibration_sha256,
            shapes=job.shapes,
            samples=self._samples(job),
            seed=job.seed,
        )
        done = await self._already_converted(record, variant, key)
        if done is not None:
            self.log.info("conversion_already_done", ref=done.ref, profile=profile_id)
            return done
        await self._progress(job, profile_id, "fetching")
        try:
            await self._prepare_source(job)
        except (ArtifactNotFound, IntegrityError, ArtifactTooLarge, ImportNotAllowed) as exc:
            # The registry's stored artifact is gone or damaged: no retry can fix that.
            return self._failed(job, profile_id, REASON_ARTIFACT_ERROR, f"source artifact: {exc.message}", None, key)
        except ArtifactError as exc:
            if exc.code != "invalid_uri":
                raise  # a transfer that broke off: retried
            return self._failed(job, profile_id, REASON_ARTIFACT_ERROR, f"source artifact: {exc.message}", None, key)
        if job.data_error is not None:
            return self._failed(job, profile_id, job.data_error.reason, job.data_error.message, None, key)
        await self._progress(job, profile_id, "converting")
        assert job.source is not None and job.plan is not None and job.references is not None
        run = ProfileRun(
            profile=profile,
            options=options,
            source=job.source,
            source_ref=record.ref,
            source_sha256=record.sha256,
            inputs=record.inputs,
            outputs=record.outputs,
            workdir=job.workdir / profile_id,
            data=job.plan,
            references=job.references,
            task=record.task,
            tolerance=job.tolerance,
            output_tolerances=job.output_tolerances,
            shapes=job.shapes,
            cache_dir=self.trt_cache,
            key=key,
            variant=variant,
        )
        try:
            result = await self.sandbox.run(
                run_profile_isolated,
                run,
                str(job.workdir),
                limits=limits_for(
                    self.settings,
                    self.settings.sandbox_convert_timeout_s,
                    model_bytes=record.size_bytes,
                    gpu=profile.output_format == FORMAT_TENSORRT,
                ),
                step=f"{profile_id} conversion",
            )
        except NativeFailure as exc:
            # The runtime crashed, hung or blew its memory limit on this model: final, since
            # the same bytes would do it again; the worker was replaced.
            self.log.warning("conversion_native_failure", ref=job.ref, profile=profile_id, reason=exc.code)
            return self._failed(job, profile_id, exc.code, f"{profile_id}: {exc.message}", None, key)
        except ConversionFailure as failure:
            if failure.skipped:
                return self._skipped(job, profile_id, failure.reason, failure.message, key)
            return self._failed(job, profile_id, failure.reason, failure.message, failure.report, key)
        except (MemoryError, RecursionError, ValueError, TypeError, RuntimeError, OSError, KeyError, IndexError) as exc:
            # A model that trips a library in a way no profile anticipated: reported as a
            # failed conversion rather than retried into the dead-letter queue, since the same
            # bytes would fail the same way again.
            self.log.exception("conversion_crashed", ref=job.ref, profile=profile_id)
            message = f"{profile_id} failed unexpectedly: {type(exc).__name__}: {str(exc)[:400]}"
            return self._failed(job, profile_id, REASON_CONVERSION_ERROR, message, None, key)
        await self._progress(job, profile_id, "registering")
        return await self._register(job, profile, variant, result.report, result.path, result.format)

    def _options_for(self, job: Job, profile_id: str) -> dict[str, Any]:
        if job.command is None:
            return {}
        options = job.command.options.get(profile_id, {})
        if not isinstance(options, dict):
            raise InvalidOptions(f"options for {profile_id} must be an object, got {type(options).__name__}")
        return dict(options)

    async def _already_converted(self, record: ModelRecord, variant: str, key: str) -> ModelConverted | None:
        """The variant this exact conversion registered before (a redelivery, a repeated
        command): answered again from the registry, with the same event id."""
        try:
            existing = (await self.client.get(f"{record.name}@{record.version}+{variant}")).record
        except NotFound:
            return None
        stored = existing.metadata.get("conversion") if isinstance(existing.metadata, dict) else None
        if not isinstance(stored, dict) or stored.get("key") != key:
            return None
        try:
            report = msgspec.convert(stored, ConversionReport)
        except msgspec.ValidationError:
            return None
        return self._converted(record, existing, report)

    async def _register(
        self, job: Job, profile: Profile, variant: str, report: ConversionReport, path: Path, fmt: str
    ) -> Outcome:
        record = job.record
        sha = report.variant_sha256 or ""
        stored = await self.store.put_file(path, content_name(sha), sha256=sha)
        metadata: dict[str, Any] = {"conversion": msgspec.to_builtins(report)}
        if fmt == FORMAT_TENSORRT:
            metadata["tensorrt_version"] = report.details.get("tensorrt_version", "")
        command = RegisterModel(
            event_id=new_id(),
            correlation_id=job.correlation_id,
            name=record.name,
            version=record.version,
            variant=variant,
            artifact_uri=stored.uri,
            sha256=sha,
            task=record.task,
            dataset_uri=record.dataset_uri,
            parent=record.ref,
            metadata=metadata,
            tags={"profile": profile.id},
            format=fmt,
        )
        replies = await self.client.send_and_collect(
            subjects.REGISTER, command, timeout=REGISTER_TIMEOUT_S, until=lambda got: len(got) >= 1
        )
        reply = replies[0]
        if reply.get("type") == "model.registered":
            registered = msgspec.convert(reply, ModelRegistered)
            self.log.info("converted", ref=registered.record.ref, profile=profile.id, size=report.size_after_bytes)
            return self._converted(record, registered.record, report)
        reason = REASON_VARIANT_EXISTS if reply.get("reason") == "version_exists" else REASON_REGISTRATION_REJECTED
        message = f"the registry rejected {record.name}@{record.version}+{variant}: {reply.get('message', '')}"
        if reason == REASON_VARIANT_EXISTS:
            message += (
                " (it was converted before with other options or library versions; a variant is immutable: "
                "register a new model version to convert it differently)"
            )
        return self._failed(job, profile.id, reason, message, report, report.key)

    # --- outcomes ---------------------------------------------------------------------------

    def _converted(self, source: ModelRecord, variant: ModelRecord, report: ConversionReport) -> ModelConverted:
        return ModelConverted(
            event_id=keys.event_id("converted", variant.ref, report.key or variant.sha256),
            correlation_id=variant.correlation_id or source.correlation_id,
            name=source.name,
            version=source.version,
            source_variant=source.variant,
            variant=variant.variant,
            ref=variant.ref,
            report=report,
            profile=report.profile,
            sha256=variant.sha256,
            artifact_uri=variant.artifact_uri,
        )

    def _failed(
        self, job: Job, profile: str, reason: str, message: str, report: ConversionReport | None, key: str
    ) -> ConversionFailed:
        return ConversionFailed(
            event_id=keys.event_id("convfail", job.record.ref, key, reason),
            correlation_id=job.correlation_id,
            name=job.record.name,
            version=job.record.version,
            source_variant=job.record.variant,
            profile=profile,
            reason=reason,
            message=message,
            report=report,
        )

    def _skipped(self, job: Job, profile: str, reason: str, message: str, key: str) -> ConversionSkipped:
        return ConversionSkipped(
            event_id=keys.event_id("convskip", job.record.ref, key, profile, reason),
            correlation_id=job.correlation_id,
            name=job.record.name,
            version=job.record.version,
            source_variant=job.record.variant,
            profile=profile,
            reason=reason,
            message=message,
        )

    async def _emit(self, outcome: Outcome, command: ConvertModel | None, *, alert_ref: str) -> None:
        if isinstance(outcome, ModelConverted):
            await self.bus.publish(subjects.converted(outcome.name), outcome)
        elif isinstance(outcome, ConversionSkipped):
            await self.bus.publish(subjects.conversion_skipped(outcome.name), outcome)
            self.log.info("conversion_skipped", ref=alert_ref, profile=outcome.profile, reason=outcome.reason)
        elif outcome.reason in NO_ALERT_REASONS:
            await self.bus.publish(subjects.conversion_failed(outcome.name), outcome)
            self.log.info("conversion_not_run", ref=alert_ref, profile=outcome.profile, reason=outcome.reason)
        else:
            await self.bus.publish(subjects.conversion_failed(outcome.name), outcome)
            alert = ConversionFailedAlert(
                event_id=keys.event_id("convalert", outcome.event_id),
                correlation_id=outcome.correlation_id,
                severity="warning",
                name=outcome.name,
                summary=(
                    f"{outcome.profile} conversion of {alert_ref} failed ({outcome.reason}): {outcome.message[:300]}"
                ),
                ref=alert_ref,
                profile=outcome.profile,
                reason=outcome.reason,
                report=outcome.report,
            )
            await self.bus.publish(subjects.alert("conversion", "failed", outcome.name), alert)
            self.log.warning("conversion_failed", ref=alert_ref, profile=outcome.profile, reason=outcome.reason)
        if command is not None:
            await self.bus.reply(command, outcome)

    async def _progress(self, job: Job, profile: str, stage: str) -> None:
        if job.command is not None and job.command.reply_to:
            with contextlib.suppress(Exception):
                await self.bus.reply(
                    job.command,
                    ConversionProgress(correlation_id=job.correlation_id, ref=job.ref, profile=profile, stage=stage),
                )


def profile_infos() -> list[ProfileInfo]:
    infos = []
    for profile in all_profiles():
        reason = profile.availability()
        infos.append(
            ProfileInfo(
                id=profile.id,
                description=profile.description,
                precision=profile.precision,
                output_format=profile.output_format,
                available=reason is None,
                reason=reason or "",
                default_tolerance=profile.default_tolerance,
                needs_calibration=profile.needs_calibration,
            )
        )
    return infos


def _synthetic_inputs(record: ModelRecord, samples: int, seed: int, shapes: dict[str, list[int]] | None) -> InputSet:
    """Seeded inputs at the shapes the registry resolved; a model that needs an input spec
    gets none unless the request gave shapes."""
    if record.input_status == INPUTS_NEED_SPEC and not shapes:
        raise InputError(REASON_NEEDS_INPUT_SPEC, record.input_message)
    return synthetic_inputs(record.inputs, samples=samples, seed=seed, shapes=shapes, resolved=record.resolved_inputs)
