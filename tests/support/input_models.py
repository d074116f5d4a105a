"""Small graphs that reproduce how third-party models are fed (tests/test_inputs.py and the
registry's resolution at registration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def save(tmp_path: Path, name: str, nodes, inputs, outputs, inits=()) -> Path:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def vad(tmp_path: Path, pad: int = 64) -> Path:
    """A VAD-like graph: samples padded 'reflect' (needs more samples than the pad), a
    recurrent state [2, batch, 128] and a scalar sample rate."""
    pads = numpy_helper.from_array(np.array([0, pad, 0, pad], np.int64), "pads")
    nodes = [
        helper.make_node("Pad", ["input", "pads"], ["padded"], mode="reflect"),
        helper.make_node("ReduceMean", ["padded"], ["level"], keepdims=1),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["level", "srf"], ["out"]),
        helper.make_node("Identity", ["state"], ["state_out"]),
    ]
    return save(
        tmp_path,
        "vad",
        nodes,
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "samples"]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 128]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [
            helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1]),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [2, "batch", 128]),
        ],
        [pads],
    )


def detector(tmp_path: Path) -> Path:
    """Feature maps downsampled by 32 and upsampled back, added to the input: runs only
    for sizes divisible by 32 (as FPN detectors do)."""
    scales = numpy_helper.from_array(np.array([1, 1, 32, 32], np.float32), "scales")
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[32, 32], strides=[32, 32]),
        helper.make_node("Resize", ["p", "", "scales"], ["u"], mode="nearest"),
        helper.make_node("Add", ["x", "u"], ["y"]),
    ]
    return save(
        tmp_path,
        "det",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [scales],
    )


def bert(tmp_path: Path) -> Path:
    """Token ids into a 100-row table; token_type_ids (through Cast and Unsqueeze/Squeeze)
    into a 2-row table; an attention mask."""
    words = numpy_helper.from_array(np.zeros((100, 8), np.float32), "words")
    types = numpy_helper.from_array(np.zeros((2, 8), np.float32), "types")
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    nodes = [
        helper.make_node("Gather", ["words", "input_ids"], ["w"]),
        helper.make_node("Cast", ["token_type_ids"], ["tt32"], to=TensorProto.INT32),
        helper.make_node("Unsqueeze", ["tt32", "axes"], ["tt3"]),
        helper.make_node("Squeeze", ["tt3", "axes"], ["tt2"]),
        helper.make_node("Gather", ["types", "tt2"], ["t"]),
        helper.make_node("Add", ["w", "t"], ["e"]),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mf", "axes"], ["m3"]),
        helper.make_node("Mul", ["e", "m3"], ["y"]),
    ]
    ids = ["batch", "sequence"]
    return save(
        tmp_path,
        "bert",
        nodes,
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ids),
            helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ids),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ids),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", 8])],
        [words, types, axes],
    )


def fixed_batch_one(tmp_path: Path, declared_classes: int = 5) -> Path:
    """A classifier fixed at batch 1 (``x: [1, 5]``) whose output is declared
    ``[1, declared_classes]``: with another figure than 5 the declaration is wrong, as some
    exporters write it, and the model still runs."""
    # the Reshape to a computed shape hides the real figure from ONNX shape inference, as
    # in exported graphs whose declared output shapes nobody checked
    nodes = [
        helper.make_node("Softmax", ["x"], ["p"], axis=1),
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Reshape", ["p", "s"], ["prob_1"]),
    ]
    return save(
        tmp_path,
        f"fixed{declared_classes}",
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5])],
        [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, [1, declared_classes])],
    )
