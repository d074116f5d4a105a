"""Inference runners the protocol times: ONNX Runtime sessions (CPU, CUDA and TensorRT
execution providers) and serialized TensorRT engines through TensorRT's own runtime.

A runner loads once, then hands each measuring thread a zero-argument ``call`` that performs one
complete inference (inputs in, outputs back on the host), which is what a client of the model
waits for. GPU pieces are imported only when asked for, and their absence is reported as
``ProviderUnavailable`` / ``UnavailableOnHost`` with a message saying what is missing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import InferlabError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
TENSORRT_ENGINE = "TensorRTEngine"  # not an ORT provider: TensorRT's runtime on an engine file
GPU_PROVIDERS = frozenset({CUDA, TENSORRT, TENSORRT_ENGINE})

# What a GPU provider falls back to inside one ORT session (nodes it cannot take run there).
_FALLBACKS = {TENSORRT: [TENSORRT, CUDA, CPU], CUDA: [CUDA, CPU], CPU: [CPU]}


class BenchmarkError(InferlabError):
    """Base of the reasons a benchmark cannot produce numbers; ``code`` is the ``reason`` of
    the ``model.benchmark_failed`` event."""

    code = "benchmark_error"


class LoadFailed(BenchmarkError):
    code = "load_failed"


class RunFailed(BenchmarkError):
    code = "run_failed"


class ProviderUnavailable(BenchmarkError):
    code = "provider_unavailable"


class UnavailableOnHost(BenchmarkError):
    code = "unavailable_on_host"


class InvalidConfig(BenchmarkError):
    code = "invalid_config"


class Crashed(BenchmarkError):
    code = "crashed"


Call = Callable[[], Any]


class OrtRunner:
    """One ``InferenceSession`` shared by every measuring thread (ORT sessions are thread-safe
    for ``run``); ``intra_op_threads`` threads per inference, inter-op parallelism off."""

    def __init__(self, path: Path, provider: str, intra_op_threads: int) -> None:
        self.path = path
        self.requested = provider
        self.intra_op_threads = intra_op_threads
        self.session: Any = None
        self.notes: list[str] = []

    def load(self) -> None:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self.requested not in available:
            raise ProviderUnavailable(
                f"{self.requested} is not available in this onnxruntime build "
                f"({ort.__version__}, providers: {', '.join(available)})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=_FALLBACKS.get(self.requested, [self.requested])
            )
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
            raise LoadFailed(f"onnxruntime cannot load the model: {_first_line(exc)}") from None
        actual = self.session.get_providers()[0]
        if actual != self.requested:
            # ORT silently falls back when e.g. the CUDA libraries fail to load; say so.
            self.notes.append(f"{self.requested} could not initialise; onnxruntime ran the model on {actual}")

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0] if self.session is not None else self.requested

    def input_specs(self) -> list[tuple[str, str, list[int | str | None]]]:
        """(name, ORT type string, shape) of every graph input."""
        return [(arg.name, arg.type, list(arg.shape)) for arg in self.session.get_inputs()]

    def make_call(self, feeds: dict[str, np.ndarray]) -> Call:
        run = self.session.run

        def call() -> Any:
            return run(None, feeds)

        return call

    def close(self) -> None:
        self.session = None


class TensorRTEngineRunner:
    """A serialized TensorRT engine (from the converter's ``trt-*`` profiles) run through
    TensorRT's runtime: one execution context, CUDA stream and set of device buffers per
    measuring thread. One timed call copies the inputs to the device, enqueues the engine,
    copies the outputs back and waits for the stream, like an ORT ``run``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.notes: list[str] = []
        self.provider = TENSORRT_ENGINE
        self.engine: Any = None
        self.cuda: _Cuda | None = None
        self._contexts: list[_EngineContext] = []
        self._lock = threading.Lock()

    def load(self) -> None:
        from shared.gpu import gpu_available, tensorrt_version

        if tensorrt_version() is None:
            raise UnavailableOnHost("a tensorrt-engine needs the TensorRT Python runtime (pip install tensorrt)")
        if not gpu_available():
            raise UnavailableOnHost("a tensorrt-engine needs an NVIDIA GPU; nvidia-smi found none")
        import tensorrt as trt

        self.cuda = _Cuda.load()
        self.trt = trt
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise LoadFailed(
                "TensorRT could not deserialize the engine (built by another TensorRT version or for another GPU?)"
            )

    def input_specs(self) -> list[tuple[str, str, list[int | str | None]]]:
        trt = self.trt
        specs = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            if self.engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                continue
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = [d if d >= 0 else None for d in self.engine.get_tensor_shape(name)]
            specs.append((name, f"tensor({_ort_type_name(dtype)})", shape))
        return specs

    def make_call(self, feeds: dict[str, np.ndarray]) -> Call:
        assert self.cuda is not None
        ctx = _EngineContext(self.engine, self.trt, self.cuda, feeds)
        with self._lock:
            self._contexts.append(ctx)
        return ctx.run

    def close(self) -> None:
        for ctx in self._contexts:
            ctx.free()
        self._contexts.clear()
        self.engine = None


class _EngineContext:
    def __init__(self, engine: Any, trt: Any, cuda: _Cuda, feeds: dict[str, np.ndarray]) -> None:
        self.cuda = cuda
        self.context = engine.create_execution_context()
        self.stream = cuda.stream()
        self.inputs: list[tuple[np.ndarray, int]] = []
        self.outputs: list[tuple[np.ndarray, int]] = []
        for name, array in feeds.items():
            self.context.set_input_shape(name, tuple(array.shape))
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            if is_input:
                host = np.ascontiguousarray(feeds[name])
            else:
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
                host = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype)
            device = cuda.malloc(max(host.nbytes, 1))
            self.context.set_tensor_address(name, device)
            (self.inputs if is_input else self.outputs).append((host, device))

    def run(self) -> None:
        cuda = self.cuda
        for host, device in self.inputs:
            cuda.htod(device, host, self.stream)
        if not self.context.execute_async_v3(cuda.stream_handle(self.stream)):
            raise RunFailed("TensorRT execute_async_v3 returned false")
        for host, device in self.outputs:
            cuda.dtoh(host, device, self.stream)
        cuda.sync(self.stream)

    def free(self) -> None:
        for _, device in [*self.inputs, *self.outputs]:
            self.cuda.free(device)
        self.inputs.clear()
        self.outputs.clear()


class _Cuda:
    """The few CUDA runtime calls an engine run needs, through NVIDIA's cuda-python bindings
    (``cuda.bindings.runtime``; older releases ``cuda.cudart``) or pycuda, whichever is
    installed."""

    def __init__(self, kind: str, module: Any) -> None:
        self.kind = kind
        self.m = module

    @classmethod
    def load(cls) -> _Cuda:
        try:
            from cuda.bindings import runtime as cudart

            return cls("cudart", cudart)
        except ImportError:
            pass
        try:
            from cuda import cudart  # type: ignore[no-redef,unused-ignore]  # used where cuda-python is installed

            return cls("cudart", cudart)
        except ImportError:
            pass
        try:
            import pycuda.autoprimaryctx  # noqa: F401  (makes the primary context current)
            import pycuda.driver as driver

            return cls("pycuda", driver)
        except ImportError:
            raise UnavailableOnHost(
                "running a TensorRT engine needs cuda-python (pip install cuda-python) or pycuda"
            ) from None

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RunFailed(f"CUDA runtime error {err}")
        return rest[0] if len(rest) == 1 else rest

    def malloc(self, nbytes: int) -> int:
        if self.kind == "pycuda":
            return int(self.m.mem_alloc(nbytes))
        return int(self._check(self.m.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        if self.kind == "cudart":
            self.m.cudaFree(ptr)
        # pycuda frees allocations when their DeviceAllocation is collected; we kept only ints,
        # so the memory lives until the process (a fresh one per configuration) exits.

    def stream(self) -> Any:
        if self.kind == "pycuda":
            return self.m.Stream()
        return self._check(self.m.cudaStreamCreate())

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle) if self.kind == "pycuda" else int(stream)

    def htod(self, device: int, host: np.ndarray, stream: Any) -> None:
        if self.kind == "pycuda":
            self.m.memcpy_htod_async(device, host, stream)
            return
        kind = self.m.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.m.cudaMemcpyAsync(device, host.ctypes.data, host.nbytes, kind, stream))

    def dtoh(self, host: np.ndarray, device: int, stream: Any) -> None:
        if self.kind == "pycuda":
            self.m.memcpy_dtoh_async(host, device, stream)
            return
        kind = self.m.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.m.cudaMemcpyAsync(host.ctypes.data, device, host.nbytes, kind, stream))

    def sync(self, stream: Any) -> None:
        if self.kind == "pycuda":
            stream.synchronize()
            return
        self._check(self.m.cudaStreamSynchronize(stream))


def _ort_type_name(dtype: np.dtype) -> str:
    return {"float32": "float", "float64": "double", "float16": "float16"}.get(dtype.name, dtype.name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return next((line for line in text.splitlines() if line.strip()), text)[:500]
