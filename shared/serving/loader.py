"""A registered variant as a warmed ONNX Runtime session.

Session settings come from the record when it carries them: ``metadata["session_settings"]``
(the same keys as ``SessionSettings``; the optimiser stores the winning ones there), else
ONNX Runtime's defaults on the CPU provider. Options of ``inferlab serve`` override both.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from shared.contracts.registry import ModelRecord, TensorSpec
from shared.errors import InferlabError
from shared.inputs import feeds as synthetic_feeds
from shared.onnxmeta import spec_from_session_arg

SESSION_SETTINGS_KEY = "session_settings"
_GRAPH_LEVELS = ("disable", "basic", "extended", "all")


class InvalidSessionSettings(InferlabError):
    code = "invalid_session_settings"


class SessionSettings(msgspec.Struct, kw_only=True):
    """ONNX Runtime session options; 0 threads means ONNX Runtime's default."""

    intra_op_threads: int = 0
    inter_op_threads: int = 0
    execution_mode: str = "sequential"
    graph_optimization: str = "all"
    providers: list[str] = msgspec.field(default_factory=lambda: ["CPUExecutionProvider"])


def session_settings(record: ModelRecord, **overrides: Any) -> SessionSettings:
    """The record's settings (or defaults) with the non-None ``overrides`` applied."""
    stored = record.metadata.get(SESSION_SETTINGS_KEY) or {}
    try:
        settings = msgspec.convert(stored, SessionSettings)
    except msgspec.ValidationError as exc:
        raise InvalidSessionSettings(f"{record.ref}: metadata.{SESSION_SETTINGS_KEY} is invalid: {exc}") from None
    changes = {k: v for k, v in overrides.items() if v is not None}
    settings = msgspec.structs.replace(settings, **changes) if changes else settings
    if settings.graph_optimization not in _GRAPH_LEVELS:
        raise InvalidSessionSettings(f"graph_optimization must be one of {_GRAPH_LEVELS}")
    if settings.execution_mode not in ("sequential", "parallel"):
        raise InvalidSessionSettings("execution_mode must be sequential or parallel")
    return settings


def _session(path: Path, settings: SessionSettings) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if settings.intra_op_threads > 0:
        options.intra_op_num_threads = settings.intra_op_threads
    if settings.inter_op_threads > 0:
        options.inter_op_num_threads = settings.inter_op_threads
    options.execution_mode = (
        ort.ExecutionMode.ORT_PARALLEL if settings.execution_mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
    )
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[settings.graph_optimization]
    available = set(ort.get_available_providers())
    # A provider this host lacks (CUDA on a CPU box) is skipped, not fatal: the CPU one remains.
    providers = [p for p in settings.providers if p in available] or ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise InferlabError(f"ONNX Runtime cannot load the model: {exc}", code="load_failed") from exc


@dataclass
class LoadedModel:
    """One session and what the server needs to feed it. ``batchable``: every input's first
    axis is its batch, so requests can be stacked along it."""

    record: ModelRecord
    settings: SessionSettings
    session: Any
    inputs: list[TensorSpec]
    output_names: list[str]
    batchable: bool
    providers: list[str] = field(default_factory=list)
    # ORT sessions are thread-safe for run(); one at a time keeps latency honest under the
    # batcher (which already groups concurrent requests).
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def ref(self) -> str:
        return self.record.ref

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
        with self._lock:
            values = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values, strict=True))

    def warm(self, runs: int = 3) -> None:
        """A few runs on the inputs resolved at registration (or zeros), so the first user
        request does not pay for allocation and kernel selection."""
        feeds = warm_feeds(self.record, self.inputs)
        for _ in range(runs):
            self.run(feeds)


def warm_feeds(record: ModelRecord, inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    if record.resolved_inputs:
        return synthetic_feeds(record.resolved_inputs, 1)
    out = {}
    for spec in inputs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape or []]
        out[spec.name] = np.zeros(shape, dtype=np.dtype(spec.dtype))
    return out


def _batchable(record: ModelRecord, inputs: list[TensorSpec]) -> bool:
    if record.resolved_inputs:
        return all(r.batch_axis == 0 for r in record.resolved_inputs)
    return bool(inputs) and all(
        spec.shape and not (isinstance(spec.shape[0], int) and spec.shape[0] > 0) for spec in inputs
    )


def load(path: Path, record: ModelRecord, settings: SessionSettings) -> LoadedModel:
    """Blocking: build and warm the session (run it in a thread from async code)."""
    session = _session(path, settings)
    inputs = [spec_from_session_arg(arg) for arg in session.get_inputs()]
    model = LoadedModel(
        record=record,
        settings=settings,
        session=session,
        inputs=inputs,
        output_names=[o.name for o in session.get_outputs()],
        batchable=_batchable(record, inputs),
        providers=list(session.get_providers()),
    )
    model.warm()
    return model
