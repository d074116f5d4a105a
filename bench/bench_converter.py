"""model.convert -> model.converted through a converter (and a registry) running as their own
processes, for a ~50 MB model, against the same library functions called directly in this
process.

For each profile (fp16, int8-dynamic) and each of ``--reps`` distinct 50 MB MLPs (distinct
bytes, so nothing is served from a cache):

- direct: ``onnx.load`` + ``convert_float_to_float16(keep_io_types=True)`` + ``onnx.save``, or
  ``quantize_dynamic(path, out)``: the library call alone, in this process.
- pipeline: the converter's own convert + parity check (``services.converter.pipeline``) in
  this process: what the service computes, without NATS.
- service: ``Client.convert(ref, profiles=[p])`` until ``model.converted`` came back: the
  source downloaded from the object store, converted, checked for parity on 256 samples,
  uploaded, registered through the registry (which verifies it), announced.
  Target: service / direct <= 1.3.
- memory: the converter process's resident set sampled every 10 ms during each conversion;
  peak growth over its resting size, as a multiple of the model size. Target <= 3x. Beside
  it, the same figure for the direct library call alone in a fresh process.

usage: python bench/bench_converter.py [--reps 3] [--size-mb 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, median, nats_server, report

from shared.config import Settings
from shared.contracts.conversion import ModelConverted
from shared.sdk import Client
from tests.support.converter_models import big_mlp

PROFILES = ("fp16", "int8-dynamic")


def direct(profile: str, source: Path, out: Path) -> float:
    import onnx
    from onnxconverter_common.float16 import convert_float_to_float16
    from onnxruntime.quantization import quantize_dynamic

    start = time.perf_counter()
    if profile == "fp16":
        onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(out))
    else:
        quantize_dynamic(source, out)
    return time.perf_counter() - start


def pipeline(profile: str, source: Path, workdir: Path, samples: int) -> float:
    import onnx

    from services.converter.inputs import synthetic_inputs
    from services.converter.pipeline import DataPlan, ProfileRun, References, run_profile
    from services.converter.profiles import get_profile
    from shared.onnxmeta import graph_inputs, graph_outputs

    start = time.perf_counter()
    proto = onnx.load(str(source), load_external_data=False)
    inputs, outputs = graph_inputs(proto), graph_outputs(proto)
    del proto
    prof = get_profile(profile)
    run = ProfileRun(
        profile=prof,
        options=prof.normalize_options({}),
        source=source,
        source_ref="bench@1.0.0",
        source_sha256="0" * 64,
        inputs=inputs,
        outputs=outputs,
        workdir=workdir,
        data=DataPlan(None, None, lambda: synthetic_inputs(inputs, samples=samples)),
        references=References(source),
    )
    outcome = run_profile(run)
    assert outcome.report.parity is not None and outcome.report.parity.passed
    return time.perf_counter() - start


def direct_peak_growth(profile: str, source: Path, out: Path) -> int:
    """Peak RSS growth of the direct library call, in a fresh child process."""
    result = subprocess.run(
        [sys.executable, __file__, "--direct-child", profile, str(source), str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(result.stdout.strip().splitlines()[-1])


def direct_child(profile: str, source: Path, out: Path) -> None:
    import threading

    import onnx  # noqa: F401  (imports before the baseline, as in the service)
    import onnxconverter_common.float16  # noqa: F401
    import onnxruntime.quantization  # noqa: F401

    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    resting = proc.memory_info().rss
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    direct(profile, source, out)
    done.set()
    thread.join()
    print(peak[0] - resting)


async def wait_ready(client: Client, service: str) -> None:
    for _ in range(300):
        if await client.status(service, timeout=0.2):
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"{service} did not start")


async def sample_rss(pid: int, stop: asyncio.Event, peak: list[int]) -> None:
    proc = psutil.Process(pid)
    while not stop.is_set():
        try:
            rss = proc.memory_info().rss
        except psutil.Error:
            return
        peak[0] = max(peak[0], rss)
        await asyncio.sleep(0.01)


async def main(reps: int, size_mb: int) -> None:
    with nats_server() as (server, tmp):
        settings = Settings(nats_url=server.url, home=str(tmp / "home"), log_level="warning", converter_profiles=())
        env = {**os.environ, **settings.to_env()}
        children = {
            name: subprocess.Popen(  # noqa: ASYNC220 (started once, before timing)
                [sys.executable, "-m", f"services.{name}"],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(tmp / f"{name}.log", "wb"),  # noqa: SIM115
            )
            for name in ("registry", "converter")
        }
        # One warm-up model per profile (imports, first sessions), then ``reps`` timed ones.
        runs = reps + 1
        models = [
            big_mlp(tmp / f"big{i}.onnx", target_bytes=size_mb << 20, seed=i) for i in range(runs * len(PROFILES))
        ]
        size = models[0].stat().st_size
        samples = settings.converter_parity_samples
        try:
            async with await Client.connect(settings) as client:
                await wait_ready(client, "registry")
                await wait_ready(client, "converter")
                converter = psutil.Process(children["converter"].pid)
                rows: list[tuple[str, str]] = [
                    ("model", f"{size / 1e6:.1f} MB MLP (onnx.helper, 12 x 1024x1024 MatMul)"),
                    ("parity samples", str(samples)),
                ]
                for p_index, profile in enumerate(PROFILES):
                    direct_s, pipe_s, service_s, growth = [], [], [], []
                    for rep in range(runs):
                        source = models[p_index * runs + rep]
                        d_time = direct(profile, source, tmp / f"direct-{profile}-{rep}.onnx")
                        p_time = pipeline(profile, source, tmp / f"pipe-{profile}-{rep}", samples)
                        ref = (await client.register(source, name="big", version=f"1.{p_index}.{rep}")).ref
                        await asyncio.sleep(0.5)  # let the converter settle after the registration burst
                        resting = converter.memory_info().rss
                        peak = [resting]
                        stop = asyncio.Event()
                        sampler = asyncio.create_task(sample_rss(converter.pid, stop, peak))
                        start = time.perf_counter()
                        outcomes = await client.convert(ref, profiles=[profile], timeout=600)
                        service_s.append(time.perf_counter() - start)
                        stop.set()
                        await sampler
                        assert isinstance(outcomes[0], ModelConverted), outcomes[0]
                        if rep == 0:  # warm-up
                            service_s.pop()
                            continue
                        direct_s.append(d_time)
                        pipe_s.append(p_time)
                        growth.append(peak[0] - resting)
                        last = outcomes[0].report
                    library_growth = direct_peak_growth(profile, models[p_index * runs], tmp / "direct-child.onnx")
                    d, p, s = median(direct_s), median(pipe_s), median(service_s)
                    rows += [
                        (f"{profile}: direct library call", f"{d:.3f} s (median of {reps})"),
                        (f"{profile}: converter pipeline in-process", f"{p:.3f} s (convert + parity)"),
                        (
                            f"{profile}: service end-to-end",
                            f"{s:.3f} s (runs: {', '.join(f'{x:.2f}' for x in service_s)})",
                        ),
                        (
                            f"{profile}: last run breakdown",
                            f"convert {last.conversion_s:.3f} s, parity {last.parity_s:.3f} s, "
                            f"size {last.size_before_bytes / 1e6:.1f} -> {last.size_after_bytes / 1e6:.1f} MB",
                        ),
                        (f"{profile}: ratio service / direct", f"{s / d:.2f}  (target <= 1.3)"),
                        (f"{profile}: ratio service / pipeline", f"{s / p:.2f}  (cost of NATS, transfer, registry)"),
                        (
                            f"{profile}: converter peak RSS growth",
                            f"{max(growth) / 1e6:.0f} MB = {max(growth) / size:.2f}x model size (target <= 3x); "
                            f"resting {converter.memory_info().rss / 1e6:.0f} MB",
                        ),
                        (
                            f"{profile}: direct library call peak RSS growth",
                            f"{library_growth / 1e6:.0f} MB = {library_growth / size:.2f}x model size (fresh process)",
                        ),
                    ]
                report(f"converter: {size / 1e6:.0f} MB model, {reps} runs per profile after a warm-up", rows)
        finally:
            for child in children.values():
                child.terminate()
            for child in children.values():
                try:
                    child.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    child.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--direct-child", nargs=3, metavar=("PROFILE", "SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.direct_child:
        direct_child(args.direct_child[0], Path(args.direct_child[1]), Path(args.direct_child[2]))
    else:
        asyncio.run(main(args.reps, args.size_mb))
