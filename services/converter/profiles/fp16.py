"""``fp16``: float16 weights and compute with float32 graph inputs and outputs, through
onnxconverter-common's ``convert_float_to_float16(keep_io_types=True)``.

Operators that must stay float32 are kept so: the library's default block list (the
ai.onnx.ml operators, NonMaxSuppression, TopK, Resize, Range, CumSum, ...) plus any the request
names (options ``op_block_list``, ``node_block_list``). ONNX Runtime's CPU provider runs the
rest (it casts around the few operators it has no float16 kernel for), so the variant is
checked on the runtime that loads it.

Two library gaps are closed here. A ``Cast`` to the type its input already has (scikit-learn
MLPs start with ``Cast(X, to=FLOAT)``) makes the library drop the graph-input cast it inserted
and wire float32 into float16 MatMuls; such no-op Casts become Identity first, which is
exact. And a ``Cast(to=FLOAT)`` inside the converted region keeps its target type, so a
float32 tensor would meet float16 weights; it is retargeted to FLOAT16 when its output was
converted.

Loads by construction: exporters leave tensors whose element type static inference cannot
tell (Paddle and PyTorch exports, contrib operators); the library then guesses and wires a
float32 tensor into a float16 operator, which ONNX Runtime refuses ("Type parameter (T) of
Optype (Mul) bound to different types"). So the types of such tensors are first taken from
one run of the source on the check inputs (the library's ``add_missing_dtypes_using_ort``),
and the converted graph is loaded in ONNX Runtime before it is returned: a node the runtime
names in a type error is kept in float32 and the conversion repeated (at most
``MAX_LOAD_REPAIRS`` times), so no variant that fails to load leaves this profile.

Already-quantised graphs (int8 operators) and graphs whose float computation all stays float32
are "not applicable", decided before converting.

When the float16 variant breaks parity, ``fallback`` converts again with onnxconverter-common's
``auto_convert_mixed_precision``, which bisects the node list for the smallest set that must
stay float32 for the check inputs to pass; the report names those nodes.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto

from services.converter.errors import (
    ConversionError,
    InvalidOptions,
    NotApplicable,
    RuntimeLoadError,
)
from services.converter.profiles.base import (
    ConversionContext,
    Converted,
    Profile,
    check_known,
    first_line,
    graphs,
    load_model,
    normalize_opset_imports,
    parse_names,
    save_model,
)
from services.converter.profiles.quantize import quantized_node_count

MAX_LOAD_REPAIRS = 12
SEARCH_STEPS = 8
# ONNX Runtime's type errors name the node: "... of node (name) ..." / "... in node (name)".
_NODE_IN_ERROR = re.compile(r"node \(([^)]*)\)|In Node, \(\"([^\"]*)\"", re.IGNORECASE)


def default_block_list() -> list[str]:
    from onnxconverter_common.float16 import DEFAULT_OP_BLOCK_LIST

    return list(DEFAULT_OP_BLOCK_LIST)


def _cast_target(node: onnx.NodeProto) -> int | None:
    for attr in node.attribute:
        if attr.name == "to":
            return int(attr.i)
    return None


def neutralize_noop_casts(model: onnx.ModelProto) -> int:
    """Turn each Cast whose input already has the target type into Identity (same values,
    same type). ``model`` carries inferred value_info. Returns how many were changed."""
    casts = [n for n in model.graph.node if n.op_type == "Cast" and n.domain in ("", "ai.onnx")]
    if not casts:
        return 0
    types = {
        v.name: v.type.tensor_type.elem_type
        for v in (*model.graph.input, *model.graph.value_info, *model.graph.output)
        if v.type.HasField("tensor_type")
    }
    types.update({init.name: init.data_type for init in model.graph.initializer})
    changed = 0
    for node in casts:
        target = _cast_target(node)
        if target is not None and node.input and types.get(node.input[0]) == target:
            node.op_type = "Identity"
            del node.attribute[:]
            changed += 1
    return changed


def route_outer_inputs(model: onnx.ModelProto) -> list[str]:
    """Give subgraphs a main-graph Identity of each float graph input they read, in place;
    returns the inputs so routed.

    ``keep_io_types`` casts a float32 graph input to float16 and renames its readers in the
    main graph only: an If or Loop body that reads the input from the outer scope still gets
    float32 against float16 weights ("Type parameter (T) of Optype (Conv) bound to different
    types" in Silero VAD's sample-rate branches), and the load repair then had to keep the
    whole If in float32. Read through an Identity in the main graph, the body gets the cast
    tensor like any other node."""
    floats = {i.name for i in model.graph.input if i.type.tensor_type.elem_type in FLOAT_TYPES}
    if not floats:
        return []
    renamed: dict[str, str] = {}
    taken = {x for g in graphs(model) for n in g.node for x in (*n.input, *n.output)}
    for graph in graphs(model)[1:]:
        local = {v.name for v in graph.input} | {i.name for i in graph.initializer}
        local |= {x for n in graph.node for x in n.output}
        for node in graph.node:
            for k, name in enumerate(node.input):
                if name in floats and name not in local:
                    if name not in renamed:
                        routed = f"{name}__outer"
                        while routed in taken:
                            routed += "_"
                        renamed[name] = routed
                    node.input[k] = renamed[name]
    for k, (name, routed) in enumerate(sorted(renamed.items())):
        model.graph.node.insert(k, onnx.helper.make_node("Identity", [name], [routed], name=f"{routed}_identity"))
    return sorted(renamed)


def _fp16_in(graph: onnx.GraphProto) -> set[str]:
    return {v.name for v in (*graph.value_info, *graph.output) if v.type.tensor_type.elem_type == TensorProto.FLOAT16}


def retarget_casts(model: onnx.ModelProto, blocked_ops: set[str], blocked_nodes: set[str]) -> int:
    """Cast(to=FLOAT) nodes whose output the converter turned into float16: make them cast to
    FLOAT16. The casts onto the main graph's outputs stay: keep_io_types means those are
    float32. Returns how many were changed."""
    fp16_values = {
        v.name for g in graphs(model) for v in g.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16
    }
    model_outputs = {o.name for o in model.graph.output}
    changed = 0
    for graph in graphs(model):
        for node in graph.node:
            if node.op_type != "Cast" or node.op_type in blocked_ops or node.name in blocked_nodes:
                continue
            if not node.output or node.output[0] not in fp16_values or node.output[0] in model_outputs:
                continue
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16
                    changed += 1
    return changed


def float16_nodes(model: onnx.ModelProto, blocked_ops: set[str], blocked_nodes: set[str]) -> int:
    """Nodes (subgraphs included) that now compute in float16: not blocked, not a Cast, and
    producing a float16 tensor (an Identity of integer labels does not count)."""
    fp16 = set().union(*(_fp16_in(g) for g in graphs(model)))
    return sum(
        1
        for graph in graphs(model)
        for node in graph.node
        if node.op_type != "Cast"
        and node.op_type not in blocked_ops
        and node.name not in blocked_nodes
        and any(out in fp16 for out in node.output)
    )


class Float16(Profile):
    id = "fp16"
    description = "float16 weights and compute, float32 I/O kept (onnxconverter-common)"
    precision = "fp16"

    def normalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        check_known(options, ("op_block_list", "node_block_list", "min_positive_val", "max_finite_val"), self.id)
        out: dict[str, Any] = {
            "op_block_list": parse_names(options, "op_block_list", self.id),
            "node_block_list": parse_names(options, "node_block_list", self.id),
        }
        for key, default in (("min_positive_val", 1e-7), ("max_finite_val", 1e4)):
            value = options.get(key, default)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise InvalidOptions(f"{self.id}: option {key!r} must be a positive number (got {value!r})")
            out[key] = float(value)
        return out

    def convert(self, context: ConversionContext) -> Converted:
        opts = context.options
        blocked_ops = set(default_block_list()) | set(opts.get("op_block_list", []))
        blocked_nodes = set(opts.get("node_block_list", []))
        model, prepared = self._prepare(context, blocked_ops)
        target = context.workdir / "fp16.onnx"
        repaired: list[str] = []
        error: str | None = None
        for _ in range(MAX_LOAD_REPAIRS + 1):
            converted, details = self._convert_once(model, opts, blocked_ops, blocked_nodes)
            save_model(converted, target)
            del converted
            error = load_error(target)
            if error is None:
                break
            node = node_named_in(error, model, blocked_nodes)
            if node is None:
                raise ConversionError(f"the float16 graph does not load in ONNX Runtime: {error}")
            blocked_nodes.add(node)
            repaired.append(node)
        else:
            raise ConversionError(
                f"the float16 graph still does not load after keeping {len(repaired)} nodes in float32: {error}"
            )
        details.update(prepared)
        details["kept_float32_to_load"] = repaired
        return Converted(target, details=details)

    def fallback(self, context: ConversionContext, first: Converted, failing: list[str]) -> Converted:
        """Mixed precision: keep in float32 the nodes that float16 cannot represent, then, if
        the check sample still fails, search for the shortest float32 tail.

        1. Range: a node that reads or writes a value beyond float16's range on the check
           sample (weights the converter would clamp, e.g. a BatchNormalization variance of
           1e8; activations that overflow) stays float32.
        2. Search: with nodes in graph order, find by bisection the longest float16 prefix
           whose conversion still matches the source on the sample (at most
           ``SEARCH_STEPS`` conversions), keeping the rest float32.

        onnxconverter-common's ``auto_convert_mixed_precision`` does a similar search but
        breaks on graphs with unnamed nodes (Paddle exports), so the search is ours and each
        step is the same ``convert_float_to_float16`` call with a node block list."""
        assert context.sample is not None
        opts = context.options
        blocked_ops = set(default_block_list()) | set(opts.get("op_block_list", []))
        model, _ = self._prepare(context, blocked_ops)
        named = name_nodes(model)
        feed = {k: np.asarray(v) for k, v in context.sample.items()}
        limit = float(opts.get("max_finite_val", 1e4))
        values = runtime_values(model, feed)
        reference = [values[o.name] for o in model.graph.output]
        base_block = set(opts.get("node_block_list", [])) | set(first.details.get("kept_float32_to_load", []))
        out_of_range = out_of_range_nodes(model, values, limit)
        del values
        target = context.workdir / "fp16-mixed.onnx"
        tol = self.default_tolerance

        def attempt(blocked: set[str]) -> bool:
            converted, _ = self._convert_once(model, opts, blocked_ops, blocked)
            save_model(converted, target)
            del converted
            return close_enough(target, feed, reference, tol.atol or 1e-2, tol.rtol or 1e-2, tol.min_cosine or 0.999)

        blocked = base_block | set(out_of_range)
        how = "range"
        if not attempt(blocked):
            order = [n.name for n in model.graph.node if n.name and n.name not in blocked]
            lo, hi = 0, len(order)  # invariant: prefix 0 passes (all float32), prefix hi unknown
            steps = 0
            while lo < hi and steps < SEARCH_STEPS:
                mid = (lo + hi + 1) // 2
                steps += 1
                if attempt(blocked | set(order[mid:])):
                    lo = mid
                else:
                    hi = mid - 1
            blocked = blocked | set(order[lo:])
            how = f"range + search ({steps} steps)"
            if not attempt(blocked):
                raise ConversionError("mixed precision: no float16 prefix of the graph matches the source")
        error = load_error(target)
        if error is not None:
            raise ConversionError(f"the mixed-precision graph does not load in ONNX Runtime: {error}")
        final = onnx.load(str(target), load_external_data=False)
        details = dict(first.details)
        details.update(
            {
                "mixed_precision": how,
                "failing_outputs_before": failing,
                "float16_nodes": float16_nodes(final, blocked_ops, blocked),
                "float32_nodes": len(blocked),
                "float32_beyond_fp16_range": sorted(out_of_range)[:50],
                "float32_node_names": sorted(blocked)[:50],
                "nodes_named": named,
            }
        )
        return Converted(target, details=details)

    def _prepare(self, context: ConversionContext, blocked_ops: set[str]) -> tuple[onnx.ModelProto, dict[str, Any]]:
        """The source with inferred value_info, ready for the converter; NotApplicable when
        float16 has nothing to do."""
        # Shape inference file to file, then one in-memory copy: the library's own in-memory
        # inference would hold the model twice.
        inferred = context.workdir / "fp16.inferred.onnx"
        try:
            onnx.shape_inference.infer_shapes_path(str(context.source), str(inferred))
        except Exception as exc:  # onnx raises InferenceError / ValidationError
            raise ConversionError(f"shape inference before float16 conversion failed: {first_line(exc)}") from exc
        model = load_model(inferred)
        inferred.unlink()
        quantized = quantized_node_count(model)
        if quantized:
            raise NotApplicable(
                f"the graph is already quantised ({quantized} int8 operators): float16 applies to float graphs"
            )
        types = _types(model)
        if not any(types.get(name, TensorProto.FLOAT) in FLOAT_TYPES for name in _compute_inputs(model, blocked_ops)):
            kept = sorted({n.op_type for n in model.graph.node} & blocked_ops)
            raise NotApplicable(
                "no operator of this graph would compute in float16: its float computation is all in "
                f"operators that stay float32 ({', '.join(kept) or 'none'})"
            )
        fixes = normalize_opset_imports(model)
        noop_casts = neutralize_noop_casts(model)
        routed = route_outer_inputs(model)
        typed = add_runtime_types(model, context.sample) if context.sample is not None else 0
        return model, {
            "fixes": fixes,
            "noop_casts_removed": noop_casts,
            "types_from_runtime": typed,
            "inputs_routed_to_subgraphs": routed,
        }

    def _convert_once(
        self, model: onnx.ModelProto, opts: dict[str, Any], blocked_ops: set[str], blocked_nodes: set[str]
    ) -> tuple[onnx.ModelProto, dict[str, Any]]:
        from onnxconverter_common.float16 import convert_float_to_float16

        work = onnx.ModelProto()
        work.CopyFrom(model)
        try:
            with warnings.catch_warnings(record=True) as caught:
                # The library warns once per tensor holding values outside float16's range;
                # the count goes into the report instead.
                warnings.simplefilter("always")
                converted = convert_float_to_float16(
                    work,
                    min_positive_val=opts.get("min_positive_val", 1e-7),
                    max_finite_val=opts.get("max_finite_val", 1e4),
                    keep_io_types=True,
                    disable_shape_infer=True,
                    op_block_list=sorted(blocked_ops),
                    node_block_list=sorted(blocked_nodes),
                )
        except Exception as exc:  # the library raises ValueError, onnx InferenceError, ...
            raise ConversionError(f"float16 conversion failed: {first_line(exc)}") from exc
        clamped = sum(1 for w in caught if "truncated" in str(w.message))
        computing = float16_nodes(converted, blocked_ops, blocked_nodes)
        if computing == 0:
            kept = sorted({n.op_type for n in converted.graph.node} & blocked_ops)
            raise NotApplicable(
                "no operator of this graph would compute in float16: its float computation is all in "
                f"operators that stay float32 ({', '.join(kept) or 'none'})"
            )
        casts = retarget_casts(converted, blocked_ops, blocked_nodes)
        return converted, {
            "float16_nodes": computing,
            "casts_retargeted": casts,
            "tensors_with_clamped_values": clamped,
            "extra_block_list": sorted(set(opts.get("op_block_list", []))),
            "node_block_list": sorted(blocked_nodes),
        }


FLOAT_TYPES = frozenset({TensorProto.FLOAT, TensorProto.DOUBLE})


def _types(model: onnx.ModelProto) -> dict[str, int]:
    types: dict[str, int] = {}
    for graph in graphs(model):
        types.update(
            {
                v.name: v.type.tensor_type.elem_type
                for v in (*graph.input, *graph.value_info, *graph.output)
                if v.type.HasField("tensor_type")
            }
        )
        types.update({init.name: init.data_type for init in graph.initializer})
    return types


def _compute_inputs(model: onnx.ModelProto, blocked_ops: set[str]) -> list[str]:
    """Inputs of the default-domain operators (subgraphs included) the converter would turn
    to float16."""
    plumbing = {"Cast", "Identity", "Shape", "Constant", "If", "Loop", "Scan"}
    return [
        name
        for graph in graphs(model)
        for n in graph.node
        if n.domain in ("", "ai.onnx") and n.op_type not in blocked_ops and n.op_type not in plumbing
        for name in n.input
        if name
    ]


def _fp16_values(model: onnx.ModelProto) -> set[str]:
    return set().union(*(_fp16_in(g) for g in graphs(model)))


def add_runtime_types(model: onnx.ModelProto, sample: dict[str, Any]) -> int:
    """Give every node output that static inference left untyped the element type it has when
    the source runs on ``sample``. Returns how many were added. Best effort: a run that fails
    leaves the model as it was (the load check after conversion still guards the result)."""
    typed = set(_types(model))
    if all(out in typed for node in model.graph.node for out in node.output if out):
        return 0
    from onnxconverter_common.auto_mixed_precision import add_missing_dtypes_using_ort

    before = len(model.graph.value_info)
    feed = {k: np.asarray(v) for k, v in sample.items()}
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            add_missing_dtypes_using_ort(model, feed)
    except Exception:  # a source that cannot expose an inner tensor keeps the library's guesses
        del model.graph.value_info[before:]
        return 0
    return len(model.graph.value_info) - before


def load_error(path: Any) -> str | None:
    from services.converter.profiles.base import OrtRunner

    try:
        OrtRunner(path).close()
    except RuntimeLoadError as exc:
        return str(exc)
    return None


def node_named_in(error: str, model: onnx.ModelProto, skip: set[str] = frozenset()) -> str | None:  # type: ignore[assignment]
    """The name of a node of ``model`` (subgraphs included) that ONNX Runtime's error message
    blames: the innermost one when the message nests ("Node (If_0) ... of node (Pad_3)")."""
    names = {n.name for g in graphs(model) for n in g.node if n.name}
    for match in reversed(_NODE_IN_ERROR.findall(error)):
        found = next((m for m in match if m), "")
        if found in names and found not in skip:
            return found
    return None


def name_nodes(model: onnx.ModelProto) -> int:
    """Give unnamed main-graph nodes unique names (a block list names nodes). Returns how many."""
    taken = {n.name for n in model.graph.node if n.name}
    count = 0
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            count += 1
    return count


def runtime_values(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every main-graph tensor's value when the source runs on ``feed`` (inputs, weights and
    node outputs), to see which exceed float16's range."""
    import onnxruntime as ort
    from onnx import numpy_helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    listed = {o.name for o in probe.graph.output}
    for node in probe.graph.node:
        for out in node.output:
            if out and out not in listed:
                probe.graph.output.append(onnx.ValueInfoProto(name=out))
                listed.add(out)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, feed), strict=True))
    values.update(feed)
    for init in model.graph.initializer:
        if init.data_type in FLOAT_TYPES:
            values[init.name] = numpy_helper.to_array(init)
    return values


def out_of_range_nodes(model: onnx.ModelProto, values: dict[str, np.ndarray], limit: float) -> list[str]:
    def beyond(name: str) -> bool:
        value = values.get(name)
        if value is None or not isinstance(value, np.ndarray) or value.dtype.kind != "f" or not value.size:
            return False
        finite = value[np.isfinite(value)]
        return bool(finite.size) and float(np.abs(finite).max()) > limit

    return [n.name for n in model.graph.node if n.name and any(beyond(x) for x in (*n.input, *n.output) if x)]


def close_enough(
    path: Any, feed: dict[str, np.ndarray], reference: list[np.ndarray], atol: float, rtol: float, min_cosine: float
) -> bool:
    """The variant at ``path`` matches ``reference`` on ``feed``: every float output within
    atol + rtol * |ref| and cosine >= min_cosine, other outputs equal."""
    from services.converter.profiles.base import OrtRunner

    try:
        runner = OrtRunner(path)
        got = list(runner.run(feed).values())
        runner.close()
    except Exception:  # a split that does not load or run does not pass
        return False
    for ref, out in zip(reference, got, strict=True):
        ref, out = np.asarray(ref), np.asarray(out)
        if ref.shape != out.shape:
            return False
        if ref.dtype.kind != "f":
            if not np.array_equal(ref, out):
                return False
            continue
        a, b = out.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
        if not np.all(np.abs(a - b) <= atol + rtol * np.abs(b)):
            return False
        norm = np.linalg.norm(a) * np.linalg.norm(b)
        if norm > 0 and float(a @ b / norm) < min_cosine:
            return False
    return True
