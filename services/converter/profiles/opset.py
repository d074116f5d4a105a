"""``opset-N``: the default-domain opset converted to N with ``onnx.version_converter``
(upgrades and, where the converter has adapters, downgrades). Other domains (ai.onnx.ml) are
left as they are; the result must pass ``onnx.checker``'s full check."""

from __future__ import annotations

import re

import onnx

from services.converter.profiles.base import (
    ConversionContext,
    ConversionError,
    Converted,
    InvalidOptions,
    NotApplicable,
    Profile,
    UnsupportedModel,
    default_opset,
    first_line,
    load_model,
    normalize_opset_imports,
    save_model,
)

PATTERN = re.compile(r"^opset-(\d{1,3})$")
MIN_OPSET = 7  # the oldest opset the version converter has adapters from


def latest_opset() -> int:
    return int(onnx.defs.onnx_opset_version())


class OpsetConvert(Profile):
    precision = "fp32"

    def __init__(self, target: int) -> None:
        self.target = target
        self.id = f"opset-{target}"
        self.description = f"default-domain opset converted to {target} (onnx.version_converter)"

    def check_target(self) -> None:
        latest = latest_opset()
        if not MIN_OPSET <= self.target <= latest:
            raise InvalidOptions(
                f"opset {self.target} is outside what onnx {onnx.__version__} converts to ({MIN_OPSET}..{latest})"
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
