"""Models and telemetry for the benchmarker's tests, made locally with onnx.helper and numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shared.contracts.base import new_id
from shared.contracts.benchmark import InferenceTelemetry


def custom_op_model(path: Path) -> Path:
    """Valid ONNX (the registry accepts it) that ONNX Runtime cannot load: an operator of an
    unknown domain."""
    graph = helper.make_graph(
        [helper.make_node("Mystery", ["x"], ["y"], domain="com.inferlab.test")],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.inferlab.test", 1)]
    )
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def reshape_model(path: Path, rows: int = 3) -> Path:
    """Loads fine but fails at run time unless the batch size is a multiple of ``rows``
    (Reshape to ``[rows, -1]``)."""
    shape = numpy_helper.from_array(np.array([rows, -1], dtype=np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, None])],
        [shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def fixed_batch_model(path: Path, batch: int = 2) -> Path:
    """A MatMul whose input fixes the batch dimension."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 8])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def slow_model(path: Path, width: int = 512, layers: int = 6) -> Path:
    """One inference of tens of milliseconds on one thread (``layers`` [width, width] MatMuls
    over ``width`` rows): slower than a measuring budget of a millisecond."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"w{i}")
        for i in range(layers)
    ]
    names = ["x", *(f"h{i}" for i in range(1, layers)), "y"]
    graph = helper.make_graph(
        [helper.make_node("MatMul", [names[i], f"w{i}"], [names[i + 1]]) for i in range(layers)],
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [width, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [width, width])],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def telemetry_batches(
    name: str,
    levels: list[tuple[float, int]],
    *,
    version: str = "1.0.0",
    host: str = "web-1",
    batch: int = 250,
    start: float = 1_800_000_000.0,
    step_s: float = 0.001,
    noise: float = 0.05,
    seed: int = 0,
) -> list[InferenceTelemetry]:
    """Production telemetry: lognormal latencies around each (level ms, samples) segment."""
    rng = np.random.default_rng(seed)
    lat = np.concatenate([level * rng.lognormal(0.0, noise, n) for level, n in levels])
    ts = start + np.arange(lat.size) * step_s
    return [
        InferenceTelemetry(
            event_id=new_id(),
            name=name,
            version=version,
            host=host,
            timestamps=ts[i : i + batch].tolist(),
            latencies_ms=lat[i : i + batch].tolist(),
        )
        for i in range(0, lat.size, batch)
    ]
