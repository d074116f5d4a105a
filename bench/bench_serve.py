"""``inferlab serve`` overhead over a bare ONNX Runtime session, at low load.

For two models (a tiny MLP, where the overhead is everything, and a larger one of about a
millisecond a run), one request at a time from one keep-alive connection to ``inferlab serve`` running as its
own process (registry in its own process, telemetry on): p50 and p99 of the HTTP round trip
(npz and JSON bodies), beside the p50 of ``session.run`` on the same model and the same one row
in this process with the same thread setting, interleaved one for one with the requests so
both see the same load on a shared machine. Printed: the added milliseconds and the ratio
served / bare. Then 16 connections at once on the larger model:
requests/s served vs the bare session's runs/s one row at a time, and how many rows each run
of the server held (the batching).

usage: python bench/bench_serve.py [--n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import onnxruntime as ort
from _common import REPO, nats_server, percentile, report

from shared.config import Settings
from shared.sdk import Client
from shared.serving.client import ServeClient
from tests.support.models import mlp

THREADS = 1


def bare_session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def per_run(described: dict[str, float]) -> float:
    return described["requests"] / max(described["runs"], 1)


async def paired(
    host: str, port: int, session: ort.InferenceSession, feeds: dict[str, np.ndarray], n: int, npz: bool
) -> tuple[list[float], list[float]]:
    """(served round trips, bare runs), interleaved one for one, so that both see the same
    load on a shared machine."""
    async with ServeClient(host, port) as http:
        for _ in range(50):
            await http.infer(feeds, npz=npz)
            session.run(None, feeds)
        served, bare = [], []
        for _ in range(n):
            start = time.perf_counter()
            await http.infer(feeds, npz=npz)
            served.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            session.run(None, feeds)
            bare.append((time.perf_counter() - start) * 1000)
    return served, bare


async def concurrent(host: str, port: int, feeds: dict[str, np.ndarray], seconds: float) -> float:
    count = 0
    stop = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal count
        async with ServeClient(host, port) as http:
            while time.perf_counter() < stop:
                await http.infer(feeds)
                count += 1

    await asyncio.gather(*(one() for _ in range(16)))
    return count / seconds


async def start_server(env: dict[str, str], ref: str, log: Path) -> tuple[subprocess.Popen[bytes], str, int]:
    proc = subprocess.Popen(  # noqa: ASYNC220 (started before timing)
        [sys.executable, "-m", "shared.cli", "serve", ref, "--port", "0", "--threads", str(THREADS)],
        cwd=REPO,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert proc.stderr is not None
    line = (await asyncio.to_thread(proc.stderr.readline)).decode()
    match = re.search(r"on http://([\d.]+):(\d+)", line)
    if not match:
        raise SystemExit(f"inferlab serve did not start: {line}")
    return proc, match[1], int(match[2])


async def main(n: int) -> None:
    rows: list[tuple[str, str]] = []
    with nats_server() as (server, tmp):
        settings = Settings(nats_url=server.url, home=str(tmp / "home"), log_level="warning")
        env = {**os.environ, **settings.to_env()}
        registry = subprocess.Popen(  # noqa: ASYNC220 (started once, before timing)
            [sys.executable, "-m", "services.registry"], cwd=REPO, env=env, stdout=subprocess.DEVNULL
        )
        try:
            async with await Client.connect(settings) as client:
                for _ in range(100):
                    if await client.status("registry", timeout=0.2):
                        break
                models = {
                    "tiny": mlp(tmp / "tiny.onnx"),
                    "larger": mlp(tmp / "larger.onnx", features=256, hidden=1024, extra_matmuls=12),
                }
                for name, path in models.items():
                    await client.register(path, name=name, version="1.0.0")
            for name, path in models.items():
                features = 16 if name == "tiny" else 256
                feeds = {"input": np.random.default_rng(0).standard_normal((1, features)).astype(np.float32)}
                session = bare_session(path)
                proc, host, port = await start_server(env, f"{name}@1.0.0", tmp / f"{name}.log")
                try:
                    npz, bare_npz = await paired(host, port, session, feeds, n, npz=True)
                    js, bare_js = await paired(host, port, session, feeds, n, npz=False)
                    bare = percentile(bare_npz + bare_js, 50)
                    base_npz, base_js = percentile(bare_npz, 50), percentile(bare_js, 50)
                    p50_npz, p50_js = percentile(npz, 50), percentile(js, 50)
                    rows += [
                        (f"{name}: bare session.run p50", f"{bare:8.3f} ms"),
                        (f"{name}: served npz p50 / p99", f"{p50_npz:8.3f} / {percentile(npz, 99):.3f} ms"),
                        (f"{name}: served JSON p50 / p99", f"{p50_js:8.3f} / {percentile(js, 99):.3f} ms"),
                        (f"{name}: added p50 npz / JSON", f"{p50_npz - base_npz:8.3f} / {p50_js - base_js:.3f} ms"),
                        (f"{name}: ratio served npz / bare p50", f"{p50_npz / base_npz:8.1f}x"),
                        (f"{name}: ratio served JSON / bare p50", f"{p50_js / base_js:8.1f}x"),
                    ]
                    if name == "larger":
                        rps = await concurrent(host, port, feeds, 5.0)
                        async with ServeClient(host, port) as http:
                            described = json.loads((await http.request("GET", "/v1/model"))[2])
                        rows += [
                            ("larger: 16 connections, served", f"{rps:8.0f} req/s"),
                            ("larger: bare session, one row a run", f"{1000.0 / bare:8.0f} runs/s"),
                            ("larger: ratio served / bare throughput", f"{rps * bare / 1000.0:8.2f}x"),
                            ("larger: requests per run (batching)", f"{per_run(described):8.1f}"),
                        ]  # fmt: skip
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
        finally:
            registry.terminate()
            registry.wait(timeout=30)
    report(
        f"inferlab serve vs a bare ONNX Runtime session ({n} sequential requests of one row, "
        f"{THREADS} intra-op thread, server in its own process, telemetry on)",
        rows,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.n))
