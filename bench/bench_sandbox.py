"""What the sandbox pool (shared/sandbox.py) costs each service: the same native work run the
way the service ran it before (a worker thread of this process) and the way it runs now (a
task in a warm sandbox worker process), interleaved in rounds in one run so that both meet
the same machine load.

- registry: ``verify_untrusted`` on a 1 MB model (what a registration verifies); p50 of each
  way and the milliseconds the sandbox adds to a registration;
- converter: one profile's convert + parity check (``run_profile``) on a ~20 MB MLP, fp16 and
  int8-dynamic; best of the rounds, ratio sandbox / thread;
- validator: loading the model, the dataset (cached after the first run in both ways) and the
  metric suite on 5 000 samples of an MNIST-sized CNN; best of the rounds, ratio.

Target: every ratio within 1.10 (the pool warm: workers started and libraries imported before
timing, as the services do at start).

    .venv/bin/python bench/bench_sandbox.py [--rounds 5] [--verify-n 60]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repo on sys.path)
import onnx
from bench_validator import METRIC_SUITE, build

from services.converter.inputs import synthetic_inputs
from services.converter.pipeline import DataPlan, ProfileRun, References, run_profile, run_profile_isolated
from services.converter.profiles import get_profile
from services.registry.verify import verify_untrusted
from services.validator.isolated import SuiteFiles, _load_dataset, run_suite_isolated
from services.validator.runner import Runner
from services.validator.suite import SuiteConfig, SuiteFields, SuiteInput, run_suite
from shared.onnxmeta import graph_inputs, graph_outputs
from shared.sandbox import Limits, SandboxPool
from tests.support.converter_models import big_mlp
from tests.support.models import sized_model

LIMITS = Limits(timeout_s=600, memory_bytes=4 << 30, cpu_s=None)


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def registry(folder: Path, n: int) -> tuple[float, float]:
    model = sized_model(folder / "one-mb.onnx", 1 << 20)
    pool = SandboxPool("bench-registry", preload=["services.registry.service"])
    await pool.start()
    thread: list[float] = []
    isolated: list[float] = []
    try:
        for i in range(n + 3):
            a = await timed(lambda: asyncio.to_thread(verify_untrusted, model, external_data_dir=None, workdir=folder))
            b = await timed(
                lambda: pool.run(verify_untrusted, model, external_data_dir=None, workdir=folder, limits=LIMITS)
            )
            if i >= 3:  # warm-up rounds
                thread.append(a)
                isolated.append(b)
    finally:
        await pool.close()
    return statistics.median(thread), statistics.median(isolated)


def _profile_run(source: Path, profile_id: str, workdir: Path) -> ProfileRun:
    model = onnx.load(str(source), load_external_data=False)
    specs, outs = graph_inputs(model), graph_outputs(model)
    profile = get_profile(profile_id)
    plan = DataPlan(
        dataset=None,
        calibration=None,
        synthetic=functools.partial(synthetic_inputs, specs, samples=256, seed=0, shapes={}),
    )
    return ProfileRun(
        profile=profile,
        options=profile.normalize_options({}),
        source=source,
        source_ref="bench@1.0.0",
        source_sha256="0" * 64,
        inputs=specs,
        outputs=outs,
        workdir=workdir / profile_id,
        data=plan,
        references=References(source),
    )


async def converter(folder: Path, rounds: int) -> dict[str, tuple[float, float]]:
    source = big_mlp(folder / "mlp.onnx", target_bytes=20 << 20)
    pool = SandboxPool(
        "bench-converter", preload=["onnxruntime", "services.converter.pipeline", "services.converter.profiles"]
    )
    await pool.start()
    out: dict[str, tuple[float, float]] = {}
    try:
        for profile in ("fp16", "int8-dynamic"):
            thread, isolated = [], []
            for _ in range(rounds):
                # a fresh job each time: the source's reference outputs are computed in both ways
                before = _profile_run(source, profile, Path(tempfile.mkdtemp(dir=folder)))
                thread.append(await timed(functools.partial(asyncio.to_thread, run_profile, before)))
                now = _profile_run(source, profile, Path(tempfile.mkdtemp(dir=folder)))
                job = str(now.workdir.parent)
                isolated.append(await timed(functools.partial(pool.run, run_profile_isolated, now, job, limits=LIMITS)))
            out[profile] = (min(thread), min(isolated))
    finally:
        await pool.close()
    return out


def _validate_in_thread(model: Path, data: Path) -> None:
    runner = Runner(model, batch_size=512)
    dataset = _load_dataset(data, runner, str(data))
    run_suite(
        SuiteInput(
            ref="cnn@1.0.0", variant="base", runner=runner, requirements=[], dataset=dataset, checks=METRIC_SUITE
        ),
        SuiteConfig(),
    )


async def validator(folder: Path, rounds: int) -> tuple[float, float]:
    model, data = build(folder, 5000)
    pool = SandboxPool("bench-validator", preload=["onnxruntime", "services.validator.isolated"])
    await pool.start()
    files = SuiteFiles(
        model=model, ref="cnn@1.0.0", parent=None, parent_ref=None, dataset=data, dataset_shown="", batch_size=512
    )
    fields = SuiteFields(ref="cnn@1.0.0", variant="base", requirements=[], checks=METRIC_SUITE)
    thread, isolated = [], []
    try:
        for i in range(rounds + 1):
            a = await timed(lambda: asyncio.to_thread(_validate_in_thread, model, data))
            b = await timed(lambda: pool.run(run_suite_isolated, files, fields, SuiteConfig(), limits=LIMITS))
            if i:  # the first round parses the dataset in both ways
                thread.append(a)
                isolated.append(b)
    finally:
        await pool.close()
    return min(thread), min(isolated)


async def main(rounds: int, verify_n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        v_thread, v_pool = await registry(folder, verify_n)
        conv = await converter(folder, rounds)
        val_thread, val_pool = await validator(folder, rounds)
    print("\nsandbox cost: the same native work in a thread (before) and in a warm sandbox worker (now)")
    print("-" * 96)
    print(
        f"  registry verify, 1 MB model (p50)   thread {v_thread * 1e3:7.2f} ms   sandbox {v_pool * 1e3:7.2f} ms"
        f"   adds {(v_pool - v_thread) * 1e3:+.2f} ms per registration"
    )
    for profile, (a, b) in conv.items():
        print(f"  converter {profile:<13} (best)    thread {a:7.3f} s    sandbox {b:7.3f} s    ratio {b / a:.3f}")
    print(
        f"  validator suite, 5k samples (best)  thread {val_thread:7.3f} s    sandbox {val_pool:7.3f} s"
        f"    ratio {val_pool / val_thread:.3f}   (target: ratios <= 1.10)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--verify-n", type=int, default=60)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.verify_n))
