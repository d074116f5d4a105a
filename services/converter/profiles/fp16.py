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
"""

from __future__ import annotations

import warnings
from typing import Any

import onnx
from onnx import TensorProto

from services.converter.profiles.base import (
    ConversionContext,
    ConversionError,
    Converted,
    InvalidOptions,
    NotApplicable,
    Profile,
    check_known,
    first_line,
    load_model,
    normalize_opset_imports,
    parse_names,
    save_model,
)


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


def retarget_casts(model: onnx.ModelProto, blocked_ops: set[str], blocked_nodes: set[str]) -> int:
    """Cast(to=FLOAT) nodes whose output the converter turned into float16: make them cast to
    FLOAT16. Returns how many were changed."""
    fp16_values = {v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16}
    changed = 0
    for node in model.graph.node:
        if node.op_type != "Cast" or node.op_type in blocked_ops or node.name in blocked_nodes:
            continue
        if not node.output or node.output[0] not in fp16_values:
            continue
        for attr in node.attribute:
            if attr.name == "to" and attr.i == TensorProto.FLOAT:
                attr.i = TensorProto.FLOAT16
                changed += 1
    return changed


def float16_nodes(model: onnx.ModelProto, blocked_ops: set[str], blocked_nodes: set[str]) -> int:
    """Nodes that now compute in float16: not blocked, not a Cast, and producing a float16
    tensor (an Identity of integer labels does not count)."""
    fp16 = {
        v.name
        for v in (*model.graph.value_info, *model.graph.output)
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16
    }
    return sum(
        1
        for node in model.graph.node
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
        from onnxconverter_common.float16 import convert_float_to_float16

        opts = context.options
        blocked_ops = set(default_block_list()) | set(opts.get("op_block_list", []))
        blocked_nodes = set(opts.get("node_block_list", []))
        target = context.workdir / "fp16.onnx"
        # Shape inference file to file, then one in-memory copy: the library's own in-memory
        # inference would hold the model twice.
        inferred = context.workdir / "fp16.inferred.onnx"
        try:
            onnx.shape_inference.infer_shapes_path(str(context.source), str(inferred))
        except Exception as exc:  # onnx raises InferenceError / ValidationError
            raise ConversionError(f"shape inference before float16 conversion failed: {first_line(exc)}") from exc
        model = load_model(inferred)
        inferred.unlink()
        fixes = normalize_opset_imports(model)
        noop_casts = neutralize_noop_casts(model)
        try:
            with warnings.catch_warnings(record=True) as caught:
                # The library warns once per tensor holding values outside float16's range;
                # the count goes into the report instead.
                warnings.simplefilter("always")
                converted = convert_float_to_float16(
                    model,
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
        save_model(converted, target)
        del converted, model
        return Converted(
            target,
            details={
                "float16_nodes": computing,
                "casts_retargeted": casts,
                "noop_casts_removed": noop_casts,
                "tensors_with_clamped_values": clamped,
                "extra_block_list": sorted(set(opts.get("op_block_list", []))),
                "fixes": fixes,
            },
        )
