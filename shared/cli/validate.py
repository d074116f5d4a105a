"""Validator commands: validate, report, dataset put."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.markup import escape

from shared.cli.app import add_json_flag, run, settings_from
from shared.cli.output import command_queued, command_refused, console, emit_json, step_progress, table, when
from shared.cli.registry import parse_pairs
from shared.contracts.validation import CHECKS, ModelValidated, ValidationErrored, ValidationProgress
from shared.errors import InferlabError, Rejected
from shared.sdk import Client

_STATUS = {
    "passed": "[green]passed[/]",
    "failed": "[bold red]failed[/]",
    "skipped": "[dim]skipped[/]",
    "error": "[bold red]error[/]",
}


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        help="validate a model: structure, parity, metrics, fairness, robustness, readiness",
        description=(
            "Validate REF on a labelled .npz dataset against requirements such as accuracy>=0.95 or p99_ms<=5 "
            "(latency figures come from the benchmarker). Exit status with --wait: 0 ready, 1 not ready or "
            "validation could not run."
        ),
    )
    p.add_argument("ref", help="model reference: name, name@1.0.0, name@alias, name@1.0.0+fp16")
    p.add_argument(
        "--dataset", help="labelled .npz file (uploaded), nats-obj:// file:// https:// URI, or dataset://NAME"
    )
    p.add_argument(
        "--require",
        action="append",
        metavar="EXPR",
        default=[],
        help="requirement, e.g. accuracy>=0.95, p99_ms<=5, eo_difference<=0.1 (repeatable)",
    )
    p.add_argument(
        "--check", action="append", choices=CHECKS, default=[], help="run only these checks (repeatable; default all)"
    )
    p.add_argument(
        "--option",
        action="append",
        metavar="K=V",
        help="check option, e.g. attack_epsilon=0.1, noise_levels=[0,0.1,0.5], positive_label=1 (repeatable)",
    )
    p.add_argument("--wait", action="store_true", help="wait for the verdict and print it")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait with --wait")
    add_json_flag(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "report",
        help="a model's report: readiness checklist, latency, history, parity, robustness, fairness",
        description=(
            "The latest validation of REF with its readiness checklist, then its variants' latency distributions, "
            "the benchmark history with change points, parity with the parent, the robustness curve and fairness "
            "per group. --html FILE writes the same as one self-contained page with plots (no network needed to "
            "view it). --json prints the latest model.validated event. Exit status 1 when REF was never validated "
            "(with --html: only when the page could not be written)."
        ),
    )
    p.add_argument("ref")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML page with plots to FILE")
    add_json_flag(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("dataset", help="named datasets (dataset://NAME)")
    ds_sub = p.add_subparsers(dest="dataset_command", metavar="put", required=True)
    put = ds_sub.add_parser("put", help="upload a labelled .npz as dataset://NAME (replaces what NAME held)")
    put.add_argument("name")
    put.add_argument("path")
    add_json_flag(put)
    put.set_defaults(func=cmd_dataset_put)


def cmd_validate(args: argparse.Namespace) -> int:
    options = parse_pairs(args.option, "--option", typed=True)
    dataset: str | Path | None = None
    if args.dataset:
        dataset = args.dataset if "://" in args.dataset else Path(args.dataset)
        if isinstance(dataset, Path) and not dataset.is_file():
            raise InferlabError(f"no such file: {dataset}")

    async def go() -> ModelValidated | str:
        async with await Client.connect(settings_from(args)) as client:
            with step_progress(
                f"validating {args.ref}", enabled=not args.json and args.wait, plain=args.wait
            ) as update:

                def on_progress(p: ValidationProgress) -> None:
                    update(description=f"validating {p.ref}: {p.stage} ({p.step}/{p.steps})")

                return await client.validate(
                    args.ref,
                    dataset=dataset,
                    requirements=args.require,
                    checks=args.check,
                    options=options,
                    wait=args.wait,
                    timeout=args.timeout,
                    on_progress=on_progress,
                )

    try:
        result = run(go)
    except Rejected as exc:
        return command_refused(args.json, "errored", "validation could not run", exc.code, exc.message)
    if isinstance(result, str):
        return command_queued(
            args.json,
            result,
            f"validation of {args.ref}",
            f"see the verdict with `inferlab report {args.ref}` or follow `inferlab events 'model.validated.>'`",
        )
    if args.json:
        emit_json(result)
    else:
        render_validation(result)
    return 0 if result.ready else 1


def cmd_report(args: argparse.Namespace) -> int:
    from shared.report import ModelReport, collect, render_html, render_text

    full = bool(args.html) or not args.json

    async def go() -> tuple[ModelValidated | ValidationErrored | None, ModelReport | None]:
        async with await Client.connect(settings_from(args)) as client:
            found = await client.report(args.ref)
            return found, (await collect(client, args.ref) if full else None)

    found, report = run(go)
    if args.html:
        assert report is not None
        target = Path(args.html).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render_html(report), encoding="utf-8")
        if args.json:
            emit_json({"ref": report.ref, "html": str(target), "bytes": target.stat().st_size})
        else:
            console.print(f"wrote {target} ({target.stat().st_size / 1024:.1f} KiB), the report of {report.ref}")
        return 0
    if found is None:
        if args.json:
            emit_json({"status": "none", "ref": args.ref})
        else:
            console.print(f"{escape(args.ref)} has not been validated yet", highlight=False)
            if report is not None:
                render_text(report, console)
        return 1
    if args.json:
        emit_json(found)
        return 0
    if isinstance(found, ValidationErrored):
        console.print(
            f"latest validation of {found.ref} ({when(found.occurred_at)}) could not run "
            f"([bold]{found.reason}[/]): {escape(found.message)}",
            highlight=False,
        )
    else:
        render_validation(found)
    if report is not None:
        render_text(report, console)
    return 0


def cmd_dataset_put(args: argparse.Namespace) -> int:
    async def go() -> str:
        async with await Client.connect(settings_from(args)) as client:
            return await client.put_dataset(args.path, args.name)

    uri = run(go)
    if args.json:
        emit_json({"name": args.name, "uri": uri})
    else:
        console.print(f"stored {args.path} as {uri}", highlight=False)
    return 0


def _measured(value: float | None, metric: str) -> str:
    if value is None:
        return "n/a"
    if metric in ("structural", "parity", "fairness"):
        return "passed" if value >= 1 else "failed"
    if metric == "mcnemar_p":
        return f"{value:.3g}"
    return f"{value:.4g}"


def render_validation(event: ModelValidated) -> None:
    r = event.report
    verdict = f"[bold green]{event.verdict_words}[/]" if event.ready else f"[bold red]{event.verdict_words}[/]"
    facts = [f"task {r.task or '?'}", f"{r.samples} samples" if r.samples else "no dataset"]
    if r.parent_ref:
        facts.append(f"parent {r.parent_ref}")
    facts.append(f"{r.duration_s:.2f} s")
    console.print(f"{event.ref}  {verdict}  ({', '.join(facts)}; {when(event.occurred_at)})", highlight=False)
    table(
        "checks",
        ["check", "status", "summary"],
        [[c.name, _STATUS.get(c.status, c.status), escape(c.summary)] for c in r.checks],
    )
    rows: list[list[Any]] = []
    for c in r.criteria:
        mark = "[green]✓[/]" if c.passed else "[bold red]✗[/]" if c.passed is False else "[yellow]?[/]"
        limit = (
            "passes"
            if c.metric in ("structural", "parity", "fairness") and c.op == ">=" and c.limit == 1
            else (f"{c.op} {c.limit:g}")
        )
        rows.append([mark, c.metric, _measured(c.measured, c.metric), limit, c.source])
    table("readiness", ["", "requirement", "measured", "limit", "source"], rows)
    if r.recommendations:
        console.print("[bold]recommendations[/]")
        for i, rec in enumerate(r.recommendations, 1):
            console.print(f"  {i}. {escape(rec)}", highlight=False)
    if r.truncated:
        console.print(f"[dim](figures left out to fit the message limit: {', '.join(r.truncated)})[/]")
