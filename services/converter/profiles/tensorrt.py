"""``trt-fp16`` and ``trt-int8``: a serialized TensorRT engine built from the ONNX file with
TensorRT's Python API (``Builder``, ``OnnxParser``, ``BuilderConfig``), one optimisation
profile covering the dynamic input dimensions, and a persistent timing cache so a rebuild on
the same GPU reuses its kernel timings.

``trt-int8`` uses TensorRT's explicit quantisation: the model is first quantised to a QDQ
graph with symmetric int8 activations and weights (what TensorRT requires), calibrated like
``int8-static`` on the dataset or request data, and the engine is built with the INT8 and FP16
flags (FP16 for layers left unquantised). TensorRT's implicit calibrators are deprecated.

Availability is detected at run time: an NVIDIA GPU (``nvidia-smi``), the ``tensorrt``
package, and PyTorch with CUDA for the device buffers of the parity run. Elsewhere the profile
reports ``unavailable_on_host`` with the reason, which is not a failure.

Shapes of the optimisation profile: for each dynamic dimension, ``min`` 1, ``opt`` and ``max``
the parity batch (or the request's ``shapes``); options ``min_shapes``/``opt_shapes``/
``max_shapes`` give them per input explicitly. ``workspace_mb`` bounds the builder's scratch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from services.converter.errors import (
    ConversionError,
    InvalidOptions,
    Unavailable,
    UnsupportedModel,
)
from services.converter.inputs import DEFAULT_BATCH
from services.converter.profiles.base import (
    ConversionContext,
    Converted,
    Profile,
    Runner,
    check_known,
    first_line,
)
from services.converter.profiles.quantize import quantize_qdq
from shared.contracts.registry import FORMAT_TENSORRT
from shared.gpu import gpu_available, tensorrt_version

TIMING_CACHE = "tensorrt-timing.cache"


def _torch_cuda() -> bool:
    try:
        import torch
    except Exception:
        return False
    return bool(torch.cuda.is_available())


def trt_unavailable_reason() -> str | None:
    if not gpu_available():
        return "TensorRT engines need an NVIDIA GPU with a driver (nvidia-smi); this host has none"
    if tensorrt_version() is None:
        return "the tensorrt Python package is not installed on this host (pip install 'inferlab[gpu]')"
    if not _torch_cuda():
        return "the parity check of an engine needs PyTorch with CUDA for device buffers; not present here"
    return None


def _shape_option(options: dict[str, Any], key: str, profile: str) -> dict[str, list[int]]:
    value = options.get(key, {})
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, list) and all(isinstance(d, int) and d > 0 for d in v)
        for k, v in value.items()
    ):
        raise InvalidOptions(f"{profile}: option {key!r} must map input names to lists of positive ints")
    return {k: list(v) for k, v in value.items()}


def profile_shapes(
    name: str,
    dims: tuple[int, ...],
    *,
    batch: int,
    shapes: dict[str, list[int]],
    options: dict[str, Any],
) -> tuple[list[int], list[int], list[int]]:
    """(min, opt, max) of one input; -1 marks a dynamic dimension in ``dims``."""
    explicit = [options.get(k, {}).get(name) for k in ("min_shapes", "opt_shapes", "max_shapes")]
    if all(explicit):
        return explicit[0], explicit[1], explicit[2]
    given = shapes.get(name)
    opt = [d if d >= 0 else (given[i] if given else (batch if i == 0 else 1)) for i, d in enumerate(dims)]
    low = [d if d >= 0 else 1 for d in dims]
    high = list(opt)
    return explicit[0] or low, explicit[1] or opt, explicit[2] or high


class TensorRTEngine(Profile):
    output_format = FORMAT_TENSORRT

    def __init__(self, precision: str) -> None:
        self.precision = precision
        self.id = f"trt-{precision}"
        self.needs_calibration = precision == "int8"
        self.description = (
            "TensorRT engine, FP16, dynamic-shape profile, timing cache"
            if precision == "fp16"
            else "TensorRT engine, INT8 from a calibrated QDQ graph (+FP16)"
        )

    def availability(self) -> str | None:
        return trt_unavailable_reason()

    def normalize_options(self, options: dict[str, Any]) -> dict[str, Any]:
        known = ("workspace_mb", "min_shapes", "opt_shapes", "max_shapes", "builder_optimization_level")
        check_known(options, known, self.id)
        workspace = options.get("workspace_mb", 4096)
        level = options.get("builder_optimization_level", 3)
        if not isinstance(workspace, int) or workspace <= 0:
            raise InvalidOptions(f"{self.id}: workspace_mb must be a positive int")
        if not isinstance(level, int) or not 0 <= level <= 5:
            raise InvalidOptions(f"{self.id}: builder_optimization_level must be 0..5")
        return {
            "workspace_mb": workspace,
            "builder_optimization_level": level,
            "min_shapes": _shape_option(options, "min_shapes", self.id),
            "opt_shapes": _shape_option(options, "opt_shapes", self.id),
            "max_shapes": _shape_option(options, "max_shapes", self.id),
        }

    def tool_versions(self) -> dict[str, str]:
        versions = super().tool_versions()
        versions["tensorrt"] = tensorrt_version() or ""
        return versions

    def convert(self, context: ConversionContext) -> Converted:
        reason = self.availability()
        if reason is not None:
            raise Unavailable(reason)
        onnx_path = context.source
        details: dict[str, Any] = {}
        if self.precision == "int8":
            qdq = quantize_qdq(
                context,
                "trt-int8.qdq.onnx",
                profile=self.id,
                per_channel=True,
                activation_type="qint8",
                weight_type="qint8",
                calibrate_method="minmax",
                reduce_range=False,
                symmetric=True,
                op_types=[],
            )
            onnx_path = qdq.path
            details.update({f"qdq_{k}": v for k, v in qdq.details.items() if k != "ops_after"})
        engine, build = build_engine(onnx_path, context, precision=self.precision)
        target = context.workdir / f"{self.id}.engine"
        target.write_bytes(engine)
        details.update(build)
        return Converted(target, details=details, format=FORMAT_TENSORRT)

    def runner(self, path: Path) -> Runner:
        return TensorRTRunner(path)


def build_engine(onnx_path: Path, context: ConversionContext, *, precision: str) -> tuple[bytes, dict[str, Any]]:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    major = int(trt.__version__.split(".")[0])
    if major < 10:  # explicit batch became the only mode in TensorRT 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UnsupportedModel(f"TensorRT's ONNX parser refused the model: {errors[:800]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(context.options.get("workspace_mb", 4096)) << 20)
    if hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = int(context.options.get("builder_optimization_level", 3))
    config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    dynamic: dict[str, list[list[int]]] = {}
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = tuple(int(d) for d in tensor.shape)
        if any(d < 0 for d in dims):
            low, opt, high = profile_shapes(
                tensor.name, dims, batch=DEFAULT_BATCH, shapes=context.shapes, options=context.options
            )
            profile.set_shape(tensor.name, low, opt, high)
            dynamic[tensor.name] = [low, opt, high]
    if dynamic:
        config.add_optimization_profile(profile)
    cache_path = (context.cache_dir or context.workdir) / TIMING_CACHE
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, False)  # a cache from another GPU or version is not used
    try:
        serialized = builder.build_serialized_network(network, config)
    except Exception as exc:
        raise ConversionError(f"TensorRT engine build failed: {first_line(exc)}") from exc
    if serialized is None:
        raise ConversionError("TensorRT could not build an engine for this network (see the converter's log)")
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_path.with_suffix(".tmp")
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))
        tmp.replace(cache_path)
    except OSError:
        pass  # a cache that cannot be written only costs time on the next build
    return bytes(serialized), {
        "tensorrt_version": trt.__version__,
        "optimization_profile": dynamic,
        "flags": ["FP16", "INT8"] if precision == "int8" else ["FP16"],
        "gpu": _gpu_name(),
    }


def _gpu_name() -> str:
    from shared.gpu import nvidia_smi

    info = nvidia_smi()
    return info["name"] if info else ""


class TensorRTRunner(Runner):
    """Runs a serialized engine with TensorRT's runtime; device buffers are torch CUDA
    tensors (one stream, synchronised per run)."""

    def __init__(self, path: Path) -> None:
        import tensorrt as trt
        import torch

        self.trt = trt
        self.torch = torch
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ConversionError("TensorRT could not deserialize the engine it built")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, Any]:
        trt, torch = self.trt, self.torch
        keep = []
        for name in self.input_names:
            want = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            array = np.ascontiguousarray(feed[name].astype(want, copy=False))
            tensor = torch.from_numpy(array).cuda()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(array.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            tensor = torch.empty(shape, dtype=_torch_dtype(torch, dtype), device="cuda")
            outputs[name] = tensor
            self.context.set_tensor_address(name, tensor.data_ptr())
        with torch.cuda.stream(self.stream):
            ok = self.context.execute_async_v3(self.stream.cuda_stream)
        self.stream.synchronize()
        if not ok:
            raise ConversionError("TensorRT execution failed")
        return {name: t.cpu().numpy() for name, t in outputs.items()}

    def close(self) -> None:
        self.context = None
        self.engine = None


def _torch_dtype(torch: Any, dtype: np.dtype) -> Any:
    return {
        np.dtype(np.float32): torch.float32,
        np.dtype(np.float16): torch.float16,
        np.dtype(np.int32): torch.int32,
        np.dtype(np.int64): torch.int64,
        np.dtype(np.int8): torch.int8,
        np.dtype(np.uint8): torch.uint8,
        np.dtype(np.bool_): torch.bool,
    }[dtype]
