"""Real ONNX models produced locally: scikit-learn on its bundled datasets via skl2onnx, and
graphs built with onnx.helper. Nothing is downloaded."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y.astype(np.int64)


def digits_classifier(path: Path, *, max_iter: int = 300, zipmap: bool = False) -> Path:
    """Logistic regression on scikit-learn's digits, converted with skl2onnx."""
    path.write_bytes(_digits_classifier_bytes(max_iter, zipmap))
    return path


@cache
def _digits_classifier_bytes(max_iter: int, zipmap: bool) -> bytes:
    # trained once per session: the fit is deterministic and takes a second or more
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y = _digits()
    model = LogisticRegression(max_iter=max_iter).fit(x[:1200], y[:1200])
    options = {id(model): {"zipmap": zipmap}}
    return to_onnx(model, x[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()


def digits_dataset(path: Path, *, input_name: str = "X", start: int = 1200, groups: bool = False) -> Path:
    x, y = _digits()
    arrays = {input_name: x[start:], "labels": y[start:]}
    if groups:
        arrays["groups"] = (np.arange(len(y) - start) % 2).astype(np.int64)
    np.savez(path, **arrays)
    return path


def mlp(
    path: Path,
    *,
    features: int = 16,
    hidden: int = 32,
    classes: int = 4,
    seed: int = 0,
    extra_matmuls: int = 0,
    producer: str = "inferlab-tests",
) -> Path:
    """A two-layer MLP with a dynamic batch dimension built with onnx.helper; ``extra_matmuls``
    adds square MatMul+Relu blocks (a truly slower variant of the same function shape)."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((features, hidden)).astype(np.float32) * 0.3
    b1 = rng.standard_normal(hidden).astype(np.float32) * 0.1
    w2 = rng.standard_normal((hidden, classes)).astype(np.float32) * 0.3
    b2 = rng.standard_normal(classes).astype(np.float32) * 0.1
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Relu", ["h1"], ["h"]),
    ]
    last = "h"
    for i in range(extra_matmuls):
        wx = (np.eye(hidden) + rng.standard_normal((hidden, hidden)) * 0.01).astype(np.float32)
        inits.append(numpy_helper.from_array(wx, f"wx{i}"))
        nodes += [
            helper.make_node("MatMul", [last, f"wx{i}"], [f"x{i}"]),
            helper.make_node("Relu", [f"x{i}"], [f"r{i}"]),
        ]
        last = f"r{i}"
    nodes += [
        helper.make_node("MatMul", [last, "w2"], ["o0"]),
        helper.make_node("Add", ["o0", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name=producer)
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def sized_model(path: Path, size_bytes: int, *, seed: int = 0) -> Path:
    """A valid model whose weights make the file about ``size_bytes`` long."""
    n = max(1, size_bytes // 4)
    side = int(np.sqrt(n))
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((side, side)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "sized",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", side])],
        [numpy_helper.from_array(weight, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def external_data_model(folder: Path, *, location: str = "weights.bin") -> Path:
    """A model whose weight lives in an external file (``location`` relative to the model)."""
    folder.mkdir(parents=True, exist_ok=True)
    weight = np.arange(64, dtype=np.float32).reshape(8, 8)
    tensor = numpy_helper.from_array(weight, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [tensor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    if location != "weights.bin":  # point the reference somewhere else (e.g. outside the folder)
        loaded = onnx.load(str(path), load_external_data=False)
        for init in loaded.graph.initializer:
            for entry in init.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save_model(loaded, str(path))
    return path
