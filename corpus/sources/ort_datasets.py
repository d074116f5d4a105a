"""onnxruntime: the sample models its wheel ships under onnxruntime/datasets (IR 3, fixed
shapes; logreg_iris is ai.onnx.ml only)."""

from __future__ import annotations

from pathlib import Path

from corpus.model import CorpusModel, copy_model, package_dir

PACKAGE = "onnxruntime"
FILES = {
    "ort-mul": ("mul_1.onnx", "Mul by a constant, [3,2]"),
    "ort-sigmoid": ("sigmoid.onnx", "Sigmoid, [3,4,5]"),
    "ort-logreg-iris": ("logreg_iris.onnx", "scikit-learn logistic regression on iris, ai.onnx.ml only, [3,2]"),
}


def build(out: Path) -> list[CorpusModel]:
    root = package_dir("onnxruntime", PACKAGE) / "datasets"
    return [
        CorpusModel(name, copy_model(root / file, out, name), PACKAGE, text, traits=("ir3",))
        for name, (file, text) in FILES.items()
    ]
