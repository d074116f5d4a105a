"""Platform commands: up (optionally seeding the demo), demo, status, schema, config."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from shared import demo
from shared.asyncapi import asyncapi_yaml
from shared.cli.app import add_json_flag, run, settings_from
from shared.cli.output import console, emit_json, table
from shared.config import Settings, describe, redacted
from shared.contracts.catalogue import CATALOGUE, all_schemas, json_schema
from shared.errors import InferlabError
from shared.sdk import Client
from shared.supervisor import SERVICES, Supervisor, available_services


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("up", help="run the platform: embedded NATS (when needed) and every service, supervised")
    p.add_argument("--services", help=f"comma-separated subset of {','.join(SERVICES)}")
    p.add_argument(
        "--demo",
        action="store_true",
        help="on an empty platform, train and register the demo models and follow them through the chain",
    )
    _demo_flags(p)
    p.set_defaults(func=cmd_up)

    p = sub.add_parser(
        "demo",
        help="train the demo models, register them with a running platform and follow them through the chain",
        description=(
            "Trains an MLP (scikit-learn) and, with PyTorch installed, a small CNN on scikit-learn's bundled "
            "digits, registers each with its labelled test set, and prints each step (registered, converted, "
            "benchmarked, validated) and a summary. Models already registered are not registered again: their "
            "stored events are replayed. Exit status 1 when a step did not finish within --demo-timeout."
        ),
    )
    _demo_flags(p)
    p.add_argument(
        "--files-only",
        action="store_true",
        help="only write the models and their datasets (into --dir, default ./) and exit; no platform needed",
    )
    p.add_argument("--dir", help="where to write the demo models and datasets (default: $INFERLAB_HOME/demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("status", help="running services, discovered through $SRV.INFO / $SRV.STATS")
    p.add_argument("--service", help="only this service; exit 1 when no instance answers (healthchecks)")
    p.add_argument(
        "--timeout",
        type=float,
        default=0.75,
        help="most seconds to wait for answers (it returns once every service answered)",
    )
    add_json_flag(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("schema", help="JSON Schema of every message (or of one subject)")
    p.add_argument("subject", nargs="?", help="e.g. model.register")
    p.add_argument("--out", help="write one <subject>.json file per message into this folder")
    p.add_argument("--asyncapi", action="store_true", help="print the AsyncAPI 3 document of every subject (YAML)")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("config", help="settings in effect (environment variables INFERLAB_*)")
    add_json_flag(p)
    p.set_defaults(func=cmd_config)


def _demo_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--demo-models",
        metavar="KINDS",
        help="comma-separated demo models: mlp, cnn (default: both where PyTorch is installed, else mlp)",
    )
    p.add_argument(
        "--demo-timeout",
        type=float,
        default=demo.DEFAULT_TIMEOUT_S,
        metavar="S",
        help="seconds to wait for the demo chain to finish",
    )


def cmd_up(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    services = available_services()
    if args.services:
        wanted = [s.strip() for s in args.services.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in SERVICES]
        if unknown:
            raise InferlabError(f"unknown services {unknown}; choose from {', '.join(SERVICES)}")
        missing = [s for s in wanted if s not in services]
        if missing:
            raise InferlabError(f"services not installed here: {missing}")
        services = wanted
    kinds = demo.parse_kinds(args.demo_models) if args.demo else []
    supervisor = Supervisor(
        settings,
        services=services,
        notify=lambda line: console.print(f"[bold]inferlab[/] {line}", highlight=False),
        extra_import_roots=[Path.cwd()],
    )

    async def main() -> None:
        up = asyncio.Event()

        def ready() -> None:
            console.print(
                f"[bold]inferlab[/] up: {', '.join(services) or 'no services'} on {settings.nats_url}. "
                "Ctrl-C stops everything.",
                highlight=False,
            )
            up.set()

        platform = asyncio.create_task(supervisor.run(ready=ready))
        seeding = None
        if args.demo:
            seeding = asyncio.create_task(_demo_when_up(settings, services, kinds, up, args.demo_timeout))
        try:
            await platform
        finally:
            if seeding is not None and not seeding.done():
                seeding.cancel()
                await asyncio.wait({seeding}, timeout=5.0)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return 0


def _say(line: str) -> None:
    console.print(f"[bold cyan]demo[/] {escape(line)}", highlight=False, soft_wrap=True)


async def _wait_for_services(client: Client, services: list[str], timeout: float) -> list[str]:
    """Poll micro discovery until every service answers; returns those that never did."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    missing = list(services)
    while missing and loop.time() < deadline:
        found = {s.name for s in await client.status(timeout=0.5)}
        missing = [s for s in services if s not in found]
    return missing


async def _demo_when_up(
    settings: Settings, services: list[str], kinds: list[str], up: asyncio.Event, timeout: float
) -> None:
    """``inferlab up --demo``: once every service answers, seed the demo if the platform holds
    no model yet (a fresh data dir); a failing demo never stops the platform."""
    await up.wait()
    absent = [s for s in SERVICES if s not in services]
    if absent:
        _say(f"skipped: the demo follows a model through every service, and {', '.join(absent)} is not started")
        return
    try:
        async with await Client.connect(settings, name="inferlab-demo") as client:
            missing = await _wait_for_services(client, services, timeout=120.0)
            if missing:
                _say(f"skipped: {', '.join(missing)} did not answer within 120 s (see {settings.home_path / 'logs'})")
                return
            listed = await client.list(limit=1)
            if listed.models:
                _say(
                    "skipped: the platform already holds models (the demo seeds an empty one); "
                    "`inferlab demo` adds it anyway"
                )
                return
            await _seed(client, settings.home_path / "demo", kinds, timeout)
    except asyncio.CancelledError:
        raise
    except InferlabError as exc:
        _say(f"stopped: {exc.message} (the platform keeps running)")
    except Exception as exc:  # the demo is a guest: whatever breaks it must not take the platform down
        _say(f"stopped by an unexpected error: {type(exc).__name__}: {exc} (the platform keeps running)")


async def _seed(client: Client, folder: Path, kinds: list[str], timeout: float) -> demo.Tracker:
    started = time.monotonic()
    _say(f"training {', '.join(kinds)} on scikit-learn's digits (files in {folder})")
    models = await asyncio.to_thread(demo.build_models, folder, kinds)
    tracker = await demo.run_demo(client, models, say=_say, timeout=timeout)
    table("demo summary", demo.SUMMARY_COLUMNS, demo.summary_rows(tracker))
    took = time.monotonic() - started
    first = models[0].ref if models else "NAME@VERSION"
    _say(f"{'finished' if tracker.done() else 'incomplete'} in {took:.0f} s. Next:")
    for line in (
        f"inferlab report {first} --html {first.split('@')[0]}.html   # one page of plots: latency, trend, "
        "parity, robustness, fairness, readiness",
        'inferlab models  ·  inferlab alerts  ·  inferlab sql "SELECT ref, p50_ms, p99_ms FROM latest_runs"',
        "inferlab register model.onnx --name NAME --version 1.0.0 --dataset test.npz --wait   # your own model",
    ):
        console.print(f"     {escape(line)}", highlight=False, soft_wrap=True)
    return tracker


def cmd_demo(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    kinds = demo.parse_kinds(args.demo_models)
    if args.files_only:
        folder = Path(args.dir or ".")
        for model in demo.build_models(folder, kinds):
            console.print(
                f"wrote {model.model_path} and {model.dataset_path}  ({model.description}; holdout accuracy "
                f"{model.holdout_accuracy:.4f})",
                highlight=False,
                soft_wrap=True,
            )
        return 0
    folder = Path(args.dir) if args.dir else settings.home_path / "demo"

    async def go() -> demo.Tracker:
        async with await Client.connect(settings, name="inferlab-demo") as client:
            return await _seed(client, folder, kinds, args.demo_timeout)

    tracker = run(go)
    return 0 if tracker.done() else 1


def cmd_status(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            expect = [args.service] if args.service else available_services()
            return await client.status(args.service, timeout=args.timeout, expect=expect)

    found = run(go)
    if args.json:
        emit_json(found)
    else:
        rows = []
        for s in found:
            endpoints = (s.stats or {}).get("endpoints") or []
            requests = sum(endpoint.get("num_requests", 0) for endpoint in endpoints)
            errors = sum(endpoint.get("num_errors", 0) for endpoint in endpoints)
            started = (s.stats or {}).get("started", "")
            rows.append([s.name, s.id, s.version, len(s.endpoints), requests, errors, str(started)[:19]])
        table("services", ["service", "instance", "version", "endpoints n", "requests n", "errors n", "started"], rows)
        expected = set(available_services())
        absent = sorted(expected - {s.name for s in found})
        if absent and not args.service:
            console.print(f"not running: {', '.join(absent)}", highlight=False)
    if args.service and not any(s.name == args.service for s in found):
        if not args.json:
            console.print(f"no instance of {args.service} answered", highlight=False)
        return 1
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    if args.asyncapi:
        sys.stdout.write(asyncapi_yaml())
        return 0
    if args.subject:
        spec = next(
            (s for s in CATALOGUE if s.subject == args.subject or s.subject.startswith(args.subject + ".<")), None
        )
        if spec is None:
            raise InferlabError(f"no message on subject {args.subject!r}; try `inferlab schema` for all")
        schemas = {spec.subject: json_schema(spec)}
    else:
        schemas = all_schemas()
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        for subject, schema in schemas.items():
            name = subject.replace("<", "").replace(">", "")
            (folder / f"{name}.json").write_text(json.dumps(schema, indent=2) + "\n")
        console.print(f"wrote {len(schemas)} schemas to {folder}", highlight=False)
        return 0
    emit_json(schemas if not args.subject else next(iter(schemas.values())))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.json:
        emit_json(redacted(settings))
        return 0
    current = redacted(settings)
    rows = []
    for env, default, doc in describe():
        key = env.removeprefix("INFERLAB_").lower()
        value = current.get(key)
        if isinstance(value, list | tuple):
            value = ",".join(map(str, value))
        rows.append([env, "" if value is None else str(value), default, doc])
    table("settings", ["variable", "value", "default", "meaning"], rows)
    return 0
