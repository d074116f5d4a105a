"""What runs in a sandbox worker (shared/sandbox.py): loading the model and its parent in ONNX
Runtime, parsing the dataset and the whole suite, everything that runs native code on a user's
model. The worker keeps parsed datasets between validations."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from services.validator.errors import ValidationFailure
from services.validator.runner import Runner
from services.validator.state import Progress, SuiteFields, SuiteInput
from services.validator.suite import SuiteConfig, run_suite
from shared import sandbox
from shared.contracts.validation import ValidationReport
from shared.datasets import Dataset, load_dataset
from shared.errors import InferlabError, InvalidDataset

# Parsed datasets kept in memory between validations (least recently used dropped first).
DATASET_MEMORY_BYTES = 512 << 20

# (dataset digest, the model's tensor inputs as (name, dtype, shape)): one parse per layout
_LayoutKey = tuple[str, tuple[tuple[str, str, tuple[int | str | None, ...]], ...]]


@dataclass(frozen=True)
class SuiteFiles:
    """The local files one validation runs on, handed to a sandbox worker."""

    model: Path
    ref: str
    parent: Path | None
    parent_ref: str | None
    dataset: Path | None
    dataset_shown: str
    batch_size: int


# Parsed datasets kept in a worker between validations (sibling variants share one dataset).
_DATASETS: OrderedDict[_LayoutKey, Dataset] = OrderedDict()


def run_suite_isolated(
    files: SuiteFiles, fields: SuiteFields, config: SuiteConfig, progress: Progress | None = None
) -> ValidationReport:
    """Load the model (and its parent) in ONNX Runtime, parse the dataset and run the suite:
    everything that runs native code on the user's model, in one sandbox task."""
    sandbox.step("loading the model")
    runner = _open_runner(files.model, files.ref, files.batch_size)
    parent_runner = None
    if files.parent is not None and files.parent_ref is not None:
        sandbox.step("loading the parent model")
        parent_runner = _open_runner(files.parent, files.parent_ref, files.batch_size)
    dataset = _load_dataset(files.dataset, runner, files.dataset_shown) if files.dataset is not None else None
    sandbox.step("validation suite")
    suite_input = SuiteInput.loaded(fields, runner=runner, parent_runner=parent_runner, dataset=dataset)
    return run_suite(suite_input, config, progress)


def _open_runner(path: Path, ref: str, batch_size: int) -> Runner:
    try:
        return Runner(path, batch_size=batch_size)
    except InferlabError as exc:
        raise ValidationFailure.within(ref, exc) from None


def _load_dataset(path: Path, runner: Runner, shown: str) -> Dataset:
    """Parse (and check against the model's inputs) once per dataset and input layout; the
    suite never writes into dataset arrays, so validations of sibling variants share them."""
    specs = [s for s in runner.inputs if s.is_tensor]
    key = (path.stem, tuple((s.name, s.dtype, tuple(s.shape or ())) for s in specs))
    cached = _DATASETS.get(key)
    if cached is not None:
        _DATASETS.move_to_end(key)
        return cached
    try:
        dataset = load_dataset(path, specs, require_labels=False)
    except InvalidDataset as exc:
        raise ValidationFailure.within(f"dataset {shown}", exc) from None
    for array in [*dataset.inputs.values(), dataset.labels, dataset.groups, *dataset.extras.values()]:
        if array is not None:
            array.flags.writeable = False  # shared between validations: never written
    size = _dataset_bytes(dataset)
    if size <= DATASET_MEMORY_BYTES:
        _DATASETS[key] = dataset
        while sum(_dataset_bytes(d) for d in _DATASETS.values()) > DATASET_MEMORY_BYTES:
            _DATASETS.popitem(last=False)
    return dataset


def _dataset_bytes(dataset: Dataset) -> int:
    arrays = [*dataset.inputs.values(), dataset.labels, dataset.groups, *dataset.extras.values()]
    return sum(a.nbytes for a in arrays if a is not None)
