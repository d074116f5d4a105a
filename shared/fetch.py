"""Bring an artifact or dataset named by URI onto local disk, under the import policy.

Accepted: ``nats-obj://<bucket>/<object>``, ``upload://<id>?size=..&sha256=..`` (a pipeline's
staged upload, shared/artifacts.py), ``file:///...`` under an allow-listed import root
(after resolving symlinks, so a link cannot lead outside), and ``http(s)://...``; each scheme
must also be in ``INFERLAB_ALLOWED_SCHEMES``. Every path is size-limited while streaming and
hashed on the way.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import ipaddress
import os
import shutil
import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse

from shared.artifacts import SCHEME as OBJ_SCHEME
from shared.artifacts import UPLOAD_SCHEME, ArtifactStore, Staging, parse_object_uri, parse_upload_uri
from shared.bus import Bus
from shared.config import Settings
from shared.errors import ArtifactNotFound, ArtifactTooLarge, FetchFailed, ImportNotAllowed

_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    sha256: str
    source_uri: str


Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class HostPolicy:
    """Where http(s) fetches may go (the registry, converter and validator fetch URIs that any
    pipeline names: without this they could be pointed at internal endpoints, e.g. a cloud
    metadata service). ``hosts`` empty: any host that resolves to public addresses only; else
    only the hosts named (a name, an address or a CIDR network), which may then resolve to
    private addresses too. ``allow_private`` lifts the address check for every host."""

    hosts: tuple[str, ...] = ()
    allow_private: bool = False
    names: frozenset[str] = field(init=False)
    networks: tuple[Network, ...] = field(init=False)

    def __post_init__(self) -> None:
        names, networks = set(), []
        for entry in (h.strip().lower().rstrip(".") for h in self.hosts if h.strip()):
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry)
        object.__setattr__(self, "names", frozenset(names))
        object.__setattr__(self, "networks", tuple(networks))

    def _listed(self, host: str, address: Address | None) -> bool:
        if host in self.names:
            return True
        return address is not None and any(address in n for n in self.networks if n.version == address.version)

    def check_host(self, host: str) -> None:
        """Before resolving: a host outside a configured allow-list is refused."""
        host = host.lower().rstrip(".")
        if not self.hosts:
            return
        literal = _literal(host)
        if not self._listed(host, literal):
            raise ImportNotAllowed(f"host {host!r} is not in INFERLAB_FETCH_HOSTS")

    def check_address(self, host: str, address: Address) -> None:
        """After resolving: loopback, private, link-local (cloud metadata), multicast, reserved
        and unspecified addresses are refused unless the host was explicitly allowed."""
        if self.allow_private or self._listed(host.lower().rstrip("."), address):
            return
        mapped = getattr(address, "ipv4_mapped", None) or address
        if not mapped.is_global or mapped.is_multicast or mapped.is_reserved or mapped.is_unspecified:
            raise ImportNotAllowed(
                f"host {host!r} resolves to a non-public address; fetching from it is not allowed "
                "(INFERLAB_FETCH_HOSTS names hosts that may)"
            )


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class ImportPolicy:
    roots: tuple[Path, ...]
    schemes: tuple[str, ...]
    hosts: HostPolicy = HostPolicy()

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


def policy_from_settings(bus_or_settings: Bus | Settings) -> ImportPolicy:
    settings = bus_or_settings.settings if isinstance(bus_or_settings, Bus) else bus_or_settings
    return ImportPolicy(
        roots=settings.effective_import_roots,
        schemes=tuple(s.lower() for s in settings.allowed_schemes),
        hosts=HostPolicy(
            tuple(settings.fetch_hosts),
            bool(settings.fetch_allow_private),
        ),
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
    if scheme == UPLOAD_SCHEME:
        staged = await Staging(bus).get_to_file(parse_upload_uri(uri), dest, max_bytes=max_bytes)
        return Fetched(dest, staged.size, staged.sha256, uri)
    if scheme == "file":
        source = policy.local_path(uri)
        return await asyncio.to_thread(_copy_local, source, dest, max_bytes, uri)
    if scheme in ("http", "https"):
        timeout = bus.settings.http_timeout_s
        return await asyncio.to_thread(_download, uri, dest, max_bytes, timeout, policy.hosts)
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


MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was resolved and checked, not to whatever the name
    resolves to a moment later (DNS rebinding); the Host header still names the host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        # Certificate and SNI are checked against the host name, as for any https client.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _resolve(host: str, port: int, policy: HostPolicy) -> str:
    """The first address of ``host``, every one of which must pass the policy (a name that
    resolves to both a public and an internal address is refused)."""
    policy.check_host(host)
    literal = _literal(host)
    if literal is not None:
        addresses: list[Address] = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError):
            raise FetchFailed(f"cannot resolve host {host!r}") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise FetchFailed(f"cannot resolve host {host!r}")
    for address in addresses:
        policy.check_address(host, address)
    return str(addresses[0])


def _open(uri: str, timeout: float, policy: HostPolicy) -> http.client.HTTPResponse:
    """GET ``uri`` under ``policy``, following at most MAX_REDIRECTS redirects, each one
    checked like the first. ``user:password@`` becomes HTTP Basic auth, never sent to another
    host than the one it was given for."""
    first = urlparse(uri)
    authorization = None
    if first.username is not None:
        pair = f"{unquote(first.username)}:{unquote(first.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    auth_host = (first.hostname or "", first.port)
    for _ in range(MAX_REDIRECTS + 1):
        parsed = urlparse(uri)
        scheme = parsed.scheme.lower()
        if scheme not in ("http", "https"):
            raise ImportNotAllowed(f"a redirect to a {scheme or 'relative'}:// URI is not followed")
        host = parsed.hostname or ""
        if not host:
            raise ImportNotAllowed("an http(s) URI needs a host", code="invalid_uri")
        try:
            port = parsed.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise ImportNotAllowed("the URI's port is not a number", code="invalid_uri") from None
        address = _resolve(host, port, policy)
        kind = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        connection = kind(host, port, address, timeout)
        headers = {"User-Agent": "inferlab", "Accept-Encoding": "identity"}
        if authorization and (host, parsed.port) == auth_host:
            headers["Authorization"] = authorization
        target = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        try:
            connection.request("GET", target, headers=headers)
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise FetchFailed(f"cannot download {_public(uri)}: {_generic(exc)}") from None
        if response.status in _REDIRECTS:
            location = response.getheader("Location") or ""
            response.close()
            connection.close()
            if not location:
                raise FetchFailed(f"{_public(uri)} redirected without a location")
            uri = urljoin(uri, location)
            continue
        if response.status == 404:
            connection.close()
            raise ArtifactNotFound(f"nothing found at {_public(uri)}")
        if response.status != 200:
            connection.close()
            # The remote status and body are not echoed: an answer from an internal service
            # must not become an oracle for whoever named the URI.
            raise FetchFailed(f"{_public(uri)} did not deliver the file")
        return response
    raise FetchFailed(f"{_public(first.geturl())}: more than {MAX_REDIRECTS} redirects")


def _generic(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return "TLS failed"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return "connection failed"


def _download(uri: str, dest: Path, max_bytes: int, timeout: float, policy: HostPolicy | None = None) -> Fetched:
    response = _open(uri, timeout, policy or HostPolicy())
    with response:
        declared = response.getheader("Content-Length")
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
        except (OSError, http.client.HTTPException) as exc:
            raise FetchFailed(f"download of {_public(uri)} broke off: {_generic(exc)}") from None
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
