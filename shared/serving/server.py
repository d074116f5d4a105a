"""The inference server's wiring: routes, readiness, telemetry, following an alias.

Routes: ``POST /v1/infer`` (JSON or npz in, the same or ``Accept`` out), ``GET /v1/model``
(what is served), ``GET /healthz`` (the process answers), ``GET /readyz`` (a model is loaded
and warmed: 200, else 503). Each request's latency inside the server (body read to response
built, batching wait included) goes to a ``LatencyReporter`` of the version that computed it.

Given an alias (``digits@production``) or a bare name (newest version), the server resolves it
again every ``follow_interval_s``; when it points elsewhere it loads and warms the new version
beside the old one and switches between two batches, so no request fails or waits for a load.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import structlog

from shared.contracts.identity import ModelRef
from shared.errors import InferlabError
from shared.sdk import Client
from shared.serving import codec
from shared.serving.batcher import Batcher
from shared.serving.errors import ServingError
from shared.serving.http import HttpServer, Request, Response
from shared.serving.loader import LoadedModel, load, session_settings
from shared.telemetry import LatencyReporter, TelemetryKey

log = structlog.get_logger("serve")


@dataclass
class ServeOptions:
    ref: str
    host: str = "127.0.0.1"
    port: int = 8080
    max_batch: int = 32
    max_delay_ms: float = 2.0
    max_body_bytes: int = 64 << 20
    intra_op_threads: int | None = None
    telemetry: bool = True
    telemetry_interval_s: float = 5.0
    telemetry_max_batch: int = 1_000
    telemetry_host: str = ""
    follow_interval_s: float = 5.0


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(status, json.dumps(body).encode())


class InferenceServer:
    def __init__(self, client: Client, options: ServeOptions) -> None:
        ModelRef.parse(options.ref)
        self.client = client
        self.options = options
        self.model: LoadedModel | None = None
        self.switches = 0
        self._reporters: dict[str, LatencyReporter] = {}
        self._workdir = tempfile.TemporaryDirectory(prefix="inferlab-serve-")
        self.batcher = Batcher(
            lambda: self.model, max_batch=options.max_batch, max_delay_s=options.max_delay_ms / 1000.0
        )
        self.http = HttpServer(self.handle, options.host, options.port, max_body=options.max_body_bytes)
        self._follower: asyncio.Task[None] | None = None
        self._stopping = False
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self.http.port}"

    @property
    def follows(self) -> bool:
        return ModelRef.parse(self.options.ref).version is None

    async def start(self) -> InferenceServer:
        """Loads the model first (UnknownModel for a ref the registry does not know), then
        listens; ``/readyz`` is 200 from the first request on."""
        self.model = await self._load(self.options.ref)
        await self._track(self.model)
        self.batcher.start()
        try:
            await self.http.start()
        except InferlabError:
            await self.stop(drain_s=0)
            raise
        if self.follows and self.options.follow_interval_s > 0:
            self._follower = asyncio.get_running_loop().create_task(self._follow(), name="alias-follower")
        log.info("serving", ref=self.model.ref, url=self.url, batchable=self.model.batchable)
        return self

    async def stop(self, drain_s: float = 10.0) -> None:
        """Refuse new requests (503, and ``/readyz`` 503 for the load balancer), let those in
        flight finish for up to ``drain_s``, then close and publish the last latencies."""
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain_s)
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self.http.close()
        await self.batcher.close()
        for reporter in self._reporters.values():
            with contextlib.suppress(InferlabError):
                await reporter.close()
        self._workdir.cleanup()

    async def _load(self, ref: str) -> LoadedModel:
        record = (await self.client.get(ref)).record
        settings = session_settings(record, intra_op_threads=self.options.intra_op_threads)
        path = Path(self._workdir.name) / f"{record.sha256}.onnx"
        if not path.exists():
            await self.client.download(record.ref, path)
        return await asyncio.to_thread(load, path, record, settings)

    async def _track(self, model: LoadedModel) -> None:
        if not self.options.telemetry or model.ref in self._reporters:
            return
        record = model.record
        key = TelemetryKey(record.name, record.version, record.variant, self.options.telemetry_host)
        reporter = LatencyReporter(
            self.client.bus,
            key,
            max_batch=self.options.telemetry_max_batch,
            interval_s=self.options.telemetry_interval_s,
        )
        reporter.start()
        self._reporters[model.ref] = reporter

    # --- following an alias ----------------------------------------------------------------

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.options.follow_interval_s)
            try:
                await self.follow_once()
            except InferlabError as exc:
                log.warning("follow_failed", ref=self.options.ref, error=exc.message)

    async def follow_once(self) -> bool:
        """Resolve the followed ref again; load, warm and switch when it moved. True when
        the server switched."""
        resolved = await self.client.resolve(self.options.ref)
        current = self.model
        if current is not None and resolved.ref == current.ref:
            return False
        fresh = await self._load(resolved.ref)
        await self._track(fresh)
        previous, self.model = self.model, fresh  # the next batch runs on the new version
        self.switches += 1
        log.info("switched", ref=self.options.ref, previous=previous.ref if previous else None, now=fresh.ref)
        return True

    # --- routes ----------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        route = (request.method, request.path.rstrip("/") or "/")
        if route == ("POST", "/v1/infer"):
            return await self._infer(request)
        if route == ("GET", "/healthz"):
            return _json(200, {"status": "ok"})
        if route == ("GET", "/readyz"):
            ready = self.model is not None and not self._stopping
            return _json(200 if ready else 503, {"ready": ready, "ref": self.model.ref if self.model else None})
        if route == ("GET", "/v1/model"):
            return _json(200, self.describe())
        known = {"/v1/infer": "POST", "/healthz": "GET", "/readyz": "GET", "/v1/model": "GET"}
        if route[1] in known:
            return Response(405, b'{"error": "method not allowed"}', headers={"Allow": known[route[1]]})
        return _json(404, {"error": "not found", "message": f"no route {request.path}; POST /v1/infer"})

    def describe(self) -> dict[str, Any]:
        model = self.model
        if model is None:
            return {"requested": self.options.ref, "ref": None}
        return {
            "requested": self.options.ref,
            "ref": model.ref,
            "sha256": model.record.sha256,
            "inputs": msgspec.to_builtins(model.inputs),
            "outputs": model.output_names,
            "batchable": model.batchable,
            "session_settings": msgspec.to_builtins(model.settings),
            "providers": model.providers,
            "max_batch": self.options.max_batch,
            "max_delay_ms": self.options.max_delay_ms,
            "switches": self.switches,
            "runs": self.batcher.runs,
            "requests": self.batcher.requests,
        }

    async def _infer(self, request: Request) -> Response:
        started = time.perf_counter()
        model = self.model
        try:
            if model is None or self._stopping:
                return _json(503, {"error": "not ready", "message": "no model is loaded"})
            content_type = request.header("content-type")
            feeds = codec.decode_request(request.body, content_type, model.inputs)
            self._inflight += 1
            self._idle.clear()
            try:
                ref, outputs = await self.batcher.infer(feeds)
            finally:
                self._inflight -= 1
                if not self._inflight:
                    self._idle.set()
            if codec.wants_npz(content_type, request.header("accept")):
                response = Response(200, codec.encode_npz(outputs), codec.NPZ, {"X-Inferlab-Ref": ref})
            else:
                response = Response(200, codec.encode_json(ref, outputs), codec.JSON, {"X-Inferlab-Ref": ref})
        except ServingError as exc:
            return _json(exc.status, {"error": exc.code, "message": exc.message})
        reporter = self._reporters.get(ref)
        if reporter is not None:
            reporter.record((time.perf_counter() - started) * 1000.0)
        return response


async def serve_forever(options: ServeOptions, client: Client, on_ready: Any = None) -> None:
    server = await InferenceServer(client, options).start()
    if on_ready is not None:
        on_ready(server)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
