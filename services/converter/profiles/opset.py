"""``opset-N``: the default-domain opset converted to N with ``onnx.version_converter``
(upgrades and, where the converter has adapters, downgrades). Other domains (ai.onnx.ml) are
left as they are; the result must pass ``onnx.checker``'s full check."""

from __future__ import annotations

import functools
import re

import onnx

from services.converter.errors import (
    ConversionError,
    InvalidOptions,
    NotApplicable,
    UnsupportedModel,
)
from services.converter.profiles.base import (
    ConversionContext,
    Converted,
    Profile,
    default_opset,
    first_line,
    load_model,
    normalize_opset_imports,
    save_model,
)

PATTERN = re.compile(r"^opset-(\d{1,3})$")
MIN_OPSET = 7  # the oldest opset the version converter has adapters from


def latest_onnx_opset() -> int:
    return int(onnx.defs.onnx_opset_version())


@functools.cache
def latest_opset() -> int:
    """The newest opset that both onnx converts to and onnxruntime runs: a variant must load
    in ONNX Runtime to be checked for parity. Found by loading a one-node model per opset."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    for version in range(latest_onnx_opset(), MIN_OPSET - 1, -1):
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("Identity", ["x"], ["y"])],
            "probe",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
        )
        model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", version)])
        model.ir_version = onnx.helper.find_min_ir_version_for([model.opset_import[0]])
        try:
            ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception:  # onnxruntime refuses opsets it does not know
            continue
        return version
    return MIN_OPSET


class OpsetConvert(Profile):
    precision = "fp32"

    def __init__(self, target: int) -> None:
        self.target = target
        self.id = f"opset-{target}"
        self.description = f"ai.onnx opset converted to {target} (onnx.version_converter)"

    def check_target(self) -> None:
        if not MIN_OPSET <= self.target <= latest_onnx_opset():
            raise InvalidOptions(
                f"opset {self.target} is outside what onnx {onnx.__version__} converts to "
                f"({MIN_OPSET}..{latest_onnx_opset()})"
            )
        if self.target > latest_opset():
            import onnxruntime

            raise InvalidOptions(
                f"onnxruntime {onnxruntime.__version__} runs opsets up to {latest_opset()}: a variant at opset "
                f"{self.target} could not be checked for parity"
            )

    def convert(self, context: ConversionContext) -> Converted:
        self.check_target()
        model = load_model(context.source)
        fixes = normalize_opset_imports(model)
        current = default_opset(model)
        if current is None:
            raise NotApplicable(
                "the graph imports no ai.onnx opset (only other domains), so there is no opset to convert"
            )
        if current == self.target:
            raise NotApplicable(f"the model already uses ai.onnx opset {current}")
        try:
            converted = onnx.version_converter.convert_version(model, self.target)
        except Exception as exc:  # RuntimeError/ConvertError from the C++ converter
            raise ConversionError(f"onnx.version_converter {current} -> {self.target}: {first_line(exc)}") from exc
        del model
        try:
            onnx.checker.check_model(converted, full_check=True)
        except Exception as exc:
            raise UnsupportedModel(
                f"the model converted to opset {self.target} fails onnx.checker: {first_line(exc)}"
            ) from exc
        target = save_model(converted, context.workdir / f"{self.id}.onnx")
        return Converted(target, details={"opset_before": current, "opset_after": self.target, "fixes": fixes})
