"""Registry commands: register, models, show, find, alias, tag, download, bundle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.markup import escape

from shared.chain import ChainResult, ChainRow
from shared.cli.app import add_json_flag, run, settings_from
from shared.cli.output import (
    command_queued,
    command_refused,
    console,
    emit_json,
    err_console,
    fmt_ms,
    human_bytes,
    table,
    transfer_progress,
    when,
)
from shared.contracts.identity import BASE_VARIANT
from shared.contracts.registry import INPUTS_NEED_SPEC, FindModels, InputSpec, ListModels, ModelRecord, ModelView
from shared.errors import InferlabError, Rejected
from shared.sdk import Client


def parse_pairs(pairs: list[str] | None, what: str, *, typed: bool = False) -> dict[str, Any]:
    """``k=v`` arguments; with ``typed`` a value that parses as JSON (numbers, true, lists) is
    kept typed."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise InferlabError(f"{what} {pair!r} must look like key=value")
        if typed:
            try:
                out[key] = json.loads(value)
                continue
            except ValueError:
                pass
        out[key] = value
    return out


def _dims(text: str, where: str) -> list[int]:
    try:
        dims = [int(d) for d in text.lower().split("x")] if text else []
    except ValueError:
        raise InferlabError(f"{where}: {text!r} must be sizes joined by x, e.g. 1x3x224x224") from None
    if any(d <= 0 for d in dims):
        raise InferlabError(f"{where}: sizes must be positive, got {text!r}")
    return dims


def parse_input_specs(
    shapes: list[str] | None, ranges_of_shapes: list[str] | None, value_ranges: list[str] | None
) -> list[InputSpec]:
    """``--shape NAME:1x3x224x224``, ``--shapes NAME:MIN,OPT,MAX`` (trtexec's min/opt/max) and
    ``--range NAME:LOW:HIGH`` (inclusive) into input specs. The name is everything before the
    last ':' of a shape, so names such as ``input:0`` work."""
    specs: dict[str, InputSpec] = {}

    def spec(name: str, where: str) -> InputSpec:
        if not name:
            raise InferlabError(f"{where} must start with an input name, e.g. x:1x3x224x224")
        return specs.setdefault(name, InputSpec(name=name))

    for text in shapes or []:
        name, _, dims = text.rpartition(":")
        spec(name, f"--shape {text}").shape = _dims(dims, f"--shape {text}")
    for text in ranges_of_shapes or []:
        name, _, dims = text.rpartition(":")
        parts = dims.split(",")
        if len(parts) != 3:
            raise InferlabError(f"--shapes {text}: give MIN,OPT,MAX shapes, e.g. x:1x3x32x32,1x3x224x224,8x3x640x640")
        s = spec(name, f"--shapes {text}")
        s.min_shape, s.opt_shape, s.max_shape = (_dims(p, f"--shapes {text}") for p in parts)
    for text in value_ranges or []:
        parts = text.rsplit(":", 2)
        try:
            low, high = float(parts[1]), float(parts[2])
        except (IndexError, ValueError):
            raise InferlabError(f"--range {text}: give NAME:LOW:HIGH, e.g. input_ids:0:30521") from None
        if low > high:
            raise InferlabError(f"--range {text}: LOW is above HIGH")
        s = spec(parts[0], f"--range {text}")
        s.low, s.high = (int(low), int(high)) if low.is_integer() and high.is_integer() else (low, high)
    return list(specs.values())


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_register(sub)
    _add_queries(sub)
    _add_aliases_and_tags(sub)
    _add_downloads(sub)


def _add_register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("register", help="upload and register a model version")
    p.add_argument("path", help="ONNX file, or a nats-obj:// file:// https:// URI")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True, help="semantic version, e.g. 1.2.0")
    p.add_argument("--task", help="e.g. classification, regression, detection, text-classification")
    p.add_argument("--meta", action="append", metavar="K=V", help="free-form metadata (repeatable)")
    p.add_argument("--tag", action="append", metavar="K=V", help="tag (repeatable)")
    p.add_argument("--dataset", help="labelled .npz dataset (path or URI)")
    p.add_argument("--parent", help="parent model reference, for derived models")
    p.add_argument("--variant", default="base")
    p.add_argument(
        "--shape", action="append", metavar="NAME:DIMS", help="fixed input shape, e.g. x:1x3x224x224 (repeatable)"
    )
    p.add_argument(
        "--shapes",
        action="append",
        metavar="NAME:MIN,OPT,MAX",
        help="input shape range as trtexec's min/opt/max, e.g. x:1x3x32x32,1x3x224x224,8x3x640x640 (repeatable)",
    )
    p.add_argument(
        "--range", action="append", metavar="NAME:LOW:HIGH", help="value range of an input, e.g. ids:0:30521"
    )
    p.add_argument("--sample", help=".npz of model inputs only, no labels (path or URI): how the model is fed")
    p.add_argument("--wait", action="store_true", help="wait for the registration; exit 1 when rejected")
    p.add_argument(
        "--until",
        choices=("registered", "ready"),
        help="what to wait for: 'registered' (as --wait) or 'ready': the whole chain of the version "
        "(conversions, benchmarks, validations of the base and its variants), print the verdict table, "
        "exit 1 unless the base is READY",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds for each wait (default 300)")
    add_json_flag(p)
    p.set_defaults(func=cmd_register)


def _add_queries(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list registered models")
    p.add_argument("--name")
    p.add_argument("--task")
    p.add_argument("--variant")
    p.add_argument("--alias")
    p.add_argument("--tag", action="append", metavar="K[=V]", help="tag filter (repeatable; all must match)")
    p.add_argument(
        "--or",
        dest="any_of",
        action="append",
        metavar="FILTERS",
        help="alternative filter group, e.g. --or 'task=detection,tag=team=cv' (OR of groups)",
    )
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--archived", action="store_true", help="include archived versions")
    add_json_flag(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("show", help="one model in detail (REF: name, name@1.0.0, name@alias, name@1.0.0+fp16)")
    p.add_argument("ref")
    add_json_flag(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("find", help="models meeting requirements, ranked")
    p.add_argument("--name")
    p.add_argument("--task")
    p.add_argument("--max-p99-ms", type=float)
    p.add_argument("--min-accuracy", type=float)
    p.add_argument("--min-throughput", type=float, help="inferences per second")
    p.add_argument("--max-size", type=int, help="bytes")
    p.add_argument("--ready", action="store_true", help="only models validated as deployment-ready")
    p.add_argument("--limit", type=int, default=20)
    add_json_flag(p)
    p.set_defaults(func=cmd_find)


def _add_aliases_and_tags(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("alias", help="named, movable pointers such as production or champion")
    alias_sub = p.add_subparsers(dest="alias_command", metavar="set|rm", required=True)
    s = alias_sub.add_parser("set", help="point ALIAS at NAME@VERSION (moves it atomically)")
    s.add_argument("ref", metavar="NAME@VERSION")
    s.add_argument("alias")
    add_json_flag(s)
    s.set_defaults(func=cmd_alias_set)
    r = alias_sub.add_parser("rm", help="remove ALIAS of NAME")
    r.add_argument("ref", metavar="NAME[@VERSION]")
    r.add_argument("alias")
    add_json_flag(r)
    r.set_defaults(func=cmd_alias_rm)

    p = sub.add_parser("tag", help="set (k=v) or remove (--remove k) tags of a model version")
    p.add_argument("ref")
    p.add_argument("tags", nargs="*", metavar="K=V")
    p.add_argument("--remove", action="append", metavar="K", default=[])
    add_json_flag(p)
    p.set_defaults(func=cmd_tag)


def _add_downloads(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("download", help="download a model's artifact (hash-verified)")
    p.add_argument("ref")
    p.add_argument("-o", "--output", default=".", help="file or folder (default: current folder)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("bundle", help="deployment bundle: model + manifest (requirements, benchmark, validation)")
    p.add_argument("ref")
    p.add_argument("-o", "--output", required=True, help="bundle file (.tar.gz)")
    p.set_defaults(func=cmd_bundle)


def cmd_register(args: argparse.Namespace) -> int:
    metadata = parse_pairs(args.meta, "--meta", typed=True)
    tags = parse_pairs(args.tag, "--tag")
    source: str | Path = args.path if "://" in args.path else Path(args.path)
    if isinstance(source, Path) and not source.is_file():
        raise InferlabError(f"no such file: {source}")
    input_specs = parse_input_specs(args.shape, args.shapes, args.range)

    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            size = source.stat().st_size if isinstance(source, Path) else None
            with transfer_progress(f"uploading {getattr(source, 'name', source)}", size, enabled=not args.json) as adv:
                return await client.register(
                    source,
                    name=args.name,
                    version=args.version,
                    task=args.task,
                    metadata=metadata,
                    dataset=args.dataset,
                    tags=tags,
                    parent=args.parent,
                    variant=args.variant,
                    wait=args.wait or args.until is not None,
                    timeout=args.timeout,
                    progress=adv,
                    input_specs=input_specs,
                    sample=args.sample,
                )

    try:
        result = run(go)
    except Rejected as exc:
        return command_refused(args.json, "rejected", "rejected", exc.code, exc.message)
    if isinstance(result, str):
        return command_queued(
            args.json, result, f"registration of {args.name}@{args.version}", "follow with `inferlab events model.>`"
        )
    if args.until == "ready":
        return _until_ready(args, result)
    if args.json:
        emit_json({"status": "registered", "record": result})
    else:
        console.print(
            f"[bold green]registered[/] {result.ref}  sha256 {result.sha256[:16]}…  {human_bytes(result.size_bytes)}",
            highlight=False,
        )
        if result.input_status == INPUTS_NEED_SPEC:
            console.print(f"[bold yellow]needs_input_spec[/] {result.input_message}", highlight=False)
        elif result.resolved_inputs:
            console.print(f"inputs {format_resolved(result)}", highlight=False)
    return 0


def _until_ready(args: argparse.Namespace, record: ModelRecord) -> int:
    """Follow the registered version to its verdict; progress lines on stderr (so a pipe still
    shows something), the verdict table on stdout; exit 0 only when the base is READY."""
    if not args.json:
        console.print(f"[bold green]registered[/] {record.ref}; waiting for its verdict…", highlight=False)

    def progress(row: ChainRow) -> None:
        err_console.print(f"  {row.ref}: {row.verdict if row.done else row.stage}", highlight=False)

    async def go() -> ChainResult:
        async with await Client.connect(settings_from(args)) as client:
            return await client.wait_for_verdict(record.ref, timeout=args.timeout, on_update=progress)

    result = run(go)
    if args.json:
        emit_json({"status": result.verdict if result.complete else "timeout", "record": record, "chain": result})
    else:
        table(
            f"verdict of {result.ref}",
            ["ref", "variant", "stage", "verdict", "accuracy", "p99 ms", "detail"],
            [
                [
                    r.ref,
                    r.variant,
                    r.stage,
                    _VERDICT_WORDS.get(r.verdict, r.verdict),
                    "" if r.accuracy is None else f"{r.accuracy:.4f}",
                    fmt_ms(r.p99_ms),
                    escape(r.detail),
                ]
                for r in result.rows
            ],
        )
        if not result.complete:
            waiting = [r.ref for r in result.rows if not r.done]
            console.print(
                f"[bold red]timed out[/] after {args.timeout:g} s still waiting for "
                f"{', '.join(waiting) or 'conversion outcomes'}",
                highlight=False,
            )
        else:
            words = _VERDICT_WORDS.get(result.verdict, result.verdict)
            console.print(f"{result.ref}: [bold]{words}[/]", highlight=False)
    return 0 if result.ready and result.complete else 1


_VERDICT_WORDS = {
    "ready": "READY",
    "not_ready": "NOT READY",
    "not_validated_for_accuracy": "NOT VALIDATED FOR ACCURACY",
    "waiting": "waiting",
}


def format_resolved(r: ModelRecord) -> str:
    """``x [N=1, 3, 224, 224] float32 (search)``, one per input, as every step feeds them."""
    parts = []
    for i in r.resolved_inputs:
        dims = [f"N={d}" if axis == i.batch_axis else str(d) for axis, d in enumerate(i.shape)]
        values = ""
        if i.low is not None or i.high is not None:
            values = f" values {i.low:g}..{i.high:g}" if i.low is not None and i.high is not None else ""
        parts.append(f"{i.name} [{', '.join(dims)}] {i.dtype}{values} ({i.source})")
    return "; ".join(parts)


def _parse_group(text: str) -> ListModels:
    fields: dict[str, Any] = {"tags": []}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = part.partition("=")
        if not eq:
            raise InferlabError(f"--or group entry {part!r} must look like key=value")
        if key == "tag":
            fields["tags"].append(value)
        elif key in ("name", "task", "variant", "alias"):
            fields[key] = value
        else:
            raise InferlabError(f"--or group key {key!r} must be one of name, task, variant, alias, tag")
    return ListModels(**fields)


def cmd_models(args: argparse.Namespace) -> int:
    filters = ListModels(
        name=args.name,
        task=args.task,
        variant=args.variant,
        alias=args.alias,
        tags=args.tag or [],
        any_of=[_parse_group(g) for g in args.any_of or []],
        limit=args.limit,
        include_archived=args.archived,
    )

    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            return await client.list(filters)

    result = run(go)
    if args.json:
        emit_json(result)
        return 0
    rows = [_model_row(v) for v in result.models]
    table(
        None,
        ["ref", "task", "size", "params", "aliases", "p99 ms", "accuracy", "registered"],
        rows,
        caption=f"{len(rows)} of {result.total} models",
    )
    return 0


def _model_row(view: ModelView) -> list[Any]:
    r, s = view.record, view.signals
    return [
        r.ref,
        r.task or "",
        human_bytes(r.size_bytes),
        f"{r.parameter_count:,}",
        # name@alias resolves to the base of the version only: showing it on the variants' rows
        # would read as if it pointed at each of them
        ",".join(view.aliases) if r.variant == BASE_VARIANT else "",
        fmt_ms(s.p99_ms if s else None),
        "" if not s or s.accuracy is None else f"{s.accuracy:.4f}",
        when(r.created_at) + (" (archived)" if r.archived_at else ""),
    ]


def cmd_show(args: argparse.Namespace) -> int:
    async def go() -> ModelView:
        async with await Client.connect(settings_from(args)) as client:
            return await client.get(args.ref)

    view = run(go)
    if args.json:
        emit_json(view)
        return 0
    render_record(view)
    return 0


def render_record(view: ModelView) -> None:
    r: ModelRecord = view.record
    rows = [
        ("ref", r.ref),
        ("sha256", r.sha256),
        ("size", human_bytes(r.size_bytes)),
        ("parameters", f"{r.parameter_count:,}"),
        ("task", r.task or ""),
        ("framework", " ".join(filter(None, [r.framework, r.framework_version]))),
        ("opset", ", ".join(f"{k} {v}" for k, v in r.opset.items())),
        ("ir_version", r.ir_version),
        ("aliases", ", ".join(view.aliases)),
        ("parent", r.parent or ""),
        ("dataset", r.dataset_uri or ""),
        ("sample", r.sample_uri or ""),
        ("inputs", r.input_message if r.input_status == INPUTS_NEED_SPEC else format_resolved(r)),
        ("artifact", r.artifact_uri),
        ("source", r.source_uri),
        ("registered", when(r.created_at)),
        ("tags", ", ".join(f"{k}={v}" for k, v in r.tags.items())),
    ]
    # onnx.checker's findings on a model registered because ONNX Runtime loads it
    rows += [("warning", w) for w in r.warnings]
    table(r.ref, ["field", "value"], rows)
    io_rows = [("input", s.name, s.dtype, s.shape) for s in r.inputs] + [
        ("output", s.name, s.dtype, s.shape) for s in r.outputs
    ]
    table("inputs and outputs", ["kind", "name", "dtype", "shape"], io_rows)
    if view.signals:
        s = view.signals
        table(
            "latest figures",
            ["p50 ms", "p99 ms", "throughput/s", "peak memory", "accuracy", "ready"],
            [
                [
                    fmt_ms(s.p50_ms),
                    fmt_ms(s.p99_ms),
                    "" if s.throughput_ips is None else f"{s.throughput_ips:.1f}",
                    human_bytes(s.peak_memory_bytes),
                    "" if s.accuracy is None else f"{s.accuracy:.4f}",
                    "" if s.ready is None else ("yes" if s.ready else "no"),
                ]
            ],
        )
    if r.metadata:
        console.print_json(json.dumps(r.metadata, default=str))


def cmd_find(args: argparse.Namespace) -> int:
    req = FindModels(
        name=args.name,
        task=args.task,
        max_p99_ms=args.max_p99_ms,
        min_accuracy=args.min_accuracy,
        min_throughput_ips=args.min_throughput,
        max_size_bytes=args.max_size,
        require_ready=args.ready,
        limit=args.limit,
    )

    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            return await client.find(req)

    ranked = run(go)
    if args.json:
        emit_json(ranked)
        return 0
    table(
        "ranked candidates",
        ["#", "ref", "score", "why"],
        [[i + 1, r.view.record.ref, f"{r.score:.3f}", r.why] for i, r in enumerate(ranked)],
    )
    return 0


def cmd_alias_set(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            return await client.set_alias(args.ref, args.alias)

    change = run(go)
    if args.json:
        emit_json(change)
    else:
        moved = f" (was {change.previous})" if change.previous and change.previous != change.version else ""
        console.print(f"{change.name}@{change.alias} -> {change.version}{moved}", highlight=False)
    return 0


def cmd_alias_rm(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            return await client.remove_alias(args.ref, args.alias)

    change = run(go)
    if args.json:
        emit_json(change)
    else:
        console.print(f"removed {change.name}@{change.alias} (pointed at {change.previous})", highlight=False)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    tags = parse_pairs(args.tags, "tag")
    if not tags and not args.remove:
        raise InferlabError("give tags as key=value, or --remove key")

    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            return await client.set_tags(args.ref, tags, args.remove)

    view = run(go)
    if args.json:
        emit_json(view)
    else:
        console.print(
            f"{view.record.ref} tags: " + ", ".join(f"{k}={v}" for k, v in view.record.tags.items()), highlight=False
        )
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    async def go() -> Path:
        async with await Client.connect(settings_from(args)) as client:
            resolved = await client.resolve(args.ref)
            with transfer_progress(f"downloading {resolved.ref}", resolved.size_bytes) as adv:
                return await client.download(args.ref, args.output, progress=adv)

    path = run(go)
    console.print(f"saved {path}", highlight=False)
    return 0


def cmd_bundle(args: argparse.Namespace) -> int:
    async def go() -> Path:
        async with await Client.connect(settings_from(args)) as client:
            return await client.bundle(args.ref, args.output)

    path = run(go)
    console.print(f"bundle written to {path}", highlight=False)
    return 0
