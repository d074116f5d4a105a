"""Security against a real nats-server started from the shipped deploy/nats/nats-server.conf
(ports and store overridden on the command line, passwords from the environment): every
refused publish is refused, the platform works end to end with each service as its own user,
TLS (server and mutual) with certificates generated here, and credentials never reach logs or
events.

Limits tested elsewhere, not repeated here (see docs/reliability.md): artifact size, import
roots and URL schemes (tests/test_registry_e2e.py), message size (tests/test_worker.py,
tests/test_faults.py), ONNX external data escaping the model folder
(tests/test_registry_verify.py), pickled datasets (tests/test_datasets.py), read-only SQL
(tests/test_benchmarker_history.py, tests/test_benchmarker_service.py)."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import http.server
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.js.errors
import pytest

from services.benchmarker.service import BenchmarkerService
from services.converter.service import ConverterService
from services.registry.service import RegistryService
from services.validator.service import ValidatorService
from shared.artifacts import ArtifactStore, StagedUpload, Staging
from shared.bus import Bus, PermissionDenied
from shared.config import Settings
from shared.contracts import subjects
from shared.contracts.base import encode, new_id
from shared.contracts.identity import is_valid_name, is_valid_version
from shared.contracts.registry import ModelRegistered, RegisterModel
from shared.contracts.validation import ValidateModel
from shared.embedded import EmbeddedNats, free_port, nats_server_binary
from shared.errors import Rejected, ServiceUnavailable
from shared.sdk import Client
from tests.support.cluster import minimal_payload, quick
from tests.support.events import eventually, stored
from tests.support.models import digits_classifier, mlp
from tests.support.services import REPO, ServiceProcess, running

CONF = REPO / "deploy" / "nats" / "nats-server.conf"
USERS = ("registry", "converter", "benchmarker", "validator", "pipeline", "admin")


@pytest.fixture
def passwords(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fresh random passwords, in the environment variables the config reads."""
    chosen = {user: f"pw-{user}-{secrets.token_urlsafe(12)}" for user in USERS}
    for user, password in chosen.items():
        monkeypatch.setenv(f"{user.upper()}_PASSWORD", password)
    return chosen


def _server(tmp_path: Path, name: str, *extra: str) -> EmbeddedNats:
    return EmbeddedNats(
        tmp_path / name / "jetstream",
        config_file=CONF,
        log_file=tmp_path / f"{name}.log",
        monitor_port=free_port(),
        extra_args=list(extra),
    )


@pytest.fixture
def secure_server(tmp_path: Path, passwords: dict[str, str]) -> Iterator[EmbeddedNats]:
    server = _server(tmp_path, "secure").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def base(secure_server: EmbeddedNats, tmp_path: Path) -> Settings:
    imports = tmp_path / "imports"
    imports.mkdir(exist_ok=True)
    return quick(
        Settings(
            nats_url=secure_server.url,
            home=str(tmp_path / "home"),
            import_roots=(str(imports),),
            ack_wait_s=10.0,
            max_deliver=3,
            log_level="warning",
        )
    )


def as_user(settings: Settings, user: str, passwords: dict[str, str]) -> Settings:
    return settings.with_overrides(nats_user=user, nats_password=passwords[user])


@pytest.fixture
async def admin(base: Settings, passwords: dict[str, str]) -> AsyncIterator[Bus]:
    bus = await Bus.connect(as_user(base, "admin", passwords), name="test-admin")
    await bus.ensure_streams()
    await ArtifactStore(bus).ensure()
    yield bus
    await bus.close()


class Probe:
    """A raw nats-py connection that collects the server's permission violations."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.nc: Any = None

    async def connect(self, url: str, user: str, password: str) -> Probe:
        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        self.nc = await nats.connect(url, user=user, password=password, error_cb=on_error, allow_reconnect=False)
        return self

    async def _violation(self, needle: str) -> bool:
        await self.nc.flush()
        for _ in range(100):
            if any(needle.lower() in e.lower() for e in self.errors):  # nats-py lower-cases them
                return True
            await asyncio.sleep(0.01)
        return False

    async def publish_refused(self, subject: str, payload: bytes = b"{}") -> bool:
        await self.nc.publish(subject, payload)
        return await self._violation(f'publish to "{subject}"')

    async def subscribe_refused(self, subject: str) -> bool:
        sub = await self.nc.subscribe(subject)
        refused = await self._violation(f'subscription to "{subject}"')
        await sub.unsubscribe()
        return refused

    async def close(self) -> None:
        await self.nc.close()


# --- the configuration ---------------------------------------------------------------------------


def test_the_shipped_config_is_valid_and_refuses_to_start_without_a_password(passwords: dict[str, str]) -> None:
    check = subprocess.run([str(nats_server_binary()), "-t", "-c", str(CONF)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + check.stdout
    env = {k: v for k, v in os.environ.items() if k != "PIPELINE_PASSWORD"}
    check = subprocess.run([str(nats_server_binary()), "-t", "-c", str(CONF)], capture_output=True, text=True, env=env)
    assert check.returncode != 0 and "PIPELINE_PASSWORD" in check.stderr + check.stdout


async def test_unknown_users_and_wrong_passwords_are_refused_without_echoing_them(
    base: Settings, passwords: dict[str, str]
) -> None:
    for settings in (
        base,  # no credentials at all
        base.with_overrides(nats_user="pipeline", nats_password="wrong-" + passwords["pipeline"]),
        base.with_overrides(nats_user="nobody", nats_password="guess-123456"),
    ):
        with pytest.raises(ServiceUnavailable) as refused:
            await Bus.connect(settings.with_overrides(connect_timeout_s=1.0), name="intruder")
        assert "uthorization" in refused.value.message, refused.value.message
        assert (settings.nats_password or "@@") not in refused.value.message
    with pytest.raises(ServiceUnavailable) as refused:
        url = base.nats_url.replace("nats://", "nats://pipeline:in-the-url-secret@")
        await Bus.connect(Settings(nats_url=url, connect_timeout_s=1.0), name="intruder")
    assert "in-the-url-secret" not in refused.value.message and "***@" in refused.value.message


# --- least privilege ---------------------------------------------------------------------------------

FORBIDDEN_FOR_PIPELINE = [
    # facts, alerts, dead letters: only their owners publish them
    "model.registered.victim",
    "model.rejected.victim",
    "model.alias_set.victim",
    "model.tags_set.victim",
    "model.archived.victim",
    "model.deleted.victim",
    "model.lifecycle_refused.victim",
    # lifecycle commands: only an operator retires or deletes a version (objects go with it)
    "model.archive",
    "model.delete",
    "model.converted.victim",
    "model.conversion_failed.victim",
    "model.conversion_skipped.victim",
    "model.benchmarked.victim",
    "model.benchmark_failed.victim",
    "model.validated.victim",
    "model.validation_failed.victim",
    "alerts.performance.regression.victim",
    "alerts.performance.anomaly.victim",
    "alerts.validation.failed.victim",
    "alerts.conversion.failed.victim",
    "alerts.pipeline.deadletter.registry",
    "deadletter.registry",
    # registry metadata, replies into someone else's wait
    "$KV.registry.models.victim.1.0.0.base",
    "_INBOX.someone-elses-wait",
    # the work queues: read, ack, rewrite or delete a service's durable consumer
    "$JS.API.CONSUMER.MSG.NEXT.MODELS.registry",
    "$JS.ACK.MODELS.registry.1.5.5.1700000000000000000.0",
    "$JS.API.CONSUMER.CREATE.MODELS",
    "$JS.API.CONSUMER.CREATE.MODELS.registry",
    "$JS.API.CONSUMER.CREATE.MODELS.registry.model.register",
    "$JS.API.CONSUMER.DURABLE.CREATE.MODELS.registry",
    "$JS.API.CONSUMER.DELETE.MODELS.registry",
    "$JS.API.CONSUMER.CREATE.ALERTS",
    "$JS.API.CONSUMER.CREATE.TELEMETRY",
    "$JS.API.CONSUMER.CREATE.KV_registry",
    # streams: no delete, purge, update, create; no reading commands (they carry reply inboxes)
    "$JS.API.STREAM.DELETE.MODELS",
    "$JS.API.STREAM.PURGE.MODELS",
    "$JS.API.STREAM.PURGE.OBJ_artifacts",
    "$JS.API.STREAM.UPDATE.ALERTS",
    "$JS.API.STREAM.CREATE.EVIL",
    "$JS.API.STREAM.MSG.GET.MODELS",
    "$JS.API.STREAM.MSG.DELETE.MODELS",
    # the object store: only services write it (one rollup header would erase it)
    "$O.artifacts.M.eA==",
    "$O.artifacts.C.anything",
    "$JS.API.STREAM.UPDATE.OBJ_artifacts",
    "$JS.API.STREAM.DELETE.OBJ_artifacts",
    "$JS.API.STREAM.MSG.DELETE.OBJ_artifacts",
    # the staging area: write chunks, nothing else (no reading others' uploads, no cleanup)
    "$JS.API.STREAM.PURGE.UPLOADS",
    "$JS.API.STREAM.DELETE.UPLOADS",
    "$JS.API.STREAM.UPDATE.UPLOADS",
    "$JS.API.STREAM.MSG.DELETE.UPLOADS",
    "$JS.API.STREAM.MSG.GET.UPLOADS",
    "$JS.API.DIRECT.GET.UPLOADS",
    "$JS.API.CONSUMER.CREATE.UPLOADS",
    "upload.a.b",
]

ALLOWED_FOR_PIPELINE = [
    "model.register",
    "model.convert",
    "model.benchmark",
    "model.validate",
    "telemetry.inference.m",
    "upload.0123456789abcdef0123456789abcdef",
    "$JS.API.STREAM.INFO.UPLOADS",
    "$JS.API.STREAM.INFO.OBJ_artifacts",
    "$JS.API.DIRECT.GET.OBJ_artifacts",
    "registry.get",
]


async def test_the_pipeline_cannot_forge_facts_or_alerts_nor_touch_the_work_queues(
    base: Settings, passwords: dict[str, str], admin: Bus, secure_server: EmbeddedNats
) -> None:
    registry_settings = as_user(base, "registry", passwords)
    async with running(registry_settings, RegistryService):
        before = await _durable(admin, "MODELS", "registry")
        probe = await Probe().connect(secure_server.url, "pipeline", passwords["pipeline"])
        try:
            forged = encode(msgspec.convert(minimal_payload(ModelRegistered), ModelRegistered))
            not_refused = [s for s in FORBIDDEN_FOR_PIPELINE if not await probe.publish_refused(s, forged)]
            assert not_refused == []
            not_refused = [
                s
                for s in (
                    "model.register",
                    "model.>",
                    "registry.>",
                    "telemetry.>",
                    "deadletter.>",
                    "$KV.>",
                    "_INBOX_x",
                    # every inbox but its own: the services' fetch inboxes carry every command
                    "_INBOX.>",
                    "_INBOX.*",
                    "_INBOX.registry.>",
                    "_INBOX.admin.>",
                    "_INBOX.*.>",
                    ">",
                )
                if not await probe.subscribe_refused(s)
            ]
            assert not_refused == []  # commands (reply inboxes), requests, telemetry, metadata

            # Nothing forged landed anywhere; the registry's durable is untouched.
            facts = await admin.js.stream_info("MODELS", subjects_filter="model.*.>")
            assert not facts.state.subjects
            for stream in ("ALERTS", "DEADLETTER"):
                assert (await admin.js.stream_info(stream)).state.messages == 0, stream
            after = await admin.js.consumer_info("MODELS", "registry")
            assert after.config == before.config

            # What a pipeline is for is allowed.
            errors_before = len(probe.errors)
            for subject in ALLOWED_FOR_PIPELINE:
                await probe.nc.publish(subject, b'{"ref": "nothing@1.0.0", "name": "x", "version": "x"}')
            for subject in ("model.registered.>", "alerts.>", "_INBOX.pipeline.mine.>"):
                await probe.nc.subscribe(subject)
            await probe.nc.flush()
            await asyncio.sleep(0.2)
            assert probe.errors[errors_before:] == []
        finally:
            await probe.close()

        # Through the SDK a refusal is an immediate, precise error, not a 200 s retry loop.
        pipeline = await Client.connect(as_user(base, "pipeline", passwords))
        try:
            started = asyncio.get_running_loop().time()
            fake = msgspec.convert(minimal_payload(ModelRegistered), ModelRegistered)
            with pytest.raises(PermissionDenied, match=r"model\.registered\.poison"):
                await pipeline.bus.publish(subjects.registered("poison"), fake)
            with pytest.raises(PermissionDenied, match="Replaying stored messages needs"):
                [e async for e in pipeline.events("model.>", replay=True, stored_only=True)]
            assert asyncio.get_running_loop().time() - started < 5
        finally:
            await pipeline.close()


async def test_a_pipeline_cannot_read_other_inboxes_while_another_pipelines_commands_flow(
    base: Settings, passwords: dict[str, str], admin: Bus, secure_server: EmbeddedNats
) -> None:
    """The audit's first finding: pipeline A subscribed to ``_INBOX.>`` and read pipeline B's
    command (with the credentials in its artifact URI) as delivered to the registry's fetch
    inbox, and an admin's KV read reply. Now every client's inboxes live under its own user's
    prefix and the pipeline may read only ``_INBOX.pipeline.>``."""
    async with running(as_user(base, "registry", passwords), RegistryService):
        spy = await Probe().connect(secure_server.url, "pipeline", passwords["pipeline"])
        try:
            assert await spy.subscribe_refused("_INBOX.>")
            assert await spy.subscribe_refused("_INBOX.registry.>")
            seen: list[bytes] = []

            async def listen(msg: Any) -> None:
                seen.append(msg.subject.encode() + b" " + msg.data)

            # What it may read: the shared pipeline prefix (see docs/reliability.md).
            await spy.nc.subscribe("_INBOX.pipeline.>", cb=listen)
            await spy.nc.subscribe("model.*.>", cb=listen)
            await spy.nc.flush()
            victim = await Client.connect(as_user(base, "pipeline", passwords), name="pipeline-b")
            try:
                with pytest.raises(Rejected) as rejected:
                    await victim.register(
                        "https://user:HUNTER2@host.invalid/m.onnx?sig=TOKEN", name="victim", version="1.0.0", timeout=30
                    )
                assert rejected.value.code == "fetch_failed", rejected.value.message
            finally:
                await victim.close()
            await admin.js.key_value(base.registry_bucket)  # an admin's request/reply meanwhile
        finally:
            await spy.close()
        assert seen, "the spy saw the rejection fact, so it was listening"
        assert not [m for m in seen if b"HUNTER2" in m or b"TOKEN" in m]
        assert not [m for m in seen if m.startswith((b"_INBOX.registry.", b"_INBOX.admin."))]


async def test_an_ephemeral_create_request_can_rewrite_a_durable_which_is_why_the_pipeline_gets_none(
    base: Settings, passwords: dict[str, str], admin: Bus
) -> None:
    """Why the pipeline has no ``$JS.API.CONSUMER.CREATE.MODELS`` (what nats-py's ordered
    consumers use): on this server, a request on that subject whose config names an existing
    durable (no durable_name, same ack policy) updates the durable: its filter, ack wait and
    max deliveries. A user holding that grant could silently stop the registry. If this test
    ever fails, the server closed the hole and replay may be granted to pipelines again."""
    async with running(as_user(base, "registry", passwords), RegistryService):
        await _durable(admin, "MODELS", "registry")
        request = {
            "stream_name": "MODELS",
            "config": {"name": "registry", "ack_policy": "explicit", "filter_subject": "model.nothing"},
        }
        reply = await admin.nc.request("$JS.API.CONSUMER.CREATE.MODELS", json.dumps(request).encode(), timeout=5)
        assert "error" not in json.loads(reply.data), reply.data
        info = await _durable(admin, "MODELS", "registry")
        assert info.config.filter_subject == "model.nothing"  # the registry's work queue, rewritten


async def test_push_deliveries_into_fact_subjects_never_become_facts(
    base: Settings, passwords: dict[str, str], admin: Bus, secure_server: EmbeddedNats, tmp_path: Path
) -> None:
    """A known server limitation (nats-io/nats-server#8274): a user allowed to create a push
    consumer (the pipeline, on the artifact stream) may point its delivery at any subject. The
    pipeline uploads a forged model.registered payload and delivers it to
    model.registered.victim while listening there itself. JetStream stores such a delivery under
    its original subject, so no service, replay or filter ever sees a model.registered fact."""
    pipeline = await Client.connect(as_user(base, "pipeline", passwords))
    try:
        forged = tmp_path / "forged.json"
        forged.write_bytes(encode(msgspec.convert(minimal_payload(ModelRegistered), ModelRegistered)))
        stored_obj = await ArtifactStore(admin).put_file(forged, "uploads/forged")
        meta = await ArtifactStore(pipeline.bus)._meta(stored_obj.name)
        seen: list[str] = []

        async def listen(msg: Any) -> None:
            seen.append(msg.subject)

        await pipeline.bus.nc.subscribe("model.registered.victim", cb=listen)
        request = {
            "stream_name": "OBJ_artifacts",
            "config": {
                "deliver_subject": "model.registered.victim",
                "ack_policy": "none",
                "deliver_policy": "all",
                "filter_subject": f"$O.artifacts.C.{meta['nuid']}",
            },
        }
        reply = await pipeline.bus.nc.request(
            "$JS.API.CONSUMER.CREATE.OBJ_artifacts", json.dumps(request).encode(), timeout=5
        )
        assert "error" not in json.loads(reply.data)  # the limitation: the server allows it
        await eventually(lambda: _true(bool(seen)), timeout=10, what="the push delivery")
        assert seen == [f"$O.artifacts.C.{meta['nuid']}"]  # delivered under its true subject
        await asyncio.sleep(0.3)
        facts = await admin.js.stream_info("MODELS", subjects_filter="model.registered.>")
        assert not facts.state.subjects  # never stored as a fact
    finally:
        await pipeline.close()


async def _durable(bus: Bus, stream: str, name: str) -> Any:
    """A service's durable consumer, once its worker has created it."""
    for _ in range(100):
        try:
            return await bus.js.consumer_info(stream, name)
        except nats.js.errors.NotFoundError:
            await asyncio.sleep(0.1)
    raise AssertionError(f"no consumer {stream}/{name}")


async def _true(value: bool) -> bool:
    return value


@pytest.mark.slow
async def test_the_platform_works_end_to_end_with_every_service_as_its_own_user(
    base: Settings, passwords: dict[str, str], admin: Bus, tmp_path: Path
) -> None:
    services = []
    async with (
        running(as_user(base, "registry", passwords), RegistryService) as registry,
        running(as_user(base, "converter", passwords), ConverterService) as converter,
        running(as_user(base, "benchmarker", passwords), BenchmarkerService) as benchmarker,
        running(as_user(base, "validator", passwords), ValidatorService) as validator,
    ):
        services = [registry, converter, benchmarker, validator]
        pipeline = await Client.connect(as_user(base, "pipeline", passwords))
        try:
            live: list[Any] = []

            async def follow() -> None:
                async for event in pipeline.events("model.validated.>"):  # live: a core subscription
                    live.append(event.message)

            follower = asyncio.create_task(follow())
            await asyncio.sleep(0.3)
            record = await pipeline.register(
                digits_classifier(tmp_path / "d.onnx"), name="secure", version="1.0.0", task="classification"
            )
            assert record.ref == "secure@1.0.0"
            await eventually(
                lambda: _true({m.variant for m in live} >= {"base", "ort-opt"}),
                timeout=90,
                what="both variants validated, followed live by the pipeline",
            )
            follower.cancel()
            assert (await pipeline.get("secure@1.0.0+ort-opt")).record.parent == "secure@1.0.0"
            assert [v.record.ref for v in (await pipeline.list(name="secure")).models]
            downloaded = await pipeline.download("secure@1.0.0", tmp_path / "back.onnx")
            assert downloaded.read_bytes() == (tmp_path / "d.onnx").read_bytes()
            rows = await pipeline.sql("SELECT count(*) FROM benchmark_runs WHERE name = 'secure'")
            assert rows.rows[0][0] == 2
            assert {s.name for s in await pipeline.status()} >= {"registry", "converter", "benchmarker", "validator"}
            assert (await pipeline.health("registry"))["service"] == "registry"
            await pipeline.set_alias("secure@1.0.0", "production")
            assert (await pipeline.resolve("secure@production")).version == "1.0.0"
        finally:
            await pipeline.close()
        for service in services:
            assert list(service.bus.denials) == [], (service.name, list(service.bus.denials))
            for worker in service.workers:
                assert worker.dead_lettered == 0, (service.name, worker.durable)


# --- TLS -------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, with the
    openssl command line (EC P-256 keys: quick to make)."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl(
        "req", "-x509", *ec, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca", cwd=folder
    )
    for name, ext in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (folder / f"{name}.ext").write_text(ext)
        _openssl("req", *ec, "-keyout", f"{name}-key.pem", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=folder)
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=folder,
        )  # fmt: skip
    return {n: folder / f"{n}.pem" for n in ("ca", "server", "server-key", "client", "client-key")}


async def test_tls_server_and_mutual_tls_with_generated_certificates(tmp_path: Path, passwords: dict[str, str]) -> None:
    certs = make_certificates(tmp_path / "certs")
    tls_args = ("--tlscert", str(certs["server"]), "--tlskey", str(certs["server-key"]))
    server = _server(tmp_path, "tls", *tls_args).start()
    try:
        url = f"tls://127.0.0.1:{server.port}"
        s = Settings(nats_url=url, home=str(tmp_path / "home"), connect_timeout_s=1.0, log_level="warning")
        registry = as_user(s, "registry", passwords)
        with pytest.raises(ServiceUnavailable, match=r"TLS with NATS .* certificate verify failed"):
            await Bus.connect(registry, name="untrusting")  # the server's certificate needs the CA
        with pytest.raises(ServiceUnavailable):  # plaintext to a TLS-only server
            await Bus.connect(registry.with_overrides(nats_url=f"nats://127.0.0.1:{server.port}"), name="plain")
        bus = await Bus.connect(registry.with_overrides(nats_tls_ca=str(certs["ca"])), name="tls")
        try:
            await bus.ensure_streams()
            assert bus.nc.connected_url.scheme == "tls"
        finally:
            await bus.close()
    finally:
        server.stop()

    # Mutual TLS: the server also demands a client certificate signed by the CA.
    mutual = _server(tmp_path, "mtls", *tls_args, "--tlsverify", "--tlscacert", str(certs["ca"])).start()
    try:
        s = Settings(
            nats_url=f"tls://127.0.0.1:{mutual.port}",
            home=str(tmp_path / "home2"),
            import_roots=(str(tmp_path),),
            connect_timeout_s=1.0,
            log_level="warning",
            nats_tls_ca=str(certs["ca"]),
        )
        with pytest.raises(ServiceUnavailable):  # no client certificate
            await Bus.connect(as_user(s, "pipeline", passwords), name="no-cert")
        with_cert = s.with_overrides(nats_tls_cert=str(certs["client"]), nats_tls_key=str(certs["client-key"]))
        async with running(as_user(with_cert, "registry", passwords), RegistryService):
            pipeline = await Client.connect(as_user(with_cert, "pipeline", passwords))
            try:
                record = await pipeline.register(mlp(tmp_path / "m.onnx"), name="tls", version="1.0.0")
                assert record.ref == "tls@1.0.0"
            finally:
                await pipeline.close()
    finally:
        mutual.stop()


# --- no credentials in logs or events -------------------------------------------------------------


class _Web:
    """A local HTTP server for the files in ``folder``; paths under /private/ need HTTP Basic
    authentication as ``bob`` with ``password``."""

    def __init__(self, folder: Path, password: str) -> None:
        expected = "Basic " + base64.b64encode(f"bob:{password}".encode()).decode()

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/private/"):
                    if self.headers.get("Authorization") != expected:
                        self.send_error(401)
                        return
                    self.path = self.path[len("/private") :]
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        handler = functools.partial(Handler, directory=str(folder))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str, *, user: str = "", query: str = "") -> str:
        auth = f"{user}@" if user else ""
        return f"http://{auth}127.0.0.1:{self.server.server_address[1]}/{path}" + (f"?{query}" if query else "")

    def close(self) -> None:
        self.server.shutdown()


@pytest.mark.slow
async def test_credentials_in_urls_and_nats_passwords_never_reach_logs_facts_or_alerts(
    base: Settings, passwords: dict[str, str], admin: Bus, tmp_path: Path
) -> None:
    """URLs with user:password and query tokens, given to every service that fetches, with the
    services running as real processes (their logs captured) under their NATS users: no secret
    appears in any log line, fact, alert or dead letter. (A command itself is stored as the
    pipeline wrote it: put credentials in a URL and they are in that command's stream entry.)"""
    www = tmp_path / "www"
    www.mkdir()
    mlp(www / "model.onnx")
    basic_password = f"basic-pass-{secrets.token_hex(4)}"
    web = _Web(www, basic_password)
    secrets_used = [passwords[u] for u in USERS] + [basic_password]
    fleet = []
    try:
        for name in ("registry", "converter", "validator"):
            settings = as_user(base, name, passwords).with_overrides(log_level="info", fetch_hosts=("127.0.0.1",))
            fleet.append(ServiceProcess(name, settings, tmp_path / "logs").start())
        pipeline = await Client.connect(as_user(base, "pipeline", passwords))
        try:
            await eventually(
                lambda: _true_async(pipeline, 3), timeout=60, what="the three services up", tolerate=(Exception,)
            )

            def secret(n: int) -> tuple[str, str]:
                pair = (f"url-pass-{n}-{secrets.token_hex(4)}", f"url-token-{n}-{secrets.token_hex(4)}")
                secrets_used.extend(pair)
                return pair

            pw, token = secret(1)
            with pytest.raises(Rejected) as missing:
                await pipeline.register(
                    web.url("missing.onnx", user=f"alice:{pw}", query=f"token={token}"), name="creds", version="1.0.0"
                )
            assert missing.value.code == "artifact_not_found", missing.value.message
            _, token = secret(2)
            record = await pipeline.register(  # the credentials work (HTTP Basic), and stay secret
                web.url("private/model.onnx", user=f"bob:{basic_password}", query=f"X-Amz-Signature={token}"),
                name="creds",
                version="1.1.0",
            )
            assert record.source_uri == web.url("private/model.onnx")
            with pytest.raises(Rejected) as unauthorized:
                await pipeline.register(web.url("private/model.onnx", user="bob:wrong"), name="creds", version="1.0.1")
            assert unauthorized.value.code == "fetch_failed" and "did not deliver" in unauthorized.value.message
            assert "401" not in unauthorized.value.message  # no remote status is echoed
            pw, token = secret(3)
            with pytest.raises(Rejected) as bad_dataset:
                await pipeline.register(
                    mlp(tmp_path / "m3.onnx", seed=3),
                    name="creds",
                    version="1.2.0",
                    dataset=web.url("nothing.npz", user=f"carol:{pw}", query=f"sig={token}"),
                )
            assert bad_dataset.value.code == "invalid_dataset"
            pw, token = secret(4)
            reply = await pipeline.send_and_wait(
                subjects.VALIDATE,
                ValidateModel(
                    event_id=new_id(),
                    ref="creds@1.1.0",
                    dataset_uri=web.url("nothing.npz", user=f"dave:{pw}", query=f"sig={token}"),
                ),
                timeout=60,
            )
            assert reply["type"] == "model.validation_failed", reply
            pw, token = secret(5)
            outcomes = await pipeline.convert(
                "creds@1.1.0",
                profiles=["int8-static"],
                calibration=web.url("calib.npz", user=f"erin:{pw}", query=f"sig={token}"),
                timeout=60,
            )
            assert outcomes and outcomes[0].reason == "invalid_dataset", outcomes
            await asyncio.sleep(1.0)  # let every process write its last lines
        finally:
            await pipeline.close()
    finally:
        for process in fleet:
            process.stop()
        web.close()

    reader = Client(admin)
    published = [
        e.raw.decode() for subject in ("model.*.>", "alerts.>", "deadletter.>") for e in await stored(reader, subject)
    ]
    assert len(published) >= 5
    logs = {p.name: p.log() for p in fleet}
    assert all(logs.values())
    for secret_value in secrets_used:
        for where, text in [*logs.items(), *(("stream", m) for m in published)]:
            assert secret_value not in text, f"{secret_value!r} leaked into {where}"


async def _true_async(client: Client, services: int) -> bool:
    return len({s.name for s in await client.status(timeout=0.3)}) >= services


# --- limits not covered elsewhere -----------------------------------------------------------------


async def test_import_roots_hold_against_symlinks_remote_hosts_and_oversized_datasets(
    settings: Settings, client: Client, imports: Path, tmp_path: Path
) -> None:
    outside = mlp(tmp_path / "outside.onnx")
    (imports / "link.onnx").symlink_to(outside)  # inside the root, pointing out of it
    (imports / "sub").mkdir()
    (imports / "sub" / "up").symlink_to(tmp_path)  # a linked folder escaping the root
    dataset = tmp_path / "big.npz"
    import numpy as np

    np.savez(dataset, input=np.zeros((4096, 16), np.float32), labels=np.zeros(4096, np.int64))
    tight = settings.with_overrides(max_dataset_bytes=64 * 1024)
    async with running(tight, RegistryService):
        for i, uri in enumerate(
            [f"file://{imports}/link.onnx", f"file://{imports}/sub/up/outside.onnx", f"file://otherhost{outside}"]
        ):
            with pytest.raises(Rejected) as refused:
                await client.register(uri, name="escape", version=f"1.0.{i}")
            assert refused.value.code == "import_not_allowed", (uri, refused.value.message)
        with pytest.raises(Rejected) as refused:
            await client.register(mlp(tmp_path / "m.onnx"), name="escape", version="2.0.0", dataset=dataset)
        assert refused.value.code == "invalid_dataset" and "limit" in refused.value.message


async def test_dead_letters_drop_authorization_headers(bus: Bus) -> None:
    from shared.worker import Route, Worker

    async def never(_: Any) -> None:
        raise AssertionError("poison reached the handler")

    worker = Worker(
        bus, service="guard", stream="MODELS", durable="guard", routes=[Route("model.register", RegisterModel, never)]
    )
    task = asyncio.create_task(worker.run())
    try:
        headers = {
            "Authorization": "Bearer hdr-secret",
            "X-Auth-Token": "hdr-secret-2",
            "X-Api-Key": "hdr-secret-3",
            "Cookie": "session=hdr-secret-4",
            "Trace": "keep",
        }
        await bus.js.publish("model.register", b"{broken", headers=headers)
        reader = Client(bus)
        await eventually(lambda: _has_letters(reader), timeout=15, what="the dead letter")
        [letter] = await stored(reader, "deadletter.guard")
    finally:
        worker.stop()
        await task
    assert letter.message.headers == {"Trace": "keep"}
    assert "hdr-secret" not in letter.raw.decode()


async def _has_letters(reader: Client) -> bool:
    return bool(await stored(reader, "deadletter.guard"))


def test_secret_looking_log_keys_and_settings_are_masked() -> None:
    from shared.log import _redact_secrets  # the processor every service's logger runs

    line = _redact_secrets(None, "info", {"nats_password": "log-secret-1", "api_token": "log-secret-2", "user": "a"})
    assert line == {"nats_password": "***", "api_token": "***", "user": "a"}

    env = {**os.environ, "INFERLAB_NATS_PASSWORD": "cfg-secret-1", "INFERLAB_NATS_TOKEN": "cfg-secret-2"}
    shown = subprocess.run(
        [sys.executable, "-m", "shared.cli", "config", "--json"], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert shown.returncode == 0, shown.stderr
    assert "cfg-secret" not in shown.stdout + shown.stderr
    assert json.loads(shown.stdout)["nats_password"] == "***"


async def test_named_datasets_go_through_the_registry_and_the_pipeline_deletes_nothing(
    base: Settings, passwords: dict[str, str], admin: Bus, tmp_path: Path
) -> None:
    """The pipeline stages a named dataset; the registry stores it (replacing a name frees the
    old chunks at once). The pipeline's own attempt to delete an object is refused at once (no
    wait for a refused request's timeout)."""
    async with running(as_user(base, "registry", passwords), RegistryService):
        pipeline = await Client.connect(as_user(base, "pipeline", passwords))
        try:
            first, second = tmp_path / "a.npz", tmp_path / "b.npz"
            first.write_bytes(b"a" * 1000)
            second.write_bytes(b"b" * 1000)
            assert await pipeline.put_dataset(first, "shared-set") == "dataset://shared-set"
            await pipeline.put_dataset(second, "shared-set")
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(PermissionDenied, match=r"(?i)\$O\.artifacts"):
                await ArtifactStore(pipeline.bus).delete("datasets/named/shared-set")
            assert loop.time() - started < 3
            # Nor may it ask the registry to delete or archive a version (only an operator may).
            for attempt in (pipeline.delete("victim@1.0.0"), pipeline.archive("victim@1.0.0")):
                with pytest.raises(PermissionDenied, match=r"model\.(delete|archive)"):
                    await attempt
            assert loop.time() - started < 6
        finally:
            await pipeline.close()
    info = await ArtifactStore(admin).info("datasets/named/shared-set")
    assert info is not None and info.size == 1000
    assert info.sha256 == hashlib.sha256(b"b" * 1000).hexdigest()
    chunks = await admin.js.stream_info("OBJ_artifacts", subjects_filter="$O.artifacts.C.>")
    assert len(chunks.state.subjects or {}) == 1  # the replaced dataset's chunks are gone


async def test_one_pipeline_publish_cannot_wipe_the_artifact_store(
    base: Settings, passwords: dict[str, str], admin: Bus, tmp_path: Path
) -> None:
    """The audit's second finding: as the pipeline, one publish on ``$O.artifacts.M.<any>``
    with ``Nats-Rollup: all`` was acked and erased every stored model and dataset. Now the
    pipeline may not publish into the object store at all; its uploads go to the UPLOADS
    staging stream, which refuses rollups (and deletes and purges, from anyone)."""
    async with running(as_user(base, "registry", passwords), RegistryService):
        pipeline = await Client.connect(as_user(base, "pipeline", passwords))
        try:
            source = mlp(tmp_path / "m.onnx")
            record = await pipeline.register(source, name="kept", version="1.0.0")
            before = (await admin.js.stream_info("OBJ_artifacts")).state.messages
            assert before >= 2
            # The reproduction, refused by the server.
            with pytest.raises(PermissionDenied, match=r"(?i)\$O\.artifacts\.M"):
                await pipeline.bus.unless_denied(
                    pipeline.bus.js.publish("$O.artifacts.M.x", b"{}", headers={"Nats-Rollup": "all"}),
                    'publish to "$O.artifacts.',
                )
            # Where the pipeline may write, a rollup is refused by the stream itself.
            for rollup in ("all", "sub"):
                with pytest.raises(nats.js.errors.APIError, match="rollup"):
                    await pipeline.bus.js.publish(f"upload.{'0' * 32}", b"x", headers={"Nats-Rollup": rollup})
            assert (await admin.js.stream_info("OBJ_artifacts")).state.messages == before
            back = await pipeline.download("kept@1.0.0", tmp_path / "back.onnx")
            assert back.read_bytes() == source.read_bytes() and record.sha256

            # Staged uploads are checked: unknown, tampered or malformed ones are rejected.
            staged = await Staging(pipeline.bus).put_file(mlp(tmp_path / "n.onnx", seed=3))
            assert staged.uri.startswith("upload://")
            cases = {
                "artifact_not_found": StagedUpload("f" * 32, staged.size, staged.sha256).uri,
                "sha256_mismatch": StagedUpload(staged.id, staged.size, "0" * 64).uri,
                "invalid_uri": f"upload://../etc?size=1&sha256={'0' * 64}",
            }
            for reason, uri in cases.items():
                with pytest.raises(Rejected) as rejected:
                    await pipeline.register(uri, name="staged", version="1.0.0", timeout=30)
                assert rejected.value.code == reason, (reason, rejected.value.message)
            # Another pipeline appending to a staged upload cannot change what is registered.
            await pipeline.bus.js.publish(staged.subject, b"appended by someone else")
            again = await pipeline.register(staged.uri, name="staged", version="1.0.0", timeout=30)
            assert again.sha256 == staged.sha256
        finally:
            await pipeline.close()

    # No platform stream deletes or purges through the API, not even for the admin; none but
    # the object store takes rollups.
    for stream in ("MODELS", "ALERTS", "TELEMETRY", "DEADLETTER", "UPLOADS"):
        config = (await admin.js.stream_info(stream)).config
        assert config.deny_delete and config.deny_purge and not config.allow_rollup_hdrs, stream
        with pytest.raises(nats.js.errors.APIError):
            await admin.js.purge_stream(stream)
    config = (await admin.js.stream_info("OBJ_artifacts")).config
    assert config.deny_delete and config.allow_rollup_hdrs
    with pytest.raises(nats.js.errors.APIError):
        await admin.js.delete_msg("OBJ_artifacts", 1)
    assert (await admin.js.stream_info("UPLOADS")).config.discard == "new"


# --- malformed identities -----------------------------------------------------------------------


async def test_every_malformed_identity_gets_a_precise_rejection_that_fits_in_a_message(
    settings: Settings, client: Client
) -> None:
    """The audit's seventh finding: a name or version with a trailing newline passed the
    pattern (``re.match`` with ``$``) and broke a KV key or a subject on every delivery until it
    was dead-lettered, and a 900 KB name was never answered (the rejection echoing it did not
    fit in a message). Each is now a ``model.rejected`` with the precise reason, its echo clipped."""
    uri = f"upload://{'0' * 32}?size=1&sha256={'0' * 64}"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name": "evil\n"}, "invalid_name"),
        ({"name": "x\n"}, "invalid_name"),
        ({"name": "n" * 900_000}, "invalid_name"),
        ({"name": "a" * 65}, "invalid_name"),
        ({"version": "1.0.0\n"}, "invalid_version"),
        ({"version": "1.0.0-" + "a" * 200}, "invalid_version"),
        ({"variant": "base\n"}, "invalid_variant"),
        ({"artifact_uri": "https://host/" + "p" * 20_000}, "invalid_uri"),
        ({"sha256": "0" * 64 + "\n"}, "invalid_command"),
        ({"tags": {f"k{i}": "v" for i in range(100)}}, "invalid_command"),
        ({"metadata": {"blob": "m" * 200_000}}, "invalid_command"),
        ({"correlation_id": "c" * 500}, "invalid_command"),
    ]
    async with running(settings, RegistryService) as registry:
        for change, reason in cases:
            fields: dict[str, Any] = {"name": "ok", "version": "1.0.0", "artifact_uri": uri, **change}
            command = RegisterModel(event_id=new_id(), **fields)
            reply = await client.send_and_wait(subjects.REGISTER, command, timeout=30)
            assert reply["type"] == "model.rejected" and reply["reason"] == reason, (change.keys(), reply)
            assert len(json.dumps(reply)) < 16_000, change.keys()  # far below the 1 MB payload
        assert all(w.dead_lettered == 0 for w in registry.workers)

        # A command that does not even decode (a wrong type, a missing field) is answered too,
        # when it names its sender; it is still dead-lettered, with its alert.
        inbox = client.bus.nc.new_inbox()
        answers: asyncio.Queue[bytes] = asyncio.Queue()

        async def on_answer(msg: Any) -> None:
            await answers.put(msg.data)

        await client.bus.nc.subscribe(inbox, cb=on_answer)
        for body, field in (
            ({"name": "ok", "version": 5, "artifact_uri": uri}, "version"),
            ({"name": "n" * 900_000, "version": "1.0.0"}, "artifact_uri"),
        ):
            raw = {"type": "model.register", "event_id": new_id(), "reply_to": inbox, **body}
            await client.bus.js.publish(subjects.REGISTER, json.dumps(raw).encode())
            answer = json.loads(await asyncio.wait_for(answers.get(), timeout=30))
            assert answer["type"] == "model.rejected" and answer["reason"] == "invalid_command", answer
            assert field in answer["message"] and len(json.dumps(answer)) < 16_000
        await eventually(lambda: _true(registry.workers[0].dead_lettered == 2), timeout=30, what="two dead letters")
    assert is_valid_name("ok") and not is_valid_name("ok\n") and not is_valid_version("1.0.0\n")


# --- outbound fetches (SSRF) -------------------------------------------------------------------------


class _Recorder:
    """A local HTTP server that records every request it gets; ``/hop`` redirects to
    ``redirect_to``."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.redirect_to = ""
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                if self.path == "/hop":
                    self.send_response(302)
                    self.send_header("Location", outer.redirect_to)
                    self.end_headers()
                    return
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"internal secret")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_the_host_policy_refuses_internal_addresses_unless_a_host_is_named() -> None:
    import ipaddress

    from shared.errors import ImportNotAllowed
    from shared.fetch import HostPolicy

    default = HostPolicy()
    default.check_address("example.org", ipaddress.ip_address("93.184.216.34"))
    for internal in (
        "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
        "224.0.0.1", "::1", "fd00:ec2::254", "fe80::1", "::ffff:127.0.0.1", "::",
    ):  # fmt: skip
        with pytest.raises(ImportNotAllowed):
            default.check_address("h", ipaddress.ip_address(internal))
    listed = HostPolicy(("models.internal", "10.0.0.0/8"))
    listed.check_host("models.internal")
    listed.check_address("models.internal", ipaddress.ip_address("192.168.1.1"))
    listed.check_address("h", ipaddress.ip_address("10.9.9.9"))
    with pytest.raises(ImportNotAllowed, match="INFERLAB_FETCH_HOSTS"):
        listed.check_host("example.org")
    with pytest.raises(ImportNotAllowed):
        listed.check_address("other", ipaddress.ip_address("192.168.1.1"))
    HostPolicy(allow_private=True).check_address("h", ipaddress.ip_address("127.0.0.1"))


async def test_ssrf_internal_endpoints_are_refused_before_any_connection(settings: Settings, client: Client) -> None:
    """The audit's fourth finding: ``http://127.0.0.1:<port>/internal/admin`` made the registry
    send the request, and a metadata address's HTTP status was echoed. Now such hosts are
    refused after resolution, before connecting, on every redirect too; nothing remote is
    echoed."""
    web = _Recorder()
    try:
        async with running(settings, RegistryService):
            for uri in (
                f"http://127.0.0.1:{web.port}/internal/admin",
                f"http://localhost:{web.port}/internal/admin",  # a name resolving to loopback
                f"http://[::ffff:127.0.0.1]:{web.port}/internal/admin",
                "http://169.254.169.254/latest/meta-data/",
            ):
                with pytest.raises(Rejected) as refused:
                    await client.register(uri, name="ssrf", version="1.0.0", timeout=30)
                assert refused.value.code == "import_not_allowed", (uri, refused.value.message)
            assert web.requests == []  # not one connection reached it
        # An allowed host's redirect is checked like the first hop.
        trusting = settings.with_overrides(fetch_hosts=("127.0.0.1",))
        async with running(trusting, RegistryService):
            for target in ("http://169.254.169.254/", f"http://localhost:{web.port}/internal/admin"):
                web.redirect_to = target
                with pytest.raises(Rejected) as refused:
                    await client.register(f"http://127.0.0.1:{web.port}/hop", name="ssrf", version="1.0.0")
                assert refused.value.code == "import_not_allowed", (target, refused.value.message)
            assert web.requests == ["/hop", "/hop"]
            with pytest.raises(Rejected) as failed:
                await client.register(f"http://127.0.0.1:{web.port}/internal/admin", name="ssrf", version="1.0.0")
            assert failed.value.code == "fetch_failed"
            assert "500" not in failed.value.message and "secret" not in failed.value.message
    finally:
        web.close()
