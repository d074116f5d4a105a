"""Following the streams: ``inferlab events [SUBJECT] --follow`` and ``inferlab alerts``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
from typing import Any

from rich.markup import escape

from shared.cli.app import run, settings_from
from shared.cli.output import console, emit_json_line
from shared.errors import InferlabError
from shared.sdk import Client, StreamEvent


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("events", help="show stored events, and with --follow new ones as they come")
    p.add_argument("subject", nargs="?", default="model.>", help="subject filter (default model.>)")
    _stream_flags(p)
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("alerts", help="show alerts (regression, anomaly, validation, conversion, dead letters)")
    p.add_argument("subject", nargs="?", default="alerts.>", help="subject filter (default alerts.>)")
    _stream_flags(p)
    p.set_defaults(func=cmd_events)


def _stream_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--follow", "-f", action="store_true", help="keep waiting for new messages")
    p.add_argument(
        "--lost-after",
        type=float,
        default=10.0,
        metavar="S",
        help="with --follow: exit 1 when NATS has been unreachable this many seconds (default 10)",
    )
    p.add_argument("--new", action="store_true", help="skip stored messages; only new ones")
    p.add_argument("--json", action="store_true", help="one JSON object per line (subject and payload)")


def summary(event: StreamEvent) -> str:
    """One readable line for any event."""
    data: Any = event.data if isinstance(event.data, dict) else {}
    if event.error and event.message is None and not data:
        return f"(undecodable: {event.error})"
    if "summary" in data:
        state = f"[{data['state']}] " if data.get("state") else ""
        return f"{data.get('severity', '').upper()} {state}{data['summary']}"
    ref = data.get("ref") or _ref_of(data)
    parts = [ref] if ref else []
    for key in ("reason", "profile", "variant_ref", "ready", "alias", "version_to"):
        if key in data and data[key] not in (None, "") and key != "version":
            parts.append(f"{key}={data[key]}")
    if "message" in data:
        parts.append(str(data["message"])[:160])
    if event.error:
        parts.append(f"(does not match its contract: {event.error[:120]})")
    return " ".join(str(p) for p in parts)


def _ref_of(data: dict[str, Any]) -> str:
    name, version = data.get("name"), data.get("version")
    if not name:
        return ""
    variant = data.get("variant") or "base"
    text = f"{name}@{version}" if version else str(name)
    return text if variant == "base" else f"{text}+{variant}"


class ConnectionLost(InferlabError):
    """``--follow`` lost NATS for longer than ``--lost-after``: nothing more can arrive."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="connection_lost")


async def watch_connection(client: Client, lost_after: float, interval: float = 0.25) -> None:
    """Return (raise) once the connection has been down ``lost_after`` seconds in a row: a
    follower that keeps waiting on a stopped platform looks exactly like a quiet one."""
    nc = client.bus.nc
    down_since: float | None = None
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(interval)
        if nc.is_connected:
            down_since = None
            continue
        down_since = down_since if down_since is not None else loop.time()
        if nc.is_closed or loop.time() - down_since >= lost_after:
            url = re.sub(r"//[^@/]*@", "//", client.settings.nats_url)  # never print credentials
            raise ConnectionLost(
                f"lost the connection to NATS at {url} for {lost_after:g} s (platform stopped?); "
                "no more messages can arrive"
            )


async def _any_stored(client: Client, subject: str) -> bool:
    async for _ in client.events(subject, replay=True, stored_only=True, idle_timeout=30.0):
        return True
    return False


def cmd_events(args: argparse.Namespace) -> int:
    what = "alerts" if args.subject.startswith("alerts.") else "events"

    def show(event: StreamEvent) -> None:
        if args.json:
            emit_json_line({"subject": event.subject, "data": event.data, "error": event.error})
            return
        stamp = ""
        if isinstance(event.data, dict) and event.data.get("occurred_at"):
            stamp = str(event.data["occurred_at"])[11:19]
        console.print(
            f"[dim]{stamp}[/] [cyan]{escape(event.subject)}[/] {escape(summary(event))}",
            highlight=False,
            soft_wrap=True,
        )

    async def read(client: Client) -> None:
        # Without --follow: print what is stored now, then stop (the idle timeout is only a
        # safety net when the server stops answering).
        idle = None if args.follow else 30.0
        shown = 0
        async for event in client.events(
            args.subject, replay=not args.new, idle_timeout=idle, stored_only=not args.follow
        ):
            shown += 1
            show(event)
        if not shown and not args.json:
            console.print(f"no {what} stored on {escape(args.subject)}", highlight=False)

    async def go() -> None:
        async with await Client.connect(settings_from(args)) as client:
            if not args.follow:
                await read(client)
                return
            if not args.json:
                none = args.new or not await _any_stored(client, args.subject)
                head = f"no {what} stored on {escape(args.subject)}; " if none and not args.new else ""
                console.print(f"{head}waiting for new {what} (Ctrl-C to stop)", highlight=False)
            watcher = asyncio.create_task(watch_connection(client, args.lost_after))
            reader = asyncio.create_task(read(client))
            done, pending = await asyncio.wait({watcher, reader}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for task in done:
                task.result()  # ConnectionLost, or the reader's own error

    try:
        run(go)
    except KeyboardInterrupt:
        pass
    return 0
