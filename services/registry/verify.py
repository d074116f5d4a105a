"""Verifying an ONNX artifact and reading its metadata. Pure: a path in, facts or a precise
``VerificationError`` (services/registry/errors.py) out; no NATS.

Order of checks, each with its own rejection reason: parse (``not_onnx``), external data
confined to the model folder and present (``external_data_escape`` / ``external_data_missing``),
``onnx.checker`` full check, whose structural half fails as ``invalid_model`` and whose strict
shape-inference half fails as ``shape_inference_failed``.

Verification by what runs: real exporters write models that ONNX Runtime loads and runs but
that ``onnx.checker`` refuses (an IR-3 initializer not listed among the graph inputs; contrib
operators such as LayerNormalization that ONNX Runtime's own optimiser saves under an opset
where the standard domain does not define them). Such a model is registered when ONNX Runtime
CPU builds a session from it and lenient shape inference completes; each checker finding
becomes a warning on the record. ``INFERLAB_VERIFY=strict`` (or ``strict=True``) keeps the
checker's verdict final.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import onnx
import onnx.checker
import onnx.shape_inference
from google.protobuf.message import DecodeError
from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

from services.registry.errors import VerificationError
from shared.contracts.registry import ModelRecord, RejectionReason, TensorSpec
from shared.onnxmeta import graph_inputs, graph_outputs, opsets, parameter_count

# onnx cannot serialise a ModelProto over 2 GiB; bigger models must keep external data.
PROTOBUF_LIMIT = (2 << 30) - 1


@dataclass(frozen=True)
class ModelFacts:
    """What the registry records about a verified model."""

    path: Path  # the self-contained file to store (may differ from the input: see below)
    framework: str | None
    framework_version: str | None
    ir_version: int
    opset: dict[str, int]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    parameter_count: int
    doc_string: str
    metadata_props: dict[str, str]
    # onnx.checker's objections to a model that ONNX Runtime loads anyway (lenient mode)
    warnings: list[str] = field(default_factory=list)


def strict_from_env() -> bool:
    return os.environ.get("INFERLAB_VERIFY", "").strip().lower() == "strict"


def ort_load_error(path: Path) -> str | None:
    """None when ONNX Runtime's CPU provider builds a session from ``path`` (graph resolution,
    type and shape checks, kernel lookup for every node), else its first line of error.
    Optimisations are off: the question is whether the model loads, not how fast."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
        return _first_line(exc)
    del session
    return None


def check(model: onnx.ModelProto, path: Path, *, strict: bool) -> list[str]:
    """``onnx.checker`` full check. Strict: its first finding rejects. Otherwise a finding is
    a warning when ONNX Runtime loads the model at ``path`` and lenient shape inference
    completes; when the runtime refuses too, the checker's finding rejects as before."""
    try:
        # full_check = structural checks + strict shape inference; the exception type tells
        # which half failed.
        onnx.checker.check_model(model, full_check=True)
        return []
    except onnx.shape_inference.InferenceError as exc:
        error = VerificationError(RejectionReason.SHAPE_INFERENCE_FAILED, f"shape inference: {_first_line(exc)}")
    except (onnx.checker.ValidationError, RuntimeError, ValueError) as exc:
        error = VerificationError(RejectionReason.INVALID_MODEL, f"onnx.checker: {_first_line(exc)}")
    if strict:
        raise error
    runtime = ort_load_error(path)
    if runtime is not None:
        raise VerificationError(error.reason, f"{error.message}; ONNX Runtime cannot load it either: {runtime}")
    try:
        onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # lenient inference that still throws: the graph is not usable
        raise VerificationError(
            RejectionReason.SHAPE_INFERENCE_FAILED, f"{error.message}; shape inference: {_first_line(exc)}"
        ) from None
    findings = [error.message]
    if error.reason == RejectionReason.INVALID_MODEL:
        # the structural check stops at its first finding; say whether inference objects too
        try:
            onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        except Exception as exc:
            findings.append(f"shape inference: {_first_line(exc)}")
    return findings


def external_locations(model: onnx.ModelProto) -> list[str]:
    return sorted({ExternalDataInfo(t).location for t in _get_all_tensors(model) if uses_external_data(t)})


def check_external_paths(locations: list[str], base_dir: Path | None) -> None:
    """Every external-data location must be a relative path that stays inside the model's
    folder, also after resolving symlinks; and, when we have the folder, must exist."""
    for location in locations:
        pure = PurePosixPath(location.replace("\\", "/"))
        if (
            not location
            or pure.is_absolute()
            or ".." in pure.parts
            or (len(location) > 1 and location[1] == ":")  # C:\ style
            or "\x00" in location
        ):
            raise VerificationError(
                RejectionReason.EXTERNAL_DATA_ESCAPE,
                f"external data location {location!r} escapes the model folder",
            )
        if base_dir is None:
            continue
        target = (base_dir / pure).resolve(strict=False)
        if not target.is_relative_to(base_dir.resolve()):
            raise VerificationError(
                RejectionReason.EXTERNAL_DATA_ESCAPE,
                f"external data location {location!r} resolves outside the model folder",
            )
        if not target.is_file():
            raise VerificationError(
                RejectionReason.EXTERNAL_DATA_MISSING, f"external data file {location!r} is missing"
            )
    if locations and base_dir is None:
        raise VerificationError(
            RejectionReason.EXTERNAL_DATA_MISSING,
            f"the model keeps weights in external files {locations} that a single uploaded artifact "
            "cannot carry; import it with file:// from its folder, or save it with the weights inside",
        )


def verify_model(
    path: Path,
    *,
    external_data_dir: Path | None = None,
    workdir: Path | None = None,
    strict: bool | None = None,
) -> ModelFacts:
    """Verify the ONNX file at ``path``. ``external_data_dir`` is the folder external data may
    be read from (only for ``file://`` imports). A model with external data is made
    self-contained (weights inlined, written under ``workdir``) so that one blob is stored.
    ``strict`` (default: ``INFERLAB_VERIFY=strict``) makes every checker finding a rejection."""
    if strict is None:
        strict = strict_from_env()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise VerificationError(RejectionReason.NOT_ONNX, f"not an ONNX model: {_first_line(exc)}") from None
    if not model.HasField("graph") or model.ir_version <= 0:
        # protobuf parses many byte strings as an empty message: demand a graph and a version
        raise VerificationError(RejectionReason.NOT_ONNX, "not an ONNX model: no graph or IR version in the file")

    try:
        locations = external_locations(model)
    except (ValueError, TypeError) as exc:  # onnx refuses non-numeric or negative offsets/lengths
        raise VerificationError(RejectionReason.INVALID_MODEL, f"malformed external data reference: {exc}") from None
    stored_path = path
    if locations:
        check_external_paths(locations, external_data_dir)
        assert external_data_dir is not None
        total = sum((external_data_dir / loc).stat().st_size for loc in locations) + path.stat().st_size
        if total > PROTOBUF_LIMIT:
            raise VerificationError(
                RejectionReason.TOO_LARGE,
                f"model with external data totals {total} bytes; inlining is limited to 2 GiB",
            )
        onnx.load_external_data_for_model(model, str(external_data_dir))
        stored_path = (workdir or path.parent) / (path.stem + ".inlined.onnx")
        onnx.save_model(model, str(stored_path), save_as_external_data=False)

    warnings = check(model, stored_path, strict=strict)
    outputs = graph_outputs(model)
    if any(not o.shape for o in outputs if o.is_tensor):
        # Only when the graph leaves an output's shape undeclared: a second inference pass
        # costs as much as the strict one above on a large model.
        try:
            inferred = {s.name: s for s in graph_outputs(onnx.shape_inference.infer_shapes(model, data_prop=True))}
        except Exception:  # already passed the strict pass; shapes are a nicety here
            inferred = {}
        outputs = [inferred.get(o.name, o) if not o.shape else o for o in outputs]
    return ModelFacts(
        path=stored_path,
        framework=model.producer_name or None,
        framework_version=model.producer_version or None,
        ir_version=int(model.ir_version),
        opset=opsets(model),
        inputs=graph_inputs(model),
        outputs=outputs,
        parameter_count=parameter_count(model),
        doc_string=model.doc_string[:2000],
        metadata_props={p.key: p.value[:2000] for p in model.metadata_props},
        warnings=warnings,
    )


def engine_facts(path: Path, parent: ModelRecord, metadata: dict[str, object]) -> ModelFacts:
    """Facts of a serialized TensorRT engine. Deserializing one needs a GPU and the exact
    TensorRT version that built it, which the registry does not have; its I/O is its ONNX
    parent's, and the converter states the TensorRT version in the metadata."""
    if path.stat().st_size == 0:
        raise VerificationError(RejectionReason.INVALID_MODEL, "the TensorRT engine file is empty")
    version = metadata.get("tensorrt_version")
    return ModelFacts(
        path=path,
        framework="tensorrt",
        framework_version=str(version) if version else None,
        ir_version=0,
        opset={},
        inputs=list(parent.inputs),
        outputs=list(parent.outputs),
        parameter_count=parent.parameter_count,
        doc_string="",
        metadata_props={},
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    head = lines[0] if lines else text
    if len(lines) > 1 and len(head) < 40:  # onnx often puts the message on the second line
        head = f"{head} {lines[1].strip()}"
    return head[:500]


def file_size(path: Path) -> int:
    return os.stat(path).st_size


def verify_untrusted(path: Path, *, external_data_dir: Path | None, workdir: Path | None) -> ModelFacts:
    """``verify_model``, with whatever a library raises on hostile bytes that this module does
    not anticipate turned into a precise ``invalid_model`` rejection: otherwise the command would
    be retried until dead-lettered and its sender would wait for an answer that never comes.
    (OSError is left alone: a full disk is worth a retry.) The registry runs it in a sandbox."""
    try:
        return verify_model(path, external_data_dir=external_data_dir, workdir=workdir)
    except VerificationError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError, OverflowError,
            RecursionError, MemoryError) as exc:  # fmt: skip
        raise VerificationError(
            RejectionReason.INVALID_MODEL, f"cannot verify the model: {type(exc).__name__}: {str(exc)[:300]}"
        ) from None
