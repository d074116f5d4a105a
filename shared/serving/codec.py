"""Request and response bodies: JSON (``{"inputs": {"X": [[...]]}}``) and npz (one array per
input, named like it). Pure functions over bytes and arrays."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import msgspec
import numpy as np

from shared.contracts.registry import TensorSpec
from shared.serving.errors import BadRequest, NotAcceptable, UnsupportedMediaType

JSON = "application/json"
NPZ = "application/x-npz"
_NPZ_MAGIC = b"PK"

_json_decoder = msgspec.json.Decoder()
_json_encoder = msgspec.json.Encoder()


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def wants_npz(content_type: str, accept: str) -> bool:
    """npz back when asked for (``Accept``), else in the request's own format."""
    accepted = [media_type(part) for part in accept.split(",") if part.strip()]
    if NPZ in accepted:
        return True
    if JSON in accepted:
        return False
    return media_type(content_type) == NPZ


def decode_request(body: bytes, content_type: str, inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """The feeds of one request, cast to the model's input dtypes; BadRequest names the
    input and what is wrong with it."""
    kind = media_type(content_type)
    if kind in (NPZ, "application/octet-stream") or (not kind and body.startswith(_NPZ_MAGIC)):
        raw = _npz_arrays(body)
    elif kind in (JSON, ""):
        raw = _json_arrays(body)
    else:
        raise UnsupportedMediaType(f"content type {content_type!r}: send {JSON} or {NPZ}")
    return feeds_for(raw, inputs)


def _json_arrays(body: bytes) -> dict[str, Any]:
    try:
        doc = _json_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), dict):
        raise BadRequest('JSON body must be an object {"inputs": {"<input name>": <nested list>, ...}}')
    return dict(doc["inputs"])


def _npz_arrays(body: bytes) -> dict[str, Any]:
    try:
        with np.load(io.BytesIO(body), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise BadRequest(f"body is not a readable .npz (numpy.savez) archive: {exc}") from None


def _describe(spec: TensorSpec) -> str:
    dims = ", ".join("?" if not isinstance(d, int) or d <= 0 else str(d) for d in spec.shape or [])
    return f"{spec.name} {spec.dtype} [{dims}]"


def feeds_for(raw: dict[str, Any], inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    expected = {spec.name: spec for spec in inputs}
    unknown = sorted(set(raw) - set(expected))
    missing = sorted(set(expected) - set(raw))
    if unknown or missing:
        takes = "; ".join(_describe(spec) for spec in inputs)
        problem = f"missing input(s) {missing}" if missing else f"unknown input(s) {unknown}"
        raise BadRequest(f"{problem}: the model takes {takes}")
    return {name: _as_array(raw[name], expected[name]) for name in expected}


def _as_array(value: Any, spec: TensorSpec) -> np.ndarray:
    dtype = np.dtype(object) if spec.dtype == "str" else np.dtype(spec.dtype)
    try:
        array = np.asarray(value, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise BadRequest(f"input {spec.name!r}: cannot be read as {spec.dtype}: {exc}") from None
    if spec.shape is not None:
        if array.ndim != len(spec.shape):
            raise BadRequest(
                f"input {spec.name!r} has {array.ndim} dimension(s) {list(array.shape)}; "
                f"the model takes {_describe(spec)}"
            )
        for axis, (declared, got) in enumerate(zip(spec.shape, array.shape, strict=True)):
            if isinstance(declared, int) and declared > 0 and declared != got:
                raise BadRequest(
                    f"input {spec.name!r} has size {got} on axis {axis}; the model takes {_describe(spec)}"
                )
    return array


def encode_json(ref: str, outputs: dict[str, Any]) -> bytes:
    return _json_encoder.encode({"ref": ref, "outputs": {name: _plain(v) for name, v in outputs.items()}})


def _plain(value: Any) -> Any:
    """Arrays as nested lists; ONNX sequences of maps (skl2onnx's ZipMap) as lists of objects."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def encode_npz(outputs: dict[str, Any]) -> bytes:
    arrays = {}
    for name, value in outputs.items():
        if not isinstance(value, np.ndarray):
            raise NotAcceptable(f"output {name!r} is not a tensor (e.g. a sequence of maps): ask for {JSON}")
        arrays[name] = value
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **arrays)
    return buffer.getvalue()


def encode_npz_request(feeds: dict[str, np.ndarray]) -> bytes:
    """What a client sends for the npz format (tests and bench use it too)."""
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **feeds)
    return buffer.getvalue()
