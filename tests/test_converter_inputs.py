"""Unit tests of parity/calibration input sets: dtypes, declared shapes, dynamic dims,
fixed batches, datasets, splitting."""

from __future__ import annotations

import numpy as np
import pytest

from services.converter.inputs import InputError, dataset_inputs, synthetic_inputs
from shared.contracts.registry import TensorSpec
from shared.datasets import Dataset

FEATURES = TensorSpec(name="x", dtype="float32", shape=["batch", 16])
IDS = TensorSpec(name="ids", dtype="int64", shape=["batch", "length"])


def test_synthetic_respects_dtypes_shapes_and_seed() -> None:
    data = synthetic_inputs([FEATURES, IDS], samples=70, seed=3, batch_size=32, default_dim=5)
    assert [b["x"].shape for b in data.batches] == [(32, 16), (32, 16), (6, 16)]
    assert data.samples == 70 and data.source == "synthetic" and data.labels is None
    assert all(b["x"].dtype == np.float32 and b["ids"].dtype == np.int64 for b in data.batches)
    assert data.batches[0]["ids"].shape == (32, 5)
    x = np.concatenate([b["x"] for b in data.batches])
    assert x.min() >= 0.0 and x.max() < 1.0
    assert set(np.unique(np.concatenate([b["ids"].ravel() for b in data.batches]))) <= {0, 1}
    again = synthetic_inputs([FEATURES, IDS], samples=70, seed=3, batch_size=32, default_dim=5)
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(data.batches, again.batches, strict=True))
    other = synthetic_inputs([FEATURES], samples=70, seed=4)
    assert not np.array_equal(other.batches[0]["x"], data.batches[0]["x"])


def test_fixed_leading_dimension_and_requested_shapes() -> None:
    image = TensorSpec(name="image", dtype="float32", shape=[1, 3, "h", "w"])
    data = synthetic_inputs([image], samples=4, shapes={"image": [1, 3, 8, 8]})
    assert [b["image"].shape for b in data.batches] == [(1, 3, 8, 8)] * 4
    with pytest.raises(InputError, match="contradicts its fixed dimensions"):
        synthetic_inputs([image], samples=1, shapes={"image": [2, 3, 8, 8]})
    with pytest.raises(InputError, match="has 2 dimensions"):
        synthetic_inputs([image], samples=1, shapes={"image": [1, 3]})


def test_unsupported_inputs_give_precise_reasons() -> None:
    with pytest.raises(InputError, match="not a tensor") as err:
        synthetic_inputs([TensorSpec(name="m", dtype="map(int64,float32)")], samples=4)
    assert err.value.code == "unsupported_model"
    with pytest.raises(InputError, match="declares no shape"):
        synthetic_inputs([TensorSpec(name="x", dtype="float32", shape=None)], samples=4)
    text = synthetic_inputs([TensorSpec(name="t", dtype="str", shape=["batch"])], samples=4)
    assert text.batches[0]["t"].dtype == object  # string inputs get a fixed token
    with pytest.raises(InputError, match="synthetic data cannot stand in"):
        synthetic_inputs([TensorSpec(name="c", dtype="complex64", shape=["batch"])], samples=4)


def test_dataset_inputs_cast_batch_and_label() -> None:
    x = np.arange(100 * 16, dtype=np.float64).reshape(100, 16)
    labels = np.arange(100) % 3
    data = dataset_inputs(Dataset({"x": x}, labels, None, {}), [FEATURES], samples=50, batch_size=20)
    assert [b["x"].shape for b in data.batches] == [(20, 16), (20, 16), (10, 16)]
    assert data.batches[0]["x"].dtype == np.float32  # cast to the model's dtype
    assert data.labels is not None and data.labels.tolist() == labels[:50].tolist()
    first, rest = data.split(0.5)
    assert first.samples + rest.samples == 50 and first.labels.tolist() == labels[: first.samples].tolist()
    assert rest.labels.tolist() == labels[first.samples : 50].tolist()


def test_dataset_inputs_reject_mismatches() -> None:
    with pytest.raises(InputError, match="has shape"):
        dataset_inputs(Dataset({"x": np.zeros((4, 8), np.float32)}, None, None, {}), [FEATURES], samples=4)
    with pytest.raises(InputError, match="wants int64"):
        dataset_inputs(
            Dataset({"ids": np.zeros((4, 2), np.float32)}, None, None, {}),
            [IDS],
            samples=4,
        )
    fixed = TensorSpec(name="x", dtype="float32", shape=[8, 16])
    with pytest.raises(InputError, match="fewer than the model's fixed batch"):
        dataset_inputs(Dataset({"x": np.zeros((4, 16), np.float32)}, None, None, {}), [fixed], samples=4)
