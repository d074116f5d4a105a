"""Registry wiring: the ``model.register`` consumer, the signals consumer, and the micro
endpoints (endpoints.py). Domain logic lives in commands.py (what a command may carry),
verify.py (artifacts), records.py (the record and its event), store.py (KV) and query.py
(list/find), lifecycle.py (archive, delete); errors become ``model.rejected`` or
``model.lifecycle_refused`` in failures.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlparse

from services.registry.commands import check_command, public_uri
from services.registry.endpoints import RegistryEndpoints
from services.registry.errors import LifecycleRefusal, Rejection, VerificationError
from services.registry.failures import as_rejection, failure_event, lifecycle_refused_event, malformed_rejection
from services.registry.lifecycle import Lifecycle
from services.registry.records import (
    Stored,
    benchmark_signals,
    mark_announced,
    new_record,
    registered_event,
    validation_signals,
)
from services.registry.store import RegistryStore
from services.registry.verify import ModelFacts, engine_facts, verify_untrusted
from shared.artifacts import ArtifactStore, content_name, sha256_file
from shared.bus import Bus
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.base import new_id
from shared.contracts.benchmark import ModelBenchmarked
from shared.contracts.identity import ModelRef
from shared.contracts.registry import (
    FORMAT_TENSORRT,
    INPUTS_NEED_SPEC,
    ArchiveModel,
    DeleteModel,
    LifecycleRefused,
    ModelArchived,
    ModelDeleted,
    ModelRecord,
    ModelRegistered,
    ModelRejected,
    RegisterModel,
    RejectionReason,
    TensorSpec,
)
from shared.contracts.validation import ModelValidated
from shared.datasets import load_dataset
from shared.endpoints import Endpoint
from shared.errors import ArtifactError, InferlabError, InputError, InvalidDataset, NativeFailure
from shared.fetch import Fetched, fetch_to_file, policy_from_settings
from shared.inputs import Resolution, resolve_model
from shared.log import get_logger
from shared.sandbox import SandboxPool, limits_for, pool_size
from shared.worker import Delivery, Route, Worker

SERVICE = "registry"
# Chunks of an upload that stopped this long ago without metadata are garbage (a live upload
# writes a chunk at least every few seconds; put_file stalls out after 30 s).
ORPHAN_MIN_AGE_S = 600.0
ORPHAN_SWEEP_S = 3600.0


class RegistryService:
    name = SERVICE
    description = "inferlab model registry: get, list, find, resolve, aliases, tags"

    def __init__(self, bus: Bus, settings: Settings) -> None:
        self.bus = bus
        self.settings = settings
        self.artifacts = ArtifactStore(bus)
        self.store = RegistryStore(bus)
        self.policy = policy_from_settings(settings)
        self.scratch = settings.home_path / "scratch" / SERVICE
        self.log = get_logger()
        self.workers: list[Worker] = []
        self._sweeper: asyncio.Task[None] | None = None
        # onnx's checker and shape inference run on untrusted bytes: in worker processes.
        self.sandbox = SandboxPool(
            SERVICE,
            size=pool_size(settings, settings.registry_concurrency),
            preload=["services.registry.verify", "shared.inputs"],
            max_tasks=settings.sandbox_max_tasks,
        )
        self.lifecycle = Lifecycle(self.store, self.artifacts)
        self.requests = RegistryEndpoints(bus, settings, self.store, self.artifacts, self.policy, self.scratch)

    async def start(self) -> None:
        self.scratch.mkdir(parents=True, exist_ok=True)
        await self.sandbox.start()
        await self.artifacts.ensure()
        await self.store.open()
        self._sweeper = asyncio.create_task(self._sweep_orphans(), name="orphan-sweeper")
        self.workers = [
            Worker(
                self.bus,
                service=SERVICE,
                stream="MODELS",
                durable="registry",
                routes=[
                    Route(subjects.REGISTER, RegisterModel, self.on_register, self.on_malformed),
                    Route(subjects.ARCHIVE, ArchiveModel, self.on_archive),
                    Route(subjects.DELETE, DeleteModel, self.on_delete),
                ],
                concurrency=self.settings.registry_concurrency,
            ),
            Worker(
                self.bus,
                service=SERVICE,
                stream="MODELS",
                durable="registry-signals",
                routes=[
                    Route("model.benchmarked.*", ModelBenchmarked, self.on_benchmarked),
                    Route("model.validated.*", ModelValidated, self.on_validated),
                ],
                concurrency=4,
            ),
        ]

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.store.close()
        await self.sandbox.close()

    def endpoints(self) -> list[Endpoint]:
        return self.requests.all()

    async def _sweep_orphans(self) -> None:
        """An upload killed mid-way (this registry, another replica, a pipeline's SDK) leaves
        chunks without metadata in the artifact bucket; sweep them at start and then hourly."""
        while True:
            try:
                purged = await self.artifacts.purge_orphans(min_age_s=ORPHAN_MIN_AGE_S)
                if purged:
                    self.log.info("orphan_chunks_purged", uploads=purged)
            except Exception as exc:  # the next sweep tries again
                self.log.warning("orphan_sweep_failed", error=str(exc), error_type=type(exc).__name__)
            await asyncio.sleep(ORPHAN_SWEEP_S)

    # --- model.register ----------------------------------------------------------------------

    async def on_register(self, delivery: Delivery[RegisterModel]) -> None:
        """The failure edge: a ``Rejection`` (final: the command can never succeed as sent)
        becomes ``model.rejected``; any other error propagates, so the worker naks and the
        command is redelivered."""
        cmd = delivery.message
        try:
            outcome: ModelRegistered | ModelRejected = await self.register(cmd)
        except Rejection as rejection:
            outcome = failure_event(cmd, rejection)
            await self._publish_rejection(outcome)
        await self.bus.reply(cmd, outcome)

    async def on_malformed(self, data: bytes, error: str) -> None:
        """A ``model.register`` that does not decode: when its JSON names the sender, it gets a
        precise ``invalid_command`` rejection instead of silence. The worker dead-letters it too."""
        found = malformed_rejection(data, error)
        if found is None:
            return  # nothing to attribute it to; the dead letter and its alert remain
        outcome, reply_to = found
        await self._publish_rejection(outcome)
        await self.bus.reply(SimpleNamespace(reply_to=reply_to), outcome)

    async def _publish_rejection(self, outcome: ModelRejected) -> None:
        await self.bus.publish(subjects.rejected(outcome.name), outcome)
        self.log.info(
            "rejected", ref=f"{outcome.name}@{outcome.version}", reason=outcome.reason.value, message=outcome.message
        )

    async def register(self, cmd: RegisterModel) -> ModelRegistered:
        check_command(cmd)
        parent = await self._resolve_parent(cmd.parent) if cmd.parent else None
        if cmd.format == FORMAT_TENSORRT and parent is None:
            raise Rejection(
                RejectionReason.UNKNOWN_PARENT,
                "a tensorrt-engine is registered as a variant of its ONNX parent: give `parent`",
            )
        found = await self.store.get(cmd.name, cmd.version, cmd.variant)
        if found is not None and cmd.sha256:
            return await self._existing(found[0], found[1], cmd.sha256)
        workdir = self.scratch / (cmd.event_id or new_id())
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            return await self._register_artifact(cmd, parent, workdir)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    async def _register_artifact(
        self, cmd: RegisterModel, parent: ModelRecord | None, workdir: Path
    ) -> ModelRegistered:
        """Fetch, verify, store and record the artifact; announce it once."""
        fetched = await self._fetch_model(cmd, workdir)
        found = await self.store.get(cmd.name, cmd.version, cmd.variant)
        if found is not None:
            return await self._existing(found[0], found[1], fetched.sha256)
        facts = await self._verify(cmd, fetched, workdir, parent)
        stored_sha = fetched.sha256 if facts.path == fetched.path else await asyncio.to_thread(sha256_file, facts.path)
        dataset_uri = (
            await self._store_dataset(cmd.dataset_uri, facts.inputs, workdir, fetched.sha256)
            if cmd.dataset_uri
            else None
        )
        sample_uri = await self._store_sample(cmd.sample_uri, workdir, fetched.sha256) if cmd.sample_uri else None
        resolution = await self._resolve_inputs(cmd, facts.path, workdir, parent, fetched.sha256)
        blob = await self.artifacts.put_file(facts.path, content_name(stored_sha), sha256=stored_sha)
        stored = Stored(
            sha256=stored_sha,
            source_sha256=fetched.sha256 if stored_sha != fetched.sha256 else "",
            size_bytes=blob.size,
            artifact_uri=blob.uri,
            dataset_uri=dataset_uri,
            sample_uri=sample_uri,
        )
        record = new_record(cmd, facts, stored, parent.ref if parent else None, resolution)
        revision = await self.store.create(record)
        if revision is None:  # another replica registered it meanwhile
            found = await self.store.get(cmd.name, cmd.version, cmd.variant)
            assert found is not None
            return await self._existing(found[0], found[1], fetched.sha256)
        return await self._announce(record, revision)

    async def _fetch_model(self, cmd: RegisterModel, workdir: Path) -> Fetched:
        try:
            fetched = await fetch_to_file(
                self.bus,
                cmd.artifact_uri,
                workdir / "model.onnx",
                max_bytes=self.settings.max_artifact_bytes,
                policy=self.policy,
            )
        except ArtifactError as exc:
            raise as_rejection(exc) from None
        if cmd.sha256 and fetched.sha256 != cmd.sha256:
            raise Rejection(
                RejectionReason.SHA256_MISMATCH,
                f"artifact sha256 is {fetched.sha256}, the command says {cmd.sha256}",
                fetched.sha256,
            )
        return fetched

    async def _verify(
        self, cmd: RegisterModel, fetched: Fetched, workdir: Path, parent: ModelRecord | None
    ) -> ModelFacts:
        if cmd.format == FORMAT_TENSORRT:
            assert parent is not None
            return engine_facts(fetched.path, parent, cmd.metadata)
        is_file = urlparse(cmd.artifact_uri).scheme == "file"
        external_dir = self.policy.local_path(cmd.artifact_uri).parent if is_file else None
        limits = limits_for(self.settings, self.settings.sandbox_verify_timeout_s, model_bytes=fetched.size)
        try:
            facts: ModelFacts = await self.sandbox.run(
                verify_untrusted,
                fetched.path,
                external_data_dir=external_dir,
                workdir=workdir,
                limits=limits,
                step="verification (onnx.checker, shape inference)",
            )
        except (VerificationError, NativeFailure) as exc:
            raise as_rejection(exc, fetched.sha256) from None
        return facts

    async def _resolve_parent(self, text: str) -> ModelRecord:
        try:
            return await self.store.resolve(ModelRef.parse(text))
        except InferlabError as exc:
            raise Rejection(RejectionReason.UNKNOWN_PARENT, f"parent {text!r}: {exc}") from None

    async def _existing(self, record: ModelRecord, revision: int, sha256: str) -> ModelRegistered:
        """Same bytes: a no-op answered with the existing record (announced once, also when a
        crash came between storing and announcing). Other bytes: ``version_exists``."""
        if sha256 not in (record.sha256, record.source_sha256):
            raise Rejection(
                RejectionReason.VERSION_EXISTS,
                f"{record.ref} is already registered with sha256 {record.sha256}; "
                "a version is immutable: register a new version",
                sha256,
            )
        if not record.announced:
            return await self._announce(record, revision)
        return registered_event(record)

    async def _announce(self, record: ModelRecord, revision: int) -> ModelRegistered:
        event = registered_event(record)
        await self.bus.publish(subjects.registered(record.name), event)
        record.announced = True
        if await self.store.update(record, revision) is None:
            # Someone else updated (tags) or announced concurrently; the event id dedupes.
            await self.store.modify(record.name, record.version, record.variant, mark_announced)
        self.log.info("registered", ref=record.ref, sha256=record.sha256, size_bytes=record.size_bytes)
        return event

    async def _store_dataset(self, uri: str, inputs: list[TensorSpec], workdir: Path, model_sha: str) -> str:
        try:
            fetched = await fetch_to_file(
                self.bus, uri, workdir / "dataset.npz", max_bytes=self.settings.max_dataset_bytes, policy=self.policy
            )
            await asyncio.to_thread(load_dataset, fetched.path, inputs)
        except (ArtifactError, InvalidDataset) as exc:
            raise Rejection(
                RejectionReason.INVALID_DATASET, f"dataset {public_uri(uri)}: {exc.message}", model_sha
            ) from None
        stored = await self.artifacts.put_file(
            fetched.path, content_name(fetched.sha256, "datasets"), sha256=fetched.sha256
        )
        return stored.uri

    async def _store_sample(self, uri: str, workdir: Path, model_sha: str) -> str:
        """An .npz of inputs only (no labels), stored like a dataset."""
        try:
            fetched = await fetch_to_file(
                self.bus, uri, workdir / "sample.npz", max_bytes=self.settings.max_dataset_bytes, policy=self.policy
            )
        except ArtifactError as exc:
            raise Rejection(
                RejectionReason.INVALID_DATASET, f"sample {public_uri(uri)}: {exc.message}", model_sha
            ) from None
        stored = await self.artifacts.put_file(
            fetched.path, content_name(fetched.sha256, "datasets"), sha256=fetched.sha256
        )
        return stored.uri

    async def _resolve_inputs(
        self, cmd: RegisterModel, path: Path, workdir: Path, parent: ModelRecord | None, model_sha: str
    ) -> Resolution:
        """The inputs every later step feeds (shared/inputs.py), resolved once here: the
        registry has the file open already, and the record it announces carries them, so the
        converter, benchmarker and validator never disagree. A model nothing runs on is still
        registered, marked ``needs_input_spec``; a spec or sample that contradicts it is refused."""
        if cmd.format == FORMAT_TENSORRT:
            assert parent is not None
            return Resolution(parent.input_status, list(parent.resolved_inputs), parent.input_message)
        sample = workdir / "sample.npz"
        dataset = workdir / "dataset.npz"
        limits = limits_for(self.settings, self.settings.sandbox_verify_timeout_s, model_bytes=path.stat().st_size)
        try:
            # Trial runs execute the user's graph: in the sandbox, like verification.
            resolution: Resolution = await self.sandbox.run(
                resolve_model,
                path,
                specs=list(cmd.input_specs),
                sample_path=sample if sample.exists() else None,
                dataset_path=dataset if dataset.exists() else None,
                parent=list(parent.resolved_inputs) if parent else None,
                limits=limits,
                step="input resolution (trial runs on the model)",
            )
        except (InputError, NativeFailure) as exc:
            raise as_rejection(exc, model_sha) from None
        except InvalidDataset as exc:
            raise as_rejection(exc, model_sha, prefix="sample: ") from None
        if resolution.status == INPUTS_NEED_SPEC:
            resolution.message = resolution.message.replace(
                "--name NAME --version VERSION", f"--name {cmd.name} --version {cmd.version}"
            )
            self.log.info("needs_input_spec", ref=f"{cmd.name}@{cmd.version}", message=resolution.message)
        return resolution

    # --- model.archive, model.delete --------------------------------------------------------

    async def on_archive(self, delivery: Delivery[ArchiveModel]) -> None:
        await self._lifecycle(delivery.message, self.lifecycle.archive)

    async def on_delete(self, delivery: Delivery[DeleteModel]) -> None:
        await self._lifecycle(delivery.message, self.lifecycle.delete)

    async def _lifecycle(self, cmd: Any, act: Callable[[Any], Awaitable[ModelArchived | ModelDeleted]]) -> None:
        """Failure edge: a refusal is final (``model.lifecycle_refused``); other errors nak."""
        try:
            outcome: ModelArchived | ModelDeleted | LifecycleRefused = await act(cmd)
            subject = (subjects.archived if isinstance(outcome, ModelArchived) else subjects.deleted)(cmd.name)
        except LifecycleRefusal as refusal:
            outcome, subject = lifecycle_refused_event(cmd, refusal), subjects.lifecycle_refused(cmd.name)
        await self.bus.publish(subject, outcome)
        await self.bus.reply(cmd, outcome)

    # --- signals from other services ------------------------------------------------------

    async def on_benchmarked(self, delivery: Delivery[ModelBenchmarked]) -> None:
        event = delivery.message
        update = benchmark_signals(event)
        if update is not None:
            await self.store.merge_signals(event.name, event.version, event.variant, update)

    async def on_validated(self, delivery: Delivery[ModelValidated]) -> None:
        event = delivery.message
        await self.store.merge_signals(event.name, event.version, event.variant, validation_signals(event))
