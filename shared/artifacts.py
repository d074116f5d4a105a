"""Blob store on a JetStream Object Store bucket, streamed to and from disk.

The on-stream format is exactly nats-py's (chunks on ``$O.<bucket>.C.<nuid>``, one rolled-up
meta message on ``$O.<bucket>.M.<name>``), so ``nats object get`` and nats-py read what we
write. We read and write the chunks ourselves because nats-py's ``ObjectStore.get()`` hands
each chunk to a thread-pool executor (measured at ~4 MB/s, 49 MB/s with ``writeinto=``) and
its ``put`` waits for every chunk's ack in turn: here chunks are read through an ordered
consumer straight into the file, and written with a window of in-flight publishes.

Every transfer hashes as it goes and is verified against the object's SHA-256 digest (and a
caller's expected sha256); neither side holds a whole model in memory.

Only the services write the object store. Anyone else (a pipeline's SDK) uploads into the
UPLOADS staging stream (``Staging``): chunks on ``upload.<random id>``, a stream that refuses
rollup headers, deletes and purges and forgets by age. The upload is named by
``upload://<id>?size=<bytes>&sha256=<hex>``; the service that takes it in (the registry for
models and datasets, the validator and converter for a dataset or calibration set) reads the
chunks, checks size and digest, and stores what it keeps in the object store itself. A
writer of ``$O.<bucket>.>`` could erase the whole bucket with one ``Nats-Rollup: all``
header (the object store needs rollups for its metadata), so no untrusted user holds it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar
from urllib.parse import parse_qs, urlparse

import nats.errors
import nats.js.errors
from nats.js import api as js_api

from shared.bus import TRANSIENT_RETRY_S, UPLOADS_STREAM, Bus, PermissionDenied, stream_specs
from shared.errors import ArtifactError, ArtifactNotFound, ArtifactTooLarge, IntegrityError, ServiceUnavailable

SCHEME = "nats-obj"
UPLOAD_SCHEME = "upload"
_UPLOAD_ID = re.compile(r"[0-9a-f]{32}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
CHUNK_SIZE = 512 * 1024
PUBLISH_WINDOW = 64  # chunks in flight (32 MiB) before waiting for acks
_ROLLUP = {"Nats-Rollup": "sub"}

Progress = Callable[[int], None]
T = TypeVar("T")

ACK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class StoredArtifact:
    bucket: str
    name: str
    size: int
    sha256: str

    @property
    def uri(self) -> str:
        return object_uri(self.bucket, self.name)


def object_uri(bucket: str, name: str) -> str:
    return f"{SCHEME}://{bucket}/{name}"


def parse_object_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    name = parsed.path.lstrip("/")
    if parsed.scheme != SCHEME or not parsed.netloc or not name:
        raise ArtifactError(
            f"not an object store URI: {uri!r} (expected {SCHEME}://<bucket>/<object>)", code="invalid_uri"
        )
    return parsed.netloc, name


def content_name(sha256: str, prefix: str = "sha256") -> str:
    """Content-addressed object name: identical bytes are stored once."""
    return f"{prefix}/{sha256}"


def _digest_to_hex(digest: str | None) -> str | None:
    if not digest:
        return None
    raw = digest.split("=", 1)[1] if "=" in digest else digest
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).hex()


def _hex_to_digest(sha256: str) -> str:
    return "SHA-256=" + base64.urlsafe_b64encode(bytes.fromhex(sha256)).decode()


def _meta_subject(bucket: str, name: str) -> str:
    return f"$O.{bucket}.M.{base64.urlsafe_b64encode(name.encode()).decode()}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


async def _acked(pending: list[asyncio.Future[js_api.PubAck]]) -> None:
    """Wait for the acks of published chunks. nats-py's publish_async futures never time out
    by themselves: a chunk sent to a node that died would hang the upload (and the handler
    heartbeating for it) forever."""
    if not pending:
        return
    done, waiting = await asyncio.wait(pending, timeout=ACK_TIMEOUT_S)
    if waiting:
        raise nats.errors.TimeoutError
    for future in done:
        future.result()  # raises the publish error, if any


class _HighWater:
    """Progress reporting across retried attempts: bytes are reported once, however many
    attempts send them."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.reported = 0
        self.sent = 0

    def restart(self) -> None:
        self.sent = 0

    def __call__(self, n: int) -> None:
        self.sent += n
        if self.progress is not None and self.sent > self.reported:
            self.progress(self.sent - self.reported)
            self.reported = self.sent


Subscribe = Callable[[Callable[[Any], Awaitable[None]]], Awaitable[Any]]


class _Attempt:
    """One read of a chunk sequence: its own hash, count and file, so that a chunk a dropped
    subscription still delivers cannot land in the next attempt."""

    def __init__(self, out: BinaryIO, size: int, progress: _HighWater) -> None:
        self.out = out
        self.size = size
        self.progress = progress
        self.hash = hashlib.sha256()
        self.received = 0
        self.done = asyncio.Event()
        self.closed = False

    async def on_chunk(self, chunk: Any) -> None:
        # Hashed and written as it arrives, in the subscription's own callback: no queue hop per
        # chunk (measured faster here than handing batches to a writer thread). Bytes past the
        # announced size are not read (chunks someone appended to a staged subject later).
        if self.closed or self.received >= self.size:
            return
        data = chunk.data[: self.size - self.received]
        self.hash.update(data)
        self.out.write(data)
        self.received += len(data)
        self.progress(len(data))
        if self.received >= self.size:
            self.done.set()

    async def stalled(self, idle_timeout: float) -> bool:
        """Wait until every byte arrived (False) or nothing arrived for ``idle_timeout`` (True)."""
        while not self.done.is_set():
            before = self.received
            try:
                await asyncio.wait_for(self.done.wait(), timeout=idle_timeout)
            except TimeoutError:
                if self.received == before:
                    return True
        return False


async def _receive(
    bus: Bus,
    what: str,
    subscribe: Subscribe,
    size: int,
    dest: Path,
    *,
    progress: Progress | None = None,
    idle_timeout: float,
) -> tuple[int, str]:
    """Read ``size`` bytes of chunks, delivered to the callback that ``subscribe`` registers on
    an ordered consumer, into ``dest``'s ``.partial`` sibling; return the bytes read and their
    SHA-256. A read that stalls starts again from the first chunk on a new subscription, for up
    to TRANSIENT_RETRY_S after the first stall: when the server holding an ordered consumer
    dies, nats-py re-creates the consumer once per missed-heartbeat check, and a stream leader
    election under load can outlast those tries. A stall beyond that is final (``fetch_failed``)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    reported = _HighWater(progress)
    loop = asyncio.get_running_loop()
    give_up_at: float | None = None
    while True:
        reported.restart()
        with open(partial, "wb") as out:
            attempt = _Attempt(out, size, reported)
            if size == 0:
                return 0, attempt.hash.hexdigest()
            sub = await subscribe(attempt.on_chunk)
            try:
                stalled = await attempt.stalled(idle_timeout)
            finally:
                attempt.closed = True
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        if not stalled:
            return attempt.received, attempt.hash.hexdigest()
        now = loop.time()
        give_up_at = give_up_at if give_up_at is not None else now + TRANSIENT_RETRY_S
        if now >= give_up_at:
            raise ArtifactError(f"{what} stalled at {attempt.received} of {size} bytes", code="fetch_failed")
        bus.log.warning("transfer_restarted", what=what, received=attempt.received, size=size)


class ArtifactStore:
    def __init__(self, bus: Bus, bucket: str | None = None) -> None:
        self.bus = bus
        self.bucket = bucket or bus.settings.artifact_bucket
        self.stream = f"OBJ_{self.bucket}"

    async def _retrying(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        # A refused chunk, metadata or lookup ends it at once; a refused purge (cleanup that
        # the orphan sweep also does) is not a failure of the transfer.
        return await self.bus.retry_transient(
            what,
            attempt,
            denied_if=(
                f'publish to "$O.{self.bucket}.',
                'publish to "$JS.API.STREAM.INFO.',
                'publish to "$JS.API.STREAM.NAMES',
                'publish to "$JS.API.STREAM.MSG.GET.',
                'publish to "$JS.API.DIRECT.GET.',
                'publish to "$JS.API.STREAM.CREATE.',
                'publish to "$JS.API.CONSUMER.',
            ),
        )

    async def ensure(self) -> None:
        await self._retrying(f"bucket {self.bucket}", self._ensure_once)

    async def _ensure_once(self) -> None:
        try:
            await self.bus.js.object_store(self.bucket)
        except nats.js.errors.NotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):  # a replica won the race
                await self.bus.js.create_object_store(
                    self.bucket,
                    config=js_api.ObjectStoreConfig(
                        bucket=self.bucket,
                        storage=js_api.StorageType.FILE,
                        replicas=self.bus.settings.stream_replicas,
                        description="inferlab model and dataset artifacts",
                    ),
                )
        # Rollups stay allowed (the object store's metadata needs them), so only services may
        # write here; single messages are never deleted through the API either.
        info = await self.bus.js.stream_info(self.stream)
        if not info.config.deny_delete:
            info.config.deny_delete = True
            with contextlib.suppress(nats.js.errors.BadRequestError):
                await self.bus.unless_denied(
                    self.bus.js.update_stream(info.config), f'publish to "$JS.API.STREAM.UPDATE.{self.stream}'
                )

    async def _meta(self, name: str) -> dict[str, Any] | None:
        return await self._retrying(f"object {name!r}", lambda: self._meta_once(name))

    async def _meta_once(self, name: str) -> dict[str, Any] | None:
        try:
            msg = await self.bus.js.get_last_msg(self.stream, _meta_subject(self.bucket, name))
        except nats.js.errors.NotFoundError:
            return None
        meta: dict[str, Any] = json.loads(msg.data or b"")
        return None if meta.get("deleted") else meta

    async def info(self, name: str) -> StoredArtifact | None:
        meta = await self._meta(name)
        if meta is None:
            return None
        return StoredArtifact(self.bucket, name, int(meta.get("size", 0)), _digest_to_hex(meta.get("digest")) or "")

    async def put_file(
        self,
        path: Path,
        name: str,
        *,
        sha256: str | None = None,
        progress: Progress | None = None,
        skip_if_same: bool = True,
    ) -> StoredArtifact:
        """Upload ``path`` as ``name``. When ``name`` already holds bytes with the same
        sha256 (content-addressed names), nothing is sent. An upload interrupted by a node
        failing over starts again (its partial chunks are purged, or swept later)."""
        if skip_if_same and sha256:
            existing = await self.info(name)
            if existing is not None and existing.sha256 == sha256:
                if progress:
                    progress(existing.size)
                return existing
        reported = _HighWater(progress)
        return await self._retrying(
            f"upload of {name!r}", lambda: self._put_once(path, name, sha256=sha256, progress=reported)
        )

    async def _put_once(self, path: Path, name: str, *, sha256: str | None, progress: _HighWater) -> StoredArtifact:
        progress.restart()
        nuid = self.bus.nc._nuid.next().decode()
        chunk_subject = f"$O.{self.bucket}.C.{nuid}"
        h = hashlib.sha256()
        size = chunks = 0
        pending: list[asyncio.Future[js_api.PubAck]] = []
        try:
            with open(path, "rb") as f:
                while block := f.read(CHUNK_SIZE):
                    h.update(block)
                    pending.append(await self.bus.js.publish_async(chunk_subject, block, wait_stall=30.0))
                    size += len(block)
                    chunks += 1
                    if len(pending) >= PUBLISH_WINDOW:
                        await _acked(pending)
                        pending.clear()
                    progress(len(block))
            await _acked(pending)
            actual = h.hexdigest()
            if sha256 and actual != sha256:
                raise IntegrityError(sha256, actual, what=str(path))
            previous = await self._meta_once(name)
            meta = {
                "name": name,
                "bucket": self.bucket,
                "nuid": nuid,
                "size": size,
                "chunks": chunks,
                "digest": _hex_to_digest(actual),
                "mtime": datetime.now(UTC).isoformat(),
                "options": {"max_chunk_size": CHUNK_SIZE},
            }
            await self.bus.js.publish(_meta_subject(self.bucket, name), json.dumps(meta).encode(), headers=_ROLLUP)
        except BaseException:
            # Cancelled futures release their publish_async slots (shared by the connection);
            # an ack that never comes would otherwise hold one forever.
            for future in pending:
                future.cancel()
            with contextlib.suppress(Exception):
                await self._purge(chunk_subject)
            raise
        if previous is not None and previous.get("nuid") and previous["nuid"] != nuid:
            # The name was overwritten: its old chunks are unreachable now.
            with contextlib.suppress(Exception):
                await self._purge(f"$O.{self.bucket}.C.{previous['nuid']}")
        return StoredArtifact(self.bucket, name, size, actual)

    async def _purge(self, subject: str) -> None:
        """Purge chunks; a user without the right (the pipeline) fails at once and leaves them
        to the registry's orphan sweep."""
        await self.bus.unless_denied(
            self.bus.js.purge_stream(self.stream, subject=subject), f'publish to "$JS.API.STREAM.PURGE.{self.stream}'
        )

    async def get_to_file(
        self,
        name: str,
        dest: Path,
        *,
        sha256: str | None = None,
        max_bytes: int | None = None,
        progress: Progress | None = None,
        idle_timeout: float = 30.0,
    ) -> StoredArtifact:
        """Download ``name`` into ``dest`` (written to a temporary sibling, renamed when the
        digest matched)."""
        meta = await self._meta(name)
        if meta is None:
            raise ArtifactNotFound(f"no object {name!r} in bucket {self.bucket!r}")
        size = int(meta.get("size", 0))
        expected = _digest_to_hex(meta.get("digest"))
        if max_bytes is not None and size > max_bytes:
            raise ArtifactTooLarge(size, max_bytes)
        if sha256 and expected and sha256 != expected:
            raise IntegrityError(sha256, expected, what=f"object {name!r}")
        chunk_subject = f"$O.{self.bucket}.C.{meta['nuid']}"
        received, actual = await _receive(
            self.bus,
            f"object {name!r}",
            lambda on_chunk: self._retrying(
                f"object {name!r}",
                lambda: self.bus.js.subscribe(chunk_subject, ordered_consumer=True, cb=on_chunk),
            ),
            size,
            dest,
            progress=progress,
            idle_timeout=idle_timeout,
        )
        partial = dest.with_name(dest.name + ".partial")
        if received != size or (expected and actual != expected) or (sha256 and actual != sha256):
            partial.unlink(missing_ok=True)
            raise IntegrityError(sha256 or expected or "", actual, what=f"object {name!r}")
        os.replace(partial, dest)
        return StoredArtifact(self.bucket, name, size, actual)

    async def purge_orphans(self, *, min_age_s: float = 600.0) -> int:
        """Purge chunk sets that no object's metadata names: what an upload leaves behind when
        its process dies (kill -9, lost connection) before the metadata was written. A set
        whose newest chunk is younger than ``min_age_s`` is left alone, so uploads in progress
        (anywhere: every replica and client writes here) are never touched. Returns how many
        chunk sets were purged."""
        chunks = await self.bus.js.stream_info(self.stream, subjects_filter=f"$O.{self.bucket}.C.>")
        nuids = {subject.rsplit(".", 1)[1] for subject in (chunks.state.subjects or {})}
        if not nuids:
            return 0
        metas = await self.bus.js.stream_info(self.stream, subjects_filter=f"$O.{self.bucket}.M.>")
        live = set()
        for subject in metas.state.subjects or {}:
            with contextlib.suppress(nats.js.errors.NotFoundError, ValueError):
                msg = await self.bus.js.get_last_msg(self.stream, subject)
                meta = json.loads(msg.data or b"{}")
                if not meta.get("deleted"):  # a deleted object's chunks are garbage too
                    live.add(meta.get("nuid"))
        purged = 0
        now = datetime.now(UTC)
        for nuid in sorted(nuids - live):
            subject = f"$O.{self.bucket}.C.{nuid}"
            try:
                newest = await self.bus.js.get_last_msg(self.stream, subject)
            except nats.js.errors.NotFoundError:
                continue
            if newest.time is None or (now - newest.time).total_seconds() < min_age_s:
                continue
            await self.bus.js.purge_stream(self.stream, subject=subject)
            purged += 1
        return purged

    async def delete(self, name: str) -> None:
        """Mark ``name`` deleted (nats-py's format: a rolled-up metadata message with
        ``deleted``), then purge its chunks; a user without the purge right leaves them to the
        registry's orphan sweep instead of waiting for a refused request to time out."""
        meta = await self._meta(name)
        if meta is None or not meta.get("nuid"):
            return
        tombstone = {**meta, "deleted": True, "size": 0, "chunks": 0, "digest": "", "mtime": ""}
        await self._retrying(
            f"delete of {name!r}",
            lambda: self.bus.js.publish(
                _meta_subject(self.bucket, name), json.dumps(tombstone).encode(), headers=_ROLLUP
            ),
        )
        with contextlib.suppress(Exception):
            await self._purge(f"$O.{self.bucket}.C.{meta['nuid']}")


# --- staged uploads ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StagedUpload:
    """A file in the UPLOADS staging stream: chunks on ``upload.<id>``."""

    id: str
    size: int
    sha256: str

    @property
    def subject(self) -> str:
        return f"upload.{self.id}"

    @property
    def uri(self) -> str:
        return f"{UPLOAD_SCHEME}://{self.id}?size={self.size}&sha256={self.sha256}"


def parse_upload_uri(uri: str) -> StagedUpload:
    """``upload://<32 hex>?size=<bytes>&sha256=<64 hex>``; anything else is ``invalid_uri``."""
    parsed = urlparse(uri)
    query = parse_qs(parsed.query)
    size = query.get("size", [""])[0]
    sha = query.get("sha256", [""])[0]
    if (
        parsed.scheme != UPLOAD_SCHEME
        or not _UPLOAD_ID.fullmatch(parsed.netloc)
        or parsed.path not in ("", "/")
        or not size.isdigit()
        or len(size) > 15
        or not _SHA256_HEX.fullmatch(sha)
    ):
        raise ArtifactError(
            f"not a staged upload URI: {uri[:200]!r} "
            f"(expected {UPLOAD_SCHEME}://<32 hex>?size=<bytes>&sha256=<64 hex>)",
            code="invalid_uri",
        )
    return StagedUpload(parsed.netloc, int(size), sha)


class Staging:
    """Uploads into, and reads out of, the UPLOADS staging stream."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def ensure(self) -> None:
        """The stream exists (the services declare it at start); a user allowed to (admin, an
        unauthenticated embedded server) declares it itself."""
        # Retried like every JetStream call of a transfer: during a cluster node's failover
        # the lookup times out while a new stream leader is elected.
        try:
            await self.bus.retry_transient(
                "the upload area",
                lambda: self.bus.js.stream_info(UPLOADS_STREAM),
                denied_if=f'publish to "$JS.API.STREAM.INFO.{UPLOADS_STREAM}',
            )
            return
        except nats.js.errors.NotFoundError:
            pass
        spec = next(s for s in stream_specs(self.bus.settings) if s.name == UPLOADS_STREAM)
        try:
            await self.bus.retry_transient(
                "the upload area", lambda: self.bus.ensure_stream(spec), denied_if='publish to "$JS.API.STREAM.'
            )
        except PermissionDenied:
            raise ServiceUnavailable(
                f"there is no upload area ({UPLOADS_STREAM} stream) yet and this user may not create it: "
                "start the platform's services (`inferlab up`), which declare it"
            ) from None

    async def put_file(self, path: Path, *, progress: Progress | None = None) -> StagedUpload:
        """Stage ``path`` under a fresh random id. An attempt cut off by a failover starts
        again under a new id (the partial one expires)."""
        reported = _HighWater(progress)
        return await self.bus.retry_transient(
            f"upload of {path.name}",
            lambda: self._put_once(path, reported),
            denied_if=('publish to "upload.', 'publish to "$JS.API.'),
        )

    async def _put_once(self, path: Path, progress: _HighWater) -> StagedUpload:
        progress.restart()
        upload_id = secrets.token_hex(16)
        subject = f"upload.{upload_id}"
        h = hashlib.sha256()
        size = 0
        pending: list[asyncio.Future[js_api.PubAck]] = []
        try:
            with open(path, "rb") as f:
                while block := f.read(CHUNK_SIZE):
                    h.update(block)
                    pending.append(await self.bus.js.publish_async(subject, block, wait_stall=30.0))
                    size += len(block)
                    if len(pending) >= PUBLISH_WINDOW:
                        await _acked(pending)
                        pending.clear()
                    progress(len(block))
            await _acked(pending)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        return StagedUpload(upload_id, size, h.hexdigest())

    async def get_to_file(
        self, staged: StagedUpload, dest: Path, *, max_bytes: int | None = None, idle_timeout: float = 30.0
    ) -> StoredArtifact:
        """Read a staged upload into ``dest``; its size and digest must be the URI's."""
        if max_bytes is not None and staged.size > max_bytes:
            raise ArtifactTooLarge(staged.size, max_bytes)
        if staged.size > 0:
            try:
                await self.bus.retry_transient(
                    f"upload {staged.id}", lambda: self.bus.js.get_last_msg(UPLOADS_STREAM, staged.subject)
                )
            except nats.js.errors.NotFoundError:
                raise ArtifactNotFound(
                    f"no staged upload {staged.id} (uploads are kept {self.bus.settings.uploads_max_age_hours:g} h)"
                ) from None
        received, actual = await _receive(
            self.bus,
            f"staged upload {staged.id}",
            lambda on_chunk: self.bus.retry_transient(
                f"upload {staged.id}",
                lambda: self.bus.js.subscribe(
                    staged.subject, stream=UPLOADS_STREAM, ordered_consumer=True, cb=on_chunk
                ),
            ),
            staged.size,
            dest,
            idle_timeout=idle_timeout,
        )
        partial = dest.with_name(dest.name + ".partial")
        if received != staged.size or actual != staged.sha256:
            partial.unlink(missing_ok=True)
            raise IntegrityError(staged.sha256, actual, what=f"staged upload {staged.id}")
        os.replace(partial, dest)
        return StoredArtifact("", staged.id, received, actual)
