"""A content-addressed local cache of artifacts for services that read models and datasets
(converter, benchmarker, validator). Files are named by sha256, so a cached file is valid
forever; concurrent fetches of one object download it once; the least recently used files
are evicted beyond ``max_bytes``."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from shared.artifacts import SCHEME, ArtifactStore, parse_object_uri
from shared.bus import Bus
from shared.fetch import fetch_to_file


class ArtifactCache:
    def __init__(self, bus: Bus, root: Path, *, max_bytes: int = 8 << 30) -> None:
        self.bus = bus
        self.root = root
        self.max_bytes = max_bytes
        self._locks: dict[str, asyncio.Lock] = {}
        root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str, suffix: str = ".onnx") -> Path:
        return self.root / f"{sha256}{suffix}"

    async def get(
        self, uri: str, sha256: str | None = None, *, suffix: str = ".onnx", max_bytes: int | None = None
    ) -> Path:
        """Local path of the artifact at ``uri`` (``nats-obj://`` or any URI the import policy
        allows), verified against ``sha256`` when given."""
        limit = max_bytes or self.bus.settings.max_artifact_bytes
        if sha256:
            cached = self.path_for(sha256, suffix)
            if cached.exists():
                os.utime(cached)
                return cached
        key = sha256 or uri
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if sha256 and self.path_for(sha256, suffix).exists():
                return self.path_for(sha256, suffix)
            partial = self.root / f".{abs(hash(key))}.{os.getpid()}.download"
            try:
                if uri.startswith(f"{SCHEME}://"):
                    bucket, name = parse_object_uri(uri)
                    stored = await ArtifactStore(self.bus, bucket).get_to_file(
                        name, partial, sha256=sha256, max_bytes=limit
                    )
                    digest = stored.sha256
                else:
                    fetched = await fetch_to_file(self.bus, uri, partial, max_bytes=limit)
                    digest = fetched.sha256
                    if sha256 and digest != sha256:
                        from shared.errors import IntegrityError

                        raise IntegrityError(sha256, digest, what=uri)
                final = self.path_for(digest, suffix)
                os.replace(partial, final)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    partial.unlink()
            self._locks.pop(key, None)
        await asyncio.to_thread(self._evict)
        return final

    def _evict(self) -> None:
        files = [p for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")]
        total = sum(p.stat().st_size for p in files)
        if total <= self.max_bytes:
            return
        for path in sorted(files, key=lambda p: p.stat().st_mtime):
            if total <= self.max_bytes:
                break
            size = path.stat().st_size
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
