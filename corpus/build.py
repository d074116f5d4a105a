"""Build the corpus into a folder: every source that is installed, each model checked to load
in ONNX Runtime CPU (the bar the platform is measured against)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from corpus.model import CorpusModel, SourceMissing


@dataclass
class Built:
    models: list[CorpusModel] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # package -> why
    ort_loads: dict[str, str] = field(default_factory=dict)  # model name -> "" or the load error


def ort_load_error(path: Path) -> str:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        return str(exc).splitlines()[0][:300]
    return ""


def build(out: Path, sources: Iterable[ModuleType]) -> Built:
    out.mkdir(parents=True, exist_ok=True)
    built = Built()
    for source in sources:
        try:
            models = source.build(out)
        except SourceMissing as exc:
            built.skipped[source.PACKAGE] = str(exc)
            continue
        for model in models:
            built.models.append(model)
            built.ort_loads[model.name] = ort_load_error(model.path)
    return built
