"""Real models and datasets for the validator's tests, made locally: scikit-learn's bundled
datasets with skl2onnx classifiers, a deliberately damaged variant, datasets whose groups are
disadvantaged by construction, a token-id text classifier and a detector built with
onnx.helper, and graphs that break the structural rules on purpose. Nothing is downloaded."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

SPLIT_SEED = 7


@cache
def tabular(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(features float32, labels int64) of a scikit-learn bundled dataset, shuffled once."""
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "iris": datasets.load_iris,
        "wine": datasets.load_wine,
    }[name]
    x, y = loader(return_X_y=True)
    if name == "digits":
        x = x / 16.0
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    return x[order].astype(np.float32), y[order].astype(np.int64)


def split(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x, y = tabular(name)
    cut = int(len(y) * 0.6)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def sk_classifier(path: Path, name: str = "digits", *, zipmap: bool = False, scale: bool | None = None) -> Path:
    """Logistic regression trained on 60% of a bundled dataset (standardised first unless
    the features are already on one scale, as digits' are), converted with skl2onnx."""
    path.write_bytes(_sk_classifier_bytes(name, zipmap, name != "digits" if scale is None else scale))
    return path


@cache
def _sk_classifier_bytes(name: str, zipmap: bool, scale: bool) -> bytes:
    # trained once per session: the fit is deterministic, and lbfgs on digits takes seconds
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, y_train, _, _ = split(name)
    lr = LogisticRegression(max_iter=2000)
    model = make_pipeline(StandardScaler(), lr) if scale else lr
    model.fit(x_train, y_train)
    options = {id(lr): {"zipmap": zipmap}} if not scale else {id(model): {"zipmap": zipmap}}
    onx = to_onnx(model, x_train[:1], options=options, target_opset={"": 17, "ai.onnx.ml": 3})
    return onx.SerializeToString()


def sk_dataset(path: Path, name: str = "digits", *, input_name: str = "X", groups: np.ndarray | None = None) -> Path:
    """The held-out 40% of a bundled dataset as an .npz (one input array plus labels)."""
    _, _, x_test, y_test = split(name)
    arrays = {input_name: x_test, "labels": y_test}
    if groups is not None:
        arrays["groups"] = groups
    np.savez(path, **arrays)
    return path


def damaged_variant(source: Path, target: Path, *, noise: float = 1.5, seed: int = 3) -> Path:
    """The same graph with its linear classifier's weights perturbed by Gaussian noise of
    ``noise`` times their standard deviation: a broken "optimised" variant."""
    model = onnx.load(str(source))
    rng = np.random.default_rng(seed)
    touched = False
    for node in model.graph.node:
        if node.op_type == "LinearClassifier":
            for attr in node.attribute:
                if attr.name == "coefficients":
                    w = np.array(attr.floats, dtype=np.float64)
                    w = w + rng.standard_normal(w.shape) * noise * w.std()
                    del attr.floats[:]
                    attr.floats.extend(w.astype(np.float32).tolist())
                    touched = True
    if not touched:
        raise ValueError(f"{source} has no LinearClassifier to damage")
    onnx.save(model, str(target))
    return target


def fairness_dataset(path: Path, *, disadvantaged: bool, name: str = "breast_cancer", seed: int = 11) -> Path:
    """Held-out breast-cancer samples split at random into groups "a" and "b". With
    ``disadvantaged``, group "b"'s features come from a miscalibrated instrument (scaled by
    0.6 and shifted), so a model trained on calibrated data does worse for that group only."""
    _, _, x_test, y_test = split(name)
    rng = np.random.default_rng(seed)
    groups = np.where(rng.random(len(y_test)) < 0.5, "a", "b")
    x = x_test.copy()
    if disadvantaged:
        b = groups == "b"
        x[b] = x[b] * 0.6 + x_test.std(axis=0) * 0.3
    np.savez(path, X=x, labels=y_test, groups=groups)
    return path


def token_classifier(path: Path, *, vocab: int = 40, classes: int = 3, length: int = 12) -> Path:
    """A bag-of-embeddings text classifier over token ids (input ``input_ids`` int64 [batch,
    length]): each token's embedding votes for the class whose topic band it belongs to
    (tokens ``c*vocab/classes`` up to the next band); logits are the mean vote."""
    band = vocab // classes
    emb = np.zeros((vocab, classes), dtype=np.float32)
    for t in range(vocab):
        c = min(t // band, classes - 1)
        emb[t, c] = 1.0
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["embedding", "input_ids"], ["vectors"], axis=0),
            helper.make_node("ReduceMean", ["vectors", "axes"], ["logits"], keepdims=0),
        ],
        "bag_of_embeddings",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", length])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        [numpy_helper.from_array(emb, "embedding"), numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def token_dataset(
    path: Path,
    *,
    n: int = 600,
    vocab: int = 40,
    classes: int = 3,
    length: int = 12,
    topical: float = 0.6,
    seed: int = 5,
) -> Path:
    """Documents of ``length`` token ids: a share ``topical`` drawn from the label's topic
    band, the rest uniform over the vocabulary (so some documents are ambiguous)."""
    rng = np.random.default_rng(seed)
    band = vocab // classes
    labels = rng.integers(0, classes, n)
    ids = rng.integers(0, vocab, (n, length))
    topic = rng.random((n, length)) < topical
    ids[topic] = (labels[:, None] * band + rng.integers(0, band, (n, length)))[topic]
    np.savez(path, input_ids=ids.astype(np.int64), labels=labels.astype(np.int64))
    return path


def passthrough_detector(path: Path, *, max_dets: int = 8) -> Path:
    """A detector whose input already holds candidate detections ``x`` [batch, D, 6]
    (x1, y1, x2, y2, score, class): the graph splits them into the documented
    boxes/scores/classes outputs, so a test controls exactly what the detector "sees"."""
    nodes = [
        helper.make_node("Split", ["x", "split"], ["boxes", "score3", "class3"], axis=2),
        helper.make_node("Squeeze", ["score3", "axis2"], ["scores"]),
        helper.make_node("Squeeze", ["class3", "axis2"], ["class_f"]),
        helper.make_node("Cast", ["class_f"], ["classes"], to=TensorProto.INT64),
    ]
    graph = helper.make_graph(
        nodes,
        "passthrough_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", max_dets, 6])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", max_dets, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", max_dets]),
            helper.make_tensor_value_info("classes", TensorProto.INT64, ["batch", max_dets]),
        ],
        [
            numpy_helper.from_array(np.array([4, 1, 1], dtype=np.int64), "split"),
            numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def detection_dataset(path: Path, *, images: int = 40, max_dets: int = 8, seed: int = 9) -> tuple[Path, dict]:
    """Images with 1-3 ground-truth boxes of 2 classes; the "input" holds each image's
    candidate detections: jittered true boxes (some with the wrong class) plus false
    positives, padded with score -1. Returns the path and the arrays."""
    rng = np.random.default_rng(seed)
    x = np.full((images, max_dets, 6), -1.0, dtype=np.float32)
    gt_boxes, gt_classes, gt_counts = [], [], []
    for i in range(images):
        k = int(rng.integers(1, 4))
        boxes = []
        for _ in range(k):
            x1, y1 = rng.uniform(0, 80, 2)
            w, h = rng.uniform(10, 30, 2)
            boxes.append([x1, y1, x1 + w, y1 + h])
        classes = rng.integers(0, 2, k)
        gt_boxes += boxes
        gt_classes += classes.tolist()
        gt_counts.append(k)
        rows = []
        for box, cls in zip(boxes, classes, strict=True):
            jitter = rng.normal(0, 2.0, 4)
            wrong = rng.random() < 0.1
            rows.append([*(np.array(box) + jitter), rng.uniform(0.5, 1.0), (1 - cls) if wrong else cls])
        for _ in range(int(rng.integers(0, 3))):
            x1, y1 = rng.uniform(0, 80, 2)
            rows.append([x1, y1, x1 + 15, y1 + 15, rng.uniform(0.0, 0.7), rng.integers(0, 2)])
        x[i, : len(rows)] = np.array(rows[:max_dets], dtype=np.float32)
    arrays = {
        "x": x,
        "gt_boxes": np.array(gt_boxes, dtype=np.float32),
        "gt_classes": np.array(gt_classes, dtype=np.int64),
        "gt_counts": np.array(gt_counts, dtype=np.int64),
    }
    np.savez(path, **arrays)
    return path, arrays


def _float_graph(path: Path, nodes: list, out_shape: list, inits: list | None = None, opset: int = 17) -> Path:
    graph = helper.make_graph(
        nodes,
        "broken",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)],
        inits or [],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def nan_model(path: Path) -> Path:
    """logits = log(input): NaN for every negative input."""
    return _float_graph(path, [helper.make_node("Log", ["input"], ["logits"])], ["batch", 4])


def random_model(path: Path) -> Path:
    """logits = input + RandomNormalLike(input) without a seed: two runs differ."""
    return _float_graph(
        path,
        [
            helper.make_node("RandomNormalLike", ["input"], ["noise"]),
            helper.make_node("Add", ["input", "noise"], ["logits"]),
        ],
        ["batch", 4],
    )


def wrong_shape_model(path: Path) -> Path:
    """Declares logits [batch, 3] but computes [batch, 4]."""
    return _float_graph(path, [helper.make_node("Identity", ["input"], ["logits"])], ["batch", 3])


def unloadable_model(path: Path) -> Path:
    """A well-formed graph that passes onnx.checker (and so the registry) but uses an
    operator from a domain ONNX Runtime does not know: it will not load."""
    graph = helper.make_graph(
        [helper.make_node("Mystery", ["input"], ["logits"], domain="com.example")],
        "unloadable",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def mlp_fixed_batch(path: Path, *, batch: int = 4, features: int = 16, classes: int = 4, seed: int = 0) -> Path:
    """A linear classifier whose batch dimension is fixed (exported for one batch size)."""
    w = np.random.default_rng(seed).standard_normal((features, classes)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "w"], ["logits"])],
        "fixed_batch",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
