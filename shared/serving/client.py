"""A small keep-alive HTTP client of ``inferlab serve`` (tests, bench, and Python callers):

async with ServeClient("127.0.0.1", 8080) as server:
    ref, outputs = await server.infer({"X": batch})           # npz both ways
"""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import numpy as np

from shared.errors import InferlabError
from shared.serving import codec


class ServeRequestFailed(InferlabError):
    """The server answered with an error status; ``status`` and its JSON ``message``."""

    code = "serve_request_failed"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class ServeClient:
    """One connection, one request at a time (open several for concurrency)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> ServeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._reader = self._writer = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self._writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await self._writer.drain()
        head = (await self._reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        status_line, *header_lines = head.strip().split("\r\n")
        status = int(status_line.split(" ")[1])
        got = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            got[name.strip().lower()] = value.strip()
        data = await self._reader.readexactly(int(got.get("content-length", "0")))
        if got.get("connection", "").lower() == "close":
            await self.close()
        return status, got, data

    async def infer(self, feeds: dict[str, np.ndarray], *, npz: bool = True) -> tuple[str, dict[str, Any]]:
        """(the ref that answered, its outputs): arrays with ``npz``, JSON values without."""
        if npz:
            body, kind = codec.encode_npz_request(feeds), codec.NPZ
        else:
            body, kind = json.dumps({"inputs": {k: v.tolist() for k, v in feeds.items()}}).encode(), codec.JSON
        status, headers, data = await self.request("POST", "/v1/infer", body, {"Content-Type": kind, "Accept": kind})
        if status != 200:
            try:
                message = json.loads(data).get("message", "")
            except ValueError:
                message = data[:200].decode(errors="replace")
            raise ServeRequestFailed(status, message)
        if npz:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                return headers.get("x-inferlab-ref", ""), {name: archive[name] for name in archive.files}
        doc = json.loads(data)
        return doc["ref"], doc["outputs"]
