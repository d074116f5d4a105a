"""structlog configuration: one JSON object per line on stderr, each carrying the service name
and, inside a handler, the correlation id of the command that started the chain."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import structlog

_SECRET_KEYS = ("password", "token", "secret", "creds", "authorization")


def _redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    # Belt and braces: settings never log secrets, but a careless bind() must not either.
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event[key] = "***"
    return event


class _CurrentStderr:
    """``sys.stderr`` as it is when a line is written, not as it was when logging was
    configured: a CLI run inside another program (a test's captured stream, a notebook) replaces
    ``sys.stderr`` for a while and closes what it replaced it with, and every later log line
    would then fail with "I/O operation on closed file"."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def configure(service: str, level: str = "info", fmt: str = "json") -> structlog.stdlib.BoundLogger:
    level_no = logging.getLevelName(level.upper())
    if not isinstance(level_no, int):
        level_no = logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_secrets,
            structlog.processors.dict_tracebacks,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # Libraries (nats, onnxruntime.quantization) log through stdlib logging: route them to
    # the same stream at warning level so they do not drown the service's own lines.
    logging.basicConfig(level=logging.WARNING, stream=_CurrentStderr(), format="%(levelname)s %(name)s %(message)s")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    logger: structlog.stdlib.BoundLogger = structlog.get_logger()
    return logger


def get_logger(**bindings: Any) -> Any:
    return structlog.get_logger().bind(**bindings) if bindings else structlog.get_logger()


@contextmanager
def correlation(correlation_id: str, **extra: Any) -> Iterator[None]:
    """Bind the correlation id (and extra keys) to every log line inside the block. Uses
    contextvars, so concurrent handlers in one event loop keep their own ids."""
    with structlog.contextvars.bound_contextvars(correlation_id=correlation_id, **extra):
        yield
