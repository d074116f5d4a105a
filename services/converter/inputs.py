"""The converter's input sets now come from the one resolver shared by every service
(shared/inputs.py); this module keeps the old import path for the profiles."""

from shared.errors import InputError
from shared.inputs import (
    CALIBRATION,
    DATASET,
    DEFAULT_BATCH,
    DEFAULT_DIM,
    MAX_RUNS,
    SYNTHETIC,
    InputSet,
    dataset_inputs,
    numpy_dtype,
    synthetic_inputs,
)

__all__ = [
    "CALIBRATION",
    "DATASET",
    "DEFAULT_BATCH",
    "DEFAULT_DIM",
    "MAX_RUNS",
    "SYNTHETIC",
    "InputError",
    "InputSet",
    "dataset_inputs",
    "numpy_dtype",
    "synthetic_inputs",
]
