"""The registry's request/reply endpoints (NATS micro, queue group "q"): get, list, find,
resolve, aliases, tags and named datasets. Wiring: reads come from the store's KV and its
in-memory index (query.py ranks), changes are published as events."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from services.registry import query
from services.registry.store import RegistryStore
from shared.artifacts import ArtifactStore
from shared.bus import Bus
from shared.clients.validation import DATASET_SCHEME, NAMED_DATASET_PREFIX
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.base import new_id
from shared.contracts.identity import ModelRef, is_valid_alias, is_valid_name
from shared.contracts.registry import (
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
    ModelView,
    PutDataset,
    RemoveAlias,
    Resolve,
    Resolved,
    SetAlias,
    SetTags,
    TagsSet,
)
from shared.endpoints import Endpoint
from shared.errors import InferlabError, InvalidReference
from shared.fetch import ImportPolicy, fetch_to_file
from shared.log import get_logger


class RegistryEndpoints:
    def __init__(
        self,
        bus: Bus,
        settings: Settings,
        store: RegistryStore,
        artifacts: ArtifactStore,
        policy: ImportPolicy,
        scratch: Path,
    ) -> None:
        self.bus = bus
        self.settings = settings
        self.store = store
        self.artifacts = artifacts
        self.policy = policy
        self.scratch = scratch
        self.log = get_logger()

    def all(self) -> list[Endpoint]:
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
