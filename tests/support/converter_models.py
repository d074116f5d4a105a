"""Real models for the converter's tests, made locally: scikit-learn MLPs on its bundled
datasets via skl2onnx (classifier on digits, regressor on diabetes), a small torch CNN trained
for a few epochs on the 8x8 digits images and exported with torch.onnx.export, onnx.helper
graphs with a dynamic batch, and the datasets that go with them. Nothing is downloaded."""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shared.demo import digits_cnn, export_digits_cnn
from tests.support.models import _digits

OPSETS = {"": 17, "ai.onnx.ml": 3}


def _quiet() -> None:
    from sklearn.exceptions import ConvergenceWarning

    warnings.filterwarnings("ignore", category=ConvergenceWarning)


@cache
def _diabetes() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    return x.astype(np.float32), y.astype(np.float64)


def skl_mlp_classifier(path: Path, *, zipmap: bool = False) -> Path:
    """scikit-learn MLPClassifier on digits (its ONNX graph starts with a Cast and holds
    MatMul/Add/Relu/Softmax plus ai.onnx.ml ArrayFeatureExtractor for the label)."""
    path.write_bytes(_skl_mlp_classifier_bytes(zipmap))
    return path


@cache
def _skl_mlp_classifier_bytes(zipmap: bool) -> bytes:
    # trained once per session: random_state fixes the fit
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    _quiet()
    x, y = _digits()
    model = MLPClassifier(hidden_layer_sizes=(32,), max_iter=60, random_state=0).fit(x[:1200], y[:1200])
    return to_onnx(model, x[:1], options={id(model): {"zipmap": zipmap}}, target_opset=OPSETS).SerializeToString()


def skl_mlp_regressor(path: Path) -> Path:
    """scikit-learn MLPRegressor on diabetes (inputs standardised inside the pipeline)."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    _quiet()
    x, y = _diabetes()
    model = make_pipeline(
        StandardScaler(), MLPRegressor(hidden_layer_sizes=(32,), max_iter=400, learning_rate_init=0.01, random_state=0)
    ).fit(x[:300], y[:300])
    onnx.save(to_onnx(model, x[:1], target_opset=OPSETS), str(path))
    return path


def skl_linear_regressor(path: Path) -> Path:
    """scikit-learn LinearRegression: a single ai.onnx.ml LinearRegressor node."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression

    x, y = _diabetes()
    onnx.save(to_onnx(LinearRegression().fit(x[:300], y[:300]), x[:1], target_opset=OPSETS), str(path))
    return path


def diabetes_dataset(path: Path, *, input_name: str = "X") -> Path:
    x, y = _diabetes()
    np.savez(path, **{input_name: x[300:], "labels": y[300:]})
    return path


def digits_images(path: Path, *, input_name: str = "image", start: int = 1200) -> Path:
    x, y = _digits()
    np.savez(path, **{input_name: x[start:].reshape(-1, 1, 8, 8), "labels": y[start:]})
    return path


def torch_cnn(path: Path, *, epochs: int = 20) -> Path:
    """A small CNN (Conv-BN-ReLU-Pool x2, Linear) trained briefly on the 8x8 digits, exported
    with the TorchScript exporter (dynamo=False) with a dynamic batch dimension."""
    import torch

    torch.manual_seed(0)
    x, y = _digits()
    images = torch.from_numpy(x[:1200].reshape(-1, 1, 8, 8))
    labels = torch.from_numpy(y[:1200])

    net = digits_cnn()
    optim = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(epochs):
        for i in range(0, len(images), 128):
            optim.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(images[i : i + 128]), labels[i : i + 128])
            loss.backward()
            optim.step()
    return export_digits_cnn(net, path)


def two_input_graph(path: Path) -> Path:
    """onnx.helper graph with two inputs (float features with a dynamic batch, int64 ids with a
    dynamic batch and a dynamic length) and two outputs: exercises dtypes and dynamic dims."""
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 4)).astype(np.float32)
    table = rng.standard_normal((2, 4)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["proj"]),
            helper.make_node("Gather", ["table", "ids"], ["emb"]),
            helper.make_node("ReduceSum", ["emb", "axis"], ["pooled"], keepdims=0),
            helper.make_node("Add", ["proj", "pooled"], ["scores"]),
            helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 8]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "length"]),
        ],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        [
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(table, "table"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def big_mlp(path: Path, *, target_bytes: int = 50 << 20, seed: int = 0) -> Path:
    """An MLP whose float32 weights make the file about ``target_bytes`` (for the benchmark):
    input [batch, 1024] -> hidden square layers -> 10 logits."""
    rng = np.random.default_rng(seed)
    width = 1024
    layers = max(1, target_bytes // (width * width * 4))
    inits, nodes = [], []
    last = "input"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        b = (rng.standard_normal(width) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [
            helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
            helper.make_node("Relu", [f"a{i}"], [f"r{i}"]),
        ]
        last = f"r{i}"
    head = (rng.standard_normal((width, 10)) / np.sqrt(width)).astype(np.float32)
    inits.append(numpy_helper.from_array(head, "head"))
    nodes.append(helper.make_node("MatMul", [last, "head"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "big_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def int_cast_graph(path: Path) -> Path:
    """Integer ids cast to float inside the graph, then a MatMul: the float16 converter leaves
    the Cast targeting float32, which the converter service retargets."""
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT), helper.make_node("MatMul", ["f", "w"], ["y"])],
        "int_cast",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
