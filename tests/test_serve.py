"""``inferlab serve``: a registered variant over HTTP with real ONNX Runtime, against a real
nats-server and registry: JSON and npz, batching under concurrency, health and readiness, its
own latency telemetry in batches, and switching versions when a followed alias moves."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from services.benchmarker.telemetry import telemetry_batch
from services.registry.service import RegistryService
from shared.config import Settings
from shared.contracts.benchmark import InferenceTelemetry
from shared.contracts.registry import ModelRecord, TensorSpec
from shared.errors import InferlabError, UnknownModel
from shared.sdk import Client
from shared.serving import codec
from shared.serving.batcher import Pending, group, split
from shared.serving.client import ServeClient, ServeRequestFailed
from shared.serving.errors import BadRequest, NotAcceptable, UnsupportedMediaType
from shared.serving.http import HttpServer, Request, Response
from shared.serving.loader import InvalidSessionSettings, session_settings
from shared.serving.server import InferenceServer, ServeOptions
from tests.support.models import _digits, digits_classifier, mlp
from tests.support.services import running

X = [TensorSpec(name="X", dtype="float32", shape=["N", 64])]


# --- pure parts ----------------------------------------------------------------------------


def test_json_and_npz_requests_decode_to_the_models_dtypes() -> None:
    feeds = codec.decode_request(json.dumps({"inputs": {"X": [[0] * 64]}}).encode(), "application/json", X)
    assert feeds["X"].dtype == np.float32 and feeds["X"].shape == (1, 64)
    body = codec.encode_npz_request({"X": np.ones((3, 64), dtype=np.float64)})
    assert codec.decode_request(body, "application/x-npz", X)["X"].dtype == np.float32
    assert codec.wants_npz("application/json", "application/x-npz") and not codec.wants_npz(codec.NPZ, codec.JSON)


@pytest.mark.parametrize(
    ("body", "kind", "error", "match"),
    [
        (b'{"inputs": {"Y": [[1]]}}', "application/json", BadRequest, r"missing input.*X float32 \[\?, 64\]"),
        (b'{"inputs": {"X": [[1, 2]]}}', "application/json", BadRequest, "size 2 on axis 1"),
        (b'{"inputs": {"X": [1, 2]}}', "application/json", BadRequest, "1 dimension"),
        (b'{"X": [[1]]}', "application/json", BadRequest, '"inputs"'),
        (b"not json", "application/json", BadRequest, "not JSON"),
        (b"PK-garbage", "application/x-npz", BadRequest, "npz"),
        (b"x", "text/plain", UnsupportedMediaType, "application/json"),
    ],
)
def test_bad_requests_say_what_is_wrong(body: bytes, kind: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        codec.decode_request(body, kind, X)


def test_outputs_that_are_not_tensors_go_as_json_only() -> None:
    outputs = {"label": np.array([3]), "probabilities": [{0: np.float32(0.25), 1: np.float32(0.75)}]}
    assert json.loads(codec.encode_json("m@1.0.0", outputs))["outputs"]["probabilities"] == [{"0": 0.25, "1": 0.75}]
    with pytest.raises(NotAcceptable, match="probabilities"):
        codec.encode_npz(outputs)


def _pending(*shape: int) -> Pending:
    return Pending({"X": np.zeros(shape, dtype=np.float32)}, shape[0], None)  # type: ignore[arg-type]


def test_batches_group_stackable_requests_up_to_max_rows_in_order() -> None:
    a, b, c, d, e = _pending(1, 4), _pending(2, 4), _pending(1, 8), _pending(3, 4), _pending(1, 4)
    names = {id(p): n for p, n in zip((a, b, c, d, e), "abcde", strict=True)}

    def runs(pending: list[Pending], batchable: bool) -> list[str]:
        return ["".join(names[id(p)] for p in run) for run in group(pending, batchable, max_batch=4)]

    assert runs([a, b, c, d, e], True) == ["ab", "c", "de"]  # d would make 6 rows: a new run
    assert runs([a, b], False) == ["a", "b"]
    parts = split({"y": np.arange(6), "p": [{"k": i} for i in range(6)]}, [1, 2, 3])
    assert parts is not None and [len(p["y"]) for p in parts] == [1, 2, 3] and parts[2]["p"][0] == {"k": 3}
    assert split({"y": np.zeros(4)}, [1, 2]) is None  # no row per input row: run one by one


def test_session_settings_come_from_the_record_and_options_override() -> None:
    record = ModelRecord(
        name="m",
        version="1.0.0",
        ref="m@1.0.0",
        sha256="0" * 64,
        size_bytes=1,
        artifact_uri="nats-obj://a/b",
        source_uri="file:///m.onnx",
        metadata={"session_settings": {"intra_op_threads": 2, "graph_optimization": "basic"}},
    )
    settings = session_settings(record, intra_op_threads=None)
    assert settings.intra_op_threads == 2 and settings.graph_optimization == "basic"
    assert session_settings(record, intra_op_threads=1).intra_op_threads == 1
    record.metadata["session_settings"] = {"graph_optimization": "max"}
    with pytest.raises(InvalidSessionSettings, match="graph_optimization"):
        session_settings(record)


async def test_the_http_server_keeps_alive_and_refuses_what_it_does_not_speak() -> None:
    async def echo(request: Request) -> Response:
        return Response(200, request.body, "text/plain")

    server = HttpServer(echo, "127.0.0.1", 0, max_body=10)
    await server.start()

    async def exchange(raw: bytes, replies: int = 1) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(raw)
        await writer.drain()
        data = b""
        while data.count(b"HTTP/1.1 ") < replies:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            data += chunk
        writer.close()
        return data

    try:
        two = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcPOST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nde"
        both = await exchange(two, replies=2)
        assert both.count(b"HTTP/1.1 200 OK") == 2 and both.endswith(b"de")  # one connection, two answers
        assert (await exchange(b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400")
        assert (await exchange(b"POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n")).startswith(b"HTTP/1.1 413")
        chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        assert (await exchange(chunked)).startswith(b"HTTP/1.1 411")
        expect = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok"
        assert (await exchange(expect, replies=2)).startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK")
        closing = await exchange(b"GET / HTTP/1.0\r\n\r\n")
        assert b"Connection: close" in closing
    finally:
        await server.close()


# --- against the platform --------------------------------------------------------------------


def _bare(path: Path, feeds: dict[str, np.ndarray]) -> list[Any]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


async def _telemetry(settings: Settings) -> list[InferenceTelemetry]:
    async with await Client.connect(settings) as client:
        events = [e async for e in client.events("telemetry.>", replay=True, stored_only=True)]
    return [e.message for e in events if isinstance(e.message, InferenceTelemetry)]


async def test_serves_a_registered_model_json_npz_batched_with_its_telemetry(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    path = digits_classifier(tmp_path / "digits.onnx")
    x = _digits()[0][1200:1264]
    expected_labels, expected_probs = _bare(path, {"X": x})
    async with running(settings, RegistryService):
        with pytest.raises(UnknownModel):
            await InferenceServer(client, ServeOptions(ref="digitz", port=0)).start()
        await client.register(
            path,
            name="digits",
            version="1.0.0",
            metadata={"session_settings": {"intra_op_threads": 1, "graph_optimization": "basic"}},
        )
        options = ServeOptions(ref="digits@1.0.0", port=0, telemetry_interval_s=0.2, telemetry_host="web-1")
        server = await InferenceServer(client, options).start()
        try:
            async with ServeClient("127.0.0.1", server.http.port) as http:
                assert (await http.request("GET", "/healthz"))[0] == 200
                status, _, body = await http.request("GET", "/readyz")
                assert status == 200 and json.loads(body) == {"ready": True, "ref": "digits@1.0.0"}
                described = json.loads((await http.request("GET", "/v1/model"))[2])
                session = described["session_settings"]
                assert session["intra_op_threads"] == 1 and session["graph_optimization"] == "basic"
                assert described["batchable"] and described["outputs"] == ["label", "probabilities"]

                ref, outputs = await http.infer({"X": x[:5]}, npz=False)
                assert ref == "digits@1.0.0" and outputs["label"] == expected_labels[:5].tolist()
                np.testing.assert_allclose(outputs["probabilities"], expected_probs[:5], rtol=1e-5, atol=1e-6)
                ref, arrays = await http.infer({"X": x[5:9]})
                np.testing.assert_array_equal(arrays["label"], expected_labels[5:9])

                with pytest.raises(ServeRequestFailed, match="size 3 on axis 1") as bad:
                    await http.infer({"X": x[:2, :3]})
                assert bad.value.status == 400
                assert (await http.request("GET", "/v1/infer"))[0] == 405
                assert (await http.request("GET", "/nope"))[0] == 404

            with pytest.raises(InferlabError, match=r"cannot listen on 127\.0\.0\.1"):  # the port is taken
                await InferenceServer(client, ServeOptions(ref="digits@1.0.0", port=server.http.port)).start()

            # 64 single-row requests from 16 connections at once: each gets its own row back,
            # and concurrent ones ran together.
            runs_before = server.batcher.runs

            async def caller(rows: range) -> list[int]:
                async with ServeClient("127.0.0.1", server.http.port) as own:
                    return [int((await own.infer({"X": x[i : i + 1]}))[1]["label"][0]) for i in rows]

            answers = await asyncio.gather(*(caller(range(i, 64, 16)) for i in range(16)))
            for i in range(16):
                assert answers[i] == expected_labels[i:64:16].tolist()
            assert server.batcher.runs - runs_before < 64
        finally:
            await server.stop()
        assert (await client.resolve("digits@1.0.0")).ref == "digits@1.0.0"
    telemetry = await _telemetry(settings)
    assert sum(len(t.latencies_ms) for t in telemetry) == 2 + 64  # one latency per served request
    for t in telemetry:
        assert (t.name, t.version, t.variant, t.host) == ("digits", "1.0.0", "base", "web-1")
        telemetry_batch(t)  # the benchmarker's consumer accepts every batch
    assert len(telemetry) < 66  # batched, not one message per request


async def test_following_an_alias_switches_versions_under_load_without_a_failed_request(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    v1, v2 = mlp(tmp_path / "v1.onnx", seed=1), mlp(tmp_path / "v2.onnx", seed=2)
    rng = np.random.default_rng(0)
    inputs = rng.standard_normal((32, 16)).astype(np.float32)
    expected = {"m@1.0.0": _bare(v1, {"input": inputs})[0], "m@2.0.0": _bare(v2, {"input": inputs})[0]}
    async with running(settings, RegistryService):
        await client.register(v1, name="m", version="1.0.0")
        await client.register(v2, name="m", version="2.0.0")
        await client.set_alias("m@1.0.0", "production")
        options = ServeOptions(ref="m@production", port=0, follow_interval_s=0.1, telemetry_interval_s=0.2)
        server = await InferenceServer(client, options).start()
        answered: list[list[str]] = [[] for _ in range(6)]
        errors: list[str] = []
        stop = asyncio.Event()

        async def load(i: int) -> None:
            async with ServeClient("127.0.0.1", server.http.port) as http:
                n = 0
                while not stop.is_set():
                    row = (i * 7 + n) % 32
                    n += 1
                    try:
                        ref, outputs = await http.infer({"input": inputs[row : row + 1]})
                    except Exception as exc:
                        errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    np.testing.assert_allclose(outputs["logits"][0], expected[ref][row], rtol=1e-5, atol=1e-6)
                    answered[i].append(ref)

        try:
            clients = [asyncio.create_task(load(i)) for i in range(6)]
            await asyncio.sleep(1.0)
            assert server.model is not None and server.model.ref == "m@1.0.0"
            await client.set_alias("m@2.0.0", "production")
            for _ in range(100):
                if server.switches:
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # load goes on after the switch
            stop.set()
            await asyncio.gather(*clients)
        finally:
            await server.stop()
    total = sum(len(a) for a in answered)
    print(f"alias switch under load: {total} requests, {len(errors)} errors, {server.switches} switch(es)")
    assert errors == [] and server.switches == 1
    for refs in answered:
        assert refs and refs[0] == "m@1.0.0" and refs[-1] == "m@2.0.0"
        switched_at = refs.index("m@2.0.0")
        assert set(refs[switched_at:]) == {"m@2.0.0"}  # never back to the old version
    telemetry = await _telemetry(settings)
    per_version: dict[str, int] = {}
    for t in telemetry:
        per_version[t.version] = per_version.get(t.version, 0) + len(t.latencies_ms)
    assert per_version == {
        "1.0.0": sum(r.count("m@1.0.0") for r in answered),
        "2.0.0": sum(r.count("m@2.0.0") for r in answered),
    }


async def test_cli_serve_answers_over_http_and_stops_cleanly_on_sigterm(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    import os
    import re
    import signal
    import sys

    path = mlp(tmp_path / "m.onnx")
    async with running(settings, RegistryService):
        await client.register(path, name="cli-served", version="1.0.0")
        env = {**os.environ, **settings.to_env()}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shared.cli", "serve", "cli-served", "--port", "0", "--telemetry-interval", "60",
            env=env, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            match = re.search(
                r"serving cli-served@1\.0\.0 for cli-served \(following it\) on http://([\d.]+):(\d+)", line
            )
            assert match, line
            async with ServeClient(match[1], int(match[2])) as http:
                ref, outputs = await http.infer({"input": np.ones((2, 16), dtype=np.float32)}, npz=False)
            assert ref == "cli-served@1.0.0" and len(outputs["logits"]) == 2
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
    # stopping flushed the one latency although the interval (60 s) had not passed
    (batch,) = await _telemetry(settings)
    assert batch.name == "cli-served" and len(batch.latencies_ms) == 1


async def test_stopping_under_load_finishes_what_is_in_flight_and_refuses_the_rest(
    settings: Settings, client: Client, tmp_path: Path
) -> None:
    path = mlp(tmp_path / "m.onnx", extra_matmuls=8)
    async with running(settings, RegistryService):
        await client.register(path, name="drain", version="1.0.0")
        server = await InferenceServer(client, ServeOptions(ref="drain@1.0.0", port=0)).start()
        outcomes: list[str] = []

        async def load() -> None:
            async with ServeClient("127.0.0.1", server.http.port) as http:
                while True:
                    try:
                        await http.infer({"input": np.ones((1, 16), dtype=np.float32)})
                        outcomes.append("ok")
                    except ServeRequestFailed as exc:
                        outcomes.append(str(exc.status))
                        return
                    except (ConnectionError, asyncio.IncompleteReadError):
                        outcomes.append("closed")
                        return

        loaders = [asyncio.create_task(load()) for _ in range(6)]
        await asyncio.sleep(0.5)
        await server.stop()
        await asyncio.wait_for(asyncio.gather(*loaders), 10)
    assert outcomes.count("ok") > 6
    assert set(outcomes) <= {"ok", "503", "closed"}, outcomes  # never a 500 or a lost answer
