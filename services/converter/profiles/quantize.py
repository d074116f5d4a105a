"""``int8-dynamic`` and ``int8-static``: onnxruntime.quantization.

``int8-dynamic`` (``quantize_dynamic``) stores int8 weights and quantises activations at run
time; it needs no data. ``int8-static`` (``quantize_static``, QDQ format, per-channel weights
by default) fixes activation ranges from calibration data: the model's registered dataset or
the request's ``calibration_uri``. Without either it answers ``needs_calibration_data``
rather than calibrating on invented data, which would make the ranges meaningless.

A graph without any operator the quantiser handles (scikit-learn's linear and tree models
are single ai.onnx.ml operators) is reported as not applicable rather than "converted" into
an identical model.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from services.converter.inputs import InputSet
from services.converter.profiles.base import (
    ConversionContext,
    ConversionError,
    Converted,
    InvalidOptions,
    NeedsCalibration,
    NotApplicable,
    Profile,
    check_known,
    default_opset,
    describe_ops,
    first_line,
    load_model,
    normalize_opset_imports,
    op_histogram,
    parse_bool,
    parse_choice,
    parse_names,
    quiet_library_logs,
    save_model,
)

QUIET = ("pre-processing before quantization", "Please consider to run pre-processing", "Quantization parameters for")

# Operators that only exist in a quantised graph; counting them tells whether anything was
# quantised at all.
QUANTIZED_OPS = frozenset(
    {
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "QuantizeLinear",
        "DequantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QGemm",
        "QAttention",
        "DynamicQuantizeLSTM",
        "QEmbedLayerNormalization",
        "QGather",
    }
)


def quantized_node_count(model: onnx.ModelProto) -> int:
    return sum(1 for node in model.graph.node if node.op_type in QUANTIZED_OPS)


def prepare(
    context: ConversionContext, registry_ops: set[str], op_types: list[str], profile: str
) -> tuple[Path, list[str]]:
    """Check that the quantiser has work here and return the file to quantise: the source,
    or a normalised copy when its opset imports needed fixing. The quantiser gets a path
    rather than our in-memory model so that it holds the only copy (it makes its own)."""
    model = load_model(context.source)
    fixes = normalize_opset_imports(model)
    if default_opset(model) is None:
        raise NotApplicable(
            f"{profile} quantises ai.onnx operators and this graph has none (its operators: {describe_ops(model)})"
        )
    wanted = set(op_types) if op_types else registry_ops
    present = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")} & wanted
    if not present:
        raise NotApplicable(
            f"{profile} quantises {', '.join(sorted(wanted))}; this graph has none of them "
            f"(its operators: {describe_ops(model)})"
        )
    if not fixes:
        return context.source, fixes
    normalized = save_model(model, context.workdir / f"{profile}.normalized.onnx")
    return normalized, fixes


def _details(output: onnx.ModelProto, fixes: list[str]) -> dict[str, Any]:
    count = quantized_node_count(output)
    if count == 0:
        raise NotApplicable("the quantiser left every operator of this graph in float (nothing was quantised)")
    return {
        "quantized_nodes": count,
        "ops_after": op_histogram(output),
        "fixes": fixes,
    }


class Int8Dynamic(Profile):
    id = "int8-dynamic"
    description = "int8 weights, activations quantised at run time (quantize_dynamic)"
    precision = "int8"

    def normalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        check_known(options, ("weight_type", "per_channel", "reduce_range", "op_types"), self.id)
        return {
            "weight_type": parse_choice(options, "weight_type", ("qint8", "quint8"), "qint8", self.id),
            "per_channel": parse_bool(options, "per_channel", False, self.id),
            "reduce_range": parse_bool(options, "reduce_range", False, self.id),
            "op_types": parse_names(options, "op_types", self.id),
        }

    def convert(self, context: ConversionContext) -> Converted:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.registry import IntegerOpsRegistry

        opts = context.options
        source, fixes = prepare(context, set(IntegerOpsRegistry), opts.get("op_types", []), self.id)
        target = context.workdir / "int8-dynamic.onnx"
        weight = QuantType.QInt8 if opts.get("weight_type", "qint8") == "qint8" else QuantType.QUInt8
        try:
            with quiet_library_logs(*QUIET):
                quantize_dynamic(
                    source,
                    target,
                    op_types_to_quantize=opts.get("op_types") or None,
                    per_channel=opts.get("per_channel", False),
                    reduce_range=opts.get("reduce_range", False),
                    weight_type=weight,
                )
        except Exception as exc:  # ValueError, onnx errors, NotImplementedError from op quantisers
            raise ConversionError(f"quantize_dynamic failed: {first_line(exc)}") from exc
        return Converted(target, details=_details(onnx.load(str(target), load_external_data=False), fixes))


class CalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over an InputSet's batches."""

    def __init__(self, data: InputSet) -> None:
        self.data = data
        self._iter: Iterator[dict[str, np.ndarray]] = iter(data.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.data.batches)

    # onnxruntime >= 1.16 iterates readers
    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        return iter(self.data.batches)

    def __len__(self) -> int:
        return len(self.data.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self.data.batches[start_index:end_index])


def quantize_qdq(
    context: ConversionContext,
    target_name: str,
    *,
    profile: str,
    per_channel: bool,
    activation_type: str,
    weight_type: str,
    calibrate_method: str,
    reduce_range: bool,
    symmetric: bool,
    op_types: list[str],
) -> Converted:
    """Static QDQ quantisation calibrated on ``context.calibration``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.registry import QDQRegistry

    if context.calibration is None or not context.calibration.batches:
        raise NeedsCalibration(
            f"{profile} calibrates activation ranges on real data: register the model with a dataset "
            "or send calibration data (calibration_uri / --calibration FILE.npz)"
        )
    source, fixes = prepare(context, set(QDQRegistry), op_types, profile)
    types = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    target = context.workdir / target_name
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    try:
        with quiet_library_logs(*QUIET):
            quantize_static(
                source,
                target,
                CalibrationReader(context.calibration),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=op_types or None,
                per_channel=per_channel,
                reduce_range=reduce_range,
                activation_type=types[activation_type],
                weight_type=types[weight_type],
                calibrate_method=methods[calibrate_method],
                extra_options=extra,
            )
    except Exception as exc:
        raise ConversionError(f"quantize_static failed: {first_line(exc)}") from exc
    details = _details(onnx.load(str(target), load_external_data=False), fixes)
    details["calibration_samples"] = context.calibration.samples
    details["calibration_source"] = context.calibration.source
    return Converted(target, details=details)


class Int8Static(Profile):
    id = "int8-static"
    description = "int8 QDQ calibrated on the dataset or request data (quantize_static)"
    precision = "int8"
    needs_calibration = True

    def normalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        check_known(
            options,
            (
                "per_channel",
                "activation_type",
                "weight_type",
                "calibrate_method",
                "reduce_range",
                "symmetric",
                "op_types",
            ),
            self.id,
        )
        out = {
            "per_channel": parse_bool(options, "per_channel", True, self.id),
            "activation_type": parse_choice(options, "activation_type", ("quint8", "qint8"), "quint8", self.id),
            "weight_type": parse_choice(options, "weight_type", ("qint8", "quint8"), "qint8", self.id),
            "calibrate_method": parse_choice(
                options, "calibrate_method", ("minmax", "entropy", "percentile"), "minmax", self.id
            ),
            "reduce_range": parse_bool(options, "reduce_range", False, self.id),
            "symmetric": parse_bool(options, "symmetric", False, self.id),
            "op_types": parse_names(options, "op_types", self.id),
        }
        if out["weight_type"] == "quint8" and out["per_channel"]:
            raise InvalidOptions(f"{self.id}: per-channel weights need weight_type qint8")
        return out

    def convert(self, context: ConversionContext) -> Converted:
        opts = context.options
        return quantize_qdq(
            context,
            "int8-static.onnx",
            profile=self.id,
            per_channel=opts.get("per_channel", True),
            activation_type=opts.get("activation_type", "quint8"),
            weight_type=opts.get("weight_type", "qint8"),
            calibrate_method=opts.get("calibrate_method", "minmax"),
            reduce_range=opts.get("reduce_range", False),
            symmetric=opts.get("symmetric", False),
            op_types=opts.get("op_types", []),
        )
