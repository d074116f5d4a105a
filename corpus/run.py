"""Run the corpus through a real platform (`inferlab up` in a child process, as a user starts
it), register every model with the SDK, follow the chain, write the report."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import onnx

from corpus.build import Built, build
from corpus.follow import CONVERTED, Follower, Outcome
from corpus.report import render
from corpus.speed import measure_all
from shared.embedded import free_port

VERSION = "1.0.0"
PROFILES = ("ort-opt", "fp16", "int8-dynamic")
SERVICES = {"registry", "converter", "benchmarker", "validator"}
# The second start, for the back-to-back speed measurements: no converter or validator loading
# the machine (a benchmark would trigger a validation).
SPEED_SERVICES = {"registry", "benchmarker"}
FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def has_float_compute(path: Path) -> bool:
    """Float tensors into ai.onnx operators other than casts and plumbing: what fp16 and int8
    can act on. A graph of ai.onnx.ml operators only has none."""
    model = onnx.load(str(path), load_external_data=False)
    plumbing = {"Cast", "Identity", "Reshape", "Shape", "Constant"}
    compute = [n for n in model.graph.node if n.domain in ("", "ai.onnx") and n.op_type not in plumbing]
    floats = any(i.data_type in FLOAT_TYPES for i in model.graph.initializer) or any(
        i.type.tensor_type.elem_type in FLOAT_TYPES for i in model.graph.input
    )
    return bool(compute) and floats


async def _connect(client_type, settings, timeout: float):  # type: ignore[no-untyped-def]
    """The SDK client once `inferlab up` has its NATS server listening."""
    from shared.errors import ServiceUnavailable

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await client_type.connect(settings)
        except ServiceUnavailable:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


async def _wait_services(client, timeout: float, services: set[str] = SERVICES) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        with contextlib.suppress(Exception):
            if {s.name for s in await client.status()} >= services:
                return
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the platform's services did not all answer within {timeout:.0f}s")


async def run(
    sources: tuple[ModuleType, ...],
    workdir: Path,
    *,
    timeout: float,
    settings: dict[str, str] | None = None,
    only: frozenset[str] | None = None,
    say: Callable[[str], None] = print,
) -> tuple[Built, Follower, dict[str, bool]]:
    from shared.sdk import Client, Rejected
    from tests.support.platform import Platform

    built = build(workdir / "models", sources)
    if only is not None:
        built.models = [m for m in built.models if m.name in only]
    say(f"built {len(built.models)} models; skipped sources: {sorted(built.skipped) or 'none'}")
    floats = {m.name: has_float_compute(m.path) for m in built.models}
    port = free_port()
    platform = Platform(workdir / "home", port)
    platform.env["INFERLAB_CONVERTER_PROFILES"] = ",".join(PROFILES)
    platform.env.update(settings or {})
    follower = Follower([m.name for m in built.models], VERSION, list(PROFILES))
    await platform.start(workdir)
    try:
        client = await _connect(Client, platform.settings, 60)
        try:
            await _wait_services(client, 120)
            done = asyncio.Event()

            async def follow() -> None:
                async for event in client.events("model.>", replay=True):
                    if event.message is not None:
                        follower.feed(event.message)
                        if not follower.pending():
                            done.set()

            task = asyncio.create_task(follow())
            started = time.monotonic()
            for model in built.models:
                try:
                    await client.register(
                        model.path,
                        name=model.name,
                        version=VERSION,
                        task=model.task,
                        dataset=model.dataset,
                        tags={"corpus": model.package},
                        timeout=300,
                    )
                    say(f"registered {model.name}")
                except Rejected as exc:
                    follower.models[model.name].rejected = f"{exc.reason}: {exc.message}"
                    say(f"rejected {model.name}: {exc.reason}: {exc.message}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            left = follower.pending()
            say(f"chain followed in {time.monotonic() - started:.0f}s; still pending: {left or 'nothing'}")
        finally:
            await client.close()
    finally:
        await platform.stop()
    plan = speed_plan(follower.models, floats)
    if plan:
        await measure_speed(
            Platform(workdir / "home", port, "--services", ",".join(sorted(SPEED_SERVICES))),
            plan,
            follower,
            settings,
            workdir,
            say,
        )
    return built, follower, floats


def speed_plan(outcomes: dict[str, Outcome], floats: dict[str, bool]) -> dict[str, list[str]]:
    """Per model with float compute and a measured base: its converted variants that the chain
    benchmarked."""
    plan = {}
    for name, o in outcomes.items():
        base = o.variants.get("base")
        if not floats.get(name) or base is None or not base.benchmarked or base.benchmark_error:
            continue
        variants = [
            p
            for p, conv in o.conversions.items()
            if conv.status == CONVERTED and p in o.variants and not o.variants[p].benchmark_error
        ]
        if variants:
            plan[name] = variants
    return plan


async def measure_speed(  # type: ignore[no-untyped-def]
    platform, plan: dict[str, list[str]], follower: Follower, settings: dict[str, str] | None, workdir: Path, say
) -> None:
    """Each variant against its base, back to back, on the same home with only the registry
    and the benchmarker running (corpus/speed.py)."""
    from shared.sdk import Client

    platform.env.update(settings or {})
    started = time.monotonic()
    await platform.start(workdir)
    try:
        client = await _connect(Client, platform.settings, 60)
        try:
            await _wait_services(client, 120, SPEED_SERVICES)
            results = await measure_all(client, follower.version, plan, say)
        finally:
            await client.close()
    finally:
        await platform.stop()
    for name, per_variant in results.items():
        for variant, checks in per_variant.items():
            state = follower.models[name].variant(variant)
            if isinstance(checks, list):
                state.speed = checks
            else:
                state.speed_error = checks
    say(f"speed measured in {time.monotonic() - started:.0f}s for {len(plan)} models")


def write_report(built: Built, follower: Follower, floats: dict[str, bool], target: Path, header: str) -> str:
    text = render(built.models, follower.models, list(PROFILES), floats, built.ort_loads, built.skipped, header=header)
    target.write_text(text)
    return text
