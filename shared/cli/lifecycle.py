"""Lifecycle commands: archive and delete a version (operators: needs a NATS user allowed to
publish ``model.archive`` / ``model.delete``, admin in the shipped config)."""

from __future__ import annotations

import argparse
from typing import Any

from shared.cli.app import add_json_flag, run, settings_from
from shared.cli.output import console, emit_json
from shared.sdk import Client


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "archive",
        help="archive NAME@VERSION and its variants: kept (artifacts, history, exact refs) but out of "
        "`models` and `find`",
    )
    p.add_argument("ref", help="an exact version, e.g. digits@1.0.0 (not an alias; refused while one points at it)")
    add_json_flag(p)
    p.set_defaults(func=cmd_archive)

    p = sub.add_parser(
        "delete",
        help="delete NAME@VERSION, its variants and the stored objects no other version uses "
        "(the benchmark history is kept unless --purge-history)",
    )
    p.add_argument("ref", help="an exact version, e.g. digits@1.0.0 (refused while an alias points at it)")
    p.add_argument("--purge-history", action="store_true", help="also delete its rows from the benchmark history")
    add_json_flag(p)
    p.set_defaults(func=cmd_delete)


def cmd_archive(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            return await client.archive(args.ref)

    fact = run(go)
    if args.json:
        emit_json(fact)
    else:
        console.print(f"archived {fact.name}@{fact.version} ({', '.join(fact.variants)})", highlight=False)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with await Client.connect(settings_from(args)) as client:
            return await client.delete(args.ref, purge_history=args.purge_history)

    fact = run(go)
    if args.json:
        emit_json(fact)
        return 0
    kept = f", {len(fact.objects_kept)} kept (used by other versions)" if fact.objects_kept else ""
    history = "history purged" if fact.purge_history else "history kept"
    console.print(
        f"deleted {fact.name}@{fact.version} ({', '.join(fact.variants)}): "
        f"{len(fact.objects_deleted)} stored object(s) deleted{kept}; {history}",
        highlight=False,
    )
    return 0
