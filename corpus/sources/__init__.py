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
# The quick subset that `make test` runs (tests/test_corpus.py): only packages of the dev
# install, one model of each kind, about three minutes on an idle 2-core machine.
QUICK = (onnx_zoo, ort_datasets, sklearn, magika)
QUICK_MODELS = frozenset({"zoo-squeezenet", "ort-mul", "ort-logreg-iris", "skl-mlp-digits", "magika"})
