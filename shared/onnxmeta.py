"""Reading what an ONNX graph declares: inputs and outputs with dtypes and shapes, opsets,
parameter count. Shared by the registry (metadata), and the converter, benchmarker and
validator (which build inputs from the declared specs)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, TypeProto

from shared.contracts.registry import TensorSpec


def dtype_name(elem_type: int) -> str:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        name: str = TensorProto.DataType.Name(elem_type)
        return name.lower()


def _type_name(tp: TypeProto) -> str:
    kind = tp.WhichOneof("value")
    if kind == "tensor_type":
        return dtype_name(tp.tensor_type.elem_type)
    if kind == "sparse_tensor_type":
        return f"sparse({dtype_name(tp.sparse_tensor_type.elem_type)})"
    if kind == "sequence_type":
        return f"seq({_type_name(tp.sequence_type.elem_type)})"
    if kind == "map_type":
        return f"map({dtype_name(tp.map_type.key_type)},{_type_name(tp.map_type.value_type)})"
    if kind == "optional_type":
        return f"opt({_type_name(tp.optional_type.elem_type)})"
    return "unknown"


def _shape(tp: TypeProto) -> list[int | str | None] | None:
    if tp.WhichOneof("value") != "tensor_type" or not tp.tensor_type.HasField("shape"):
        return None
    dims: list[int | str | None] = []
    for dim in tp.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param") and dim.dim_param:
            dims.append(dim.dim_param)
        else:
            dims.append(None)
    return dims


def value_info_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    return TensorSpec(name=value.name, dtype=_type_name(value.type), shape=_shape(value.type))


def graph_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    """Real inputs: graph inputs that are not initializers (old exporters list weights as
    inputs too)."""
    initializers = {init.name for init in model.graph.initializer}
    return [value_info_spec(v) for v in model.graph.input if v.name not in initializers]


def graph_outputs(model: onnx.ModelProto) -> list[TensorSpec]:
    return [value_info_spec(v) for v in model.graph.output]


def opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {(op.domain or "ai.onnx"): int(op.version) for op in model.opset_import}


def _tensor_elements(tensor: TensorProto) -> int:
    return int(np.prod(tensor.dims, dtype=np.int64)) if len(tensor.dims) else 1


def parameter_count(model: onnx.ModelProto) -> int:
    total = sum(_tensor_elements(t) for t in model.graph.initializer)
    total += sum(_tensor_elements(s.values) for s in model.graph.sparse_initializer)
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and node.op_type == "Constant":
                total += _tensor_elements(attr.t)
            elif attr.type == onnx.AttributeProto.FLOATS and node.domain == "ai.onnx.ml":
                # classic ML operators (linear models, trees) keep their weights as float lists
                total += len(attr.floats)
    return total


def spec_from_session_arg(arg: object) -> TensorSpec:
    """TensorSpec from an onnxruntime NodeArg (``tensor(float)`` -> ``float32``)."""
    ort_type = str(getattr(arg, "type", ""))
    dtype = ORT_TYPES.get(ort_type, ort_type)
    shape = [d if isinstance(d, int) else (d or None) for d in (getattr(arg, "shape", None) or [])]
    return TensorSpec(name=str(getattr(arg, "name", "")), dtype=dtype, shape=shape)


ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(bfloat16)": "bfloat16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "str",
}
