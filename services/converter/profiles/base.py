"""The interface every conversion profile implements and the ONNX Runtime runner that parity
checks use for ONNX variants.

A profile is a small, synchronous, pure-ish object: ``convert(context)`` reads the source
file and writes the variant into ``context.workdir``; it never touches the network. Errors
(services/converter/errors.py) are precise: ``NotApplicable`` (nothing for this profile to do
on this model: reported as a skip), ``Unavailable`` (cannot run on this host),
``NeedsCalibration``, ``UnsupportedModel`` (the profile cannot handle this graph) and
``ConversionError`` (the library failed).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from services.converter.errors import InvalidOptions, RuntimeLoadError, UnsupportedModel
from services.converter.inputs import InputSet
from services.converter.tolerances import default_for
from shared.contracts.conversion import Tolerance
from shared.contracts.registry import FORMAT_ONNX, TensorSpec


@dataclass
class ConversionContext:
    source: Path
    workdir: Path
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    options: dict[str, Any]
    calibration: InputSet | None = None
    shapes: dict[str, list[int]] = field(default_factory=dict)
    cache_dir: Path | None = None
    # one batch of the inputs the variant is checked on: lets a profile run the source to learn
    # what static inference cannot tell (tensor types), or search for a passing variant
    sample: dict[str, np.ndarray] | None = None


class Runner(ABC):
    """Runs one model on feeds; outputs by name (values as the runtime returns them)."""

    output_names: list[str]

    @abstractmethod
    def run(self, feed: dict[str, np.ndarray]) -> dict[str, Any]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class OrtRunner(Runner):
    """ONNX Runtime on the CPU provider: the same runtime for source and variant, so a parity
    difference is the conversion's, not a provider's."""

    def __init__(self, path: Path, *, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
            raise RuntimeLoadError(first_line(exc)) from exc
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        values = self.session.run(self.output_names, feed)
        return dict(zip(self.output_names, values, strict=True))

    def close(self) -> None:
        self.session = None


@dataclass
class Converted:
    """The variant file, what the profile has to say about it, and its format."""

    path: Path
    details: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT_ONNX


class Profile(ABC):
    id: str
    description: str
    precision: str  # "fp32", "fp16" or "int8"
    output_format: str = FORMAT_ONNX
    needs_calibration: bool = False

    def availability(self) -> str | None:
        """None when the profile can run on this host, else why not."""
        return None

    @property
    def default_tolerance(self) -> Tolerance:
        return default_for(self.precision)

    def normalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Validated options with defaults filled in (they enter the idempotency key, so two
        requests that mean the same conversion get the same key)."""
        if options:
            raise InvalidOptions(f"profile {self.id} takes no options (got {sorted(options)})")
        return {}

    @abstractmethod
    def convert(self, context: ConversionContext) -> Converted: ...

    # A profile may define ``fallback(context, converted, failing_outputs) -> Converted``: a
    # second, more conservative conversion the pipeline tries once when the first breaks parity.

    def runner(self, path: Path) -> Runner:
        return OrtRunner(path)

    def tool_versions(self) -> dict[str, str]:
        import onnxruntime

        return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


@functools.cache
def _libc_trim() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        return None


def release_memory() -> None:
    """Give freed heap memory back to the OS between phases (source session, conversion,
    variant session). glibc keeps freed blocks of a closed ONNX Runtime session or a parsed
    model in its free lists, so without this the phases' peaks add up instead of overlap.
    (Models and sessions are freed by reference counting; a full gc.collect() would cost
    more than it finds.)"""
    trim = _libc_trim()
    if trim is not None:
        trim(0)


def first_line(exc: BaseException, limit: int = 400) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else text)[:limit]


def load_model(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError and friends
        raise UnsupportedModel(f"cannot read the source as ONNX: {first_line(exc)}") from exc


def normalize_opset_imports(model: onnx.ModelProto) -> list[str]:
    """Remove duplicate opset imports (skl2onnx writes the default domain twice, which makes
    onnxruntime.quantization fail with "Failed to find proper ai.onnx domain"). Two imports
    of one domain with different versions are a broken model. Returns what was changed."""
    seen: dict[str, int] = {}
    keep = []
    changes = []
    for entry in model.opset_import:
        domain = "" if entry.domain in ("", "ai.onnx") else entry.domain
        if domain in seen:
            if seen[domain] != entry.version:
                raise UnsupportedModel(
                    f"the model imports domain {domain or 'ai.onnx'!r} twice, at opsets {seen[domain]} and "
                    f"{entry.version}"
                )
            changes.append(f"removed duplicate opset import {domain or 'ai.onnx'} {entry.version}")
            continue
        seen[domain] = entry.version
        keep.append(onnx.helper.make_opsetid(entry.domain, entry.version))
    if changes:
        del model.opset_import[:]
        model.opset_import.extend(keep)
    return changes


def graphs(model: onnx.ModelProto) -> list[onnx.GraphProto]:
    """The main graph and every subgraph (If/Loop/Scan bodies), depth first: recurrent and
    control-flow exports keep most of their computation in subgraphs."""
    out: list[onnx.GraphProto] = []
    todo = [model.graph]
    while todo:
        graph = todo.pop()
        out.append(graph)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    todo.append(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    todo.extend(attr.graphs)
    return out


def default_opset(model: onnx.ModelProto) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}:{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def default_domain_ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}


def describe_ops(model: onnx.ModelProto, limit: int = 12) -> str:
    hist = op_histogram(model)
    names = list(hist)
    text = ", ".join(names[:limit])
    return text + (f" and {len(names) - limit} more" if len(names) > limit else "")


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(f in message for f in self.fragments)


@contextlib.contextmanager
def quiet_library_logs(*fragments: str) -> Iterator[None]:
    """onnxruntime.quantization logs advice through the root logger on every call ("Please
    consider to run pre-processing"); the report carries what matters, so drop those lines."""
    root = logging.getLogger()
    filt = _DropMessages(fragments)
    root.addFilter(filt)
    handlers = list(root.handlers)
    for handler in handlers:
        handler.addFilter(filt)
    try:
        yield
    finally:
        root.removeFilter(filt)
        for handler in handlers:
            handler.removeFilter(filt)


def save_model(model: onnx.ModelProto, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def parse_choice(options: dict[str, Any], key: str, choices: tuple[str, ...], default: str, profile: str) -> str:
    value = options.get(key, default)
    if not isinstance(value, str) or value.lower() not in choices:
        raise InvalidOptions(f"{profile}: option {key!r} must be one of {', '.join(choices)} (got {value!r})")
    return value.lower()


def parse_bool(options: dict[str, Any], key: str, default: bool, profile: str) -> bool:
    value = options.get(key, default)
    if not isinstance(value, bool):
        raise InvalidOptions(f"{profile}: option {key!r} must be true or false (got {value!r})")
    return value


def parse_names(options: dict[str, Any], key: str, profile: str) -> list[str]:
    value = options.get(key, [])
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidOptions(f"{profile}: option {key!r} must be a list of names (got {value!r})")
    return sorted(set(value))


def check_known(options: dict[str, Any], known: tuple[str, ...], profile: str) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InvalidOptions(f"{profile}: unknown option(s) {unknown}; known: {', '.join(known)}")
