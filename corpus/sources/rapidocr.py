"""rapidocr-onnxruntime: PaddleOCR text detection (DB), recognition (SVTR/CRNN) and angle
classification networks exported with paddle2onnx; free spatial dimensions."""

from __future__ import annotations

from pathlib import Path

from corpus.model import CorpusModel, copy_model, package_dir

PACKAGE = "rapidocr-onnxruntime"
FILES = {
    "rapidocr-det": ("ch_PP-OCRv4_det_infer.onnx", "PP-OCRv4 text detection (DB), Paddle export"),
    "rapidocr-rec": ("ch_PP-OCRv4_rec_infer.onnx", "PP-OCRv4 text recognition, 6625 classes, Paddle export"),
    "rapidocr-cls": ("ch_ppocr_mobile_v2.0_cls_infer.onnx", "PP-OCR mobile v2 text angle classifier"),
}


def build(out: Path) -> list[CorpusModel]:
    root = package_dir("rapidocr_onnxruntime", PACKAGE) / "models"
    return [
        CorpusModel(name, copy_model(root / file, out, name), PACKAGE, text, traits=("paddle", "free-dims"))
        for name, (file, text) in FILES.items()
    ]
