"""How a model is fed: one resolver for the converter, the benchmarker and the validator.

``resolve`` finds, once (the registry calls it at registration), a concrete input per graph
input that ONNX Runtime CPU runs, in this order of trust:

1. the user's spec (``inferlab register --shape/--shapes/--range``),
2. the user's sample (an ``.npz`` of inputs only) or the registered dataset's inputs,
3. a search: symbolic dimensions with the same name are one variable; a dimension is the
   batch only when the same symbol (or an unnamed dimension on every input) leads every
   non-scalar input, or the spec says so (a fixed leading ``2`` of a state ``[2, batch, 128]``
   is not a batch); the batch is 1 while searching; other free sizes take values from a
   short list of plausible sizes and the first assignment that runs is kept.

Values: integer inputs that feed a Gather (through Cast/Unsqueeze/Reshape/...) or a one-hot
encoding get ids inside the gathered table or below the depth, other integers {0, 1} (masks)
unless a range is given; a scalar integer named like a sample rate gets 16000; floats are
uniform in [0, 1) (Polygraphy's default data loader) unless a range or a sample says otherwise.

When nothing runs, the outcome is ``needs_input_spec`` with a message that names the input
and dimension and the CLI option that fixes it. ``feeds`` then builds seeded inputs at any
batch from the resolved shapes, so every service feeds the model the same way.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from shared.contracts.registry import INPUTS_NEED_SPEC, INPUTS_RESOLVED, InputSpec, ResolvedInput, TensorSpec
from shared.datasets import Dataset
from shared.errors import InputError
from shared.onnxmeta import dtype_name
from shared.sandbox import out_of_memory_cause

DEFAULT_BATCH = 32
DEFAULT_DIM = 1
MAX_RUNS = 512  # runs per model per check; bounds time for fixed batch-1 models

SYNTHETIC = "synthetic"
DATASET = "dataset"
CALIBRATION = "calibration"

# Sizes tried for a free dimension, in order. Spatial dimensions of an image-like input
# start at common image sizes (a detector may need multiples of 32); others start small.
GENERIC_SIZES = (1, 16, 32, 64, 128, 224, 256, 512, 640, 1024)
IMAGE_SIZES = (224, 256, 320, 416, 512, 640, 32, 64, 128, 16, 1)
BATCH_SIZES = (2, 3, 4, 8, 16, 32)  # tried last, only when batch 1 runs nowhere
SEARCH_BUDGET_S = 30.0
_RATE_NAME = re.compile(r"(^|_)(sr|sample_?rate|sampling_?rate|rate)($|_)", re.IGNORECASE)
# Ops an integer id passes through unchanged on its way to a Gather.
_PASS_THROUGH = frozenset({"Cast", "Unsqueeze", "Squeeze", "Reshape", "Flatten", "Identity", "Transpose", "Expand"})


# --- what the graph says ----------------------------------------------------------------------


@dataclass
class InputFacts:
    name: str
    dtype: str
    dims: list[int | str | None] | None
    gather_rows: int | None = None  # ids index a table of this many rows

    @property
    def rank(self) -> int | None:
        return None if self.dims is None else len(self.dims)


def _const_dims(model: onnx.ModelProto) -> dict[str, list[int]]:
    dims = {init.name: list(init.dims) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    dims[node.output[0]] = list(attr.t.dims)
    return dims


_INFERRED: dict[int, dict[str, list[int | None]]] = {}


def _inferred_dims(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Value shapes by ONNX shape inference (computed once per model, only when needed)."""
    key = id(model)
    if key not in _INFERRED:
        _INFERRED.clear()
        dims: dict[str, list[int | None]] = {}
        try:
            inferred = onnx.shape_inference.infer_shapes(model)
            for v in list(inferred.graph.value_info) + list(inferred.graph.output):
                if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape"):
                    dims[v.name] = [
                        d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim
                    ]
        except Exception:  # inference is a convenience here; without it, no bound
            pass
        _INFERRED[key] = dims
    return _INFERRED[key]


def _gather_rows(model: onnx.ModelProto, start: str, tables: dict[str, list[int]]) -> int | None:
    """Rows of the smallest table the ids of ``start`` index, following pass-through ops
    (Gather, ORT's fused embedding, OneHot and one-hot written as Equal with an iota)."""
    constants = {
        init.name: numpy_helper.to_array(init) for init in model.graph.initializer if list(init.dims) in ([], [1])
    }
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    bound: int | None = None
    seen, todo = {start}, [start]
    while todo:
        value = todo.pop()
        for node in consumers.get(value, []):
            rows: int | None = None
            if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == value:
                table = tables.get(node.input[0])
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                if table and -len(table) <= axis < len(table):
                    rows = int(table[axis])
            elif node.op_type == "EmbedLayerNormalization":  # ORT's fused BERT embedding
                which = {0: 2, 1: 4}.get(list(node.input).index(value))
                table = tables.get(node.input[which]) if which is not None and len(node.input) > which else None
                rows = int(table[0]) if table else None
            elif node.op_type == "OneHot" and len(node.input) > 1 and node.input[0] == value:
                depth = constants.get(node.input[1])
                rows = int(depth.reshape(-1)[0]) if depth is not None and depth.size else None
            elif node.op_type == "Equal" and len(node.input) == 2:
                # one-hot written as Equal(ids, iota) (jax2tf, Keras): ids below the iota's length
                other = node.input[1] if node.input[0] == value else node.input[0]
                shape = _inferred_dims(model).get(other) or tables.get(other)
                rows = int(shape[-1]) if shape and isinstance(shape[-1], int) and shape[-1] > 1 else None
            elif node.op_type in _PASS_THROUGH and node.input[0] == value:
                for out in node.output:
                    if out not in seen:
                        seen.add(out)
                        todo.append(out)
            if rows is not None and rows > 0:
                bound = rows if bound is None else min(bound, rows)
    return bound


def read_facts(model: onnx.ModelProto) -> list[InputFacts]:
    """Inputs that are not initializers, with dtypes, dimensions and Gather table sizes."""
    tables = _const_dims(model)
    initializers = {init.name for init in model.graph.initializer}
    out = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tp = value.type
        if tp.WhichOneof("value") != "tensor_type":
            out.append(InputFacts(value.name, "non-tensor", None))
            continue
        dims: list[int | str | None] | None = None
        if tp.tensor_type.HasField("shape"):
            dims = []
            for d in tp.tensor_type.shape.dim:
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(int(d.dim_value))
                elif d.HasField("dim_param") and d.dim_param:
                    dims.append(d.dim_param)
                else:
                    dims.append(None)
        dtype = dtype_name(tp.tensor_type.elem_type)
        rows = _gather_rows(model, value.name, tables) if np.dtype(_np(dtype)).kind in "iu" else None
        out.append(InputFacts(value.name, dtype, dims, rows))
    return out


def _np(dtype: str) -> Any:
    if dtype == "str":
        return object
    try:
        return np.dtype(dtype)
    except TypeError:
        return object


def facts_from_specs(specs: list[TensorSpec]) -> list[InputFacts]:
    return [InputFacts(s.name, s.dtype if s.is_tensor else "non-tensor", s.shape) for s in specs]


# --- variables ----------------------------------------------------------------------------------


def _key(name: str, axis: int, dim: int | str | None) -> str:
    return dim if isinstance(dim, str) else f"{name}[{axis}]"


def batch_key(facts: list[InputFacts]) -> str | None:
    """The variable that is a real batch: the same symbol leading every non-scalar input, or
    an unnamed dynamic dimension leading every one of them."""
    leading = [f.dims[0] for f in facts if f.dims]
    if not leading or any(isinstance(d, int) for d in leading):
        return None
    if all(d is None for d in leading):
        return "<batch>"
    if all(isinstance(d, str) for d in leading) and len(set(leading)) == 1:
        return str(leading[0])
    return None


def _variables(facts: list[InputFacts], batch: str | None) -> dict[str, list[tuple[str, int]]]:
    """Free variable -> the (input, axis) places it sizes."""
    out: dict[str, list[tuple[str, int]]] = {}
    for f in facts:
        for axis, d in enumerate(f.dims or []):
            if isinstance(d, int):
                continue
            key = batch if (batch == "<batch>" and axis == 0 and d is None) else _key(f.name, axis, d)
            out.setdefault(key, []).append((f.name, axis))
    return out


def _is_image_axis(f: InputFacts, axis: int) -> bool:
    return (
        f.dims is not None
        and len(f.dims) == 4
        and axis in (2, 3)
        and isinstance(f.dims[1], int)
        and f.dims[1] in (1, 3, 4)
        and _np(f.dtype) is not object
        and np.dtype(_np(f.dtype)).kind == "f"
    )


# --- resolution -------------------------------------------------------------------------------


@dataclass
class Resolution:
    status: str  # INPUTS_RESOLVED, INPUTS_NEED_SPEC, or "" when ONNX Runtime cannot load the model
    inputs: list[ResolvedInput] = field(default_factory=list)
    message: str = ""
    trials: int = 0


def _range_for(f: InputFacts, spec: InputSpec | None) -> tuple[float | None, float | None]:
    if spec is not None and (spec.low is not None or spec.high is not None):
        return spec.low, spec.high
    kind = np.dtype(_np(f.dtype)).kind if _np(f.dtype) is not object else "O"
    if kind in "iu":
        if f.gather_rows:
            return 0, f.gather_rows - 1
        if f.dims == [] and _RATE_NAME.search(f.name):
            return 16000, 16000
        if f.dims == []:
            return 1, 1
        return 0, 1
    return None, None


def _spec_shape(spec: InputSpec) -> list[int] | None:
    return spec.shape or spec.opt_shape or spec.max_shape or spec.min_shape


def _check_spec(f: InputFacts, spec: InputSpec) -> None:
    for label, shape in (
        ("shape", spec.shape),
        ("min", spec.min_shape),
        ("opt", spec.opt_shape),
        ("max", spec.max_shape),
    ):
        if shape is None:
            continue
        if any(int(d) <= 0 for d in shape):
            raise InputError("invalid_input_spec", f"{label} shape {shape} of input {f.name!r} must be positive")
        if f.dims is not None and len(shape) != len(f.dims):
            raise InputError(
                "invalid_input_spec",
                f"{label} shape {shape} of input {f.name!r} has {len(shape)} dimensions; the model declares "
                f"{len(f.dims)} ({_fmt_dims(f.dims)})",
            )
        for axis, (declared, given) in enumerate(zip(f.dims or [], shape, strict=False)):
            if isinstance(declared, int) and declared != given:
                raise InputError(
                    "invalid_input_spec",
                    f"{label} shape {shape} of input {f.name!r}: dimension {axis} is fixed to {declared} by the model",
                )


def _fmt_dims(dims: list[int | str | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def _shape_of(f: InputFacts, values: dict[str, int], batch: str | None) -> list[int]:
    shape = []
    for axis, d in enumerate(f.dims or []):
        if isinstance(d, int):
            shape.append(d)
        else:
            key = batch if (batch == "<batch>" and axis == 0 and d is None) else _key(f.name, axis, d)
            shape.append(values[key])
    return shape


def _feed(f: InputFacts, shape: list[int], low: float | None, high: float | None, rng: np.random.Generator) -> Any:
    return draw(rng, f.dtype, shape, low, high, f.name)


def draw(
    rng: np.random.Generator, dtype: str, shape: list[int], low: float | None, high: float | None, name: str
) -> np.ndarray:
    target = _np(dtype)
    if target is object:
        return np.array(["inferlab"] * int(np.prod(shape, dtype=np.int64)), dtype=object).reshape(shape)
    kind = np.dtype(target).kind
    if kind == "f":
        lo = 0.0 if low is None else float(low)
        hi = 1.0 if high is None else float(high)
        return (lo + (hi - lo) * rng.random(shape, dtype=np.float64)).astype(target)
    if kind in "iu":
        lo_i = 0 if low is None else int(low)
        hi_i = 1 if high is None else int(high)
        return rng.integers(lo_i, max(hi_i, lo_i) + 1, size=shape).astype(target)
    if kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    raise InputError("unsupported_model", f"input {name!r} holds {dtype}: synthetic data cannot stand in for it")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else text)[:300]


def _session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _quiet_run() -> Any:
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4  # failed trials are expected; their errors are kept, not logged
    return options


@dataclass
class _Known:
    """What the request fixes before the search: sizes of dynamic axes (by variable key),
    where each input's shape comes from, each input's value range, and sample arrays that are
    fed as they are."""

    fixed: dict[str, int]
    sources: dict[str, str]
    ranges: dict[str, tuple[float | None, float | None]]
    given_feeds: dict[str, np.ndarray] = field(default_factory=dict)


def resolve(
    path: Path,
    *,
    specs: list[InputSpec] | None = None,
    sample: dict[str, np.ndarray] | None = None,
    dataset_inputs: dict[str, np.ndarray] | None = None,
    budget_s: float = SEARCH_BUDGET_S,
    session: Any = None,
) -> Resolution:
    """The inputs of the model at ``path`` that ONNX Runtime CPU runs (see the module doc).
    Raises ``InputError`` for a spec or sample that contradicts the model; returns a
    ``needs_input_spec`` resolution when no size that was tried runs."""
    model = onnx.load(str(path), load_external_data=False)
    facts = read_facts(model)
    del model
    by_spec = {s.name: s for s in specs or []}
    refusal = _check_specs(facts, by_spec)
    if refusal is not None:
        return refusal
    if session is None:
        try:
            session = _session(path)
        except Exception as exc:  # ORT raises several unrelated types
            # not an input problem: each service reports the load failure in its own words
            return Resolution("", message=f"not resolved: ONNX Runtime cannot load the model: {_first_line(exc)}")
    batch = _batch_with_specs(facts, by_spec)
    variables = _variables(facts, batch)
    known = _Known(
        fixed={},
        sources={f.name: "search" for f in facts},
        ranges={f.name: _range_for(f, by_spec.get(f.name)) for f in facts},
    )
    _fix_from_specs(known, facts, by_spec, batch)
    for source, arrays in (("sample", sample), ("dataset", dataset_inputs)):
        if arrays:
            _fix_from_arrays(known, facts, by_spec, batch, source, arrays)
    batch_searched = batch is not None and batch not in known.fixed
    if batch is not None:
        known.fixed.setdefault(batch, 1)
    free = [k for k in variables if k not in known.fixed]
    candidates = _candidates(facts, variables, free, batch if batch_searched else None)
    searched = [*free, *([str(batch)] if batch_searched else [])]
    return _search(session, facts, variables, batch, known, candidates, searched, budget_s)


def _check_specs(facts: list[InputFacts], by_spec: dict[str, InputSpec]) -> Resolution | None:
    """Raises for specs that contradict the model; a needs-spec resolution for an input that
    cannot be synthesised at all."""
    unknown = sorted(set(by_spec) - {f.name for f in facts})
    if unknown:
        raise InputError(
            "invalid_input_spec", f"input spec names {unknown}, not inputs of the model ({[f.name for f in facts]})"
        )
    for f in facts:
        if f.dtype == "non-tensor":
            return Resolution(INPUTS_NEED_SPEC, message=f"input {f.name!r} is not a tensor; it cannot be synthesised")
        if f.name in by_spec:
            _check_spec(f, by_spec[f.name])
    return None


def _batch_with_specs(facts: list[InputFacts], by_spec: dict[str, InputSpec]) -> str | None:
    batch = batch_key(facts)
    for f in facts:  # a spec whose min and max leading sizes differ declares a batch
        spec = by_spec.get(f.name)
        if spec and spec.min_shape and spec.max_shape and spec.min_shape[0] != spec.max_shape[0] and f.dims:
            batch = batch or (_key(f.name, 0, f.dims[0]) if not isinstance(f.dims[0], int) else None)
    return batch


def _axis_key(f: InputFacts, axis: int, dim: int | str | None, batch: str | None) -> str:
    return batch if (batch == "<batch>" and axis == 0 and dim is None) else _key(f.name, axis, dim)


def _fix_from_specs(known: _Known, facts: list[InputFacts], by_spec: dict[str, InputSpec], batch: str | None) -> None:
    for f in facts:
        spec = by_spec.get(f.name)
        shape = _spec_shape(spec) if spec else None
        if shape is not None and f.dims is not None:
            known.sources[f.name] = "spec"
            for axis, d in enumerate(f.dims):
                if not isinstance(d, int):
                    key = _axis_key(f, axis, d, batch)
                    known.fixed.setdefault(key, 1 if key == batch and spec and not spec.shape else int(shape[axis]))
        elif spec is not None and (spec.low is not None or spec.high is not None):
            known.sources[f.name] = "spec"


def _fix_from_arrays(
    known: _Known,
    facts: list[InputFacts],
    by_spec: dict[str, InputSpec],
    batch: str | None,
    source: str,
    arrays: dict[str, np.ndarray],
) -> None:
    """Sizes and value ranges from a sample (fed as it is) or a dataset (its leading axis
    counts samples) for inputs no spec covers."""
    for f in facts:
        if f.name not in arrays or known.sources[f.name] != "search" or f.dims is None:
            continue
        array = np.asarray(arrays[f.name])
        if array.ndim != len(f.dims):
            continue
        if source == "sample":
            known.given_feeds[f.name] = array
        known.sources[f.name] = source
        for axis, d in enumerate(f.dims):
            if source == "dataset" and axis == 0:
                continue  # a dataset's leading axis counts samples, whatever the model's batch
            if isinstance(d, int):
                if d != array.shape[axis]:
                    raise InputError(
                        f"invalid_{source}",
                        f"{source} array {f.name!r} has shape {list(array.shape)}; the model input is "
                        f"{_fmt_dims(f.dims)}",
                    )
                continue
            key = _axis_key(f, axis, d, batch)
            known.fixed.setdefault(key, 1 if key == batch else int(array.shape[axis]))
        if array.dtype.kind in "iuf" and array.size and by_spec.get(f.name) is None:
            kind = np.dtype(_np(f.dtype)).kind if _np(f.dtype) is not object else "O"
            if kind in "iu" or source == "sample":
                known.ranges[f.name] = (float(array.min()), float(array.max()))
                if kind in "iu":
                    known.ranges[f.name] = (int(array.min()), int(array.max()))


def _candidates(
    facts: list[InputFacts], variables: dict[str, list[tuple[str, int]]], free: list[str], searched_batch: str | None
) -> list[dict[str, int]]:
    """The sizes to try for the free variables, in order, without repeats; ``searched_batch``
    is the batch key when no request fixed the batch."""
    leading = {k for k in free if any(axis == 0 for _, axis in variables[k])}
    image = any(_is_image_axis(f, axis) for k in free for f in facts for name, axis in variables[k] if name == f.name)
    assignments: list[dict[str, int]] = []
    if not free:
        assignments.append({})
    else:
        for size in IMAGE_SIZES if image else GENERIC_SIZES:
            assignments.append({k: (1 if k in leading else size) for k in free})
        # one size at a time (a state's unnamed batch stays 1 while the samples axis grows)
        for key in free:
            for size in GENERIC_SIZES:
                assignments.append({k: (size if k == key else 1) for k in free})
        for size in GENERIC_SIZES:
            assignments.append(dict.fromkeys(free, size))
    if searched_batch is not None:
        # a model that runs only at some batches (a Reshape to [3, -1]): the batch is still
        # the batch, the size that ran is recorded, and each step sets its own
        for size in BATCH_SIZES:
            assignments.append({**assignments[0], searched_batch: size})
    unique: list[dict[str, int]] = []
    for assignment in assignments:
        if assignment not in unique:
            unique.append(assignment)
    return unique


def _search(
    session: Any,
    facts: list[InputFacts],
    variables: dict[str, list[tuple[str, int]]],
    batch: str | None,
    known: _Known,
    candidates: list[dict[str, int]],
    searched: list[str],
    budget_s: float,
) -> Resolution:
    """Run the model on each candidate until one runs or the budget is spent."""
    deadline = time.monotonic() + budget_s
    names = [o.name for o in session.get_outputs()]
    run_options = _quiet_run()
    last_error = ""
    refused: BaseException | None = None  # an allocation the runtime refused
    trials = 0
    for assignment in candidates:
        if trials and time.monotonic() > deadline:
            break
        feeds = _trial_feeds(facts, variables, batch, known, assignment)
        trials += 1
        try:
            session.run(names, feeds, run_options)
        except Exception as exc:
            last_error = _first_line(exc)
            refused = refused or out_of_memory_cause(exc)
            continue
        return Resolution(INPUTS_RESOLVED, _resolved(facts, batch, known, feeds), trials=trials)
    if refused is not None:
        # Nothing ran and memory ran short: a model too big for its limit, not one that needs
        # a spec (in the sandbox this becomes out_of_memory).
        raise MemoryError(f"the model ran out of memory on every input tried: {last_error}") from refused
    return Resolution(
        INPUTS_NEED_SPEC, message=_needs_spec_message(facts, variables, searched, last_error), trials=trials
    )


def _trial_feeds(
    facts: list[InputFacts],
    variables: dict[str, list[tuple[str, int]]],
    batch: str | None,
    known: _Known,
    assignment: dict[str, int],
) -> dict[str, Any]:
    values = {**known.fixed, **assignment}
    rng = np.random.default_rng(0)
    feeds = {}
    for f in facts:
        if f.name in known.given_feeds and not any(
            k in assignment for k in variables if any(n == f.name for n, _ in variables[k])
        ):
            feeds[f.name] = known.given_feeds[f.name].astype(_np(f.dtype), copy=False)
        else:
            feeds[f.name] = _feed(f, _shape_of(f, values, batch), *known.ranges[f.name], rng)
    return feeds


def _resolved(facts: list[InputFacts], batch: str | None, known: _Known, feeds: dict[str, Any]) -> list[ResolvedInput]:
    resolved = []
    for f in facts:
        shape = list(np.shape(feeds[f.name]))
        batch_axis: int | None = None
        if batch is not None and f.dims:
            first = f.dims[0]
            if (batch == "<batch>" and first is None) or first == batch:
                batch_axis = 0
        low, high = known.ranges[f.name]
        resolved.append(
            ResolvedInput(
                name=f.name,
                dtype=f.dtype,
                shape=shape,
                batch_axis=batch_axis,
                low=low,
                high=high,
                source=known.sources[f.name],
            )
        )
    return resolved


def _needs_spec_message(
    facts: list[InputFacts], variables: dict[str, list[tuple[str, int]]], free: list[str], error: str
) -> str:
    if free:
        places = [f"input {n!r} dimension {axis} ({k!r})" for k in free for n, axis in variables[k][:1]]
        what = f"no size tried for {', '.join(places)} ({', '.join(map(str, GENERIC_SIZES))}) runs in ONNX Runtime"
    else:
        what = "the model's fixed input shapes do not run with synthetic values"
    options = []
    for f in facts:
        if f.dims is None:
            options.append(f"--shape {f.name}:<dims>")
            continue
        if f.dims and any(not isinstance(d, int) for d in f.dims):
            options.append(f"--shape {f.name}:" + "x".join(str(d) if isinstance(d, int) else "N" for d in f.dims))
        elif _np(f.dtype) is not object and np.dtype(_np(f.dtype)).kind in "iu":
            options.append(f"--range {f.name}:LOW:HIGH")
    hint = " ".join(options) or "--sample inputs.npz"
    return (
        f"{what} (last error: {error}); tell inferlab how the model is fed: "
        f"inferlab register MODEL.onnx --name NAME --version VERSION {hint} (or --sample inputs.npz)"
    )


# --- feeding from a resolution -----------------------------------------------------------------


def resolved_map(resolved: list[ResolvedInput]) -> dict[str, ResolvedInput]:
    return {r.name: r for r in resolved}


def fixed_batch(resolved: list[ResolvedInput]) -> bool:
    """True when the model takes no batch axis (every run is one resolved sample)."""
    return bool(resolved) and all(r.batch_axis is None for r in resolved)


def shape_at(r: ResolvedInput, batch: int) -> list[int]:
    shape = list(r.shape)
    if r.batch_axis is not None:
        shape[r.batch_axis] = batch
    return shape


def feeds(
    resolved: list[ResolvedInput], batch: int, seed: int = 0, *, dtypes: dict[str, str] | None = None
) -> dict[str, np.ndarray]:
    """Seeded synthetic inputs at ``batch`` rows (ignored for inputs without a batch axis);
    ``dtypes`` overrides the recorded dtypes (an fp16 variant of the resolved model)."""
    rng = np.random.default_rng(seed)
    out = {}
    for r in resolved:
        dtype = (dtypes or {}).get(r.name, r.dtype)
        out[r.name] = draw(rng, dtype, shape_at(r, batch), r.low, r.high, r.name)
    return out


def shapes_of(resolved: list[ResolvedInput], batch: int = 1) -> dict[str, list[int]]:
    return {r.name: shape_at(r, batch) for r in resolved}


# --- input sets (converter parity and calibration) -----------------------------------------------


@dataclass
class InputSet:
    source: str
    batches: list[dict[str, np.ndarray]]
    labels: np.ndarray | None = None
    seed: int = 0
    note: str = ""
    shapes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return sum(_rows(batch) for batch in self.batches)

    def split(self, fraction: float = 0.5) -> tuple[InputSet, InputSet]:
        """Two disjoint sets by whole batches (first part, rest), so that int8 calibration and
        the parity check never see the same samples."""
        if len(self.batches) < 2:
            raise InputError("invalid_dataset", f"{self.source} data has too few samples to split")
        cut = min(max(1, round(len(self.batches) * fraction)), len(self.batches) - 1)
        first_rows = sum(_rows(b) for b in self.batches[:cut])
        labels_a = None if self.labels is None else self.labels[:first_rows]
        labels_b = None if self.labels is None else self.labels[first_rows:]
        return (
            InputSet(self.source, self.batches[:cut], labels_a, self.seed, self.note, self.shapes),
            InputSet(self.source, self.batches[cut:], labels_b, self.seed, self.note, self.shapes),
        )


def _rows(batch: dict[str, np.ndarray]) -> int:
    first = next(iter(batch.values()))
    return int(first.shape[0]) if first.ndim else 1


def numpy_dtype(spec: TensorSpec) -> np.dtype:
    if not spec.is_tensor:
        raise InputError(
            "unsupported_model",
            f"input {spec.name!r} is {spec.dtype}, not a tensor: parity inputs can only be built for tensor inputs",
        )
    if spec.dtype == "str":
        return np.dtype(object)
    try:
        return np.dtype(spec.dtype)
    except TypeError:
        raise InputError(
            "unsupported_model", f"input {spec.name!r} has dtype {spec.dtype}, which numpy cannot hold"
        ) from None


def _is_dynamic(dim: int | str | None) -> bool:
    return not isinstance(dim, int) or dim <= 0


def _given_shape(spec: TensorSpec, given: list[int]) -> list[int]:
    given = [int(d) for d in given]
    if spec.shape is not None:
        if len(given) != len(spec.shape):
            raise InputError(
                "invalid_request",
                f"shape {given} for input {spec.name!r} has {len(given)} dimensions; the model declares "
                f"{len(spec.shape)} ({spec.shape})",
            )
        for declared, value in zip(spec.shape, given, strict=True):
            if not _is_dynamic(declared) and declared != value:
                raise InputError(
                    "invalid_request",
                    f"shape {given} for input {spec.name!r} contradicts its fixed dimensions {spec.shape}",
                )
    if any(d <= 0 for d in given):
        raise InputError("invalid_request", f"shape {given} for input {spec.name!r} must be positive")
    return given


def synthetic_inputs(
    specs: list[TensorSpec],
    *,
    samples: int,
    seed: int = 0,
    shapes: dict[str, list[int]] | None = None,
    batch_size: int = DEFAULT_BATCH,
    default_dim: int = DEFAULT_DIM,
    resolved: list[ResolvedInput] | None = None,
) -> InputSet:
    """Seeded synthetic inputs for ``samples`` samples, in runs of ``batch_size`` where the
    model has a batch axis, else one resolved sample per run. Shapes come from ``shapes``
    (request), else the record's ``resolved`` inputs, else the declared shapes with the
    batch at ``batch_size`` and other dynamic dimensions 1."""
    shapes = shapes or {}
    if not specs:
        raise InputError("unsupported_model", "the model declares no inputs")
    dtypes = {s.name: numpy_dtype(s) for s in specs}
    table = _input_table(specs, shapes, resolved_map(resolved or []), default_dim)
    # A batch only when every non-scalar input has one; otherwise each run is the fixed shapes.
    batched = all(row.batch_axis is not None or row.shape == [] for row in table) and any(
        row.batch_axis is not None for row in table
    )
    if batched:
        per_run = max(1, min(batch_size, samples))
    else:
        table = [
            ResolvedInput(
                name=row.name, dtype=row.dtype, shape=row.shape, low=row.low, high=row.high, source=row.source
            )
            for row in table
        ]
        per_run = next((row.shape[0] for row in table if row.shape), 1)
    runs = max(1, min(MAX_RUNS, -(-samples // per_run)))
    rng = np.random.default_rng(seed)
    batches = []
    for i in range(runs):
        # The last run of a batched model is shortened so the total is exactly ``samples``.
        rows = per_run if i < runs - 1 else max(1, samples - per_run * (runs - 1))
        batch = {}
        for row in table:
            dtype = "str" if dtypes[row.name] == np.dtype(object) else str(dtypes[row.name])
            batch[row.name] = draw(rng, dtype, shape_at(row, rows), row.low, row.high, row.name)
        batches.append(batch)
    first = {k: list(v.shape) for k, v in batches[0].items()}
    note = (
        f"seeded synthetic inputs (seed {seed}) at the shapes resolved at registration: floats uniform in [0, 1), "
        "integers inside the tables they index (else {0, 1})"
        if resolved
        else f"seeded synthetic inputs (seed {seed}): floats uniform in [0, 1), integers in {{0, 1}}; "
        f"dynamic non-batch dimensions = {default_dim} unless given"
    )
    return InputSet(SYNTHETIC, batches, None, seed, note, first)


def _input_table(
    specs: list[TensorSpec], shapes: dict[str, list[int]], base: dict[str, ResolvedInput], default_dim: int
) -> list[ResolvedInput]:
    """One row per input: the request's shape, else the resolved one, else the declared one."""
    table: list[ResolvedInput] = []
    for spec in specs:
        r = base.get(spec.name)
        if spec.name in shapes:  # the request's shape is taken as it is, run after run
            table.append(
                ResolvedInput(
                    name=spec.name,
                    dtype=spec.dtype,
                    shape=_given_shape(spec, shapes[spec.name]),
                    low=r.low if r else None,
                    high=r.high if r else None,
                    source="request",
                )
            )
        elif r is not None:
            table.append(
                ResolvedInput(
                    name=spec.name,
                    dtype=spec.dtype,
                    shape=list(r.shape),
                    batch_axis=r.batch_axis,
                    low=r.low,
                    high=r.high,
                    source=r.source,
                )
            )
        else:
            if spec.shape is None:
                raise InputError(
                    "unsupported_model",
                    f"input {spec.name!r} declares no shape; give one in the request (shapes={{{spec.name!r}: [...]}})",
                )
            low, high = _range_for(InputFacts(spec.name, spec.dtype, spec.shape), None)
            dims = [int(d) if not _is_dynamic(d) else default_dim for d in spec.shape]  # type: ignore[arg-type]
            axis = 0 if spec.shape and _is_dynamic(spec.shape[0]) else None
            table.append(
                ResolvedInput(
                    name=spec.name, dtype=spec.dtype, shape=dims, batch_axis=axis, low=low, high=high, source="declared"
                )
            )
    return table


def _cast(array: np.ndarray, dtype: np.dtype, name: str, source: str) -> np.ndarray:
    if array.dtype == dtype:
        return array
    same_kind = (array.dtype.kind in "fiub" and dtype.kind == "f") or (array.dtype.kind in "iub" and dtype.kind in "iu")
    if dtype.kind == "b" and array.dtype.kind in "iub":
        same_kind = True
    if not same_kind:
        raise InputError(
            "invalid_dataset", f"{source} array {name!r} holds {array.dtype}; the model input wants {dtype}"
        )
    return array.astype(dtype)


def _batch_of(specs: list[TensorSpec], shapes: dict[str, list[int]], batch_size: int) -> int:
    for spec in specs:
        if shapes.get(spec.name):
            return int(shapes[spec.name][0])
        if spec.shape and not _is_dynamic(spec.shape[0]):
            return int(spec.shape[0])  # type: ignore[arg-type]
    return batch_size


def dataset_inputs(
    dataset: Dataset,
    specs: list[TensorSpec],
    *,
    samples: int,
    source: str = DATASET,
    shapes: dict[str, list[int]] | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> InputSet:
    """Batches of the first ``samples`` rows of a dataset, cast to the model's dtypes."""
    shapes = shapes or {}
    if not specs:
        raise InputError("unsupported_model", "the model declares no inputs")
    arrays = {}
    for spec in specs:
        if spec.name not in dataset.inputs:
            raise InputError("invalid_dataset", f"{source} data has no array for input {spec.name!r}")
        array = _cast(dataset.inputs[spec.name], numpy_dtype(spec), spec.name, source)
        if spec.shape is not None and array.ndim == len(spec.shape):
            for axis, (declared, actual) in enumerate(zip(spec.shape, array.shape, strict=True)):
                if axis > 0 and not _is_dynamic(declared) and declared != actual:
                    raise InputError(
                        "invalid_dataset",
                        f"{source} array {spec.name!r} has shape {list(array.shape)}; the model input is {spec.shape}",
                    )
        arrays[spec.name] = array
    total = min(samples, dataset.samples)
    if total <= 0:
        raise InputError("invalid_dataset", f"{source} data holds no samples")
    per_run = _batch_of(specs, shapes, batch_size)
    runs = min(MAX_RUNS, -(-total // per_run))
    fixed_leading = any(spec.shape and not _is_dynamic(spec.shape[0]) for spec in specs)
    batches = []
    used = 0
    for i in range(runs):
        start, stop = i * per_run, min((i + 1) * per_run, total)
        if fixed_leading and stop - start < per_run:
            break  # a fixed leading dimension cannot take a short last batch
        batches.append({name: array[start:stop] for name, array in arrays.items()})
        used = stop
    if not batches:
        raise InputError(
            "invalid_dataset", f"{source} data holds {total} samples, fewer than the model's fixed batch of {per_run}"
        )
    labels = None if dataset.labels is None else np.asarray(dataset.labels[:used])
    first = {k: list(v.shape) for k, v in batches[0].items()}
    return InputSet(source, batches, labels, 0, f"first {used} samples of the {source} data", first)


# --- at registration ------------------------------------------------------------------------------


def resolve_model(
    path: Path,
    *,
    specs: list[InputSpec],
    sample_path: Path | None = None,
    dataset_path: Path | None = None,
    parent: list[ResolvedInput] | None = None,
) -> Resolution:
    """What the registry records: the user's specs, the sample, the dataset's inputs, else the
    parent's resolved inputs (a variant is fed as its source was), else the search. Raises
    ``InputError`` for specs or a sample that contradict the model; ``InvalidDataset`` for a
    sample that is not an input ``.npz``."""
    from shared.datasets import RESERVED, load_npz

    sample = None
    if sample_path is not None:
        sample = load_npz(sample_path)
        extra = sorted(set(sample) & RESERVED)
        if extra:
            raise InputError("invalid_sample", f"a sample holds inputs only, no {extra}: register a dataset for those")
    data = None
    if dataset_path is not None:
        arrays = load_npz(dataset_path)
        data = {k: v for k, v in arrays.items() if k not in RESERVED}
    given = {s.name for s in specs}
    if parent:
        specs = [*specs] + [
            InputSpec(name=r.name, shape=list(r.shape), low=r.low, high=r.high) for r in parent if r.name not in given
        ]
        try:
            return resolve(path, specs=specs, sample=sample, dataset_inputs=data)
        except InputError:
            specs = [s for s in specs if s.name in given]  # the variant's inputs differ: search afresh
    return resolve(path, specs=specs, sample=sample, dataset_inputs=data)
