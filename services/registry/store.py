"""Registry metadata in a JetStream Key-Value bucket.

Keys (``.`` separates tokens, so watches can filter by model name):

- ``models.<name>.<version>.<variant>``: a ModelRecord. Created with the KV's atomic
  ``create``: of two replicas racing to register the same version, exactly one wins.
- ``aliases.<name>.<alias>``: ``{"version": ...}``; moved with compare-and-set.
- ``signals.<name>.<version>.<variant>``: latest benchmark/validation figures (ModelSignals).

Exact reads go to the bucket; listing and ranking read an in-memory index that a KV watcher
keeps current (every replica has its own, rebuilt at start), so the services stay stateless.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import nats.js.errors
from nats.js import api as js_api
from nats.js.kv import KeyValue

from shared.bus import Bus
from shared.contracts.base import encode, utcnow
from shared.contracts.identity import BASE_VARIANT, ModelRef, format_ref, version_key
from shared.contracts.registry import ModelRecord, ModelSignals
from shared.errors import UnknownAlias, UnknownModel
from shared.log import get_logger

# How often the index's watch is checked for a stall (two checks without progress restart it).
INDEX_CHECK_S = 5.0

Key = tuple[str, str, str]  # (name, version, variant)

_record_decoder = msgspec.json.Decoder(ModelRecord)
_signals_decoder = msgspec.json.Decoder(ModelSignals)


class _AliasValue(msgspec.Struct):
    version: str


_alias_decoder = msgspec.json.Decoder(_AliasValue)


def record_key(name: str, version: str, variant: str) -> str:
    return f"models.{name}.{version}.{variant}"


def signals_key(name: str, version: str, variant: str) -> str:
    return f"signals.{name}.{version}.{variant}"


def alias_key(name: str, alias: str) -> str:
    return f"aliases.{name}.{alias}"


def _split_versioned(rest: str) -> tuple[str, str, str] | None:
    """``<name>.<version>.<variant>`` -> parts (the version may contain dots, the others not)."""
    name, _, tail = rest.partition(".")
    version, _, variant = tail.rpartition(".")
    if not name or not version or not variant:
        return None
    return name, version, variant


@dataclass
class Index:
    records: dict[Key, ModelRecord] = field(default_factory=dict)
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    signals: dict[Key, ModelSignals] = field(default_factory=dict)

    def apply(self, key: str, value: bytes | None) -> None:
        kind, _, rest = key.partition(".")
        if kind == "aliases":
            name, _, alias = rest.partition(".")
            if value is None:
                self.aliases.get(name, {}).pop(alias, None)
            else:
                self.aliases.setdefault(name, {})[alias] = _alias_decoder.decode(value).version
            return
        parts = _split_versioned(rest)
        if parts is None:
            return
        if kind == "models":
            if value is None:
                self.records.pop(parts, None)
            else:
                self.records[parts] = _record_decoder.decode(value)
        elif kind == "signals":
            if value is None:
                self.signals.pop(parts, None)
            else:
                self.signals[parts] = _signals_decoder.decode(value)

    def versions(self, name: str, *, archived: bool = False) -> list[str]:
        """Versions of ``name``, oldest first; archived ones only when asked for."""
        return sorted(
            {v for (n, v, _), r in self.records.items() if n == name and (archived or r.archived_at is None)},
            key=version_key,
        )

    def variants_of(self, name: str, version: str) -> list[ModelRecord]:
        return [r for (n, v, _), r in sorted(self.records.items()) if n == name and v == version]

    def aliases_of(self, name: str, version: str) -> list[str]:
        return sorted(a for a, v in self.aliases.get(name, {}).items() if v == version)


class RegistryStore:
    def __init__(self, bus: Bus, bucket: str | None = None) -> None:
        self.bus = bus
        self.bucket = bucket or bus.settings.registry_bucket
        self.kv: KeyValue | None = None
        self.index = Index()
        self._watch_task: asyncio.Task[None] | None = None
        self._watchdog_task: asyncio.Task[None] | None = None
        self._applied_seq = 0  # the newest bucket message the index has applied
        self._ready = asyncio.Event()
        self.log = get_logger(component="store")

    async def open(self, *, watch: bool = True) -> RegistryStore:
        try:
            self.kv = await self.bus.js.key_value(self.bucket)
        except nats.js.errors.BucketNotFoundError:
            try:
                self.kv = await self.bus.js.create_key_value(
                    js_api.KeyValueConfig(
                        bucket=self.bucket,
                        history=16,
                        storage=js_api.StorageType.FILE,
                        replicas=self.bus.settings.stream_replicas,
                        description="inferlab registry metadata",
                    )
                )
            except nats.js.errors.BadRequestError:  # another replica created it first
                self.kv = await self.bus.js.key_value(self.bucket)
        if watch:
            self._watch_task = asyncio.create_task(self._watch())
            await asyncio.wait_for(self._ready.wait(), timeout=30)
            self._watchdog_task = asyncio.create_task(self._watch_stalls())
        return self

    async def close(self) -> None:
        for task in (self._watchdog_task, self._watch_task):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _watch(self) -> None:
        """Keep the index current: every (re)start replays the bucket into a fresh index that
        replaces the old one once complete (so a delete missed while disconnected leaves no
        ghost), then applies updates as they come."""
        assert self.kv is not None
        while True:
            fresh = Index()
            try:
                watcher = await self.kv.watchall()
                try:
                    async for entry in watcher:
                        if entry is None:  # end of the initial values
                            self.index = fresh
                            self._ready.set()
                            continue
                        self._apply(fresh, entry)
                finally:
                    with contextlib.suppress(Exception):
                        await watcher.stop()  # type: ignore[no-untyped-call]
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # server restart: watch again
                self.log.warning("index_watch_restart", error=str(exc))
                await asyncio.sleep(1.0)

    def _apply(self, index: Index, entry: KeyValue.Entry) -> None:
        deleted = entry.operation in ("DEL", "PURGE")
        try:
            index.apply(entry.key, None if deleted else entry.value)
        except msgspec.MsgspecError as exc:
            self.log.warning("index_skip", key=entry.key, error=str(exc))
        self._applied_seq = max(self._applied_seq, entry.revision or 0)

    async def _watch_stalls(self) -> None:
        """Start the watch again when it stopped receiving while the bucket moved on. Its
        ordered consumer lives on one server; when that server dies, nats-py re-creates it once
        per missed-heartbeat check, and a stream leader election can outlast those tries: the
        index, and with it every listing, would stay stale without a word."""
        stream = f"KV_{self.bucket}"
        previous = -1
        stalled = 0
        while True:
            await asyncio.sleep(INDEX_CHECK_S)
            try:
                info = await self.bus.js.stream_info(stream)
            except Exception:  # NATS failing over: ask again next time
                continue
            behind = (info.state.last_seq or 0) > self._applied_seq
            stalled = stalled + 1 if behind and self._applied_seq == previous else 0
            previous = self._applied_seq
            if stalled >= 2 and self._watch_task is not None:
                self.log.warning("index_watch_stalled", applied_seq=self._applied_seq, last_seq=info.state.last_seq)
                self._watch_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._watch_task
                self._watch_task = asyncio.create_task(self._watch())
                stalled = 0

    # --- records ------------------------------------------------------------------------

    async def get(self, name: str, version: str, variant: str = BASE_VARIANT) -> tuple[ModelRecord, int] | None:
        assert self.kv is not None
        try:
            entry = await self.kv.get(record_key(name, version, variant))
        except nats.js.errors.KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return _record_decoder.decode(entry.value), entry.revision or 0

    async def create(self, record: ModelRecord) -> int | None:
        """Atomically create the record; None when the key already exists."""
        assert self.kv is not None
        try:
            return await self.kv.create(record_key(record.name, record.version, record.variant), encode(record))
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    async def update(self, record: ModelRecord, revision: int) -> int | None:
        """Compare-and-set; None when someone else changed the record first."""
        assert self.kv is not None
        record.updated_at = utcnow()
        try:
            return await self.kv.update(
                record_key(record.name, record.version, record.variant), encode(record), last=revision
            )
        except nats.js.errors.KeyWrongLastSequenceError:
            return None

    async def modify(self, name: str, version: str, variant: str, change: Callable[[ModelRecord], None]) -> ModelRecord:
        """Read-modify-write with retries on concurrent change."""
        for _ in range(20):
            found = await self.get(name, version, variant)
            if found is None:
                raise UnknownModel(f"unknown model {format_ref(name, version, variant)}")
            record, revision = found
            change(record)
            if await self.update(record, revision) is not None:
                return record
            await asyncio.sleep(0.01)
        raise RuntimeError(f"could not update {format_ref(name, version, variant)}: too much contention")

    async def delete_version(self, name: str, version: str, variants: list[str]) -> None:
        """Remove the records and signals of ``variants`` of one version (aliases are checked
        by the caller: none may point here)."""
        assert self.kv is not None
        for variant in variants:
            for key in (record_key(name, version, variant), signals_key(name, version, variant)):
                with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                    await self.kv.delete(key)

    # --- references -----------------------------------------------------------------------

    async def resolve(self, ref: ModelRef) -> ModelRecord:
        """Exact version, alias, or newest version; then the variant."""
        version = ref.version
        if ref.alias is not None:
            version = await self.alias_target(ref.name, ref.alias)
        elif version is None:
            versions = self.index.versions(ref.name)
            if not versions:
                raise UnknownModel(f"unknown model {ref.name!r}")
            version = versions[-1]
        found = await self.get(ref.name, version, ref.variant)
        if found is None:
            if await self.get(ref.name, version, BASE_VARIANT) is None:
                raise UnknownModel(f"unknown model {format_ref(ref.name, version)}")
            raise UnknownModel(f"{format_ref(ref.name, version)} has no variant {ref.variant!r}")
        return found[0]

    # --- aliases --------------------------------------------------------------------------

    async def alias_target(self, name: str, alias: str) -> str:
        assert self.kv is not None
        try:
            entry = await self.kv.get(alias_key(name, alias))
        except nats.js.errors.KeyNotFoundError:
            raise UnknownAlias(f"{name}@{alias}: no such alias") from None
        if entry.value is None:
            raise UnknownAlias(f"{name}@{alias}: no such alias")
        return _alias_decoder.decode(entry.value).version

    async def set_alias(self, name: str, alias: str, version: str) -> str | None:
        """Point ``alias`` at ``version`` (compare-and-set); returns the previous version."""
        assert self.kv is not None
        key = alias_key(name, alias)
        value = encode(_AliasValue(version=version))
        for _ in range(20):
            try:
                entry = await self.kv.get(key)
                previous = _alias_decoder.decode(entry.value).version if entry.value else None
                revision = entry.revision or 0
            except nats.js.errors.KeyNotFoundError:
                previous, revision = None, 0
            try:
                if revision:
                    await self.kv.update(key, value, last=revision)
                else:
                    await self.kv.create(key, value)
                return previous
            except nats.js.errors.KeyWrongLastSequenceError:
                await asyncio.sleep(0.01)
        raise RuntimeError(f"could not move alias {name}@{alias}: too much contention")

    async def remove_alias(self, name: str, alias: str) -> str:
        assert self.kv is not None
        version = await self.alias_target(name, alias)
        await self.kv.delete(alias_key(name, alias))
        return version

    # --- signals --------------------------------------------------------------------------

    async def merge_signals(self, name: str, version: str, variant: str, update: dict[str, object]) -> None:
        assert self.kv is not None
        key = signals_key(name, version, variant)
        for _ in range(20):
            try:
                entry = await self.kv.get(key)
                current = _signals_decoder.decode(entry.value) if entry.value else ModelSignals()
                revision = entry.revision or 0
            except nats.js.errors.KeyNotFoundError:
                current, revision = ModelSignals(), 0
            merged = msgspec.structs.replace(current, **update)
            try:
                if revision:
                    await self.kv.update(key, encode(merged), last=revision)
                else:
                    await self.kv.create(key, encode(merged))
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                await asyncio.sleep(0.01)
        raise RuntimeError(f"could not record signals for {format_ref(name, version, variant)}")
