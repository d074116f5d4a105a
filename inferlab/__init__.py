"""inferlab's public Python API: ``from inferlab import Client``.

The SDK lives in ``shared.sdk`` (still importable there); this package names what users need
without reaching into the platform's internals."""

from shared.chain import ChainResult, ChainRow
from shared.config import Settings
from shared.errors import InferlabError, NotFound, Rejected, ServiceUnavailable, UnknownModel, WaitTimeout
from shared.sdk import Client, LifecycleRefusedError, StreamEvent
from shared.telemetry import InvalidLatency, LatencyReporter

__all__ = [
    "ChainResult",
    "ChainRow",
    "Client",
    "InferlabError",
    "InvalidLatency",
    "LatencyReporter",
    "LifecycleRefusedError",
    "NotFound",
    "Rejected",
    "ServiceUnavailable",
    "Settings",
    "StreamEvent",
    "UnknownModel",
    "WaitTimeout",
]
