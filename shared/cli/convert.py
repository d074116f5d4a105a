"""Converter commands: ``convert`` (with progress and a result table), ``lineage`` (the tree of
variants with profile, size and parity figures) and ``profiles``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import msgspec
from rich.markup import escape
from rich.tree import Tree

from shared.cli.app import add_json_flag, run, settings_from
from shared.cli.output import command_queued, console, emit_json, human_bytes, step_progress, table
from shared.clients.conversion import ConversionMessage, ConversionOutcome, LineageNode
from shared.contracts.conversion import (
    ConversionFailed,
    ConversionPlan,
    ConversionProgress,
    ConversionReport,
    ConversionSkipped,
    ModelConverted,
    ParityReport,
    Tolerance,
)
from shared.errors import InferlabError
from shared.sdk import Client

_TOLERANCE_KEYS = tuple(f.name for f in msgspec.structs.fields(Tolerance))


def parse_tolerance(text: str) -> Tolerance:
    """``atol=1e-3,rtol=1e-3,min_cosine=0.999`` -> Tolerance."""
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        if not eq or key not in _TOLERANCE_KEYS:
            raise InferlabError(
                f"tolerance entry {part!r} must be KEY=NUMBER with KEY one of {', '.join(_TOLERANCE_KEYS)}"
            )
        try:
            values[key] = float(value)
        except ValueError:
            raise InferlabError(f"tolerance {key}={value!r} is not a number") from None
    if not values:
        raise InferlabError(f"empty tolerance {text!r}")
    return Tolerance(**values)


def parse_output_tolerance(text: str) -> tuple[str, Tolerance]:
    name, colon, rest = text.partition(":")
    if not colon or not name:
        raise InferlabError(f"--output-tolerance {text!r} must look like OUTPUT:atol=..,rtol=..")
    return name, parse_tolerance(rest)


def parse_shape(text: str) -> tuple[str, list[int]]:
    name, eq, dims = text.partition("=")
    try:
        shape = [int(d) for d in dims.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        shape = []
    if not eq or not name or not shape or any(d <= 0 for d in shape):
        raise InferlabError(f"--shape {text!r} must look like INPUT=8,3,224,224")
    return name, shape


def parse_option(text: str, into: dict[str, dict[str, Any]]) -> None:
    """``fp16.op_block_list=Resize,TopK`` or ``int8-dynamic.per_channel=true``."""
    target, eq, value = text.partition("=")
    profile, dot, key = target.partition(".")
    if not eq or not dot or not profile or not key:
        raise InferlabError(f"--option {text!r} must look like PROFILE.KEY=VALUE (e.g. ort-opt.level=basic)")
    try:
        parsed: Any = json.loads(value)
    except ValueError:
        parsed = value
    into.setdefault(profile, {})[key] = parsed


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("convert", help="convert a model with profiles; each variant is checked for parity")
    p.add_argument("ref", help="model reference, e.g. digits@1.0.0")
    p.add_argument(
        "--profile",
        "-p",
        action="append",
        default=[],
        help="ort-opt, fp16, int8-dynamic, int8-static, opset-N, trt-fp16, trt-int8 (repeatable; default: the "
        "converter's configured profiles)",
    )
    p.add_argument("--tolerance", help="for every output, e.g. atol=1e-3,rtol=1e-3,min_cosine=0.999")
    p.add_argument(
        "--output-tolerance", action="append", default=[], metavar="OUTPUT:K=V,..", help="for one output (repeatable)"
    )
    p.add_argument("--calibration", help="calibration data (.npz, one array per input) for int8-static/trt-int8")
    p.add_argument("--opset", type=int, help="also run opset-N (convert the default-domain opset to N)")
    p.add_argument("--shape", action="append", default=[], metavar="INPUT=D,D,..", help="fix an input's shape")
    p.add_argument("--option", action="append", default=[], metavar="PROFILE.KEY=VALUE", help="profile option")
    p.add_argument("--samples", type=int, help="samples of the parity check (default: the converter's setting)")
    p.add_argument("--seed", type=int, default=0, help="seed of synthetic parity inputs")
    p.add_argument("--wait", action="store_true", help="wait for every outcome; exit 1 when one failed")
    p.add_argument("--timeout", type=float, default=900.0)
    add_json_flag(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("lineage", help="the tree of variants of a model with profile, size and parity figures")
    p.add_argument("ref")
    add_json_flag(p)
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("profiles", help="conversion profiles, and whether each can run on the converter's host")
    add_json_flag(p)
    p.set_defaults(func=cmd_profiles)


def cmd_convert(args: argparse.Namespace) -> int:
    tolerance = parse_tolerance(args.tolerance) if args.tolerance else None
    output_tolerances = dict(parse_output_tolerance(t) for t in args.output_tolerance)
    shapes = dict(parse_shape(s) for s in args.shape)
    options: dict[str, dict[str, Any]] = {}
    for text in args.option:
        parse_option(text, options)
    calibration: str | Path | None = None
    if args.calibration:
        calibration = args.calibration if "://" in args.calibration else Path(args.calibration)
        if isinstance(calibration, Path) and not calibration.is_file():
            raise InferlabError(f"no such file: {calibration}")
    expected = len(set(args.profile)) + (1 if args.opset and f"opset-{args.opset}" not in args.profile else 0)

    async def go() -> list[ConversionOutcome] | str:
        async with await Client.connect(settings_from(args)) as client:
            with step_progress(
                f"converting {args.ref}", expected or None, enabled=not args.json, plain=args.wait
            ) as update:

                def on_progress(message: ConversionMessage) -> None:
                    if isinstance(message, ConversionPlan):
                        update(description=f"converting {message.ref}: {', '.join(message.profiles)}")
                    elif isinstance(message, ConversionProgress):
                        update(description=f"{message.profile}: {message.stage}")
                    else:
                        update(description=f"{message.profile}: {_status(message)}", advance=1)

                return await client.convert(
                    args.ref,
                    profiles=args.profile,
                    tolerance=tolerance,
                    output_tolerances=output_tolerances,
                    calibration=calibration,
                    target_opset=args.opset,
                    shapes=shapes,
                    options=options,
                    parity_samples=args.samples,
                    seed=args.seed,
                    wait=args.wait,
                    timeout=args.timeout,
                    on_progress=on_progress,
                )

    result = run(go)
    if isinstance(result, str):
        return command_queued(
            args.json,
            result,
            f"conversion of {args.ref}",
            "follow with `inferlab events 'model.converted.>'` (and model.conversion_failed.>) or run with --wait",
        )
    failed = any(isinstance(o, ConversionFailed) for o in result)
    if args.json:
        emit_json({"status": "failed" if failed else "done", "outcomes": result})
        return 1 if failed else 0
    render_outcomes(result)
    return 1 if failed else 0


def _status(outcome: ConversionOutcome) -> str:
    if isinstance(outcome, ModelConverted):
        return "converted"
    if isinstance(outcome, ConversionSkipped):
        return f"skipped ({outcome.reason})"
    return f"failed ({outcome.reason})"


def parity_summary(parity: ParityReport | None) -> str:
    """Worst figures over the compared outputs: max abs error, min cosine, min top-1."""
    if parity is None:
        return ""
    outs = [o for o in parity.outputs if o.compared]
    parts = []
    abs_errors = [o.max_abs_error for o in outs if o.max_abs_error is not None]
    cosines = [o.cosine_similarity for o in outs if o.cosine_similarity is not None]
    top1 = [o.top1_agreement for o in outs if o.top1_agreement is not None]
    if abs_errors:
        parts.append(f"max|Δ| {max(abs_errors):.2e}")
    if cosines:
        parts.append(f"cos {min(cosines):.6f}")
    if top1:
        parts.append(f"top1 {min(top1):.4f}")
    metrics = [o for o in outs if o.metric is not None and o.metric_variant is not None]
    if metrics:
        first = metrics[0]
        parts.append(f"{first.metric} {first.metric_source:.4f}→{first.metric_variant:.4f}")
    parts.append(f"{parity.samples} {parity.input_source}")
    return ", ".join(parts)


def _size(report: ConversionReport | None) -> str:
    if report is None or report.size_after_bytes is None:
        return ""
    return f"{human_bytes(report.size_before_bytes)} → {human_bytes(report.size_after_bytes)}"


def render_outcomes(outcomes: list[ConversionOutcome]) -> None:
    rows = []
    for o in outcomes:
        if isinstance(o, ModelConverted):
            rows.append(
                [
                    o.profile or o.variant,
                    "[green]converted[/]",
                    o.ref,
                    _size(o.report),
                    f"{o.report.duration_s:.2f}",
                    parity_summary(o.report.parity),
                ]
            )
        elif isinstance(o, ConversionSkipped):
            rows.append([o.profile, f"[yellow]skipped[/] {o.reason}", "", "", "", escape(o.message)])
        else:
            report = o.report
            detail = escape(o.message)
            rows.append(
                [
                    o.profile,
                    f"[red]failed[/] {o.reason}",
                    "",
                    _size(report),
                    f"{report.duration_s:.2f}" if report else "",
                    detail,
                ]
            )
    table(None, ["profile", "outcome", "variant", "size", "time s", "parity figures, or why not"], rows)


def cmd_lineage(args: argparse.Namespace) -> int:
    async def go() -> LineageNode:
        async with await Client.connect(settings_from(args)) as client:
            return await client.lineage(args.ref)

    root = run(go)
    if args.json:
        emit_json(root)
        return 0
    console.print(render_lineage(root))
    return 0


def _label(node: LineageNode) -> str:
    parts = [f"[bold]{escape(node.ref)}[/]"]
    if node.profile:
        parts.append(f"profile {node.profile}")
    if node.format != "onnx":
        parts.append(node.format)
    parts.append(human_bytes(node.size_bytes))
    if node.report is not None:
        ratio = node.size_bytes / node.report.size_before_bytes if node.report.size_before_bytes else None
        if ratio:
            parts.append(f"{ratio:.2f}x of parent")
        summary = parity_summary(node.report.parity)
        if summary:
            parts.append(f"parity: {summary}")
    return "  ".join(parts)


def render_lineage(root: LineageNode) -> Tree:
    tree = Tree(_label(root))

    def add(branch: Tree, node: LineageNode) -> None:
        for child in node.children:
            add(branch.add(_label(child)), child)

    add(tree, root)
    return tree


_TOLERANCE_LABELS = {
    "atol": "atol {:g}",
    "rtol": "rtol {:g}",
    "min_cosine": "cos≥{:g}",
    "min_top1_agreement": "top1≥{:g}",
    "max_metric_drop": "metric drop≤{:g}",
}


def tolerance_text(tolerance: Tolerance) -> str:
    return ", ".join(
        _TOLERANCE_LABELS[k].format(v) for k, v in msgspec.structs.asdict(tolerance).items() if v is not None
    )


def cmd_profiles(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            return await client.conversion_profiles()

    listing = run(go)
    if args.json:
        emit_json(listing)
        return 0
    rows = []
    for p in listing.profiles:
        tol = tolerance_text(p.default_tolerance)
        default = "yes" if p.id in listing.default_profiles else ""
        available = "[green]yes[/]" if p.available else f"[red]no[/]: {escape(p.reason)}"
        rows.append([p.id, p.precision, p.output_format, available, default, tol, p.description])
    table(
        f"conversion profiles on {listing.host}",
        ["profile", "precision", "format", "available", "default", "default tolerance", "what it does"],
        rows,
        caption="opset-N takes any target opset N (the latest one is listed)",
    )
    return 0
