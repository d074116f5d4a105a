"""Request/reply endpoints through the NATS micro services API (``$SRV.PING``, ``$SRV.INFO``,
``$SRV.STATS`` discovery for free). Bodies are msgspec Structs; errors are sent as the micro
error headers plus an ``ErrorReply`` body carrying our precise error code."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service

from shared import __version__
from shared.bus import ERROR_CODE_HEADER, Bus, decode_plain
from shared.contracts.base import encode
from shared.contracts.registry import ErrorReply
from shared.errors import InferlabError, NotFound
from shared.log import get_logger


@dataclass(frozen=True)
class Endpoint:
    name: str
    subject: str
    request: type[msgspec.Struct]
    handler: Callable[[Any], Awaitable[msgspec.Struct]]
    summary: str = ""


def _status_for(exc: InferlabError) -> str:
    return "404" if isinstance(exc, NotFound) else "400"


async def serve(bus: Bus, *, service: str, description: str, endpoints: list[Endpoint]) -> Service:
    """Register ``endpoints`` as one micro service (queue group "q": replicas share load)."""
    svc = await add_service(bus.nc, name=service, version=__version__, description=description)
    log = get_logger(component="endpoints")
    for endpoint in endpoints:
        await svc.add_endpoint(
            name=endpoint.name,
            subject=endpoint.subject,
            handler=_wrap(endpoint, log),
            metadata={"summary": endpoint.summary} if endpoint.summary else None,
        )
    # Subscriptions reach the server on the next flush; make the endpoints answerable now, so a
    # request sent right after start-up does not meet "no responders".
    await bus.nc.flush()
    return svc


def _wrap(endpoint: Endpoint, log: Any) -> Callable[[Request], Awaitable[None]]:
    async def handle(request: Request) -> None:
        # micro runs handlers one at a time per subscription; spawn so that a slow call does
        # not hold the others back.
        asyncio.get_running_loop().create_task(_answer(request))

    async def _answer(request: Request) -> None:
        try:
            body = decode_plain(request.data or b"{}", endpoint.request)
        except msgspec.MsgspecError as exc:
            await _error(request, "400", ErrorReply(code="invalid_request", message=f"{endpoint.name}: {exc}"))
            return
        try:
            reply = await endpoint.handler(body)
        except InferlabError as exc:
            await _error(request, _status_for(exc), ErrorReply(code=exc.code, message=exc.message))
            return
        except Exception as exc:
            log.exception("endpoint_failed", endpoint=endpoint.name)
            await _error(request, "500", ErrorReply(code="internal_error", message=f"{type(exc).__name__}: {exc}"))
            return
        await request.respond(encode(reply))

    return handle


async def _error(request: Request, status: str, error: ErrorReply) -> None:
    await request.respond_error(status, error.message, data=encode(error), headers={ERROR_CODE_HEADER: error.code})
