"""Platform commands: up, status, schema, config."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from shared.cli.app import add_json_flag, run, settings_from
from shared.cli.output import console, emit_json, table
from shared.config import describe, redacted
from shared.contracts.catalogue import CATALOGUE, all_schemas, json_schema
from shared.errors import InferlabError
from shared.sdk import Client
from shared.supervisor import SERVICES, Supervisor, available_services


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run the platform: embedded NATS (when needed) and every service, supervised")
    p.add_argument("--services", help=f"comma-separated subset of {','.join(SERVICES)}")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("status", help="running services, discovered through $SRV.INFO / $SRV.STATS")
    p.add_argument("--service", help="only this service; exit 1 when no instance answers (healthchecks)")
    p.add_argument("--timeout", type=float, default=0.75, help="seconds to wait for answers")
    add_json_flag(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("schema", help="JSON Schema of every message (or of one subject)")
    p.add_argument("subject", nargs="?", help="e.g. model.register")
    p.add_argument("--out", help="write one <subject>.json file per message into this folder")
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("config", help="settings in effect (environment variables INFERLAB_*)")
    add_json_flag(p)
    p.set_defaults(func=cmd_config)


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
    supervisor = Supervisor(
        settings,
        services=services,
        notify=lambda line: console.print(f"[bold]inferlab[/] {line}", highlight=False),
        extra_import_roots=[Path.cwd()],
    )

    def ready() -> None:
        console.print(
            f"[bold]inferlab[/] up: {', '.join(services) or 'no services'} on {settings.nats_url}. "
            "Ctrl-C stops everything.",
            highlight=False,
        )

    try:
        asyncio.run(supervisor.run(ready=ready))
    except KeyboardInterrupt:
        pass
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            return await client.status(args.service, timeout=args.timeout)

    found = run(go)
    if args.json:
        emit_json(found)
    else:
        rows = []
        for s in found:
            endpoints = (s.stats or {}).get("endpoints") or []
            requests = sum(e.get("num_requests", 0) for e in endpoints)
            errors = sum(e.get("num_errors", 0) for e in endpoints)
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
