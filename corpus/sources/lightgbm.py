"""lightgbm + onnxmltools: a gradient-boosted tree classifier trained on scikit-learn's
bundled breast-cancer data, exported with onnxmltools, with a labelled held-out dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from corpus.model import CorpusModel, SourceMissing, write_dataset

PACKAGE = "lightgbm"


def build(out: Path) -> list[CorpusModel]:
    try:
        import lightgbm
        from onnxmltools import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType
        from sklearn.datasets import load_breast_cancer
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise SourceMissing(f"lightgbm / onnxmltools are not installed: {exc}") from None
    data = load_breast_cancer()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    clf = lightgbm.LGBMClassifier(n_estimators=40, num_leaves=15, random_state=0, verbose=-1).fit(x_train, y_train)
    onx = convert_lightgbm(
        clf, initial_types=[("input", FloatTensorType([None, x.shape[1]]))], zipmap=False, target_opset=15
    )
    path = out / "lgbm-cancer.onnx"
    path.write_bytes(onx.SerializeToString())
    return [
        CorpusModel(
            "lgbm-cancer",
            path,
            PACKAGE,
            f"LightGBM classifier, 40 trees, on breast cancer (holdout accuracy {clf.score(x_test, y_test):.3f})",
            task="classification",
            dataset=write_dataset(out, "lgbm-cancer", {"input": x_test}, y_test),
            traits=("ml-opset",),
        )
    ]
