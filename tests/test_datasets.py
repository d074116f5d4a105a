"""Datasets: loading without pickle, checking against model inputs, subsetting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.contracts.registry import TensorSpec
from shared.datasets import Dataset, load_dataset
from shared.errors import InvalidDataset


def test_subset_picks_detection_rows_per_sample() -> None:
    data = Dataset(
        inputs={"image": np.arange(3 * 2).reshape(3, 2)},
        labels=None,
        groups=None,
        extras={
            "gt_counts": np.array([2, 0, 1]),
            "gt_boxes": np.array([[0, 0, 1, 1], [1, 1, 2, 2], [5, 5, 6, 6]]),
            "gt_classes": np.array([7, 8, 9]),
        },
    )
    sub = data.subset(np.array([0, 2]))
    assert sub.samples == 2
    assert sub.extras["gt_counts"].tolist() == [2, 1]
    assert sub.extras["gt_classes"].tolist() == [7, 8, 9]
    assert data.subset(np.array([2])).extras["gt_boxes"].tolist() == [[5, 5, 6, 6]]
    assert data.subset(slice(1, 2)).extras["gt_classes"].tolist() == []


def test_pickled_object_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, X=np.array([{"a": 1}], dtype=object), labels=np.array([1]))
    with pytest.raises(InvalidDataset, match="pickle"):
        load_dataset(path)


def test_inputs_are_matched_by_name_and_length(tmp_path: Path) -> None:
    spec = [TensorSpec(name="x", dtype="float32", shape=["n", 3])]
    np.savez(tmp_path / "ok.npz", x=np.zeros((4, 3), np.float32), labels=np.zeros(4))
    assert load_dataset(tmp_path / "ok.npz", spec).samples == 4
    np.savez(tmp_path / "short.npz", x=np.zeros((4, 3), np.float32), labels=np.zeros(3))
    with pytest.raises(InvalidDataset, match="differ in length"):
        load_dataset(tmp_path / "short.npz", spec)
    np.savez(tmp_path / "rank.npz", x=np.zeros((4, 3, 1), np.float32))
    with pytest.raises(InvalidDataset, match="dimensions"):
        load_dataset(tmp_path / "rank.npz", spec)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InvalidDataset, match="not a readable"):
        load_dataset(tmp_path / "junk.npz", spec)
