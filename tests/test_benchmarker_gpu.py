"""GPU paths of the benchmarker (marked ``gpu``: skipped on hosts without an NVIDIA GPU).

Each test also skips, saying why, when the GPU host lacks the piece it needs (an onnxruntime
build with the CUDA provider, TensorRT, cuda-python or pycuda). Imports stay light (no NATS,
no DuckDB) so the module runs on a bare GPU machine with ``pytest --noconftest``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.benchmarker.protocol import MeasureSpec, fingerprint, measure
from services.benchmarker.runners import CPU, CUDA, TENSORRT, TENSORRT_ENGINE, UnavailableOnHost, _Cuda
from tests.support.models import mlp

pytestmark = pytest.mark.gpu


def _spec(path: Path, provider: str, **kw) -> MeasureSpec:
    base = {
        "model_path": str(path),
        "provider": provider,
        "batch_size": 4,
        "intra_op_threads": 1,
        "concurrency": 1,
        "warmup_s": 0.2,
        "window_s": 0.2,
        "min_duration_s": 0.6,
        "max_duration_s": 3.0,
        "stability_threshold": 0.2,
    }
    return MeasureSpec(**{**base, **kw})


def _providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def test_fingerprint_names_the_gpu_for_gpu_providers() -> None:
    gpu = fingerprint(CUDA)
    cpu = fingerprint(CPU)
    assert gpu["gpu_name"] and gpu["gpu_driver"]
    assert cpu["gpu_name"] is None and gpu["id"] != cpu["id"]


def test_cuda_buffers_round_trip() -> None:
    try:
        cuda = _Cuda.load()
    except UnavailableOnHost as exc:
        pytest.skip(str(exc))
    host = np.arange(1024, dtype=np.float32)
    back = np.zeros_like(host)
    stream = cuda.stream()
    device = cuda.malloc(host.nbytes)
    try:
        cuda.htod(device, host, stream)
        cuda.dtoh(back, device, stream)
        cuda.sync(stream)
    finally:
        cuda.free(device)
    assert np.array_equal(host, back)


@pytest.mark.parametrize("provider", [CUDA, TENSORRT])
def test_onnxruntime_gpu_providers_measure_on_the_gpu(tmp_path: Path, provider: str) -> None:
    if provider not in _providers():
        pytest.skip(f"this onnxruntime build has no {provider} (providers: {_providers()})")
    m = measure(_spec(mlp(tmp_path / "m.onnx", hidden=256, extra_matmuls=4), provider, concurrency=2))
    assert m.provider == provider, m.notes
    assert m.completed > 0 and m.latencies_ns.min() > 0


def test_tensorrt_engine_runs_through_the_tensorrt_runtime(tmp_path: Path) -> None:
    try:
        import tensorrt as trt
    except ImportError:
        pytest.skip("TensorRT is not installed")
    onnx_path = mlp(tmp_path / "m.onnx", hidden=256, extra_matmuls=2)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes()), [parser.get_error(i) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 16), (4, 16), (8, 16))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    engine_path = tmp_path / "m.engine"
    engine_path.write_bytes(bytes(engine))
    m = measure(_spec(engine_path, TENSORRT_ENGINE, engine=True, concurrency=2))
    assert m.provider == TENSORRT_ENGINE and m.completed > 0
    assert m.input_shapes == {"input": [4, 16]}
