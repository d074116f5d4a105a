"""Production: ``inferlab serve REF`` (the reference inference server) and ``inferlab
telemetry send REF MS...`` (latencies from a user's own server, without NATS code)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from rich.markup import escape

from shared.cli.app import add_json_flag, run, settings_from
from shared.cli.output import console, emit_json, err_console
from shared.errors import InferlabError
from shared.sdk import Client
from shared.telemetry import InvalidLatency, check_sample


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="serve a registered model over HTTP, reporting its latencies as telemetry")
    p.add_argument("ref", help="model reference; an alias (NAME@production) or a bare NAME is followed")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--max-batch", type=int, default=32, help="rows run together at most (default 32)")
    p.add_argument(
        "--max-delay-ms", type=float, default=2.0, help="wait at most this long for a batch to fill (default 2)"
    )
    p.add_argument("--threads", type=int, help="ONNX Runtime intra-op threads (default: the model's setting)")
    p.add_argument("--no-telemetry", action="store_true", help="do not publish latencies")
    p.add_argument(
        "--telemetry-interval", type=float, default=5.0, metavar="S", help="publish latencies every S s (default 5)"
    )
    p.add_argument(
        "--follow-interval", type=float, default=5.0, metavar="S", help="check a followed alias every S s (default 5)"
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("telemetry", help="production latencies from your own servers")
    tsub = p.add_subparsers(dest="telemetry_command", metavar="COMMAND", required=True)
    s = tsub.add_parser("send", help="send latencies (ms) of a registered model to the benchmarker's monitor")
    s.add_argument("ref", help="model reference (unknown models are refused)")
    s.add_argument("latencies", nargs="*", type=float, metavar="MS", help="latencies in milliseconds, measured now")
    s.add_argument(
        "--file",
        help="read latencies from a file ('-': stdin), one a line: MS, or UNIX_SECONDS,MS",
    )
    s.add_argument("--host", default="", help="the host the latencies come from (default: this host's name)")
    add_json_flag(s)
    s.set_defaults(func=cmd_telemetry_send)


def read_samples(lines: list[str], now: float) -> tuple[list[float], list[float]]:
    """(timestamps, latencies) of ``MS`` or ``UNIX_SECONDS,MS`` lines; blank and ``#`` lines
    are skipped. InvalidLatency names the line."""
    stamps: list[float] = []
    values: list[float] = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        parts = [p.strip() for p in text.split(",")]
        try:
            if len(parts) == 1:
                ts, lat = check_sample(float(parts[0]), now)
            elif len(parts) == 2:
                ts, lat = check_sample(float(parts[1]), float(parts[0]))
            else:
                raise InvalidLatency("expected MS or UNIX_SECONDS,MS")
        except (ValueError, InvalidLatency) as exc:
            raise InvalidLatency(f"line {number} ({text[:60]!r}): {exc}") from None
        stamps.append(ts)
        values.append(lat)
    return stamps, values


def cmd_telemetry_send(args: argparse.Namespace) -> int:
    import time

    now = time.time()
    stamps, values = [now] * len(args.latencies), list(args.latencies)
    if args.file:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).expanduser().read_text()
        more_stamps, more_values = read_samples(text.splitlines(), now)
        stamps, values = stamps + more_stamps, values + more_values
    if not values:
        raise InferlabError("no latencies given: pass MS values or --file")

    async def go() -> tuple[str, int, int]:
        async with await Client.connect(settings_from(args)) as client:
            reporter = await client.reporter(args.ref, host=args.host)
            reporter.record_many(values, stamps)
            await reporter.close()
            return reporter.key.ref, reporter.sent, reporter.batches_sent

    ref, sent, batches = run(go)
    if args.json:
        emit_json({"ref": ref, "sent": sent, "batches": batches})
    else:
        console.print(f"sent {sent} latencies of {escape(ref)} in {batches} batch(es)", highlight=False)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from shared.serving.server import InferenceServer, ServeOptions

    options = ServeOptions(
        ref=args.ref,
        host=args.host,
        port=args.port,
        max_batch=args.max_batch,
        max_delay_ms=args.max_delay_ms,
        intra_op_threads=args.threads,
        telemetry=not args.no_telemetry,
        telemetry_interval_s=args.telemetry_interval,
        follow_interval_s=args.follow_interval,
    )

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with await Client.connect(settings_from(args), name="inferlab-serve") as client:
            server = await InferenceServer(client, options).start()
            following = " (following it)" if server.follows else ""
            model = server.model
            assert model is not None
            err_console.print(
                f"serving {escape(model.ref)} for {escape(args.ref)}{following} on {server.url}: "
                "POST /v1/infer, GET /v1/model, /healthz, /readyz (Ctrl-C to stop)",
                highlight=False,
                soft_wrap=True,
            )
            try:
                await stop.wait()
            finally:
                await server.stop()

    run(go)
    return 0
