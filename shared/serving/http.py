"""A small HTTP/1.1 server on asyncio streams: enough for an inference API (requests with a
Content-Length body, keep-alive, ``Expect: 100-continue``), nothing more. The project carries
no web framework and none is needed for a handful of routes (docs/architecture.md)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

import structlog

from shared.errors import InferlabError

MAX_HEADER_BYTES = 64 * 1024
IDLE_TIMEOUT_S = 75.0

log = structlog.get_logger("serve.http")


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Awaitable[Response]]


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _parse_head(head: bytes) -> tuple[str, str, str, str, dict[str, str]]:
    try:
        text = head.decode("latin-1")
        request_line, *header_lines = text.split("\r\n")
        method, target, version = request_line.split(" ")
    except ValueError:
        raise HttpError(400, "malformed request line") from None
    headers: dict[str, str] = {}
    for line in header_lines:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    path, _, query = target.partition("?")
    return method.upper(), path, query, version.upper(), headers


def encode_response(response: Response, keep_alive: bool) -> bytes:
    reason = HTTPStatus(response.status).phrase
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
        *(f"{k}: {v}" for k, v in response.headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


def _error(status: int, message: str) -> Response:
    import json

    return Response(status, json.dumps({"error": HTTPStatus(status).phrase.lower(), "message": message}).encode())


class HttpServer:
    """Serves ``handler`` on ``host:port`` (port 0: a free one, read back from ``port``)."""

    def __init__(self, handler: Handler, host: str, port: int, *, max_body: int) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_body = max_body
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEADER_BYTES)
        except OSError as exc:  # address in use, not permitted, unknown host
            reason = exc.strerror or str(exc)
            raise InferlabError(f"cannot listen on {self.host}:{self.port}: {reason}", code="listen_failed") from None
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request and its response; False when the connection is to be closed."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            writer.write(encode_response(_error(431, "request headers too large"), False))
            await writer.drain()
            return False
        except asyncio.IncompleteReadError:
            return False
        try:
            method, path, query, version, headers = _parse_head(head[:-4])
            keep_alive = _keep_alive(version, headers)
            body = await self._body(reader, writer, headers)
        except HttpError as exc:
            writer.write(encode_response(_error(exc.status, exc.message), False))
            await writer.drain()
            return False
        try:
            response = await self.handler(Request(method, path, query, headers, body))
        except Exception as exc:
            log.exception("handler_failed", path=path)
            response = _error(500, f"{type(exc).__name__}: {exc}")
        writer.write(encode_response(response, keep_alive))
        await writer.drain()
        return keep_alive

    async def _body(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise HttpError(411, "send the body with a Content-Length (chunked encoding is not supported)")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise HttpError(400, "Content-Length is not a number") from None
        if length < 0:
            raise HttpError(400, "Content-Length is negative")
        if length > self.max_body:
            raise HttpError(413, f"body of {length} bytes is over the limit of {self.max_body} bytes")
        if length and headers.get("expect", "").lower() == "100-continue":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        return await asyncio.wait_for(reader.readexactly(length), IDLE_TIMEOUT_S) if length else b""


def _keep_alive(version: str, headers: dict[str, str]) -> bool:
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return connection == "keep-alive"
    return connection != "close"
