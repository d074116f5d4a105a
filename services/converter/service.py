"""Converter wiring: the durable consumer of ``model.registered.*`` (base ONNX variants, with
the configured default profiles) and ``model.convert`` (explicit), and the
``converter.profiles`` endpoint. Domain logic lives in jobs.py (what a job runs),
pipeline.py (convert + parity), parity.py, registration.py, tolerances.py, keys.py and
profiles/; errors become events in failures.py.

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
from pathlib import Path
from typing import Any

import msgspec

from services.converter import keys
from services.converter.errors import ConversionFailure
from services.converter.failures import failure_alert, failure_event, request_failure_event
from services.converter.jobs import (
    Job,
    check_command,
    conversion_key,
    job_synthetic_inputs,
    parity_samples,
    planned_profiles,
    profile_infos,
    profile_run,
    select_profile,
)
from services.converter.pipeline import DataPlan, Outcome, References, run_profile_isolated
from services.converter.profiles import Profile
from services.converter.registration import converted_event, register_command, registration_failure, stored_report
from shared.artifacts import ArtifactStore, content_name
from shared.bus import Bus
from shared.cache import ArtifactCache
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.base import new_id
from shared.contracts.conversion import (
    CONVERTER_PROFILES,
    REASON_ARTIFACT_ERROR,
    REASON_CONVERSION_ERROR,
    REASON_INVALID_DATASET,
    REASON_INVALID_REQUEST,
    REASON_NEEDS_INPUT_SPEC,
    REASON_UNKNOWN_MODEL,
    REASON_UNSUPPORTED_MODEL,
    ConversionFailed,
    ConversionPlan,
    ConversionProgress,
    ConversionSkipped,
    ConvertModel,
    ListProfiles,
    ModelConverted,
    ProfileList,
)
from shared.contracts.identity import BASE_VARIANT
from shared.contracts.registry import FORMAT_ONNX, FORMAT_TENSORRT, ModelRecord, ModelRegistered
from shared.datasets import load_dataset
from shared.endpoints import Endpoint
from shared.errors import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactTooLarge,
    ImportNotAllowed,
    InputError,
    IntegrityError,
    InvalidDataset,
    InvalidReference,
    NativeFailure,
    NotFound,
)
from shared.inputs import DATASET, InputSet, dataset_inputs
from shared.log import get_logger
from shared.sandbox import SandboxPool, limits_for, pool_size
from shared.sdk import Client
from shared.worker import Delivery, Route, Worker

SERVICE = "converter"
_CONTENT_NAME = re.compile(r"^nats-obj://[^/]+/(?:[a-z0-9_-]+/)?([0-9a-f]{64})$")
REGISTER_TIMEOUT_S = 300.0
# Outcomes for the model's owner, not incidents: published as failed, never alerted.
NO_ALERT_REASONS = frozenset({REASON_NEEDS_INPUT_SPEC})
# What a library raises on a model no profile anticipated: the same bytes would fail the same
# way again, so it is a failed conversion, not a retry into the dead-letter queue.
UNEXPECTED = (MemoryError, RecursionError, ValueError, TypeError, RuntimeError, OSError, KeyError, IndexError)

ProfileOutcome = ModelConverted | ConversionFailed | ConversionSkipped


class ConverterService:
    name = SERVICE
    description = "inferlab converter: optimised, float16, int8 and TensorRT variants, each checked for parity"

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self.bus = bus
        self.settings = settings
        self.registry = Client(bus)
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
        try:
            record = await self._source_record(cmd)
        except ConversionFailure as failure:
            for profile in profiles:
                await self._emit(request_failure_event(cmd, profile, failure), cmd, alert_ref=cmd.ref)
            return
        await self.run_job(self._job(record, profiles, cmd, cmd.correlation_id))

    async def _source_record(self, cmd: ConvertModel) -> ModelRecord:
        """The ONNX model a ``model.convert`` names; a ``ConversionFailure`` when there is none."""
        check_command(cmd)
        try:
            record = (await self.registry.get(cmd.ref)).record
        except InvalidReference as exc:
            raise ConversionFailure(REASON_INVALID_REQUEST, exc.message) from None
        except NotFound as exc:
            raise ConversionFailure(REASON_UNKNOWN_MODEL, exc.message) from None
        if record.format != FORMAT_ONNX:
            message = f"{record.ref} is a {record.format}; profiles convert ONNX models"
            raise ConversionFailure(REASON_UNSUPPORTED_MODEL, message)
        return record

    def _job(self, record: ModelRecord, profiles: list[str], cmd: ConvertModel | None, correlation_id: str) -> Job:
        workdir = self.scratch / f"{record.sha256[:16]}-{new_id()[:8]}"
        return Job(record=record, profiles=profiles, command=cmd, correlation_id=correlation_id, workdir=workdir)

    # --- one job ----------------------------------------------------------------------------

    async def run_job(self, job: Job) -> None:
        try:
            await self._load_request_data(job)
            for profile_id in job.profiles:
                await self._emit(await self.run_profile(job, profile_id), job.command, alert_ref=job.ref)
        finally:
            await asyncio.to_thread(shutil.rmtree, job.workdir, True)

    async def run_profile(self, job: Job, profile_id: str) -> ProfileOutcome:
        """One profile of a job. The failure edge: a ``ConversionFailure`` (final: the same
        bytes and request would fail the same way) becomes the profile's failure event; any
        other error propagates, so the worker naks and the command is redelivered."""
        try:
            return await self._convert(job, profile_id)
        except ConversionFailure as failure:
            return failure_event(job, profile_id, failure)

    async def _convert(self, job: Job, profile_id: str) -> ModelConverted:
        record = job.record
        variant = keys.variant_name(record.variant, profile_id)
        profile, options = select_profile(job, profile_id, variant)
        key = conversion_key(job, profile_id, options, self._samples(job))
        done = await self._already_converted(record, variant, key)
        if done is not None:
            self.log.info("conversion_already_done", ref=done.ref, profile=profile_id)
            return done
        await self._progress(job, profile_id, "fetching")
        await self._prepare_source(job, key)
        await self._progress(job, profile_id, "converting")
        result = await self._run_isolated(job, profile, options, variant, key)
        await self._progress(job, profile_id, "registering")
        return await self._register(job, profile, variant, result)

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
        return parity_samples(job, self.settings.converter_parity_samples)

    def _input_set(self, path: Path, job: Job, source: str) -> InputSet:
        dataset = load_dataset(path, job.record.inputs)
        return dataset_inputs(dataset, job.record.inputs, samples=self._samples(job), source=source, shapes=job.shapes)

    async def _prepare_source(self, job: Job, key: str) -> None:
        """Source model and registered dataset, fetched when the first conversion needs them.
        The registry's stored artifact gone or damaged is final; a transfer that broke off
        raises, to be retried."""
        try:
            await self._fetch_source(job)
        except (ArtifactNotFound, IntegrityError, ArtifactTooLarge, ImportNotAllowed) as exc:
            raise ConversionFailure(REASON_ARTIFACT_ERROR, f"source artifact: {exc.message}", key=key) from None
        except ArtifactError as exc:
            if exc.code != "invalid_uri":
                raise
            raise ConversionFailure(REASON_ARTIFACT_ERROR, f"source artifact: {exc.message}", key=key) from None
        if job.data_error is not None:
            raise ConversionFailure(job.data_error.code, job.data_error.message, key=key)

    async def _fetch_source(self, job: Job) -> None:
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
            synthetic=functools.partial(job_synthetic_inputs, record, samples, seed, shapes),
        )
        job.references = References(job.source)

    async def _run_isolated(
        self, job: Job, profile: Profile, options: dict[str, Any], variant: str, key: str
    ) -> Outcome:
        """Convert and check parity in a sandbox worker; every way it can end without a
        variant is a ``ConversionFailure`` under ``key``."""
        record = job.record
        run = profile_run(job, profile, options, variant=variant, key=key, cache_dir=self.trt_cache)
        gpu = profile.output_format == FORMAT_TENSORRT
        limits = limits_for(
            self.settings, self.settings.sandbox_convert_timeout_s, model_bytes=record.size_bytes, gpu=gpu
        )
        try:
            return await self.sandbox.run(
                run_profile_isolated, run, str(job.workdir), limits=limits, step=f"{profile.id} conversion"
            )
        except NativeFailure as exc:
            # The runtime crashed, hung or blew its memory limit on this model: final, since
            # the same bytes would do it again; the worker was replaced.
            self.log.warning("conversion_native_failure", ref=job.ref, profile=profile.id, reason=exc.code)
            raise ConversionFailure(exc.code, f"{profile.id}: {exc.message}", key=key) from None
        except ConversionFailure as failure:
            raise ConversionFailure(failure.code, failure.message, failure.report, key=key) from None
        except UNEXPECTED as exc:
            self.log.exception("conversion_crashed", ref=job.ref, profile=profile.id)
            message = f"{profile.id} failed unexpectedly: {type(exc).__name__}: {str(exc)[:400]}"
            raise ConversionFailure(REASON_CONVERSION_ERROR, message, key=key) from None

    async def _already_converted(self, record: ModelRecord, variant: str, key: str) -> ModelConverted | None:
        """The variant this exact conversion registered before (a redelivery, a repeated
        command): answered again from the registry, with the same event id."""
        try:
            existing = (await self.registry.get(f"{record.name}@{record.version}+{variant}")).record
        except NotFound:
            return None
        report = stored_report(existing, key)
        return converted_event(record, existing, report) if report is not None else None

    async def _register(self, job: Job, profile: Profile, variant: str, result: Outcome) -> ModelConverted:
        """Store the variant and register it through the registry, waiting for its answer."""
        record, report = job.record, result.report
        sha = report.variant_sha256 or ""
        stored = await self.store.put_file(result.path, content_name(sha), sha256=sha)
        command = register_command(
            record,
            correlation_id=job.correlation_id,
            profile=profile.id,
            variant=variant,
            artifact_uri=stored.uri,
            fmt=result.format,
            report=report,
        )
        replies = await self.registry.send_and_collect(
            subjects.REGISTER, command, timeout=REGISTER_TIMEOUT_S, until=lambda got: len(got) >= 1
        )
        reply = replies[0]
        if reply.get("type") != "model.registered":
            raise registration_failure(record, variant, reply, report)
        registered = msgspec.convert(reply, ModelRegistered)
        self.log.info("converted", ref=registered.record.ref, profile=profile.id, size=report.size_after_bytes)
        return converted_event(record, registered.record, report)

    # --- outcomes ---------------------------------------------------------------------------

    async def _emit(self, outcome: ProfileOutcome, command: ConvertModel | None, *, alert_ref: str) -> None:
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
            alert = failure_alert(outcome, alert_ref)
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
