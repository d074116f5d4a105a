"""Export what users have to ONNX: a scikit-learn estimator (skl2onnx) or a PyTorch module
(torch.onnx, TorchScript exporter). Each returns the file and the facts the record keeps in its
metadata: which exporter, which version, and the source framework's version, so a model that
misbehaves can be traced to the tool that wrote it. skl2onnx and torch are optional extras,
imported only here and only when called."""

from __future__ import annotations

import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from shared.errors import InferlabError

# ONNX opsets the platform's ONNX Runtime and converter profiles are tested with.
DEFAULT_OPSET = 17
ML_OPSET = 3


class ExporterUnavailable(InferlabError):
    code = "exporter_unavailable"


class Exported(msgspec.Struct, frozen=True, kw_only=True):
    path: Path
    exporter: str
    exporter_version: str
    framework: str
    framework_version: str

    def metadata(self) -> dict[str, str]:
        return {
            "exporter": self.exporter,
            "exporter_version": self.exporter_version,
            "source_framework": self.framework,
            "source_framework_version": self.framework_version,
        }


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"


def export_sklearn(estimator: Any, example: Any, path: Path, *, zipmap: bool = False) -> Exported:
    """``estimator`` (fitted) with inputs shaped like ``example`` (a few rows of X; float64 is
    exported as float32). Classifiers get plain tensor outputs (``zipmap=False``): labels and an
    [N, classes] probability tensor rather than a sequence of maps."""
    try:
        from skl2onnx import to_onnx
    except ImportError as exc:
        raise ExporterUnavailable("exporting a scikit-learn estimator needs skl2onnx: pip install skl2onnx") from exc
    rows = np.asarray(example)
    if rows.dtype == np.float64:
        rows = rows.astype(np.float32)
    options = {id(estimator): {"zipmap": False}} if not zipmap and hasattr(estimator, "predict_proba") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onx = to_onnx(estimator, rows[:1], options=options, target_opset={"": DEFAULT_OPSET, "ai.onnx.ml": ML_OPSET})
    path.write_bytes(onx.SerializeToString())
    return Exported(
        path=path,
        exporter="skl2onnx",
        exporter_version=_version("skl2onnx"),
        framework="scikit-learn",
        framework_version=_version("scikit-learn"),
    )


def export_torch(
    module: Any,
    example_input: Any,
    path: Path,
    *,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_batch: bool = True,
    opset: int = DEFAULT_OPSET,
) -> Exported:
    """``module`` in eval mode, traced on ``example_input`` (a tensor or a tuple of tensors),
    with the leading dimension of every input and output dynamic (``dynamic_batch``)."""
    try:
        import torch
    except ImportError as exc:
        raise ExporterUnavailable("exporting a PyTorch module needs torch: pip install 'inferlab[torch]'") from exc
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    inputs = input_names or (["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))])
    outputs = output_names or ["output"]
    axes = {name: {0: "batch"} for name in (*inputs, *outputs)} if dynamic_batch else None
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # TorchScript exporter (dynamo=False): no onnxscript dependency, stable for plain modules.
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    return Exported(
        path=path,
        exporter="torch.onnx",
        exporter_version=str(torch.__version__),
        framework="pytorch",
        framework_version=str(torch.__version__),
    )
