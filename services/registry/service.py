"""Registry wiring: the ``model.register`` consumer, the signals consumer, and the micro
endpoints. Domain logic lives in verify.py (artifacts), store.py (KV) and query.py (list/find).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlparse

import msgspec

from services.registry import query
from services.registry.store import RegistryStore
from services.registry.verify import ModelFacts, VerificationError, engine_facts, verify_model
from shared.artifacts import ArtifactStore, content_name, sha256_file
from shared.bus import Bus
from shared.clients.validation import DATASET_SCHEME, NAMED_DATASET_PREFIX
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.base import new_id
from shared.contracts.benchmark import ModelBenchmarked
from shared.contracts.identity import (
    MAX_VERSION_LENGTH,
    ModelRef,
    format_ref,
    is_valid_alias,
    is_valid_name,
    is_valid_variant,
    is_valid_version,
)
from shared.contracts.registry import (
    FORMAT_TENSORRT,
    FORMATS,
    INPUTS_NEED_SPEC,
    AliasChange,
    AliasRemoved,
    AliasSet,
    DatasetStored,
    FindModels,
    FoundModels,
    GetModel,
    ListModels,
    ModelList,
    ModelRecord,
    ModelRegistered,
    ModelRejected,
    ModelView,
    PutDataset,
    RegisterModel,
    RejectionReason,
    RemoveAlias,
    Resolve,
    Resolved,
    SetAlias,
    SetTags,
    TagsSet,
)
from shared.contracts.validation import ModelValidated
from shared.datasets import load_dataset
from shared.endpoints import Endpoint
from shared.errors import (
    ArtifactError,
    ArtifactNotFound,
    ArtifactTooLarge,
    ImportNotAllowed,
    InferlabError,
    IntegrityError,
    InvalidDataset,
    InvalidReference,
    NativeCrash,
    NativeFailure,
    NativeOutOfMemory,
    NativeTimeout,
    UnknownModel,
)
from shared.fetch import fetch_to_file, policy_from_settings
from shared.inputs import InputError, Resolution, resolve_model
from shared.log import get_logger
from shared.sandbox import SandboxPool, limits_for, pool_size
from shared.worker import Delivery, Route, Worker

SERVICE = "registry"
# Chunks of an upload that stopped this long ago without metadata are garbage (a live upload
# writes a chunk at least every few seconds; put_file stalls out after 30 s).
ORPHAN_MIN_AGE_S = 600.0
ORPHAN_SWEEP_S = 3600.0
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Bounds of what a command may carry (a message is at most 1 MB; the record, which holds the
# metadata and tags, must fit in one KV entry with room for the model's own facts).
MAX_ID_CHARS = 128
MAX_URI_CHARS = 8192
MAX_TAGS = 64
MAX_TAG_VALUE_CHARS = 1024
MAX_METADATA_BYTES = 64 * 1024
ECHO_CHARS = 200


class Rejection(Exception):
    def __init__(self, reason: RejectionReason, message: str, sha256: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.sha256 = sha256


def _reason_for(exc: InferlabError) -> RejectionReason:
    if isinstance(exc, ArtifactTooLarge):
        return RejectionReason.TOO_LARGE
    if isinstance(exc, IntegrityError):
        return RejectionReason.SHA256_MISMATCH
    if isinstance(exc, ArtifactNotFound):
        return RejectionReason.ARTIFACT_NOT_FOUND
    if isinstance(exc, ImportNotAllowed):
        return RejectionReason.INVALID_URI if exc.code == "invalid_uri" else RejectionReason.IMPORT_NOT_ALLOWED
    if isinstance(exc, InvalidDataset):
        return RejectionReason.INVALID_DATASET
    if exc.code == "invalid_uri":
        return RejectionReason.INVALID_URI
    return RejectionReason.FETCH_FAILED


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
            preload=["services.registry.service"],
            max_tasks=settings.sandbox_max_tasks,
        )

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
                routes=[Route(subjects.REGISTER, RegisterModel, self.on_register, self.on_malformed)],
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
        cmd = delivery.message
        try:
            outcome: ModelRegistered | ModelRejected = await self.register(cmd)
        except Rejection as rej:
            # Every echoed field is clipped: a rejection of a 900 KB name must itself fit in
            # a message (and its subject uses a placeholder token for an invalid name).
            outcome = ModelRejected(
                event_id=f"rej-{_clip(cmd.event_id, MAX_ID_CHARS)}",
                correlation_id=_clip(cmd.correlation_id, MAX_ID_CHARS),
                name=_clip(cmd.name),
                version=_clip(cmd.version),
                variant=_clip(cmd.variant),
                sha256=rej.sha256,
                artifact_uri=_clip(_public_uri(cmd.artifact_uri), MAX_URI_CHARS),
                reason=rej.reason,
                message=_clip(rej.message, 2000),
            )
            await self.bus.publish(subjects.rejected(cmd.name), outcome)
            self.log.info(
                "rejected", ref=f"{outcome.name}@{outcome.version}", reason=rej.reason.value, message=outcome.message
            )
        await self.bus.reply(cmd, outcome)

    async def on_malformed(self, data: bytes, error: str) -> None:
        """A ``model.register`` that does not decode (a wrong type, a missing field): when its
        JSON names the sender (an event id, or an inbox to reply to), it gets a precise
        ``invalid_command`` rejection instead of silence. The worker dead-letters it too."""
        try:
            raw = json.loads(data)
        except ValueError:
            return
        if not isinstance(raw, dict):
            return

        def text(key: str, limit: int = ECHO_CHARS) -> str:
            value = raw.get(key)
            return _clip(value, limit) if isinstance(value, str) else ""

        event_id = text("event_id", MAX_ID_CHARS)
        reply_to = text("reply_to", 256)
        if not event_id and not reply_to:
            return  # nothing to attribute it to; the dead letter and its alert remain
        outcome = ModelRejected(
            event_id=f"rej-{event_id or new_id()}",
            correlation_id=text("correlation_id", MAX_ID_CHARS),
            name=text("name"),
            version=text("version"),
            variant=text("variant") or "base",
            artifact_uri=_clip(_public_uri(text("artifact_uri", MAX_URI_CHARS)), MAX_URI_CHARS),
            reason=RejectionReason.INVALID_COMMAND,
            message=_clip(f"the command does not decode: {error.removeprefix('cannot decode RegisterModel: ')}", 2000),
        )
        await self.bus.publish(subjects.rejected(outcome.name), outcome)
        await self.bus.reply(SimpleNamespace(reply_to=reply_to), outcome)
        self.log.info(
            "rejected", ref=f"{outcome.name}@{outcome.version}", reason="invalid_command", message=outcome.message
        )

    async def register(self, cmd: RegisterModel) -> ModelRegistered:
        self._check_identity(cmd)
        parent_record = await self._resolve_parent(cmd.parent) if cmd.parent else None
        parent = parent_record.ref if parent_record else None
        if cmd.format == FORMAT_TENSORRT and parent_record is None:
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
            try:
                fetched = await fetch_to_file(
                    self.bus,
                    cmd.artifact_uri,
                    workdir / "model.onnx",
                    max_bytes=self.settings.max_artifact_bytes,
                    policy=self.policy,
                )
            except ArtifactError as exc:
                raise Rejection(_reason_for(exc), exc.message) from None
            if cmd.sha256 and fetched.sha256 != cmd.sha256:
                raise Rejection(
                    RejectionReason.SHA256_MISMATCH,
                    f"artifact sha256 is {fetched.sha256}, the command says {cmd.sha256}",
                    fetched.sha256,
                )
            found = await self.store.get(cmd.name, cmd.version, cmd.variant)
            if found is not None:
                return await self._existing(found[0], found[1], fetched.sha256)

            if cmd.format == FORMAT_TENSORRT:
                assert parent_record is not None
                facts = engine_facts(fetched.path, parent_record, cmd.metadata)
            else:
                external_dir = (
                    self.policy.local_path(cmd.artifact_uri).parent
                    if urlparse(cmd.artifact_uri).scheme == "file"
                    else None
                )
                try:
                    facts = await self.sandbox.run(
                        verify_untrusted,
                        fetched.path,
                        external_data_dir=external_dir,
                        workdir=workdir,
                        limits=limits_for(
                            self.settings, self.settings.sandbox_verify_timeout_s, model_bytes=fetched.size
                        ),
                        step="verification (onnx.checker, shape inference)",
                    )
                except VerificationError as exc:
                    raise Rejection(exc.reason, exc.message, fetched.sha256) from None
                except NativeFailure as exc:
                    raise Rejection(_native_reason(exc), exc.message, fetched.sha256) from None
            stored_sha = (
                fetched.sha256 if facts.path == fetched.path else await asyncio.to_thread(sha256_file, facts.path)
            )
            dataset_uri = (
                await self._store_dataset(cmd.dataset_uri, facts.inputs, workdir, fetched.sha256)
                if cmd.dataset_uri
                else None
            )
            sample_uri = await self._store_sample(cmd.sample_uri, workdir, fetched.sha256) if cmd.sample_uri else None
            resolution = await self._resolve_inputs(cmd, facts.path, workdir, parent_record, fetched.sha256)
            stored = await self.artifacts.put_file(facts.path, content_name(stored_sha), sha256=stored_sha)

            record = ModelRecord(
                name=cmd.name,
                version=cmd.version,
                variant=cmd.variant,
                ref=format_ref(cmd.name, cmd.version, cmd.variant),
                sha256=stored_sha,
                source_sha256=fetched.sha256 if stored_sha != fetched.sha256 else "",
                format=cmd.format,
                size_bytes=stored.size,
                artifact_uri=stored.uri,
                source_uri=_public_uri(cmd.artifact_uri),
                task=cmd.task,
                framework=facts.framework,
                framework_version=facts.framework_version,
                ir_version=facts.ir_version,
                opset=facts.opset,
                inputs=facts.inputs,
                outputs=facts.outputs,
                parameter_count=facts.parameter_count,
                warnings=list(facts.warnings),
                tags=dict(cmd.tags),
                metadata={**({"onnx_metadata": facts.metadata_props} if facts.metadata_props else {}), **cmd.metadata},
                dataset_uri=dataset_uri,
                parent=parent,
                input_specs=list(cmd.input_specs),
                sample_uri=sample_uri,
                resolved_inputs=resolution.inputs,
                input_status=resolution.status,
                input_message=resolution.message,
                correlation_id=cmd.correlation_id,
                registered_event_id=new_id(),
            )
            revision = await self.store.create(record)
            if revision is None:  # another replica registered it meanwhile
                found = await self.store.get(cmd.name, cmd.version, cmd.variant)
                assert found is not None
                return await self._existing(found[0], found[1], fetched.sha256)
            return await self._announce(record, revision)
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)

    def _check_identity(self, cmd: RegisterModel) -> None:
        """Every field is bounded and matched whole before anything is fetched or stored (a
        name with a trailing newline once passed, then broke a KV key on every delivery)."""
        if not is_valid_name(cmd.name):
            raise Rejection(
                RejectionReason.INVALID_NAME,
                f"name {_clip(cmd.name, 80)!r} ({len(cmd.name)} characters) must match [a-z0-9][a-z0-9_-]{{0,63}}",
            )
        if not is_valid_version(cmd.version):
            raise Rejection(
                RejectionReason.INVALID_VERSION,
                f"version {_clip(cmd.version, 80)!r} must be a semantic version such as 1.2.0 or 1.2.0-rc.1 "
                f"of at most {MAX_VERSION_LENGTH} characters (no +build suffix: '+' introduces the variant)",
            )
        if not is_valid_variant(cmd.variant):
            raise Rejection(
                RejectionReason.INVALID_VARIANT,
                f"variant {_clip(cmd.variant, 80)!r} must match [a-z0-9][a-z0-9_-]{{0,63}}",
            )
        for field, value, limit in (
            ("event_id", cmd.event_id, MAX_ID_CHARS),
            ("correlation_id", cmd.correlation_id, MAX_ID_CHARS),
            ("artifact_uri", cmd.artifact_uri, MAX_URI_CHARS),
            ("dataset_uri", cmd.dataset_uri or "", MAX_URI_CHARS),
            ("parent", cmd.parent or "", 256),
            ("task", cmd.task or "", 64),
            ("reply_to", cmd.reply_to or "", 256),
        ):
            if len(value) > limit:
                raise Rejection(
                    RejectionReason.INVALID_URI if field.endswith("_uri") else RejectionReason.INVALID_COMMAND,
                    f"{field} has {len(value)} characters, more than {limit}",
                )
        if len(cmd.tags) > MAX_TAGS or any(len(v) > MAX_TAG_VALUE_CHARS for v in cmd.tags.values()):
            raise Rejection(
                RejectionReason.INVALID_COMMAND,
                f"at most {MAX_TAGS} tags of at most {MAX_TAG_VALUE_CHARS} characters each",
            )
        metadata_bytes = len(msgspec.json.encode(cmd.metadata))
        if metadata_bytes > MAX_METADATA_BYTES:
            raise Rejection(
                RejectionReason.INVALID_COMMAND,
                f"metadata is {metadata_bytes} bytes as JSON, more than {MAX_METADATA_BYTES} (the record must fit "
                "in a message)",
            )
        if cmd.format not in FORMATS:
            raise Rejection(
                RejectionReason.UNSUPPORTED_FORMAT, f"format {cmd.format!r} is not one of {', '.join(FORMATS)}"
            )
        if cmd.sha256 is not None and not _SHA256.fullmatch(cmd.sha256):
            raise Rejection(RejectionReason.INVALID_COMMAND, "sha256 must be 64 lowercase hex digits")
        for key in cmd.tags:
            if not key or len(key) > 128:
                raise Rejection(
                    RejectionReason.INVALID_COMMAND, f"tag key {_clip(key, 80)!r} must be 1 to 128 characters"
                )

    async def _resolve_parent(self, text: str) -> ModelRecord:
        try:
            return await self.store.resolve(ModelRef.parse(text))
        except (InvalidReference, UnknownModel, InferlabError) as exc:
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
        return self._registered_event(record)

    def _registered_event(self, record: ModelRecord) -> ModelRegistered:
        return ModelRegistered(
            event_id=record.registered_event_id,
            correlation_id=record.correlation_id,
            name=record.name,
            version=record.version,
            variant=record.variant,
            sha256=record.sha256,
            record=record,
        )

    async def _announce(self, record: ModelRecord, revision: int) -> ModelRegistered:
        event = self._registered_event(record)
        await self.bus.publish(subjects.registered(record.name), event)
        record.announced = True
        if await self.store.update(record, revision) is None:
            # Someone else updated (tags) or announced concurrently; the event id dedupes.
            await self.store.modify(record.name, record.version, record.variant, _mark_announced)
        self.log.info("registered", ref=record.ref, sha256=record.sha256, size_bytes=record.size_bytes)
        return event

    async def _store_dataset(self, uri: str, inputs: list, workdir: Path, model_sha: str) -> str:
        try:
            fetched = await fetch_to_file(
                self.bus, uri, workdir / "dataset.npz", max_bytes=self.settings.max_dataset_bytes, policy=self.policy
            )
            await asyncio.to_thread(load_dataset, fetched.path, inputs)
        except (ArtifactError, InvalidDataset) as exc:
            raise Rejection(
                RejectionReason.INVALID_DATASET, f"dataset {_public_uri(uri)}: {exc.message}", model_sha
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
                RejectionReason.INVALID_DATASET, f"sample {_public_uri(uri)}: {exc.message}", model_sha
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
        try:
            # Trial runs execute the user's graph: in the sandbox, like verification.
            resolution = await self.sandbox.run(
                resolve_model,
                path,
                specs=list(cmd.input_specs),
                sample_path=sample if sample.exists() else None,
                dataset_path=dataset if dataset.exists() else None,
                parent=list(parent.resolved_inputs) if parent else None,
                limits=limits_for(
                    self.settings, self.settings.sandbox_verify_timeout_s, model_bytes=path.stat().st_size
                ),
                step="input resolution (trial runs on the model)",
            )
        except InputError as exc:
            reason = (
                RejectionReason.INVALID_DATASET
                if exc.reason in ("invalid_sample", "invalid_dataset")
                else RejectionReason.INVALID_COMMAND
            )
            raise Rejection(reason, exc.message, model_sha) from None
        except InvalidDataset as exc:
            raise Rejection(RejectionReason.INVALID_DATASET, f"sample: {exc.message}", model_sha) from None
        except NativeFailure as exc:
            raise Rejection(_native_reason(exc), exc.message, model_sha) from None
        if resolution.status == INPUTS_NEED_SPEC:
            resolution.message = resolution.message.replace(
                "--name NAME --version VERSION", f"--name {cmd.name} --version {cmd.version}"
            )
            self.log.info("needs_input_spec", ref=f"{cmd.name}@{cmd.version}", message=resolution.message)
        return resolution

    # --- signals from other services ------------------------------------------------------

    async def on_benchmarked(self, delivery: Delivery[ModelBenchmarked]) -> None:
        event = delivery.message
        if not event.results:
            return
        reference = min(event.results, key=lambda r: (r.batch_size * r.concurrency, r.intra_op_threads))
        await self.store.merge_signals(
            event.name,
            event.version,
            event.variant,
            {
                "p50_ms": reference.latency.p50_ms,
                "p99_ms": reference.latency.p99_ms,
                "throughput_ips": max(r.throughput_ips for r in event.results),
                "peak_memory_bytes": max(r.peak_memory_bytes for r in event.results),
                "benchmarked_at": event.occurred_at,
            },
        )

    async def on_validated(self, delivery: Delivery[ModelValidated]) -> None:
        event = delivery.message
        update: dict[str, object] = {"ready": event.ready, "validated_at": event.occurred_at}
        if event.accuracy is not None:
            # A validation without a labelled dataset measures no accuracy: keep the last one.
            update["accuracy"] = event.accuracy
        await self.store.merge_signals(event.name, event.version, event.variant, update)

    # --- endpoints --------------------------------------------------------------------------

    def endpoints(self) -> list[Endpoint]:
        return [
            Endpoint("get", subjects.REGISTRY_GET, GetModel, self.ep_get, "one model by reference"),
            Endpoint("list", subjects.REGISTRY_LIST, ListModels, self.ep_list, "models matching filters"),
            Endpoint("find", subjects.REGISTRY_FIND, FindModels, self.ep_find, "models meeting requirements, ranked"),
            Endpoint("resolve", subjects.REGISTRY_RESOLVE, Resolve, self.ep_resolve, "a reference to its artifact"),
            Endpoint("alias-set", subjects.REGISTRY_ALIAS_SET, SetAlias, self.ep_alias_set, "create or move an alias"),
            Endpoint(
                "alias-remove", subjects.REGISTRY_ALIAS_REMOVE, RemoveAlias, self.ep_alias_remove, "remove an alias"
            ),
            Endpoint("tags-set", subjects.REGISTRY_TAGS_SET, SetTags, self.ep_tags_set, "set or remove tags"),
            Endpoint(
                "dataset-put", subjects.REGISTRY_DATASET_PUT, PutDataset, self.ep_dataset_put, "store a named dataset"
            ),
        ]

    async def _view(self, record: ModelRecord) -> ModelView:
        key = (record.name, record.version, record.variant)
        return ModelView(
            record=record,
            aliases=self.store.index.aliases_of(record.name, record.version),
            signals=self.store.index.signals.get(key),
        )

    async def ep_get(self, req: GetModel) -> ModelView:
        return await self._view(await self.store.resolve(ModelRef.parse(req.ref)))

    async def ep_list(self, req: ListModels) -> ModelList:
        views, total = query.list_models(self.store.index, req)
        return ModelList(models=views, total=total)

    async def ep_find(self, req: FindModels) -> FoundModels:
        return FoundModels(results=query.find_models(self.store.index, req))

    async def ep_resolve(self, req: Resolve) -> Resolved:
        record = await self.store.resolve(ModelRef.parse(req.ref))
        return Resolved(
            ref=record.ref,
            name=record.name,
            version=record.version,
            variant=record.variant,
            sha256=record.sha256,
            artifact_uri=record.artifact_uri,
            size_bytes=record.size_bytes,
        )

    async def ep_alias_set(self, req: SetAlias) -> AliasChange:
        if not is_valid_alias(req.alias):
            raise InvalidReference(
                req.alias, "alias must match [a-z][a-z0-9_-]{0,63} (it must not look like a version)"
            )
        record = await self.store.resolve(ModelRef(name=req.name, version=req.version))
        previous = await self.store.set_alias(req.name, req.alias, record.version)
        if previous != record.version:
            await self.bus.publish(
                subjects.alias_set(req.name),
                AliasSet(
                    event_id=new_id(),
                    correlation_id=req.correlation_id,
                    name=req.name,
                    alias=req.alias,
                    version=record.version,
                    previous=previous,
                ),
            )
        self.log.info("alias_set", name=req.name, alias=req.alias, version=record.version, previous=previous)
        return AliasChange(name=req.name, alias=req.alias, version=record.version, previous=previous)

    async def ep_alias_remove(self, req: RemoveAlias) -> AliasChange:
        version = await self.store.remove_alias(req.name, req.alias)
        await self.bus.publish(
            subjects.alias_removed(req.name),
            AliasRemoved(
                event_id=new_id(), correlation_id=req.correlation_id, name=req.name, alias=req.alias, version=version
            ),
        )
        return AliasChange(name=req.name, alias=req.alias, version=None, previous=version)

    async def ep_dataset_put(self, req: PutDataset) -> DatasetStored:
        """A pipeline's named dataset: staged by the pipeline, stored here (the pipeline may
        not write the object store). Replacing a name frees its old chunks."""
        if not is_valid_name(req.name):
            raise InferlabError(
                f"dataset name {req.name[:80]!r} must match [a-z0-9][a-z0-9_-]{{0,63}}", code="invalid_name"
            )
        workdir = self.scratch / f"dataset-{new_id()}"
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            fetched = await fetch_to_file(
                self.bus,
                req.uri,
                workdir / "dataset.npz",
                max_bytes=self.settings.max_dataset_bytes,
                policy=self.policy,
            )
            stored = await self.artifacts.put_file(
                fetched.path, f"{NAMED_DATASET_PREFIX}/{req.name}", sha256=fetched.sha256
            )
        finally:
            await asyncio.to_thread(shutil.rmtree, workdir, True)
        self.log.info("dataset_stored", name=req.name, sha256=stored.sha256, size_bytes=stored.size)
        return DatasetStored(
            name=req.name,
            uri=f"{DATASET_SCHEME}://{req.name}",
            object_uri=stored.uri,
            sha256=stored.sha256,
            size_bytes=stored.size,
        )

    async def ep_tags_set(self, req: SetTags) -> ModelView:
        ref = ModelRef.parse(req.ref)
        record = await self.store.resolve(ref)
        for key in req.tags:
            if not key or len(key) > 128:
                raise InferlabError(f"tag key {key!r} must be 1 to 128 characters", code="invalid_tag")

        def change(r: ModelRecord) -> None:
            r.tags.update(req.tags)
            for key in req.remove:
                r.tags.pop(key, None)

        updated = await self.store.modify(record.name, record.version, record.variant, change)
        await self.bus.publish(
            subjects.tags_set(record.name),
            TagsSet(
                event_id=new_id(),
                correlation_id=req.correlation_id,
                name=record.name,
                version=record.version,
                variant=record.variant,
                tags=updated.tags,
                removed=list(req.remove),
            ),
        )
        return await self._view(updated)


def verify_untrusted(path: Path, *, external_data_dir: Path | None, workdir: Path | None) -> ModelFacts:
    """``verify_model``, with whatever a library raises on hostile bytes that verify.py does not
    anticipate turned into a precise ``invalid_model`` rejection: otherwise the command would be
    retried until dead-lettered and its sender would wait for an answer that never comes.
    (OSError is left alone: a full disk is worth a retry.)"""
    try:
        return verify_model(path, external_data_dir=external_data_dir, workdir=workdir)
    except VerificationError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError, OverflowError,
            RecursionError, MemoryError) as exc:  # fmt: skip
        raise VerificationError(
            RejectionReason.INVALID_MODEL, f"cannot verify the model: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None


def _clip(text: str | None, limit: int = ECHO_CHARS) -> str:
    """At most ``limit`` characters of an echoed field, marked when cut."""
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _native_reason(exc: NativeFailure) -> RejectionReason:
    if isinstance(exc, NativeTimeout):
        return RejectionReason.TIMED_OUT
    if isinstance(exc, NativeOutOfMemory):
        return RejectionReason.OUT_OF_MEMORY
    assert isinstance(exc, NativeCrash)
    return RejectionReason.RUNTIME_CRASHED


def _mark_announced(record: ModelRecord) -> None:
    record.announced = True


def _public_uri(uri: str) -> str:
    """Strip user info and query strings (possible credentials) before a URI is recorded or
    sent in an event."""
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        host = parsed.hostname or ""
        if parsed.port:
            host += f":{parsed.port}"
        return f"{parsed.scheme}://{host}{parsed.path}"
    return uri
