"""ddddocr: captcha OCR networks (IR 6, one with a dozen unused contrib opset imports) and a
YOLOX-style text detector at 416 px."""

from __future__ import annotations

from pathlib import Path

from corpus.model import CorpusModel, copy_model, package_dir

PACKAGE = "ddddocr"
FILES = {
    "ddddocr-ocr": ("common.onnx", "captcha OCR (CNN + CTC), 54 MB, free image width"),
    "ddddocr-ocr-old": ("common_old.onnx", "older captcha OCR, imports contrib opsets it does not use"),
    "ddddocr-det": ("common_det.onnx", "text detector [1,3,416,416]"),
}


def build(out: Path) -> list[CorpusModel]:
    root = package_dir("ddddocr", PACKAGE)
    return [
        CorpusModel(name, copy_model(root / file, out, name), PACKAGE, text, traits=("ir6",))
        for name, (file, text) in FILES.items()
    ]
