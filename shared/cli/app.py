"""The ``inferlab`` command: argument parsing, one-line errors, and the async runner.

Each command group lives in its own module exposing ``add_commands(subparsers)``; a command
is a function ``(args) -> int | None`` registered with ``set_defaults(func=...)``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from shared import __version__
from shared.config import Settings, SettingsError
from shared.errors import InferlabError

T = TypeVar("T")

# Command groups, in the order `inferlab --help` lists them. A module that is absent (a service
# not built yet) is skipped.
COMMAND_MODULES = (
    "shared.cli.system",
    "shared.cli.registry",
    "shared.cli.lifecycle",
    "shared.cli.streams",
    "shared.cli.convert",
    "shared.cli.bench",
    "shared.cli.validate",
    "shared.cli.serving",
)


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    if getattr(args, "nats_url", None):
        settings = settings.with_overrides(nats_url=args.nats_url)
    return settings


def run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(_run(coro_factory))


async def _run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    return await coro_factory()


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inferlab",
        description="inferlab: register, convert, benchmark, validate and watch ONNX models over NATS.",
    )
    parser.add_argument("--version", action="version", version=f"inferlab {__version__}")
    parser.add_argument("--nats-url", help="NATS URL (default: $INFERLAB_NATS_URL or nats://127.0.0.1:4222)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from shared.log import configure

    configure("cli", os.environ.get("INFERLAB_CLI_LOG_LEVEL", "error"), "console")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = args.func(args)
    except InferlabError as exc:
        _fail(exc.message)
        return 1
    except SettingsError as exc:
        _fail(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `inferlab events | head`: the reader went away; not an error for the user.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(code or 0)


def _fail(message: str) -> None:
    from rich.markup import escape

    from shared.cli.output import err_console

    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def require(value: Any, message: str) -> Any:
    if value is None:
        raise InferlabError(message)
    return value
