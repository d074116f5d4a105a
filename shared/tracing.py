"""Traces across the services: W3C trace context in NATS headers, a span per handler.

Every message ``Bus.publish`` sends carries the trace context current at that moment
(``traceparent``/``tracestate``, the propagators of ``OTEL_PROPAGATORS``), and every handler
runs inside a consumer span whose parent is the context its message carried. A registration is
therefore one trace: the registry's span, then the converter's, benchmarker's and validator's
below it, and so on down every variant, whatever process or host each ran on.

Off by default: a service records spans only when ``OTEL_TRACES_EXPORTER`` names an exporter
(``console``, or ``otlp`` with opentelemetry-exporter-otlp installed), configured by the
standard ``OTEL_*`` variables. Without one the OpenTelemetry API records nothing, yet a trace
context that arrives on a message is still passed on to what its handler publishes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from shared.errors import InferlabError
from shared.log import get_logger

TRACER = "inferlab"
SERVICE_ATTRIBUTE = "inferlab.service"


class TracingSetupError(InferlabError):
    """``OTEL_TRACES_EXPORTER`` names an exporter this installation cannot provide."""

    code = "tracing_setup_failed"


def inject(headers: dict[str, str]) -> None:
    """Add the current trace context to outgoing NATS headers (nothing when there is none)."""
    propagate.inject(headers)


@contextmanager
def handling(service: str, subject: str, kind: str, event_id: str, headers: Mapping[str, str] | None) -> Iterator[Span]:
    """The span of one handler run, a child of the context its message carried. An exception
    escaping the handler is recorded on the span and marks it failed."""
    parent = propagate.extract(dict(headers or {}))
    tracer = trace.get_tracer(TRACER)
    attributes = {
        SERVICE_ATTRIBUTE: service,
        "messaging.system": "nats",
        "messaging.operation.type": "process",
        "messaging.destination.name": subject,
        "messaging.message.id": event_id,
    }
    name = f"{service} {kind}"
    with tracer.start_as_current_span(name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes) as span:
        yield span


def failed(span: Span, exc: BaseException) -> None:
    """Mark a handler's span failed by an exception its worker caught (nak, dead letter)."""
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _exporter(name: str) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise TracingSetupError(
                "OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: pip install opentelemetry-exporter-otlp-proto-http"
            ) from exc
        exporter: SpanExporter = OTLPSpanExporter()  # endpoint, headers, ... from OTEL_EXPORTER_OTLP_*
        return exporter
    raise TracingSetupError(f"OTEL_TRACES_EXPORTER={name!r} is not supported (console, otlp or none)")


def configure_tracing(service: str) -> bool:
    """Install a tracer provider for this process when ``OTEL_TRACES_EXPORTER`` asks for one;
    returns whether spans are now recorded. ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` refine the resource as usual."""
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",") if n.strip()]
    names = [n for n in names if n != "none"]
    if not names or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: f"inferlab-{service}"}))
    for name in names:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name)))
    trace.set_tracer_provider(provider)
    get_logger().info("tracing_enabled", exporters=names)
    return True


def shutdown_tracing() -> None:
    """Flush spans still buffered (a stopping service's last handlers)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
