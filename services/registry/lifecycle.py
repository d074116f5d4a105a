"""Archive and delete of a version (its base and every variant).

Archive marks the records (kept, exact refs resolve, out of listings, ``find`` and "newest");
delete removes the records and the stored objects (model, dataset, sample) that no other record
uses: objects are content-addressed, so two versions with the same bytes share one. Both refuse
while an alias points at the version. Only this service deletes objects; pipelines may not send
these commands (deploy/nats/nats-server.conf, docs/reliability.md)."""

from __future__ import annotations

from services.registry.errors import AliasInUse, UnknownVersion
from services.registry.store import Index, RegistryStore
from shared.artifacts import ArtifactStore, parse_object_uri
from shared.contracts.base import utcnow
from shared.contracts.identity import format_ref
from shared.contracts.registry import ArchiveModel, DeleteModel, ModelArchived, ModelDeleted, ModelRecord
from shared.log import get_logger


def version_records(index: Index, name: str, version: str) -> list[ModelRecord]:
    """The base and variants of ``name@version``; refused when there are none or an alias
    points at the version."""
    records = index.variants_of(name, version)
    if not records:
        raise UnknownVersion(f"unknown model {format_ref(name, version)}")
    aliases = index.aliases_of(name, version)
    if aliases:
        pointing = ", ".join(f"{name}@{alias}" for alias in aliases)
        raise AliasInUse(f"{pointing} point(s) at {name}@{version}: move or remove the alias first")
    return records


def stored_objects(record: ModelRecord, bucket: str) -> set[str]:
    """Names of the objects in ``bucket`` that ``record`` refers to."""
    names = set()
    for uri in (record.artifact_uri, record.dataset_uri, record.sample_uri):
        if uri and uri.startswith("nats-obj://"):
            found_bucket, name = parse_object_uri(uri)
            if found_bucket == bucket:
                names.add(name)
    return names


def objects_to_delete(index: Index, name: str, version: str, bucket: str) -> tuple[list[str], list[str]]:
    """(deletable, kept): the version's objects that no other record (archived ones included)
    uses, and those another record still needs."""
    ours: set[str] = set()
    others: set[str] = set()
    for (n, v, _), record in index.records.items():
        (ours if (n, v) == (name, version) else others).update(stored_objects(record, bucket))
    return sorted(ours - others), sorted(ours & others)


class Lifecycle:
    def __init__(self, store: RegistryStore, artifacts: ArtifactStore) -> None:
        self.store = store
        self.artifacts = artifacts
        self.log = get_logger(component="lifecycle")

    async def archive(self, cmd: ArchiveModel) -> ModelArchived:
        records = version_records(self.store.index, cmd.name, cmd.version)
        await self._mark_archived(records)
        variants = [r.variant for r in records]
        self.log.info("archived", ref=format_ref(cmd.name, cmd.version), variants=variants)
        return ModelArchived(
            event_id=f"arc-{cmd.event_id}",  # a redelivered command's fact dedupes
            correlation_id=cmd.correlation_id or cmd.event_id,
            name=cmd.name,
            version=cmd.version,
            variants=variants,
        )

    async def _mark_archived(self, records: list[ModelRecord]) -> None:
        when = utcnow()

        def mark(record: ModelRecord) -> None:
            record.archived_at = record.archived_at or when

        for record in records:
            await self.store.modify(record.name, record.version, record.variant, mark)

    async def delete(self, cmd: DeleteModel) -> ModelDeleted:
        records = version_records(self.store.index, cmd.name, cmd.version)
        deletable, kept = objects_to_delete(self.store.index, cmd.name, cmd.version, self.artifacts.bucket)
        variants = [r.variant for r in records]
        # Archived first (out of listings and "newest"), objects next, records last: a crash
        # anywhere leaves the records in place, so the redelivered command finishes the job
        # (deleting an object already gone is a no-op) instead of orphaning objects.
        await self._mark_archived(records)
        for name in deletable:
            await self.artifacts.delete(name)
        await self.store.delete_version(cmd.name, cmd.version, variants)
        self.log.info("deleted", ref=format_ref(cmd.name, cmd.version), objects=len(deletable), kept=len(kept))
        return ModelDeleted(
            event_id=f"del-{cmd.event_id}",
            correlation_id=cmd.correlation_id or cmd.event_id,
            name=cmd.name,
            version=cmd.version,
            variants=variants,
            objects_deleted=deletable,
            objects_kept=kept,
            purge_history=cmd.purge_history,
        )
