"""``int8-dynamic`` and ``int8-static``: onnxruntime.quantization.

``int8-dynamic`` (``quantize_dynamic``) stores int8 weights and quantises activations at run
time; it needs no data. ``int8-static`` (``quantize_static``, QDQ format, per-channel weights
by default) fixes activation ranges from calibration data: the model's registered dataset or
the request's ``calibration_uri``. Without either it answers ``needs_calibration_data``
rather than calibrating on invented data, which would make the ranges meaningless.

A graph without any operator the quantiser handles (scikit-learn's linear and tree models
are single ai.onnx.ml operators), and a graph that is already quantised, are reported as not
applicable rather than "converted" into an identical model.

Before quantising, ONNX Runtime's own pre-processing (``quant_pre_process``: symbolic shape
inference, then ONNX Runtime's basic graph optimisation, which folds constants) runs on the
source. The quantiser only quantises weights that are initializers; exporters often produce
them from ``Constant`` / ``ConstantOfShape`` nodes or small subgraphs (Paddle exports, the
IR-3 model zoo), which made ``quantize_dynamic`` fail with "Expected ... to be an
initializer". When symbolic inference cannot handle a graph, pre-processing is retried
without it, then without the optimisation; which step ran is in the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from services.converter.errors import (
    ConversionError,
    InvalidOptions,
    NeedsCalibration,
    NotApplicable,
)
from services.converter.inputs import InputSet
from services.converter.profiles.base import (
    ConversionContext,
    Converted,
    Profile,
    check_known,
    default_opset,
    describe_ops,
    first_line,
    graphs,
    load_model,
    normalize_opset_imports,
    op_histogram,
    parse_bool,
    parse_choice,
    parse_names,
    quiet_library_logs,
    save_model,
)
from services.converter.profiles.ort_opt import inflated

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
    return sum(1 for graph in graphs(model) for node in graph.node if node.op_type in QUANTIZED_OPS)


def prepare(
    context: ConversionContext, registry_ops: set[str], op_types: list[str], profile: str
) -> list[tuple[Path, list[str]]]:
    """Check that the quantiser has work here and return the file to quantise: the source,
    or a normalised copy when its opset imports needed fixing. The quantiser gets a path
    rather than our in-memory model so that it holds the only copy (it makes its own)."""
    model = load_model(context.source)
    fixes = normalize_opset_imports(model)
    quantized = quantized_node_count(model)
    if quantized:
        raise NotApplicable(f"the graph is already quantised ({quantized} int8 operators)")
    if default_opset(model) is None:
        raise NotApplicable(
            f"{profile} quantises ai.onnx operators and this graph has none (its operators: {describe_ops(model)})"
        )
    wanted = set(op_types) if op_types else registry_ops
    # subgraphs included: recurrent exports keep their LSTM/Conv inside If and Loop bodies
    present = {n.op_type for g in graphs(model) for n in g.node if n.domain in ("", "ai.onnx")} & wanted
    if not present:
        raise NotApplicable(
            f"{profile} quantises {', '.join(sorted(wanted))}; this graph has none of them "
            f"(its operators: {describe_ops(model)})"
        )
    source = context.source
    if fixes:
        source = save_model(model, context.workdir / f"{profile}.normalized.onnx")
    del model
    pre, step = pre_process(source, context.workdir / f"{profile}.pre.onnx")
    if pre != source and inflated(source.stat().st_size, pre.stat().st_size):
        raise NotApplicable(
            f"the graph generates its weights at load time (ConstantOfShape and the like: "
            f"{source.stat().st_size:,} bytes, {pre.stat().st_size:,} once folded); int8 would have to store "
            "them, a variant far larger than its source"
        )
    if pre == source:
        return [(source, [*fixes, step])]
    # the quantiser has bugs of its own on some pre-processed graphs (a ValueError inside
    # qdq_quantizer on a scikit-learn MLP): the plain source is the second try
    return [(pre, [*fixes, step]), (source, [*fixes, "quantised the source as it is (after pre-processing failed)"])]


def quantize_first(candidates: list[tuple[Path, list[str]]], run: Callable[[Path], None], what: str) -> list[str]:
    """Run the quantiser on the first candidate it accepts; returns that candidate's fixes."""
    errors = []
    for path, fixes in candidates:
        try:
            with quiet_library_logs(*QUIET):
                run(path)
        except Exception as exc:  # ValueError, onnx errors, NotImplementedError from op quantisers
            errors.append(first_line(exc))
            continue
        if len(errors):
            fixes = [*fixes, f"{what} failed on the pre-processed graph: {errors[0]}"]
        return fixes
    raise ConversionError(f"{what} failed: {'; then: '.join(dict.fromkeys(errors))}")


# (skip_symbolic_shape, skip_optimization, what ran): most thorough first.
PRE_PROCESS_STEPS = (
    (False, False, "quant_pre_process: symbolic shape inference + constant folding"),
    (True, False, "quant_pre_process: constant folding (symbolic shape inference failed)"),
    (True, True, "quant_pre_process: onnx shape inference only (optimisation failed)"),
)


def pre_process(source: Path, target: Path) -> tuple[Path, str]:
    """onnxruntime.quantization's pre-processing of ``source`` into ``target``; the source
    itself when every step fails (the quantiser then reports what it cannot do)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    errors = []
    for skip_symbolic, skip_optimization, what in PRE_PROCESS_STEPS:
        try:
            with quiet_library_logs(*QUIET):
                quant_pre_process(
                    source,
                    target,
                    skip_optimization=skip_optimization,
                    skip_symbolic_shape=skip_symbolic,
                    auto_merge=True,
                )
        except Exception as exc:  # symbolic inference raises anything from asserts to KeyError
            errors.append(first_line(exc, 120))
            # onnxruntime's symbolic inference leaves a debug copy in the working directory
            # when it gives up ("Incomplete symbolic shape inference")
            for debris in ("sym_shape_infer_temp.onnx", "sym_shape_infer_temp.onnx.data"):
                Path(debris).unlink(missing_ok=True)
            continue
        if target.exists():
            return target, what
    return source, f"quant_pre_process failed ({'; '.join(errors)}); quantised the source as it is"


def _details(output: onnx.ModelProto, fixes: list[str]) -> dict[str, Any]:
    count = quantized_node_count(output)
    if count == 0:
        raise NotApplicable("the quantiser left every operator of this graph in float (nothing was quantised)")
    return {
        "quantized_nodes": count,
        "ops_after": op_histogram(output),
        "fixes": fixes,
    }


# Why int8-dynamic quantises weights to 7 bits unless told otherwise. Its MatMulInteger runs
# ONNX Runtime's u8 x s8 kernel; on x86 CPUs without VNNI (AVX2, plain AVX-512) that kernel
# multiplies with vpmaddubsw, which adds each pair of u8*s8 products into a saturating int16.
# Dynamic quantisation maps an activation's maximum to 255, so two neighbouring activations at
# their maximum against two weights near +-127 sum to 2*255*127 = 64770 and clip at 32767: the
# int_cast test graph (0/1 inputs) lost 0.45 of a 1.45 output that way (cosine 0.967). With
# 7-bit weights (|w| <= 64) a pair is at most 32640 and cannot saturate; the cost is one bit
# of weight precision. ONNX Runtime's documentation gives reduce_range for exactly this case.
# ``reduce_range=false`` restores 8-bit weights for VNNI machines. int8-static's QDQ graph
# runs the same u8 x s8 kernels (QLinearConv, QLinearMatMul, MatMulIntegerToFloat once ONNX
# Runtime fuses the QDQ pairs) with activations calibrated onto the whole 0..255 range, so it
# takes 7-bit weights by default too.


class Int8Dynamic(Profile):
    id = "int8-dynamic"
    description = "int8 weights, activations quantised at run time (quantize_dynamic)"
    precision = "int8"

    def normalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        check_known(options, ("weight_type", "per_channel", "reduce_range", "op_types"), self.id)
        return {
            "weight_type": parse_choice(options, "weight_type", ("qint8", "quint8"), "qint8", self.id),
            "per_channel": parse_bool(options, "per_channel", False, self.id),
            # 7-bit weights by default: see the comment above this class
            "reduce_range": parse_bool(options, "reduce_range", True, self.id),
            "op_types": parse_names(options, "op_types", self.id),
        }

    def convert(self, context: ConversionContext) -> Converted:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.registry import IntegerOpsRegistry

        opts = context.options
        candidates = prepare(context, set(IntegerOpsRegistry), opts.get("op_types", []), self.id)
        target = context.workdir / "int8-dynamic.onnx"
        weight = QuantType.QInt8 if opts.get("weight_type", "qint8") == "qint8" else QuantType.QUInt8
        fixes = quantize_first(
            candidates,
            lambda source: quantize_dynamic(
                source,
                target,
                op_types_to_quantize=opts.get("op_types") or None,
                per_channel=opts.get("per_channel", False),
                reduce_range=opts.get("reduce_range", True),
                weight_type=weight,
            ),
            "quantize_dynamic",
        )
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
    candidates = prepare(context, set(QDQRegistry), op_types, profile)
    types = {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    target = context.workdir / target_name
    extra = {"ActivationSymmetric": symmetric, "WeightSymmetric": True}
    calibration = context.calibration
    fixes = quantize_first(
        candidates,
        lambda source: quantize_static(
            source,
            target,
            CalibrationReader(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types or None,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=types[activation_type],
            weight_type=types[weight_type],
            calibrate_method=methods[calibrate_method],
            extra_options=extra,
        ),
        "quantize_static",
    )
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
            # 7-bit weights by default: see the comment above Int8Dynamic
            "reduce_range": parse_bool(options, "reduce_range", True, self.id),
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
            reduce_range=opts.get("reduce_range", True),
            symmetric=opts.get("symmetric", False),
            op_types=opts.get("op_types", []),
        )
