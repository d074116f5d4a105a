"""Bring an artifact or dataset named by URI onto local disk, under the import policy.

Accepted: ``nats-obj://<bucket>/<object>``, ``file:///...`` under an allow-listed import root
(after resolving symlinks, so a link cannot lead outside), and ``http(s)://...``; each scheme
must also be in ``INFERLAB_ALLOWED_SCHEMES``. Every path is size-limited while streaming and
hashed on the way.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from shared.artifacts import SCHEME as OBJ_SCHEME
from shared.artifacts import ArtifactStore, parse_object_uri
from shared.bus import Bus
from shared.errors import ArtifactNotFound, ArtifactTooLarge, FetchFailed, ImportNotAllowed

_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    sha256: str
    source_uri: str


@dataclass(frozen=True)
class ImportPolicy:
    roots: tuple[Path, ...]
    schemes: tuple[str, ...]

    def check_scheme(self, uri: str) -> str:
        scheme = urlparse(uri).scheme.lower()
        if not scheme:
            raise ImportNotAllowed(
                f"{uri!r} is not a URI (expected nats-obj://, file:// or https://)", code="invalid_uri"
            )
        if scheme not in self.schemes:
            raise ImportNotAllowed(
                f"URI scheme {scheme!r} is not allowed (INFERLAB_ALLOWED_SCHEMES={','.join(self.schemes)})"
            )
        return scheme

    def local_path(self, uri: str) -> Path:
        """The resolved path of a ``file://`` URI, refused unless it is under an import root."""
        parsed = urlparse(uri)
        if parsed.netloc not in ("", "localhost"):
            raise ImportNotAllowed(f"file URI with a remote host is not allowed: {uri!r}")
        raw = unquote(parsed.path)
        if "\x00" in raw:
            raise ImportNotAllowed("file URI contains a NUL byte", code="invalid_uri")
        path = Path(raw)
        if not path.is_absolute():
            raise ImportNotAllowed(f"file URI must hold an absolute path: {uri!r}", code="invalid_uri")
        resolved = path.resolve(strict=False)
        for root in self.roots:
            if resolved.is_relative_to(root.resolve(strict=False)):
                return resolved
        roots = ", ".join(str(r) for r in self.roots) or "(none)"
        raise ImportNotAllowed(f"{raw} is outside the import roots ({roots}); set INFERLAB_IMPORT_ROOTS")


def policy_from_settings(bus_or_settings: Bus | object) -> ImportPolicy:
    settings = bus_or_settings.settings if isinstance(bus_or_settings, Bus) else bus_or_settings
    return ImportPolicy(
        roots=settings.effective_import_roots,  # type: ignore[attr-defined]
        schemes=tuple(s.lower() for s in settings.allowed_schemes),  # type: ignore[attr-defined]
    )


async def fetch_to_file(
    bus: Bus, uri: str, dest: Path, *, max_bytes: int, policy: ImportPolicy | None = None
) -> Fetched:
    """Copy ``uri`` to ``dest``; raises ``ImportNotAllowed``, ``ArtifactNotFound``,
    ``ArtifactTooLarge``, ``IntegrityError`` or ``FetchFailed`` with the precise cause."""
    policy = policy or policy_from_settings(bus)
    scheme = policy.check_scheme(uri)
    if scheme == OBJ_SCHEME:
        bucket, name = parse_object_uri(uri)
        stored = await ArtifactStore(bus, bucket).get_to_file(name, dest, max_bytes=max_bytes)
        return Fetched(dest, stored.size, stored.sha256, uri)
    if scheme == "file":
        source = policy.local_path(uri)
        return await asyncio.to_thread(_copy_local, source, dest, max_bytes, uri)
    if scheme in ("http", "https"):
        timeout = bus.settings.http_timeout_s
        return await asyncio.to_thread(_download, uri, dest, max_bytes, timeout)
    raise ImportNotAllowed(f"no fetcher for scheme {scheme!r}")


def _copy_local(source: Path, dest: Path, max_bytes: int, uri: str) -> Fetched:
    if not source.is_file():
        raise ArtifactNotFound(f"no such file: {source}")
    size = source.stat().st_size
    if size > max_bytes:
        raise ArtifactTooLarge(size, max_bytes)
    h = hashlib.sha256()
    copied = 0
    with open(source, "rb") as src, open(dest, "wb") as out:
        while block := src.read(_COPY_CHUNK):
            copied += len(block)
            if copied > max_bytes:  # the file grew while we read it
                raise ArtifactTooLarge(copied, max_bytes)
            h.update(block)
            out.write(block)
    return Fetched(dest, copied, h.hexdigest(), uri)


class _NoCredentialsAcrossHosts(urllib.request.HTTPRedirectHandler):
    """Follow redirects, but never carry the Authorization header to another host (urllib
    copies request headers into the redirected request)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urlparse(newurl).netloc != urlparse(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_opener = urllib.request.build_opener(_NoCredentialsAcrossHosts)


def _request(uri: str) -> urllib.request.Request:
    """``user:password@`` in an http(s) URI becomes HTTP Basic authentication (urllib would
    take it for part of the host name); the URI that is requested carries no credentials."""
    parsed = urlparse(uri)
    headers = {"User-Agent": "inferlab-registry"}
    if parsed.username is not None:
        pair = f"{unquote(parsed.username)}:{unquote(parsed.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        host = parsed.hostname or ""
        host = f"[{host}]" if ":" in host else host
        uri = parsed._replace(netloc=host + (f":{parsed.port}" if parsed.port else "")).geturl()
    return urllib.request.Request(uri, headers=headers)


def _download(uri: str, dest: Path, max_bytes: int, timeout: float) -> Fetched:
    try:
        request = _request(uri)
        response = _opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ArtifactNotFound(f"{_public(uri)} answered 404") from None
        raise FetchFailed(f"{_public(uri)} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise FetchFailed(f"cannot download {_public(uri)}: {getattr(exc, 'reason', exc)}") from None
    with response:
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise ArtifactTooLarge(int(declared), max_bytes)
        h = hashlib.sha256()
        size = 0
        try:
            with open(dest, "wb") as out:
                while block := response.read(_COPY_CHUNK):
                    size += len(block)
                    if size > max_bytes:
                        raise ArtifactTooLarge(size, max_bytes)
                    h.update(block)
                    out.write(block)
        except (OSError, urllib.error.URLError) as exc:
            raise FetchFailed(f"download of {_public(uri)} broke off: {exc}") from None
    return Fetched(dest, size, h.hexdigest(), uri)


def public_uri(uri: str) -> str:
    """What may be shown, logged or recorded of a URI: http(s) ones lose user info and query
    string (either may carry credentials); the other schemes carry none."""
    return _public(uri) if urlparse(uri).scheme.lower() in ("http", "https") else uri


def _public(uri: str) -> str:
    """The URI without user info or query string (which may carry credentials)."""
    parsed = urlparse(uri)
    host = parsed.hostname or ""
    if parsed.port:
        host += f":{parsed.port}"
    return f"{parsed.scheme}://{host}{parsed.path}"


def scratch_dir(home: Path, purpose: str) -> Path:
    path = home / "scratch" / purpose
    path.mkdir(parents=True, exist_ok=True)
    return path


def remove_quietly(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
