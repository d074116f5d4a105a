"""The measurement protocol for one configuration (provider, batch size, intra-op threads,
concurrency), and the hardware fingerprint runs are compared under.

1. Load the model (timed: ``load_time_s``) and prepare the inputs (seeded synthetic tensors
   from the model's input specs, or rows of the registered dataset) before any timing.
2. One checked inference, then ``warmup_s`` of untimed-for-the-record inferences.
3. Measurement windows of ``window_s`` each (extended until at least ``MIN_WINDOW_SAMPLES``
   inferences completed, or past ``max_duration_s`` until at least one did), until the last
   three windows agree within ``stability_threshold`` on both median latency and throughput
   and ``min_duration_s`` passed (perf_analyzer's rule), or ``max_duration_s`` ends, in which
   case the run is flagged unstable.
4. Every inference latency is a ``time.perf_counter_ns()`` difference around the inference call
   alone. ``concurrency`` threads loop on one shared session; throughput is the inferences
   completed inside the windows divided by the windows' wall time.
5. Peak memory: the largest resident-set growth of the process over its size before loading,
   sampled every 20 ms by a background thread.

``measure`` runs inside a fresh child process per configuration (``measure_isolated``): the
service's event loop, NATS traffic and telemetry ingestion stay out of the measured process,
and load time and memory are those of a cold process, as a model server would see them.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import pickle
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.benchmarker.runners import (
    GPU_PROVIDERS,
    TENSORRT_ENGINE,
    BenchmarkError,
    InvalidConfig,
    OrtRunner,
    RunFailed,
    TensorRTEngineRunner,
)
from services.benchmarker.stats import is_stable, window_closes
from shared import sandbox
from shared.errors import NativeOutOfMemory, NativeTimeout
from shared.inputs import draw, shape_at

MIN_WINDOW_SAMPLES = 10
MIN_WARMUP_RUNS = 3
MEMORY_SAMPLE_S = 0.02


@dataclass(frozen=True)
class MeasureSpec:
    """Everything the child process needs (picklable)."""

    model_path: str
    provider: str
    batch_size: int
    intra_op_threads: int
    concurrency: int
    warmup_s: float
    window_s: float
    min_duration_s: float
    max_duration_s: float
    stability_threshold: float
    seed: int = 0
    shapes: dict[str, list[int]] = field(default_factory=dict)
    dataset_path: str | None = None
    engine: bool = False  # a serialized TensorRT engine, not ONNX
    # the record's resolved inputs (shared/inputs.py): shapes and value ranges that ran
    resolved: list[Any] = field(default_factory=list)


@dataclass
class Measurement:
    provider: str
    latencies_ns: np.ndarray  # int64, every measured inference, in completion order per thread
    offsets_ns: np.ndarray  # int64, start of each inference relative to the first window's start
    windows: np.ndarray  # int16, window index of each sample
    threads: np.ndarray  # int16, measuring thread of each sample
    window_medians_ms: list[float]
    window_throughputs: list[float]
    completed: int
    measured_s: float
    stable: bool
    load_time_s: float
    peak_memory_bytes: int
    peak_rss_bytes: int
    input_shapes: dict[str, list[int]]
    input_source: str
    notes: list[str]

    @property
    def throughput_ips(self) -> float:
        """Inferences per second (one inference = one call with ``batch_size`` rows)."""
        return self.completed / self.measured_s if self.measured_s > 0 else 0.0


# --- inputs -------------------------------------------------------------------------------

_ORT_DTYPES = {
    "float": np.float32,
    "float16": np.float16,
    "double": np.float64,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "bool": np.bool_,
    "string": np.str_,
}


def dtype_of(ort_type: str) -> Any:
    """numpy dtype of an ORT type string such as ``tensor(float)``."""
    if not ort_type.startswith("tensor(") or not ort_type.endswith(")"):
        raise InvalidConfig(f"input type {ort_type} is not a tensor; the benchmarker feeds tensors only")
    inner = ort_type[len("tensor(") : -1]
    if inner not in _ORT_DTYPES:
        raise InvalidConfig(f"input element type {inner} is not supported by the synthetic input generator")
    return _ORT_DTYPES[inner]


def resolve_shape(name: str, shape: list[Any], batch_size: int, shapes: dict[str, list[int]]) -> list[int]:
    """Concrete shape of one input: ``shapes[name]`` when given (its first dimension replaced by
    the batch size when the model's first dimension is dynamic), else the model's shape with a
    dynamic first dimension set to the batch size and other dynamic dimensions set to 1."""
    dynamic = [not isinstance(d, int) or d < 0 for d in shape]
    if name in shapes:
        given = list(shapes[name])
        if len(given) != len(shape):
            raise InvalidConfig(f"shapes[{name!r}] has rank {len(given)}; the model's input has rank {len(shape)}")
        for i, (d, dyn) in enumerate(zip(shape, dynamic, strict=True)):
            if not dyn and given[i] != d:
                raise InvalidConfig(f"shapes[{name!r}][{i}] = {given[i]} but the model fixes that dimension to {d}")
        if shape and dynamic[0]:
            given[0] = batch_size
        if any(d <= 0 for d in given):
            raise InvalidConfig(f"shapes[{name!r}] must be positive, got {given}")
        return given
    out = []
    for i, (d, dyn) in enumerate(zip(shape, dynamic, strict=True)):
        out.append((batch_size if i == 0 else 1) if dyn else int(d))
    return out


def synthetic_input(dtype: Any, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    if dtype is np.str_:
        return np.array(["inferlab"] * int(np.prod(shape)), dtype=object).reshape(shape)
    if dtype is np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    # Small non-negative integers: valid ids for embeddings and indices in most models.
    return rng.integers(0, 10, size=shape).astype(dtype)


def prepare_inputs(
    specs: list[tuple[str, str, list[Any]]],
    batch_size: int,
    shapes: dict[str, list[int]],
    seed: int,
    dataset_path: str | None = None,
    resolved: list[Any] | None = None,
) -> tuple[dict[str, np.ndarray], str]:
    """Feeds for every input, and where they came from (``dataset`` or ``synthetic``)."""
    unknown = sorted(set(shapes) - {name for name, _, _ in specs})
    if unknown:
        raise InvalidConfig(f"shapes names {unknown}, which are not model inputs ({[n for n, _, _ in specs]})")
    if dataset_path:
        from shared.datasets import load_npz

        arrays = load_npz(Path(dataset_path))
        if all(name in arrays for name, _, _ in specs):
            feeds = {}
            for name, ort_type, _ in specs:
                rows = arrays[name]
                take = np.resize(np.arange(len(rows)), batch_size)  # cycles when fewer rows
                feeds[name] = np.ascontiguousarray(rows[take]).astype(dtype_of(ort_type), copy=False)
            return feeds, "dataset"
    rng = np.random.default_rng(seed)
    feeds = {}
    known = {r.name: r for r in resolved or []}
    for name, ort_type, shape in specs:
        dtype = dtype_of(ort_type)
        r = known.get(name)
        if r is not None and name not in shapes and dtype is not np.str_:
            # as resolved at registration: the batch on its real batch axis, values in range
            feeds[name] = draw(rng, np.dtype(dtype).name, shape_at(r, batch_size), r.low, r.high, name)
        else:
            feeds[name] = synthetic_input(dtype, resolve_shape(name, shape, batch_size, shapes), rng)
    return feeds, "synthetic"


# --- hardware fingerprint -------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def fingerprint(provider: str) -> dict[str, Any]:
    """Fields of the hardware fingerprint of this host for ``provider``. GPU name and driver
    are part of it only for GPU providers, so CPU runs on a GPU host compare with CPU runs on
    the same CPU elsewhere. The hostname is recorded but not hashed: identical machines share
    baselines."""
    import onnxruntime as ort

    from shared.gpu import nvidia_smi

    gpu = nvidia_smi() if provider in GPU_PROVIDERS else None
    fields: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_cores": usable_cores(),
        "ort_version": ort.__version__,
        "provider": provider,
        "gpu_name": gpu["name"] if gpu else None,
        "gpu_driver": gpu["driver"] if gpu else None,
    }
    if provider == TENSORRT_ENGINE:
        from shared.gpu import tensorrt_version

        fields["ort_version"] = f"tensorrt-{tensorrt_version()}"
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    return {"id": digest, **fields, "hostname": socket.gethostname()}


# --- measuring ------------------------------------------------------------------------------------


class _MemorySampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        import psutil

        self.process = psutil.Process()
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(MEMORY_SAMPLE_S):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


class _Loop(threading.Thread):
    """One measuring thread: runs ``call`` until told to stop, recording the start offset and
    latency of every inference. Python list appends are cheap and thread-safe under the GIL;
    the controller reads list lengths at window boundaries."""

    def __init__(self, call: Any, index: int, stop: threading.Event) -> None:
        super().__init__(daemon=True, name=f"bench-{index}")
        self.call = call
        self.index = index
        self.stop_event = stop
        # array('q') stores raw int64s: no Python int object per sample, so a long run does not
        # inflate the memory figure or stress the allocator while measuring.
        self.starts = array("q")
        self.latencies = array("q")
        self.error: BaseException | None = None

    def run(self) -> None:
        call, clock = self.call, time.perf_counter_ns
        starts, latencies, stopped = self.starts, self.latencies, self.stop_event.is_set
        try:
            while not stopped():
                t0 = clock()
                call()
                t1 = clock()
                starts.append(t0)
                latencies.append(t1 - t0)
        except BaseException as exc:
            self.error = exc


def measure(spec: MeasureSpec) -> Measurement:
    """Run the protocol in this process (see the module docstring)."""
    _validate(spec)
    if not spec.engine:
        import onnxruntime  # noqa: F401  (imported before the memory baseline: not the model's footprint)
    memory = _MemorySampler()
    memory.start()
    runner: Any = TensorRTEngineRunner(Path(spec.model_path)) if spec.engine else None
    if runner is None:
        runner = OrtRunner(Path(spec.model_path), spec.provider, spec.intra_op_threads)
    try:
        t0 = time.perf_counter()
        runner.load()
        load_time = time.perf_counter() - t0
        feeds, source = prepare_inputs(
            runner.input_specs(), spec.batch_size, spec.shapes, spec.seed, spec.dataset_path, spec.resolved
        )
        calls = [runner.make_call(feeds) for _ in range(spec.concurrency)]
        try:
            calls[0]()
        except Exception as exc:
            raise RunFailed(f"the model failed on its inputs ({_describe_feeds(feeds)}): {_first_line(exc)}") from None
        result = _timed_windows(spec, calls)
    finally:
        memory.stop()
        with contextlib.suppress(Exception):
            runner.close()
    return Measurement(
        provider=runner.provider,
        load_time_s=load_time,
        peak_memory_bytes=max(0, memory.peak - memory.baseline),
        peak_rss_bytes=memory.peak,
        input_shapes={k: list(v.shape) for k, v in feeds.items()},
        input_source=source,
        notes=list(runner.notes),
        **result,
    )


def _timed_windows(spec: MeasureSpec, calls: list[Any]) -> dict[str, Any]:
    stop = threading.Event()
    loops = [_Loop(call, i, stop) for i, call in enumerate(calls)]
    for loop in loops:
        loop.start()
    clock = time.perf_counter_ns
    try:
        # Warm-up: at least MIN_WARMUP_RUNS inferences per thread and warmup_s.
        deadline = time.perf_counter() + spec.warmup_s
        while time.perf_counter() < deadline or min(len(lp.latencies) for lp in loops) < MIN_WARMUP_RUNS:
            _check_loops(loops)
            time.sleep(0.005)
        start_ns = clock()
        marks = [len(lp.latencies) for lp in loops]
        first_marks = list(marks)
        boundaries: list[list[int]] = [list(marks)]
        medians: list[float] = []
        throughputs: list[float] = []
        stable = False
        window_start = start_ns
        max_end = start_ns + int(spec.max_duration_s * 1e9)
        min_end = start_ns + int(spec.min_duration_s * 1e9)
        while True:
            window_end = window_start + int(spec.window_s * 1e9)
            while True:
                now = clock()
                if now >= window_end:
                    current = [len(lp.latencies) for lp in loops]
                    if window_closes(sum(current) - sum(marks), MIN_WINDOW_SAMPLES, now >= max_end):
                        break
                _check_loops(loops)
                time.sleep(min(0.01, max(0.0005, (window_end - now) / 1e9)))
            current = [len(lp.latencies) for lp in loops]
            window_lat = np.concatenate(
                [
                    np.frombuffer(lp.latencies[m:c], dtype=np.int64)
                    for lp, m, c in zip(loops, marks, current, strict=True)
                ]
            )
            medians.append(float(np.median(window_lat)) / 1e6)
            throughputs.append(window_lat.size / ((now - window_start) / 1e9))
            boundaries.append(current)
            marks, window_start = current, now
            stable = len(medians) >= 3 and now >= min_end and is_stable(medians, throughputs, spec.stability_threshold)
            if stable or now >= max_end:
                break
        end_ns = window_start
    finally:
        stop.set()
        for loop in loops:
            loop.join()
    _check_loops(loops)
    lat_parts, off_parts, win_parts, thr_parts = [], [], [], []
    for t, loop in enumerate(loops):
        lo, hi = first_marks[t], boundaries[-1][t]
        lat_parts.append(np.frombuffer(loop.latencies[lo:hi], dtype=np.int64).copy())
        off_parts.append(np.frombuffer(loop.starts[lo:hi], dtype=np.int64) - start_ns)
        cuts = np.asarray([b[t] for b in boundaries], dtype=np.int64)
        win_parts.append((np.searchsorted(cuts, np.arange(lo, hi), side="right") - 1).astype(np.int16))
        thr_parts.append(np.full(hi - lo, t, dtype=np.int16))
    latencies = np.concatenate(lat_parts)
    return {
        "latencies_ns": latencies,
        "offsets_ns": np.concatenate(off_parts),
        "windows": np.concatenate(win_parts),
        "threads": np.concatenate(thr_parts),
        "window_medians_ms": medians,
        "window_throughputs": throughputs,
        "completed": int(latencies.size),
        "measured_s": (end_ns - start_ns) / 1e9,
        "stable": stable,
    }


def _check_loops(loops: list[_Loop]) -> None:
    for loop in loops:
        if loop.error is not None:
            raise RunFailed(f"inference failed during measurement: {_first_line(loop.error)}")


def _validate(spec: MeasureSpec) -> None:
    if spec.batch_size < 1 or spec.concurrency < 1 or spec.intra_op_threads < 0:
        raise InvalidConfig("batch size and concurrency must be >= 1 and intra-op threads >= 0 (0: ORT default)")
    if not (spec.window_s > 0 and spec.warmup_s >= 0 and spec.max_duration_s > 0):
        raise InvalidConfig("window_s and max_duration_s must be > 0, warmup_s >= 0")
    if spec.min_duration_s > spec.max_duration_s:
        raise InvalidConfig("min_duration_s must not exceed max_duration_s")
    if not 0 < spec.stability_threshold < 1:
        raise InvalidConfig("stability_threshold is a fraction between 0 and 1 (0.10 = 10%)")


def _describe_feeds(feeds: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in feeds.items())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return next((line for line in text.splitlines() if line.strip()), text)[:500]


# --- isolation -------------------------------------------------------------------------------------


def measure_isolated(
    spec: MeasureSpec, *, timeout_s: float | None = None, limits: sandbox.Limits | None = None
) -> Measurement:
    """``measure`` in a fresh ``python -m services.benchmarker.protocol`` process (blocking;
    call from a thread). A plain child process rather than multiprocessing's spawn, which
    re-imports the caller's ``__main__`` and so breaks scripts without a main guard. The spec and
    the result travel as pickles through a private temporary folder between this process and its
    own child. The protocol's errors cross unchanged; a child that dies without a result (a
    segfault inside a runtime), runs past ``timeout_s`` or past ``limits`` (applied in the child:
    shared/sandbox.py) becomes ``NativeCrash`` / ``NativeTimeout`` / ``NativeOutOfMemory``."""
    limit = timeout_s if timeout_s is not None else spec.warmup_s + spec.max_duration_s + 120.0
    _clean_stale_folders_once()
    with tempfile.TemporaryDirectory(prefix=f"{_TMP_PREFIX}{os.getpid()}-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.pickle", Path(tmp) / "result.pickle"
        spec_path.write_bytes(pickle.dumps(spec))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))}
        env.update(sandbox.limits_env(limits) if limits is not None else {})
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "services.benchmarker.protocol", str(spec_path), str(result_path)],
                cwd=_REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=limit,
                check=False,
                # Its own process group, and killed when this process dies (kill -9 included):
                # an orphan would go on measuring beside the next benchmarker's run.
                start_new_session=True,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except subprocess.TimeoutExpired:
            raise NativeTimeout(f"the benchmark process did not finish within {limit:.0f} s", step=_STEP) from None
        if not result_path.exists():
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise sandbox.failure_from_exit(proc.returncode, " | ".join(tail), step=_STEP)
        outcome = pickle.loads(result_path.read_bytes())
    if isinstance(outcome, BaseException):
        raise outcome
    measurement: Measurement = outcome  # the child pickles a Measurement or the exception it raised
    return measurement


_REPO = Path(__file__).resolve().parents[2]
_STEP = "benchmark measurement (loading the model, warm-up, timed runs)"
_TMP_PREFIX = "inferlab-bench-"
_PR_SET_PDEATHSIG = 1
_cleaned = False


def _prctl() -> Any:
    """libc's prctl, loaded in the parent: a forked child of a threaded process must not load
    libraries (the loader's lock may be held by a thread that does not exist in the child)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()


def _die_with_parent(parent: int) -> Callable[[], None]:
    def setup() -> None:  # runs in the child between fork and exec
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return setup


def _clean_stale_folders_once() -> None:
    """Remove the scratch folders of measurement processes whose benchmarker is gone (a
    kill -9 skips the TemporaryDirectory cleanup); once per process."""
    global _cleaned
    if _cleaned:
        return
    _cleaned = True
    for folder in Path(tempfile.gettempdir()).glob(f"{_TMP_PREFIX}*-*"):
        owner = folder.name[len(_TMP_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _child(argv: list[str]) -> int:
    spec_path, result_path = Path(argv[0]), Path(argv[1])
    # Run through the importable module, not this ``__main__`` copy of it, so the pickled
    # result names classes the parent can import.
    from services.benchmarker import protocol

    spec = pickle.loads(spec_path.read_bytes())
    try:
        sandbox.apply_limits_from_env()
        outcome: Any = protocol.measure(spec)
    except Exception as exc:
        oom = sandbox.out_of_memory_cause(exc)
        if oom is not None:
            outcome = NativeOutOfMemory(f"the model needed more than its memory limit: {_first_line(oom)}", step=_STEP)
        elif isinstance(exc, BenchmarkError):
            outcome = exc
        else:
            outcome = RunFailed(f"{type(exc).__name__}: {_first_line(exc)}")
    partial = result_path.with_suffix(".partial")
    partial.write_bytes(pickle.dumps(outcome))
    partial.replace(result_path)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
