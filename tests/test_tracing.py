"""One registration is one trace across the four services: W3C trace context rides in NATS
headers from each handler's span to the handlers its facts and commands start."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.benchmarker.service import BenchmarkerService
from services.converter.service import ConverterService
from services.registry.service import RegistryService
from services.validator.service import ValidatorService
from shared.config import Settings
from shared.sdk import Client
from shared.tracing import SERVICE_ATTRIBUTE
from tests.support.cluster import eventually, quick, stored
from tests.support.models import digits_classifier
from tests.support.services import REPO, running

SERVICES = {"registry", "converter", "benchmarker", "validator"}


class _Recorder(InMemorySpanExporter):
    """Keeps spans only while a test asks for them: the provider stays for the whole session."""

    recording = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return super().export(spans) if self.recording else SpanExportResult.SUCCESS


_EXPORTER = _Recorder()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans recorded in memory. The global tracer provider can be set once per process, so the
    first use installs it and every use starts from an empty exporter."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    _EXPORTER.recording = True
    yield _EXPORTER
    _EXPORTER.recording = False
    _EXPORTER.clear()


def service_of(span: ReadableSpan) -> str:
    return str((span.attributes or {}).get(SERVICE_ATTRIBUTE, ""))


async def test_a_registration_is_one_trace_across_the_four_services(
    settings: Settings, tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    settings = quick(settings)
    tracer = trace.get_tracer("pipeline")
    async with (
        running(settings, RegistryService),
        running(settings, ConverterService),
        running(settings, BenchmarkerService),
        running(settings, ValidatorService),
    ):
        client = await Client.connect(settings)
        try:
            with tracer.start_as_current_span("pipeline registers traced") as root:
                await client.register(digits_classifier(tmp_path / "d.onnx"), name="traced", version="1.0.0")

            async def validated_both() -> bool:
                events = await stored(client, "model.validated.traced")
                return {e.message.variant for e in events if e.message} >= {"base", "ort-opt"}

            await eventually(validated_both, timeout=120, what="both variants validated")
        finally:
            await client.close()

    handled = [s for s in spans.get_finished_spans() if service_of(s)]
    assert {service_of(s) for s in handled} >= SERVICES
    trace_id = root.get_span_context().trace_id
    assert {s.context.trace_id for s in handled} == {trace_id}  # one trace, nothing outside it

    # Who ran each span: a handler's service, or the pipeline's own span at the root.
    owner = {s.context.span_id: service_of(s) for s in handled}
    owner[root.get_span_context().span_id] = "pipeline"
    edges = set()
    for span in handled:  # every handler hangs below the one whose message started it
        assert span.parent is not None and span.parent.span_id in owner, span.name
        assert span.kind == trace.SpanKind.CONSUMER
        subject = str((span.attributes or {})["messaging.destination.name"])
        edges.add((owner[span.parent.span_id], service_of(span), subject))
    assert ("pipeline", "registry", "model.register") in edges
    assert ("registry", "converter", "model.registered.traced") in edges
    assert ("registry", "benchmarker", "model.registered.traced") in edges
    assert ("converter", "registry", "model.register") in edges  # the converted variant
    assert ("benchmarker", "validator", "model.benchmarked.traced") in edges


def _configured(exporter: str | None) -> subprocess.CompletedProcess[str]:
    """configure_tracing in a fresh process (the tracer provider is set once per process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    if exporter is not None:
        env["OTEL_TRACES_EXPORTER"] = exporter
    code = (
        "from opentelemetry import trace\n"
        "from shared.tracing import configure_tracing, shutdown_tracing\n"
        "print('recording' if configure_tracing('registry') else 'off')\n"
        "with trace.get_tracer('t').start_as_current_span('a span'):\n"
        "    pass\n"
        "shutdown_tracing()\n"
    )
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)


def test_tracing_is_off_by_default_and_follows_otel_traces_exporter() -> None:
    for off in (None, "none"):
        done = _configured(off)
        assert done.returncode == 0 and "off" in done.stdout.splitlines(), done.stderr

    done = _configured("console")
    assert done.returncode == 0, done.stderr
    assert "recording" in done.stdout.splitlines()
    assert '"name": "a span"' in done.stdout and '"service.name": "inferlab-registry"' in done.stdout

    done = _configured("zipkin")
    assert done.returncode != 0 and "TracingSetupError" in done.stderr and "zipkin" in done.stderr
