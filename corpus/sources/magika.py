"""magika: Google's file-type classifier; int32 byte inputs [N, 2048], ai.onnx.ml opset."""

from __future__ import annotations

from pathlib import Path

from corpus.model import CorpusModel, copy_model, package_dir

PACKAGE = "magika"


def build(out: Path) -> list[CorpusModel]:
    root = package_dir("magika", PACKAGE) / "models"
    models = sorted(root.glob("*/model.onnx"))
    return [
        CorpusModel(
            "magika",
            copy_model(models[-1], out, "magika"),
            PACKAGE,
            f"Magika {models[-1].parent.name} content-type classifier (int32 byte features)",
            task="classification",
            traits=("int32-input",),
        )
    ]
