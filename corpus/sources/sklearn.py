"""scikit-learn models trained on its bundled datasets and exported with skl2onnx, each with
a labelled held-out dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from corpus.model import CorpusModel, SourceMissing, write_dataset

PACKAGE = "skl2onnx"
SEED = 0


def _estimators() -> dict[str, tuple[str, Callable[[], Any], str]]:
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    return {
        "skl-logreg-iris": (
            "iris",
            lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
            "scaler + logistic regression",
        ),
        "skl-forest-wine": (
            "wine",
            lambda: RandomForestClassifier(n_estimators=50, random_state=SEED),
            "random forest, 50 trees",
        ),
        "skl-mlp-digits": (
            "digits",
            lambda: make_pipeline(StandardScaler(), MLPClassifier((64, 32), max_iter=300, random_state=SEED)),
            "scaler + MLP (64, 32)",
        ),
        "skl-svc-cancer": (
            "breast_cancer",
            lambda: make_pipeline(StandardScaler(), SVC(random_state=SEED)),
            "scaler + RBF SVC",
        ),
        "skl-gbt-iris": (
            "iris",
            lambda: GradientBoostingClassifier(n_estimators=30, random_state=SEED),
            "gradient boosting, 30 stages",
        ),
        "skl-knn-digits": ("digits", lambda: KNeighborsClassifier(5), "k-nearest neighbours, k=5"),
    }


def _load(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    bunch = getattr(datasets, f"load_{dataset}")()
    return bunch.data.astype(np.float32), bunch.target.astype(np.int64)


def build(out: Path) -> list[CorpusModel]:
    try:
        from skl2onnx import to_onnx
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise SourceMissing(f"scikit-learn / skl2onnx are not installed: {exc}") from None
    models = []
    for name, (dataset, make, text) in _estimators().items():
        x, y = _load(dataset)
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=SEED, stratify=y)
        estimator = make().fit(x_train, y_train)
        onx = to_onnx(estimator, x_train[:1], options={"zipmap": False}, target_opset={"": 17, "ai.onnx.ml": 3})
        path = out / f"{name}.onnx"
        path.write_bytes(onx.SerializeToString())
        data = write_dataset(out, name, {onx.graph.input[0].name: x_test}, y_test)
        models.append(
            CorpusModel(
                name,
                path,
                PACKAGE,
                f"scikit-learn {text} on {dataset} (holdout accuracy {estimator.score(x_test, y_test):.3f})",
                task="classification",
                dataset=data,
                traits=("ml-opset",),
            )
        )
    return models
