"""nudenet: a YOLOv8n detector at 320 px with symbolic height/width."""

from __future__ import annotations

from pathlib import Path

from corpus.model import CorpusModel, copy_model, package_dir

PACKAGE = "nudenet"


def build(out: Path) -> list[CorpusModel]:
    root = package_dir("nudenet", PACKAGE)
    return [
        CorpusModel(
            "nudenet-320n",
            copy_model(root / "320n.onnx", out, "nudenet-320n"),
            PACKAGE,
            "YOLOv8n detector, 320 px, symbolic batch/height/width",
            traits=("free-dims",),
        )
    ]
