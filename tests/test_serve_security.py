"""``inferlab serve`` as the compose ``serve`` service runs it: the ``pipeline`` NATS user on
a server started from the shipped deploy/nats/nats-server.conf. It reads the registry and the
artifact store and publishes its telemetry, and nothing it does is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.registry.service import RegistryService
from shared.bus import Bus
from shared.config import Settings
from shared.contracts.benchmark import InferenceTelemetry
from shared.sdk import Client
from shared.serving.client import ServeClient
from shared.serving.server import InferenceServer, ServeOptions
from tests.support.models import mlp
from tests.support.services import running
from tests.test_security import admin, as_user, base, passwords, secure_server  # noqa: F401 (fixtures)


async def test_serve_as_the_pipeline_user_downloads_serves_and_reports(
    base: Settings,  # noqa: F811
    passwords: dict[str, str],  # noqa: F811
    admin: Bus,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with running(as_user(base, "registry", passwords), RegistryService):
        pipeline = await Client.connect(as_user(base, "pipeline", passwords), name="inferlab-serve")
        try:
            await pipeline.register(mlp(tmp_path / "m.onnx"), name="guarded", version="1.0.0")
            await pipeline.set_alias("guarded@1.0.0", "production")
            options = ServeOptions(ref="guarded@production", port=0, follow_interval_s=0.2)
            server = await InferenceServer(pipeline, options).start()
            try:
                async with ServeClient("127.0.0.1", server.http.port) as http:
                    for _ in range(3):
                        ref, _ = await http.infer({"input": np.ones((1, 16), dtype=np.float32)})
                        assert ref == "guarded@1.0.0"
                assert await server.follow_once() is False  # resolving again is allowed too
            finally:
                await server.stop()  # flushes the telemetry
            assert list(pipeline.bus.denials) == []
        finally:
            await pipeline.close()
    reader = Client(admin)
    batches = [e.message async for e in reader.events("telemetry.>", replay=True, stored_only=True)]
    assert [type(b) for b in batches] == [InferenceTelemetry]
    assert batches[0].name == "guarded" and len(batches[0].latencies_ms) == 3
