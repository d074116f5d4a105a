"""onnx: the "light" model-zoo topologies of onnx's backend test data (IR 3, opset 9; weights
come out of ConstantOfShape nodes and initializers listed as graph inputs)."""

from __future__ import annotations

from pathlib import Path

from corpus.model import CorpusModel, copy_model, package_dir

PACKAGE = "onnx"
NAMES = (
    "bvlc_alexnet",
    "densenet121",
    "inception_v1",
    "inception_v2",
    "resnet50",
    "shufflenet",
    "squeezenet",
    "vgg19",
    "zfnet512",
)


def build(out: Path) -> list[CorpusModel]:
    root = package_dir("onnx", PACKAGE) / "backend" / "test" / "data" / "light"
    return [
        CorpusModel(
            f"zoo-{n.replace('_', '-')}",
            copy_model(root / f"light_{n}.onnx", out, f"zoo-{n.replace('_', '-')}"),
            PACKAGE,
            f"model-zoo {n} topology (onnx backend test data, IR 3)",
            task="classification",
            traits=("ir3",),
        )
        for n in NAMES
    ]
