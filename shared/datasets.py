"""Labelled datasets: an ``.npz`` holding one array per model input (named like the input),
plus ``labels`` and optionally ``groups`` (fairness) or detection ground truth (``gt_boxes``,
``gt_classes``, ``gt_counts``). Loaded without pickle, so a dataset cannot run code."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.contracts.registry import TensorSpec
from shared.errors import InvalidDataset

LABELS = "labels"
GROUPS = "groups"
RESERVED = frozenset({LABELS, GROUPS, "gt_boxes", "gt_classes", "gt_counts"})


@dataclass(frozen=True)
class Dataset:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    groups: np.ndarray | None
    extras: dict[str, np.ndarray]

    @property
    def samples(self) -> int:
        return len(next(iter(self.inputs.values())))

    def subset(self, index: np.ndarray | slice) -> Dataset:
        """The samples at ``index``. Detection ground truth is stored flat (``gt_boxes`` and
        ``gt_classes`` rows, ``gt_counts`` per sample), so its rows are picked per sample."""
        rows = np.arange(self.samples)[index]
        extras = dict(self.extras)
        if "gt_counts" in extras:
            counts = np.asarray(extras["gt_counts"], dtype=np.int64)
            ends = np.cumsum(counts)
            starts = ends - counts
            picked = (
                np.concatenate([np.arange(starts[i], ends[i]) for i in rows]) if len(rows) else np.zeros(0, np.int64)
            )
            extras["gt_counts"] = counts[rows]
            for key in ("gt_boxes", "gt_classes"):
                if key in extras:
                    extras[key] = np.asarray(extras[key])[picked]
        return Dataset(
            inputs={k: v[rows] for k, v in self.inputs.items()},
            labels=None if self.labels is None else self.labels[rows],
            groups=None if self.groups is None else self.groups[rows],
            extras=extras,
        )


def load_npz(path: Path) -> dict[str, np.ndarray]:
    # np.load takes anything that is not a zip or .npy for a pickle; say what it really is.
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":
        raise InvalidDataset(f"{path.name} is not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InvalidDataset(f"{path.name} is not a readable .npz file: {exc}") from None
    except ValueError as exc:  # object arrays need pickle, which we refuse
        raise InvalidDataset(f"{path.name} holds arrays that need pickle (refused): {exc}") from None


def load_dataset(path: Path, inputs: list[TensorSpec] | None = None, *, require_labels: bool = False) -> Dataset:
    """Load and check a dataset against a model's tensor inputs: every input present by
    name, every array of one length, labels present when required."""
    arrays = load_npz(path)
    if not arrays:
        raise InvalidDataset(f"{path.name} holds no arrays")
    names = [s.name for s in inputs or [] if s.is_tensor]
    if names:
        missing = [n for n in names if n not in arrays]
        if missing and len(names) == 1:
            candidates = [k for k in arrays if k not in RESERVED]
            if len(candidates) == 1:  # one unnamed input array: take it for the one input
                arrays[names[0]] = arrays.pop(candidates[0])
                missing = []
        if missing:
            raise InvalidDataset(
                f"dataset lacks arrays for model inputs {missing}; it has {sorted(arrays)} "
                f"(name one array per input, plus '{LABELS}')"
            )
        feature_names = names
    else:
        feature_names = [k for k in arrays if k not in RESERVED]
    if not feature_names:
        raise InvalidDataset(f"{path.name} holds no input arrays, only {sorted(arrays)}")
    labels = arrays.get(LABELS)
    if require_labels and labels is None:
        raise InvalidDataset(f"{path.name} has no '{LABELS}' array")
    groups = arrays.get(GROUPS)
    lengths = {k: len(arrays[k]) for k in [*feature_names, LABELS, GROUPS] if k in arrays and arrays[k].ndim > 0}
    if len(set(lengths.values())) > 1:
        raise InvalidDataset(f"arrays differ in length: {lengths}")
    if any(arrays[k].ndim == 0 for k in feature_names):
        raise InvalidDataset("input arrays must have a leading sample dimension")
    for spec in inputs or []:
        if spec.name in arrays and spec.shape is not None and arrays[spec.name].ndim != len(spec.shape):
            raise InvalidDataset(
                f"array {spec.name!r} has {arrays[spec.name].ndim} dimensions, the model input has "
                f"{len(spec.shape)} ({spec.shape})"
            )
    extras = {k: v for k, v in arrays.items() if k not in feature_names and k not in (LABELS, GROUPS)}
    return Dataset(
        inputs={k: arrays[k] for k in feature_names},
        labels=labels,
        groups=groups,
        extras=extras,
    )
