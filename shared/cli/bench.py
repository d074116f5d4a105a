"""Benchmarker commands: bench, history, trend, compare, sql, export.

inferlab bench resnet50@1.2.0 --batch 1,8 --threads 1,2 --concurrency 1,4 --wait
inferlab history resnet50
inferlab trend resnet50 --metric p99_ms
inferlab compare resnet50@1.2.0 resnet50@1.2.0+fp16 resnet50@1.2.0+int8-dynamic
inferlab sql "SELECT name, variant, p99_ms FROM latest_runs ORDER BY p99_ms"
inferlab export --parquet ./history        (also: inferlab history export --parquet DIR)
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from rich.markup import escape

from shared.cli.app import add_json_flag, run, settings_from
from shared.cli.output import (
    command_queued,
    command_refused,
    console,
    emit_json,
    fmt_ms,
    heartbeat,
    human_bytes,
    step_progress,
    table,
    when,
)
from shared.clients.benchmark import BenchmarkFailedError
from shared.contracts.benchmark import BenchmarkConfig, BenchmarkProgress, ModelBenchmarked
from shared.errors import InferlabError
from shared.sdk import Client


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 1,8") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one value")
    return values


def _names(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    aliases = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
    return [aliases.get(v.lower(), v) for v in values]


def _shape(text: str) -> tuple[str, list[int]]:
    name, eq, dims = text.partition("=")
    try:
        shape = [int(d) for d in dims.lower().replace(",", "x").split("x") if d]
    except ValueError:
        shape = []
    if not eq or not name or not shape:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=DIMS, e.g. input=1x3x224x224")
    return name, shape


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="benchmark a model (sweep of batch sizes, threads, concurrency, providers)")
    p.add_argument("ref", help="model reference, e.g. resnet50@1.2.0 or resnet50@1.2.0+fp16")
    p.add_argument("--batch", type=_ints, metavar="1,8", help="batch sizes")
    p.add_argument("--threads", type=_ints, metavar="1,2", help="intra-op threads (0: onnxruntime's default)")
    p.add_argument("--concurrency", type=_ints, metavar="1,4", help="concurrent requests (threads on one session)")
    p.add_argument(
        "--providers", type=_names, metavar="cpu,cuda", help="execution providers (cpu, cuda, tensorrt or full names)"
    )
    p.add_argument("--duration", type=float, metavar="S", help="most measuring seconds per configuration")
    p.add_argument("--min-duration", type=float, metavar="S", help="least measuring seconds per configuration")
    p.add_argument("--warmup", type=float, metavar="S", help="warm-up seconds")
    p.add_argument("--window", type=float, metavar="S", help="measurement window seconds")
    p.add_argument("--stability", type=float, metavar="F", help="windows must agree within this fraction (0.10)")
    p.add_argument("--seed", type=int, help="seed of the synthetic inputs and bootstrap")
    p.add_argument("--shape", type=_shape, action="append", metavar="NAME=DIMS", help="input shape, e.g. x=1x3x224x224")
    p.add_argument("--wait", action="store_true", help="wait for the results (progress bar and table)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds to wait, queueing included")
    add_json_flag(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("history", help="benchmark runs of a model (or: history export --parquet DIR)")
    p.add_argument("ref", help="model reference (a bare name: every version and variant)")
    p.add_argument("--config", help="only this configuration key, e.g. 'CPUExecutionProvider|b1|t1|c1'")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--parquet", metavar="DIR", help="with REF 'export': export the whole history as Parquet")
    add_json_flag(p)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("trend", help="trend of a model's latency: Theil-Sen slope with CI, change points")
    p.add_argument("ref")
    p.add_argument("--metric", default="p50_ms", help="p50_ms, p90_ms, p95_ms, p99_ms, mean_ms or throughput_ips")
    p.add_argument("--config", help="configuration key (default: that of the latest run)")
    add_json_flag(p)
    p.set_defaults(func=cmd_trend)

    p = sub.add_parser("compare", help="compare models: Kruskal-Wallis, pairwise Mann-Whitney (Holm), Pareto front")
    p.add_argument("refs", nargs="+", metavar="REF")
    p.add_argument("--config", help="configuration key to compare on (default: the latest one they share)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level after Holm's correction")
    p.add_argument(
        "--min-effect",
        type=float,
        default=0.05,
        metavar="FRACTION",
        help="smallest gap between medians called a difference, relative (default 0.05: 5%%)",
    )
    add_json_flag(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sql", help="read-only SQL over the performance history (see docs/history.md)")
    p.add_argument("query", help='one SELECT statement, e.g. "SELECT * FROM latest_runs"')
    p.add_argument("--max-rows", type=int, default=1000)
    p.add_argument("--timeout", type=float, default=10.0)
    add_json_flag(p)
    p.set_defaults(func=cmd_sql)

    p = sub.add_parser("export", help="export the performance history as Parquet files into a folder")
    p.add_argument("--parquet", required=True, metavar="DIR", help="folder for <table>.parquet files")
    p.add_argument("--table", action="append", help="only this table or view (repeatable)")
    add_json_flag(p)
    p.set_defaults(func=cmd_export)


# --- bench -----------------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> BenchmarkConfig | None:
    given = {
        "providers": args.providers,
        "batch_sizes": args.batch,
        "intra_op_threads": args.threads,
        "concurrency": args.concurrency,
        "max_duration_s": args.duration,
        "min_duration_s": args.min_duration,
        "warmup_s": args.warmup,
        "window_s": args.window,
        "stability_threshold": args.stability,
        "seed": args.seed,
        "shapes": dict(args.shape) if args.shape else None,
    }
    fields = {k: v for k, v in given.items() if v is not None}
    if not fields:
        return None  # the benchmarker's own default configuration
    config = BenchmarkConfig(**fields)
    if args.duration is not None and args.min_duration is None:
        config.min_duration_s = min(config.min_duration_s, config.max_duration_s)
    return config


def cmd_bench(args: argparse.Namespace) -> int:
    config = _config(args)

    async def go() -> ModelBenchmarked | str:
        async with await Client.connect(settings_from(args)) as client:
            if not args.wait:
                return await client.benchmark(args.ref, config, wait=False)
            with step_progress(f"benchmarking {args.ref}", None, enabled=not args.json, plain=True) as update:

                def progress(p: BenchmarkProgress) -> None:
                    update(description=f"benchmarking {p.ref}: {p.done}/{p.total} configurations", advance=0)

                beat = asyncio.create_task(heartbeat(update))
                try:
                    return await client.benchmark(args.ref, config, timeout=args.timeout, on_progress=progress)
                finally:
                    beat.cancel()

    try:
        result = run(go)
    except BenchmarkFailedError as exc:
        return command_refused(args.json, "failed", "benchmark failed", exc.code, exc.message)
    if isinstance(result, str):
        return command_queued(
            args.json,
            result,
            f"benchmark of {args.ref}",
            "follow with `inferlab events 'model.benchmarked.>'` or rerun with --wait",
        )
    if args.json:
        emit_json(result)
        return 0
    print_results(result)
    return 0


def print_results(result: ModelBenchmarked) -> None:
    hw = result.hardware
    gpu = f", {hw.gpu_name} (driver {hw.gpu_driver})" if hw.gpu_name else ""
    rows = []
    for r in result.results:
        verdict = r.verdict
        status = verdict.status if verdict else ""
        if verdict and verdict.median_ratio is not None:
            status += f" {verdict.median_ratio:.2f}x"
        rows.append(
            [
                _provider(r.provider),
                r.batch_size,
                r.intra_op_threads,
                r.concurrency,
                fmt_ms(r.latency.p50_ms, 4),
                fmt_ms(r.latency.p99_ms, 4),
                f"{r.latency.p50_ci_ms[0]:.4f}..{r.latency.p50_ci_ms[1]:.4f}",
                f"{r.throughput_ips:,.0f}",
                r.latency.samples,
                "yes" if r.stable else "NO",
                human_bytes(r.peak_memory_bytes),
                status,
            ]
        )
    table(
        f"{result.ref}  ({hw.cpu_model}, {hw.cpu_cores} cores, onnxruntime {hw.ort_version}{gpu})",
        [
            "provider",
            "batch",
            "thr",
            "conc",
            "p50 ms",
            "p99 ms",
            "p50 95% CI",
            "inf/s",
            "n",
            "stable",
            "mem",
            "verdict",
        ],
        rows,
        caption="thr: intra-op threads; conc: concurrent requests; n: samples; mem: peak memory growth",
    )
    for s in result.skipped:
        console.print(
            f"[yellow]skipped[/] {s.provider} batch {s.batch_size} threads {s.intra_op_threads} "
            f"concurrency {s.concurrency}: {s.reason}: {escape(s.message)}",
            highlight=False,
        )
    notes = dict.fromkeys(n for r in result.results for n in r.notes)
    for note in notes:
        console.print(f"[dim]note: {escape(note)}[/]", highlight=False)
    for r in result.results:
        if r.verdict and r.verdict.status in ("regression", "improvement", "insufficient_data"):
            colour = {"regression": "bold red", "improvement": "green"}.get(r.verdict.status, "yellow")
            console.print(
                f"[{colour}]{r.verdict.status}[/] {r.config_key}: {escape(r.verdict.message)}", highlight=False
            )


# --- history, trend, compare --------------------------------------------------------------------------


def cmd_history(args: argparse.Namespace) -> int:
    if args.ref == "export" and args.parquet:
        args.table = None
        return cmd_export(args)
    if args.parquet:
        raise InferlabError("--parquet goes with `inferlab history export --parquet DIR`")

    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            return await client.history(args.ref, config_key=args.config, limit=args.limit)

    points = run(go)
    if args.json:
        emit_json(points)
        return 0
    if not points:
        console.print(f"no benchmark runs of {args.ref} in the history")
        return 0
    table(
        f"benchmark history of {args.ref}",
        ["started", "ref", "config", "p50 ms", "p99 ms", "inf/s", "samples n", "stable", "verdict", "run"],
        [
            [
                when(p.started_at),
                p.ref,
                _short_config(p.config_key),
                fmt_ms(p.p50_ms, 4),
                fmt_ms(p.p99_ms, 4),
                f"{p.throughput_ips:,.0f}",
                p.samples,
                "yes" if p.stable else "NO",
                p.status + (f" {p.median_ratio:.2f}x" if p.median_ratio is not None else ""),
                p.run_id[:12],
            ]
            for p in points
        ],
    )
    return 0


def _p(value: float) -> str:
    return "<1e-300" if value < 1e-300 else f"{value:.3g}"


def _provider(name: str) -> str:
    return name.replace("ExecutionProvider", "")


def _short_config(key: str) -> str:
    """``CPUExecutionProvider|b1|t1|c1`` -> ``CPU b1 t1 c1`` for tables."""
    return _provider(key).replace("|", " ")


def cmd_trend(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            return await client.trend(args.ref, metric=args.metric, config_key=args.config)

    report = run(go)
    if args.json:
        emit_json(report)
        return 0
    metric = report.metric
    changes = {c.index for c in report.change_points}
    table(
        f"{metric} of {args.ref} on {report.config_key} (hardware {report.hardware_id})",
        ["#", "started", "ref", metric, "verdict", "change"],
        [
            [
                i,
                when(p.started_at),
                p.ref,
                f"{report.values[i]:,.4f}" if i < len(report.values) else "",
                p.status,
                "<- change point" if i in changes else "",
            ]
            for i, p in enumerate(report.points)
        ],
    )
    console.print(escape(report.message), highlight=False)
    return 0


def interval(low: float, high: float, digits: int = 3) -> str:
    """``low-high`` with as many significant digits as it takes for the two ends to differ
    (``0.005912-0.005987``, never ``0.0059-0.0059``)."""
    for d in range(digits, 12):
        a, b = f"{low:#.{d}g}", f"{high:#.{d}g}"  # '#': both ends keep their trailing zeros
        if a != b or low == high:
            return f"{a}-{b}"
    return f"{low!r}-{high!r}"


def _significance(p: Any, min_effect: float) -> str:
    gap = 100 * (max(p.median_ratio, 1 / p.median_ratio) - 1) if p.median_ratio > 0 else float("inf")
    if p.significant:
        return f"yes ({gap:.1f}% apart)"
    if p.statistically_significant:
        return f"no: {gap:.1f}% < {100 * min_effect:g}%"
    return "no"


def cmd_compare(args: argparse.Namespace) -> int:
    if len(args.refs) < 2:
        raise InferlabError("compare needs at least two model references")

    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            return await client.compare(args.refs, config_key=args.config, alpha=args.alpha, min_effect=args.min_effect)

    report = run(go)
    if args.json:
        emit_json(report)
        return 0
    table(
        f"comparison on {report.config_key} (hardware {report.hardware_id})",
        ["rank", "ref", "median ms", "median 95% CI ms", "p99 ms", "inf/s", "size", "accuracy", "pareto"],
        [
            [
                entry.rank,
                entry.ref,
                fmt_ms(entry.median_ms, 4),
                interval(*entry.median_ci_ms),
                fmt_ms(entry.p99_ms, 4),
                f"{entry.throughput_ips:,.0f}",
                human_bytes(entry.size_bytes),
                "" if entry.accuracy is None else f"{entry.accuracy:.4f}",
                "*" if entry.pareto else "",
            ]
            for entry in report.entries
        ],
        caption=f"{report.message}; Pareto front over {', '.join(report.pareto_objectives)}",
    )
    table(
        "pairwise Mann-Whitney U (two-sided, Holm-corrected)",
        ["a", "b", "median a/b", "p", "p Holm", "significant"],
        [
            [
                p.a,
                p.b,
                f"{p.median_ratio:.3f}",
                _p(p.p_value),
                _p(p.p_adjusted),
                _significance(p, report.min_effect),
            ]
            for p in report.pairs
        ],
        caption=f"significant: Holm p < {report.alpha:g} and medians at least {100 * report.min_effect:g}% apart"
        " (--alpha, --min-effect)",
    )
    return 0


# --- sql and export ------------------------------------------------------------------------------------


def cmd_sql(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            return await client.sql(args.query, max_rows=args.max_rows, timeout=args.timeout)

    result = run(go)
    if args.json:
        emit_json(result)
        return 0
    table(None, result.columns, result.rows)
    more = " (truncated: raise --max-rows)" if result.truncated else ""
    console.print(f"[dim]{len(result.rows)} row(s) in {result.elapsed_s * 1000:.1f} ms{more}[/]", highlight=False)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            with step_progress("exporting the history", None, enabled=not args.json):
                return await client.export(args.parquet, tables=args.table)

    paths = run(go)
    if args.json:
        emit_json({"folder": str(args.parquet), "files": [str(p) for p in paths]})
        return 0
    for path in paths:
        console.print(f"wrote {path}  ({human_bytes(path.stat().st_size)})", highlight=False)
    return 0
