"""What a Python pipeline imports: ``from shared.sdk import Client``.

    async with await Client.connect() as client:
        record = await client.register("model.onnx", name="digits", version="1.0.0")
        print(record.ref, record.sha256)

Every call talks to the running platform over NATS: registration goes through the
``model.register`` stream like any other pipeline's (the SDK uploads the file to the object
store first), reads go to the registry's micro endpoints, and ``events()`` / ``alerts()``
follow the streams.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import tarfile
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec

from shared.artifacts import (
    ArtifactStore,
    Progress,
    StagedUpload,
    Staging,
    StoredArtifact,
    content_name,
    parse_object_uri,
    sha256_file,
)
from shared.bus import Bus
from shared.chain import Chain, ChainResult, ChainRow
from shared.clients.benchmark import BenchmarkApi
from shared.clients.conversion import ConversionApi
from shared.clients.discovery import DiscoveryApi, ServiceStatus  # noqa: F401 (re-exported: shared.sdk.ServiceStatus)
from shared.clients.export import ExportApi
from shared.clients.lifecycle import LifecycleApi, LifecycleRefusedError  # noqa: F401 (re-exported)
from shared.clients.telemetry import TelemetryApi
from shared.clients.validation import ValidationApi
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.base import Message, decode, new_id
from shared.contracts.catalogue import message_type_for
from shared.contracts.identity import BASE_VARIANT, ModelRef
from shared.contracts.registry import (
    FORMAT_ONNX,
    AliasChange,
    FindModels,
    FoundModels,
    GetModel,
    InputSpec,
    ListModels,
    ModelList,
    ModelRecord,
    ModelRegistered,
    ModelRejected,
    ModelView,
    RankedModel,
    RegisterModel,
    RemoveAlias,
    Resolve,
    Resolved,
    SetAlias,
    SetTags,
)
from shared.errors import ArtifactNotFound, InferlabError, IntegrityError, Rejected


class StreamEvent(msgspec.Struct, kw_only=True):
    subject: str
    message: Message | None
    data: Any
    raw: bytes
    error: str | None = None

    @classmethod
    def from_wire(cls, subject: str, raw: bytes) -> StreamEvent:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            return cls(subject=subject, message=None, data=None, raw=raw, error=f"not JSON: {exc}")
        kind = message_type_for(subject)
        if kind is None:
            return cls(subject=subject, message=None, data=data, raw=raw)
        try:
            return cls(subject=subject, message=decode(raw, kind), data=data, raw=raw)
        except msgspec.MsgspecError as exc:
            return cls(subject=subject, message=None, data=data, raw=raw, error=str(exc))


def bundle_manifest(view: ModelView) -> dict[str, Any]:
    import onnxruntime

    record = view.record
    return {
        "format": "inferlab-bundle/1",
        "ref": record.ref,
        "model_file": "model.onnx",
        "sha256": record.sha256,
        "runtime": {
            "onnx_ir_version": record.ir_version,
            "opset": record.opset,
            "onnxruntime_min": onnxruntime.__version__,
            "execution_providers": ["CPUExecutionProvider"],
        },
        "inputs": msgspec.to_builtins(record.inputs),
        "outputs": msgspec.to_builtins(record.outputs),
        "aliases": view.aliases,
        "benchmark": msgspec.to_builtins(view.signals) if view.signals else None,
        "record": msgspec.to_builtins(record),
    }


def _write_tar(target: Path, members: list[tuple[Path, str]]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(target, "w:gz") as tar:
        for path, arcname in members:
            tar.add(path, arcname=arcname)


def _is_uri(text: str) -> bool:
    return "://" in text


class Client(ConversionApi, BenchmarkApi, ValidationApi, TelemetryApi, DiscoveryApi, LifecycleApi, ExportApi):
    """Async client of a running inferlab. Create with ``await Client.connect()``."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.settings = bus.settings
        self._reporters = {}

    @classmethod
    async def connect(cls, settings: Settings | None = None, *, name: str = "inferlab-sdk") -> Client:
        return cls(await Bus.connect(settings or Settings.from_env(), name=name))

    async def close(self) -> None:
        try:
            await self.close_reporters()  # buffered latencies go out before the connection does
        finally:
            await self.bus.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- artifacts ------------------------------------------------------------------------

    async def upload(
        self, path: str | Path, *, prefix: str = "sha256", progress: Progress | None = None
    ) -> StoredArtifact | StagedUpload:
        """Upload a file for a command to name: when the object store already holds the same
        bytes under their content address, that object (nothing is sent); else the file is
        staged (``upload://<id>?size=..&sha256=..``, kept ``INFERLAB_UPLOADS_MAX_AGE_HOURS``)
        and the service the command goes to takes it into the object store. Only the services
        write the object store (docs/reliability.md)."""
        source = Path(path).expanduser()
        if not source.is_file():
            raise ArtifactNotFound(f"no such file: {source}")
        sha = await asyncio.to_thread(sha256_file, source)
        existing = await ArtifactStore(self.bus).info(content_name(sha, prefix))
        if existing is not None and existing.sha256 == sha:
            if progress:
                progress(existing.size)
            return existing
        staging = Staging(self.bus)
        await staging.ensure()
        staged = await staging.put_file(source, progress=progress)
        if staged.sha256 != sha:
            raise IntegrityError(sha, staged.sha256, what=f"{source} (changed while uploading)")
        return staged

    async def download(self, ref: str, dest: str | Path, *, progress: Progress | None = None) -> Path:
        """Download a model's artifact; ``dest`` may be a folder. Hash-verified."""
        resolved = await self.resolve(ref)
        target = Path(dest).expanduser()
        if target.is_dir():
            target = target / f"{resolved.ref.replace('@', '-').replace('+', '-')}.onnx"
        bucket, name = parse_object_uri(resolved.artifact_uri)
        await ArtifactStore(self.bus, bucket).get_to_file(name, target, sha256=resolved.sha256, progress=progress)
        return target

    async def bundle(self, ref: str, output: str | Path) -> Path:
        """A deployment bundle (``.tar.gz``): the model plus ``manifest.json`` with the record,
        the runtime it needs, and the latest benchmark and validation figures."""
        view = await self.get(ref)
        target = Path(output).expanduser()
        with tempfile.TemporaryDirectory() as tmp:
            model_path = await self.download(view.record.ref, Path(tmp) / "model.onnx")
            manifest = bundle_manifest(view)
            (Path(tmp) / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
            await asyncio.to_thread(
                _write_tar, target, [(model_path, "model.onnx"), (Path(tmp) / "manifest.json", "manifest.json")]
            )
        return target

    # --- registration ---------------------------------------------------------------------

    async def register(
        self,
        source: str | Path,
        *,
        name: str,
        version: str,
        task: str | None = None,
        metadata: dict[str, Any] | None = None,
        dataset: str | Path | None = None,
        tags: dict[str, str] | None = None,
        parent: str | None = None,
        variant: str = BASE_VARIANT,
        wait: bool = True,
        timeout: float = 300.0,
        progress: Progress | None = None,
        input_specs: list[InputSpec] | None = None,
        sample: str | Path | None = None,
    ) -> ModelRecord | str:
        """Register a model. ``source`` is a local file (uploaded first) or a URI. With
        ``wait`` returns the registered record (also when it already existed with the same
        bytes) or raises ``Rejected`` with the reason; without, returns the command's id.
        ``input_specs`` and ``sample`` (an .npz of inputs only) say how the model is fed."""
        sha256 = None
        if isinstance(source, Path) or not _is_uri(str(source)):
            stored = await self.upload(source, progress=progress)
            artifact_uri, sha256 = stored.uri, stored.sha256
        else:
            artifact_uri = str(source)
        dataset_uri = None
        if dataset is not None:
            if isinstance(dataset, Path) or not _is_uri(str(dataset)):
                dataset_uri = (await self.upload(dataset, prefix="datasets")).uri
            else:
                dataset_uri = str(dataset)
        sample_uri = None
        if sample is not None:
            if isinstance(sample, Path) or not _is_uri(str(sample)):
                sample_uri = (await self.upload(sample, prefix="datasets")).uri
            else:
                sample_uri = str(sample)
        command = RegisterModel(
            event_id=new_id(),
            name=name,
            version=version,
            variant=variant,
            artifact_uri=artifact_uri,
            task=task,
            metadata=metadata or {},
            dataset_uri=dataset_uri,
            parent=parent,
            tags=tags or {},
            sha256=sha256,
            input_specs=list(input_specs or []),
            sample_uri=sample_uri,
        )
        if not wait:
            await self.bus.publish(subjects.REGISTER, command)
            return command.event_id
        reply = await self.send_and_wait(subjects.REGISTER, command, timeout=timeout)
        if reply.get("type") == "model.rejected":
            rejected = msgspec.convert(reply, ModelRejected)
            raise Rejected(rejected.reason.value, rejected.message, event=rejected)
        return msgspec.convert(reply, ModelRegistered).record

    # --- reads ----------------------------------------------------------------------------

    async def get(self, ref: str) -> ModelView:
        ModelRef.parse(ref)  # a bad reference fails here, before any network call
        return await self.bus.request(subjects.REGISTRY_GET, GetModel(ref=ref), ModelView)

    async def resolve(self, ref: str) -> Resolved:
        ModelRef.parse(ref)
        return await self.bus.request(subjects.REGISTRY_RESOLVE, Resolve(ref=ref), Resolved)

    async def list(self, filters: ListModels | None = None, **kwargs: Any) -> ModelList:
        body = filters or ListModels(**kwargs)
        return await self.bus.request(subjects.REGISTRY_LIST, body, ModelList)

    async def find(self, requirements: FindModels | None = None, **kwargs: Any) -> builtins.list[RankedModel]:
        body = requirements or FindModels(**kwargs)
        found = await self.bus.request(subjects.REGISTRY_FIND, body, FoundModels)
        return found.results

    # --- aliases and tags -------------------------------------------------------------------

    async def set_alias(self, ref: str, alias: str) -> AliasChange:
        """Point ``alias`` at the version in ``ref`` (``name@version``)."""
        parsed = ModelRef.parse(ref)
        if parsed.version is None:
            raise InferlabError(f"{ref!r}: give an exact version, e.g. {parsed.name}@1.0.0", code="invalid_ref")
        return await self.bus.request(
            subjects.REGISTRY_ALIAS_SET, SetAlias(name=parsed.name, alias=alias, version=parsed.version), AliasChange
        )

    async def remove_alias(self, name: str, alias: str) -> AliasChange:
        parsed = ModelRef.parse(name)
        return await self.bus.request(
            subjects.REGISTRY_ALIAS_REMOVE, RemoveAlias(name=parsed.name, alias=alias), AliasChange
        )

    async def set_tags(self, ref: str, tags: dict[str, str], remove: builtins.list[str] | None = None) -> ModelView:
        ModelRef.parse(ref)
        return await self.bus.request(
            subjects.REGISTRY_TAGS_SET, SetTags(ref=ref, tags=tags, remove=remove or []), ModelView
        )

    # --- streams ----------------------------------------------------------------------------

    async def events(
        self,
        subject: str = "model.>",
        *,
        replay: bool = False,
        idle_timeout: float | None = None,
        stored_only: bool = False,
    ) -> AsyncIterator[StreamEvent]:
        """Events on ``subject``: each with its subject, the typed message when the subject
        has a contract and the payload decodes, and the raw bytes. ``replay`` starts from
        the oldest stored message; ``stored_only`` ends the iteration when every message
        stored at the start was read; ``idle_timeout`` ends it after that many seconds
        without one."""
        async for subj, data in self.bus.follow(
            subject, replay=replay, idle_timeout=idle_timeout, stored_only=stored_only
        ):
            yield StreamEvent.from_wire(subj, data)

    def alerts(
        self,
        subject: str = "alerts.>",
        *,
        replay: bool = True,
        idle_timeout: float | None = None,
        stored_only: bool = False,
    ) -> AsyncIterator[StreamEvent]:
        """Alerts on ``subject``: by default first every stored one a late subscriber missed
        (the ALERTS stream keeps a year), then new ones as they come; ``replay=False`` follows
        new ones only. ``stored_only`` and ``idle_timeout`` as for ``events``."""
        return self.events(subject, replay=replay, idle_timeout=idle_timeout, stored_only=stored_only)

    async def wait_for_verdict(
        self,
        ref: str,
        *,
        timeout: float = 600.0,
        profiles: builtins.list[str] | None = None,
        on_update: Callable[[ChainRow], None] | None = None,
    ) -> ChainResult:
        """Wait until a registered version has been through the whole chain: its base and each
        variant of the automatic conversion profiles (``profiles``, default the platform's
        ``converter_profiles``) converted or not, benchmarked and validated. Returns a
        ``ChainResult``: ``ready`` when the base is READY, ``verdict`` the base's, ``rows`` every
        ref's stage and verdict; ``complete`` is False when ``timeout`` came first. Reads the
        stream from its start, so a verdict reached before the call is found too."""
        record = (await self.get(ref)).record
        if profiles is None:
            auto = record.variant == BASE_VARIANT and record.format == FORMAT_ONNX
            profiles = list(self.settings.converter_profiles) if auto else []
        is_base = record.variant == BASE_VARIANT
        # a variant: wait for that one ref alone
        chain = Chain(record.name, record.version, profiles if is_base else [], target="" if is_base else record.ref)

        async def follow() -> None:
            async for event in self.events(f"model.*.{subjects.name_token(record.name)}", replay=True):
                if event.message is None:
                    continue
                before = {r.ref: (r.stage, r.verdict) for r in chain.rows.values()}
                chain.feed(event.message)
                if on_update is not None:
                    for row in chain.rows.values():
                        if before.get(row.ref) != (row.stage, row.verdict):
                            on_update(row)
                if chain.settled:
                    return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(follow(), timeout)
        return chain.result()

    # --- discovery --------------------------------------------------------------------------

    async def health(self, service: str, timeout: float = 2.0) -> dict[str, Any]:
        from shared.runtime import Health, HealthRequest

        health = await self.bus.request(f"{service}.health", HealthRequest(), Health, timeout=timeout)
        builtins_: dict[str, Any] = msgspec.to_builtins(health)
        return builtins_
