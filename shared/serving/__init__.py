"""The reference inference server behind ``inferlab serve REF``.

One module per job: ``loader`` (a registered variant as an ONNX Runtime session, with the
session settings its record carries, warmed), ``codec`` (JSON and npz requests and
responses), ``batcher`` (concurrent requests run together, with a bounded delay), ``http``
(a small HTTP/1.1 server on asyncio streams: the project carries no web framework),
``server`` (the wiring: routes, health, readiness, latency telemetry through
``shared.telemetry.LatencyReporter``, following an alias).
"""
