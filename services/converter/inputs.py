"""The input sets a parity check (and int8 calibration) runs on.

Real data first: the model's registered dataset, or calibration data sent with the request.
Without either, seeded synthetic inputs that respect each input's dtype and declared shape,
drawn like Polygraphy's default data loader (floats uniform in [0, 1), integers 0 or 1,
booleans at random), so that a parity check is reproducible from its seed.

Dynamic dimensions: the first one is the batch axis (filled with the batch size); any other
takes the size given in the request's ``shapes`` or ``default_dim``. A model whose leading
dimension is fixed (``[1, 3, 224, 224]``) is fed that many samples per run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from shared.contracts.registry import TensorSpec
from shared.datasets import Dataset

DEFAULT_BATCH = 32
DEFAULT_DIM = 1
MAX_RUNS = 512  # runs per model per check; bounds time for fixed batch-1 models

SYNTHETIC = "synthetic"
DATASET = "dataset"
CALIBRATION = "calibration"


class InputError(Exception):
    """Inputs cannot be built for this model (non-tensor input, unknown rank, data that does
    not fit the declared shapes)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class InputSet:
    source: str
    batches: list[dict[str, np.ndarray]]
    labels: np.ndarray | None = None
    seed: int = 0
    note: str = ""
    shapes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return sum(_rows(batch) for batch in self.batches)

    def split(self, fraction: float = 0.5) -> tuple[InputSet, InputSet]:
        """Two disjoint sets by whole batches (first part, rest), so that int8 calibration and
        the parity check never see the same samples."""
        if len(self.batches) < 2:
            raise InputError("invalid_dataset", f"{self.source} data has too few samples to split")
        cut = min(max(1, round(len(self.batches) * fraction)), len(self.batches) - 1)
        first_rows = sum(_rows(b) for b in self.batches[:cut])
        labels_a = None if self.labels is None else self.labels[:first_rows]
        labels_b = None if self.labels is None else self.labels[first_rows:]
        return (
            InputSet(self.source, self.batches[:cut], labels_a, self.seed, self.note, self.shapes),
            InputSet(self.source, self.batches[cut:], labels_b, self.seed, self.note, self.shapes),
        )


def _rows(batch: dict[str, np.ndarray]) -> int:
    first = next(iter(batch.values()))
    return int(first.shape[0]) if first.ndim else 1


def numpy_dtype(spec: TensorSpec) -> np.dtype:
    if not spec.is_tensor:
        raise InputError(
            "unsupported_model",
            f"input {spec.name!r} is {spec.dtype}, not a tensor: parity inputs can only be built for tensor inputs",
        )
    if spec.dtype == "str":
        return np.dtype(object)
    try:
        return np.dtype(spec.dtype)
    except TypeError:
        raise InputError(
            "unsupported_model", f"input {spec.name!r} has dtype {spec.dtype}, which numpy cannot hold"
        ) from None


def _is_dynamic(dim: int | str | None) -> bool:
    return not isinstance(dim, int) or dim <= 0


def sample_shape(
    spec: TensorSpec, *, batch: int, shapes: dict[str, list[int]], default_dim: int = DEFAULT_DIM
) -> list[int]:
    """The concrete shape of one run's tensor for ``spec``."""
    if spec.name in shapes:
        given = [int(d) for d in shapes[spec.name]]
        if spec.shape is not None:
            if len(given) != len(spec.shape):
                raise InputError(
                    "invalid_request",
                    f"shape {given} for input {spec.name!r} has {len(given)} dimensions; the model declares "
                    f"{len(spec.shape)} ({spec.shape})",
                )
            for declared, value in zip(spec.shape, given, strict=True):
                if not _is_dynamic(declared) and declared != value:
                    raise InputError(
                        "invalid_request",
                        f"shape {given} for input {spec.name!r} contradicts its fixed dimensions {spec.shape}",
                    )
        if any(d <= 0 for d in given):
            raise InputError("invalid_request", f"shape {given} for input {spec.name!r} must be positive")
        return given
    if spec.shape is None:
        raise InputError(
            "unsupported_model",
            f"input {spec.name!r} declares no shape; give one in the request (shapes={{{spec.name!r}: [...]}})",
        )
    dims = []
    for i, dim in enumerate(spec.shape):
        if not _is_dynamic(dim):
            dims.append(int(dim))  # type: ignore[arg-type]
        elif i == 0:
            dims.append(batch)
        else:
            dims.append(default_dim)
    return dims


def _batch_of(specs: list[TensorSpec], shapes: dict[str, list[int]], batch_size: int) -> int:
    """Samples per run: the fixed leading dimension when the model has one, the requested
    shape's leading dimension when given, else ``batch_size``."""
    for spec in specs:
        if shapes.get(spec.name):
            return int(shapes[spec.name][0])
        if spec.shape and not _is_dynamic(spec.shape[0]):
            return int(spec.shape[0])  # type: ignore[arg-type]
    return batch_size


def _draw(rng: np.random.Generator, dtype: np.dtype, shape: list[int], name: str) -> np.ndarray:
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float64).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 2, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    raise InputError(
        "unsupported_model",
        f"input {name!r} holds {dtype}: synthetic data cannot stand in for it; register a dataset with the model",
    )


def synthetic_inputs(
    specs: list[TensorSpec],
    *,
    samples: int,
    seed: int = 0,
    shapes: dict[str, list[int]] | None = None,
    batch_size: int = DEFAULT_BATCH,
    default_dim: int = DEFAULT_DIM,
) -> InputSet:
    shapes = shapes or {}
    if not specs:
        raise InputError("unsupported_model", "the model declares no inputs")
    dtypes = {s.name: numpy_dtype(s) for s in specs}
    per_run = _batch_of(specs, shapes, min(batch_size, max(1, samples)))
    runs = max(1, min(MAX_RUNS, -(-samples // per_run)))
    rng = np.random.default_rng(seed)
    dynamic_batch = all(s.name not in shapes and (not s.shape or _is_dynamic(s.shape[0])) for s in specs)
    batches = []
    for i in range(runs):
        # The last run of a dynamic batch is shortened so the total is exactly ``samples``.
        rows = per_run if i < runs - 1 else samples - per_run * (runs - 1)
        this_batch = rows if dynamic_batch and rows > 0 else per_run
        batch = {}
        for spec in specs:
            shape = sample_shape(spec, batch=this_batch, shapes=shapes, default_dim=default_dim)
            batch[spec.name] = _draw(rng, dtypes[spec.name], shape, spec.name)
        batches.append(batch)
    first = {k: list(v.shape) for k, v in batches[0].items()}
    note = (
        f"seeded synthetic inputs (seed {seed}): floats uniform in [0, 1), integers in {{0, 1}}; "
        f"dynamic non-batch dimensions = {default_dim} unless given"
    )
    return InputSet(SYNTHETIC, batches, None, seed, note, first)


def _cast(array: np.ndarray, dtype: np.dtype, name: str, source: str) -> np.ndarray:
    if array.dtype == dtype:
        return array
    same_kind = (array.dtype.kind in "fiub" and dtype.kind == "f") or (array.dtype.kind in "iub" and dtype.kind in "iu")
    if dtype.kind == "b" and array.dtype.kind in "iub":
        same_kind = True
    if not same_kind:
        raise InputError(
            "invalid_dataset", f"{source} array {name!r} holds {array.dtype}; the model input wants {dtype}"
        )
    return array.astype(dtype)


def dataset_inputs(
    dataset: Dataset,
    specs: list[TensorSpec],
    *,
    samples: int,
    source: str = DATASET,
    shapes: dict[str, list[int]] | None = None,
    batch_size: int = DEFAULT_BATCH,
) -> InputSet:
    """Batches of the first ``samples`` rows of a dataset, cast to the model's dtypes."""
    shapes = shapes or {}
    if not specs:
        raise InputError("unsupported_model", "the model declares no inputs")
    arrays = {}
    for spec in specs:
        if spec.name not in dataset.inputs:
            raise InputError("invalid_dataset", f"{source} data has no array for input {spec.name!r}")
        array = _cast(dataset.inputs[spec.name], numpy_dtype(spec), spec.name, source)
        if spec.shape is not None and array.ndim == len(spec.shape):
            for axis, (declared, actual) in enumerate(zip(spec.shape, array.shape, strict=True)):
                if axis > 0 and not _is_dynamic(declared) and declared != actual:
                    raise InputError(
                        "invalid_dataset",
                        f"{source} array {spec.name!r} has shape {list(array.shape)}; the model input is {spec.shape}",
                    )
        arrays[spec.name] = array
    total = min(samples, dataset.samples)
    if total <= 0:
        raise InputError("invalid_dataset", f"{source} data holds no samples")
    per_run = _batch_of(specs, shapes, batch_size)
    runs = min(MAX_RUNS, -(-total // per_run))
    fixed_leading = any(spec.shape and not _is_dynamic(spec.shape[0]) for spec in specs)
    batches = []
    used = 0
    for i in range(runs):
        start, stop = i * per_run, min((i + 1) * per_run, total)
        if fixed_leading and stop - start < per_run:
            break  # a fixed leading dimension cannot take a short last batch
        batches.append({name: array[start:stop] for name, array in arrays.items()})
        used = stop
    if not batches:
        raise InputError(
            "invalid_dataset", f"{source} data holds {total} samples, fewer than the model's fixed batch of {per_run}"
        )
    labels = None if dataset.labels is None else np.asarray(dataset.labels[:used])
    first = {k: list(v.shape) for k, v in batches[0].items()}
    return InputSet(source, batches, labels, 0, f"first {used} samples of the {source} data", first)
