"""Following the streams: ``inferlab events [SUBJECT] --follow`` and ``inferlab alerts``."""

from __future__ import annotations

import argparse
from typing import Any

from rich.markup import escape

from shared.cli.app import run, settings_from
from shared.cli.output import console, emit_json_line
from shared.sdk import Client, StreamEvent


def add_commands(sub: argparse._SubParsersAction) -> None:
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


def cmd_events(args: argparse.Namespace) -> int:
    async def go() -> None:
        async with await Client.connect(settings_from(args)) as client:
            # Without --follow: print what is stored now, then stop (the idle timeout is only a
            # safety net when the server stops answering).
            idle = None if args.follow else 30.0
            async for event in client.events(
                args.subject, replay=not args.new, idle_timeout=idle, stored_only=not args.follow
            ):
                if args.json:
                    emit_json_line({"subject": event.subject, "data": event.data, "error": event.error})
                    continue
                stamp = ""
                if isinstance(event.data, dict) and event.data.get("occurred_at"):
                    stamp = str(event.data["occurred_at"])[11:19]
                console.print(
                    f"[dim]{stamp}[/] [cyan]{escape(event.subject)}[/] {escape(summary(event))}",
                    highlight=False,
                    soft_wrap=True,
                )

    try:
        run(go)
    except KeyboardInterrupt:
        pass
    return 0
