"""``ort-opt``: ONNX Runtime's offline graph optimisation (constant folding, redundant node
elimination, operator fusions), saved as a model file.

Level ``extended`` is the default because it is the highest level whose saved model is
portable: ``all`` adds layout transformations (NCHWc) that ONNX Runtime itself warns are
specific to the hardware that optimised the model. Optimisation runs on the CPU provider, so
the saved graph holds no operator that only a GPU provider implements.
"""

from __future__ import annotations

from typing import Any

import onnx

from services.converter.errors import (
    ConversionError,
    UnsupportedModel,
)
from services.converter.profiles.base import (
    ConversionContext,
    Converted,
    Profile,
    check_known,
    first_line,
    op_histogram,
    parse_choice,
)

LEVELS = ("basic", "extended", "layout", "all")


class OrtOptimize(Profile):
    id = "ort-opt"
    description = "ONNX Runtime offline graph optimisation (option level, default extended)"
    precision = "fp32"

    def normalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        check_known(options, ("level",), self.id)
        return {"level": parse_choice(options, "level", LEVELS, "extended", self.id)}

    def convert(self, context: ConversionContext) -> Converted:
        import onnxruntime as ort

        level = context.options.get("level", "extended")
        levels = {
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "layout": getattr(
                ort.GraphOptimizationLevel, "ORT_ENABLE_LAYOUT", ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            ),
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        target = context.workdir / "ort-opt.onnx"

        def optimise(disabled: list[str]) -> None:
            options = ort.SessionOptions()
            options.graph_optimization_level = levels[level]
            options.optimized_model_filepath = str(target)
            options.log_severity_level = 3
            try:
                ort.InferenceSession(
                    str(context.source), options, providers=["CPUExecutionProvider"], disabled_optimizers=disabled
                )
            except Exception as exc:  # the source itself does not load: nothing to optimise
                raise UnsupportedModel(f"ONNX Runtime cannot load the source: {first_line(exc)}") from exc
            if not target.exists():
                raise ConversionError("ONNX Runtime did not write the optimised model")

        optimise([])
        size_before, size_after = context.source.stat().st_size, target.stat().st_size
        notes = []
        if inflated(size_before, size_after):
            # The graph generates its weights at load time (ConstantOfShape, as the IR-3 model
            # zoo's light models do); folding stores them. ONNX Runtime folds them again at each
            # load anyway, so the saved graph keeps the generators.
            optimise(["ConstantFolding"])
            notes.append(
                f"constant folding disabled: it stored weights the graph generates at load time "
                f"({size_before:,} -> {size_after:,} bytes)"
            )
        before = op_histogram(onnx.load(str(context.source), load_external_data=False))
        after = op_histogram(onnx.load(str(target), load_external_data=False))
        return Converted(
            target,
            details={
                "level": level,
                "nodes_before": sum(before.values()),
                "nodes_after": sum(after.values()),
                "ops_after": after,
                "notes": notes,
            },
        )


# A variant this much bigger than its source (and past a megabyte) stores what the source
# computes at load time: a cost, not an optimisation. The floor only spares small graphs whose
# saved form grows by a few kilobytes of metadata; at 8 MB it let squeezenet's and
# shufflenet's folded weights through (3.7 and 5.5 MB from 15 and 68 KB, and no faster:
# ONNX Runtime folds the generators at each load anyway).
INFLATION_FACTOR = 4
INFLATION_MIN_BYTES = 1 << 20


def inflated(size_before: int, size_after: int) -> bool:
    return size_after > INFLATION_MIN_BYTES and size_after > INFLATION_FACTOR * size_before
