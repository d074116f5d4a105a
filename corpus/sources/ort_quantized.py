"""An already-quantised graph: onnxruntime.quantization's quantize_dynamic applied to the
shipped rapidocr angle classifier (what a user who quantised before registering brings)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from corpus.model import CorpusModel, package_dir

PACKAGE = "onnxruntime"
SOURCE = "rapidocr-onnxruntime"


def build(out: Path) -> list[CorpusModel]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = package_dir("rapidocr_onnxruntime", SOURCE) / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
    target = out / "rapidocr-cls-int8.onnx"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        quantize_dynamic(src, target, weight_type=QuantType.QInt8)
    return [
        CorpusModel(
            "rapidocr-cls-int8",
            target,
            PACKAGE,
            "the rapidocr angle classifier already quantised (quantize_dynamic, int8 weights)",
            traits=("quantized",),
        )
    ]
