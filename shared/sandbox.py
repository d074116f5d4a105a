"""Native calls on users' models run here: a small pool of long-lived worker processes per
service, each running one task at a time under resource limits, supervised from the service's
event loop.

A model is untrusted input to native code (ONNX Runtime, onnx's checker and shape inference,
quantisers, float16 conversion, TensorRT). Such code can segfault, abort, hang or allocate
without bound; in-process, any of that takes the whole service down with every other piece of
work in flight. In a worker it ends one task, as a precise exception from shared/errors.py:

- the worker died by a signal, or exited without answering -> ``NativeCrash`` (signal name and
  number, the step it was in, the input shapes it was feeding when the task said so);
- past its wall-clock timeout (enforced here: the worker is killed) or its CPU-time limit
  (``RLIMIT_CPU``, SIGXCPU) -> ``NativeTimeout``;
- past its memory limit (``RLIMIT_AS``: an allocation refused, seen as ``MemoryError`` or
  ``std::bad_alloc`` anywhere in the exception chain, or an abort that says so; or a SIGKILL the
  pool did not send, i.e. the kernel's OOM killer) -> ``NativeOutOfMemory``.

The dead (or suspect) worker is replaced; tasks on other workers are untouched. Any other
exception the task raises crosses to the caller as itself (class and attributes), so domain
errors keep their meaning.

Workers are plain ``python -m shared.sandbox`` children (not multiprocessing: spawn and
forkserver re-import the caller's ``__main__``, and forking an asyncio process with threads is
unsafe). Tasks and results travel as length-prefixed pickles over the worker's stdin and a
private duplicate of its stdout; the worker's own fd 1 points at stderr, so a library that
prints cannot corrupt the protocol. Tasks name a module-level function by reference and take
file paths, not model bytes.

A task may call ``step(...)`` to say what it is about to do (and with which input shapes): the
parent keeps the last one, which is what a crash report names.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import math
import os
import pickle
import resource
import signal
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from shared.errors import InferlabError, NativeCrash, NativeFailure, NativeOutOfMemory, NativeTimeout

T = TypeVar("T")
_HEADER = struct.Struct("!Q")
_REPO = Path(__file__).resolve().parents[1]
# Text in an exception or in the worker's last stderr lines that means an allocation failed.
_OOM_MARKERS = ("bad_alloc", "failed to allocate memory", "cannot allocate memory", "out of memory", "memoryerror")
# Lines of a worker's stderr kept for the report of its death.
_STDERR_TAIL = 20
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Limits:
    """Per-task limits. ``memory_bytes`` is address space the task may add to the worker's
    size at the start of the task (virtual, as RLIMIT_AS counts: ONNX Runtime and numpy reserve
    more than they touch, hence generous defaults). ``cpu_s`` is CPU time over all threads.
    None: no limit of that kind."""

    timeout_s: float | None = None
    memory_bytes: int | None = None
    cpu_s: float | None = None


def limits_for(settings: Any, timeout_s: float | None, *, model_bytes: int = 0, gpu: bool = False) -> Limits:
    """The limits of one native task on a model of ``model_bytes``: memory headroom is the
    larger of ``sandbox_memory_bytes`` and ``sandbox_memory_model_factor`` x the model; CPU
    time is the wall timeout on every core (a backstop: the wall timeout is what bites). A
    task on a GPU gets no address-space limit: CUDA maps far more virtual memory than any
    sane limit (device memory is the GPU runtime's to refuse)."""
    memory = max(int(settings.sandbox_memory_bytes), int(settings.sandbox_memory_model_factor * model_bytes))
    return Limits(
        timeout_s=timeout_s,
        memory_bytes=None if gpu else memory,
        cpu_s=None if timeout_s is None else timeout_s * (os.cpu_count() or 1),
    )


# --- inside the worker -------------------------------------------------------------------------

_channel: _Channel | None = None


class _Channel:
    def __init__(self, out: Any) -> None:
        self.out = out
        self.last: tuple[str, dict[str, list[int]] | None] | None = None
        self.out_of_memory: BaseException | None = None

    def send(self, message: tuple[Any, ...]) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.out.write(_HEADER.pack(len(data)) + data)
        self.out.flush()


def step(name: str, shapes: dict[str, list[int]] | None = None) -> None:
    """Say what the running task is about to do (and the input shapes it feeds): a crash
    report names the last step. A no-op outside a sandbox worker; repeated steps are sent once."""
    if _channel is None:
        return
    note = (name, shapes)
    if note != _channel.last:
        _channel.last = note
        _channel.send(("step", name, shapes))


def note_failure(exc: BaseException) -> None:
    """Tell the sandbox about an exception from a native call that the caller handles (turns
    into a finding, a skipped check): if it is a refused allocation, the task ends as
    ``NativeOutOfMemory`` whatever it returns, since what it computed ran short of memory. A
    no-op outside a sandbox worker."""
    if _channel is not None and _channel.out_of_memory is None:
        _channel.out_of_memory = out_of_memory_cause(exc)


def out_of_memory_cause(exc: BaseException) -> BaseException | None:
    """The exception in ``exc``'s chain (cause or context) that reports a refused allocation."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError) or any(m in str(current).lower() for m in _OOM_MARKERS):
            return current
        current = current.__cause__ or current.__context__
    return None


def _vm_size() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def apply_limits(limits: Limits) -> None:
    """Set this process's soft RLIMIT_AS and RLIMIT_CPU for one task, relative to what it has
    already mapped and spent (hard limits stay, so ``clear_limits`` can lift them again)."""
    if limits.memory_bytes is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        soft = _vm_size() + limits.memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
    if limits.cpu_s is not None:
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + limits.cpu_s)
        resource.setrlimit(resource.RLIMIT_CPU, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))


def clear_limits() -> None:
    for which in (resource.RLIMIT_AS, resource.RLIMIT_CPU):
        _, hard = resource.getrlimit(which)
        resource.setrlimit(which, (hard, hard))


def limits_env(limits: Limits) -> dict[str, str]:
    """Environment for a child that calls ``apply_limits_from_env`` (the benchmarker's)."""
    return {
        "INFERLAB_SANDBOX_LIMITS": ",".join(
            "" if v is None else str(v) for v in (limits.timeout_s, limits.memory_bytes, limits.cpu_s)
        )
    }


FAULT_ENV = "INFERLAB_SANDBOX_FAULT"


def apply_limits_from_env() -> Limits | None:
    """In a child started with ``limits_env``: apply its limits. Test-only: with
    ``INFERLAB_SANDBOX_FAULT`` set (``segv``, ``abort``, ``hang``), die that way instead."""
    _inject(os.environ.get(FAULT_ENV))
    raw = os.environ.get("INFERLAB_SANDBOX_LIMITS")
    if not raw:
        return None
    timeout_s, memory, cpu = (p or None for p in raw.split(","))
    limits = Limits(
        timeout_s=float(timeout_s) if timeout_s else None,
        memory_bytes=int(memory) if memory else None,
        cpu_s=float(cpu) if cpu else None,
    )
    apply_limits(limits)
    return limits


def _pack_exception(exc: BaseException) -> tuple[Any, ...]:
    """An exception as (module, qualname, args, state, text): rebuilt in the parent without
    calling its ``__init__`` (many take other arguments than ``args``)."""
    cls = type(exc)
    text = "".join(traceback.format_exception_only(cls, exc)).strip()
    state = dict(getattr(exc, "__dict__", {}))
    try:
        payload = pickle.dumps((exc.args, state))
        pickle.loads(payload)
    except Exception:
        payload = pickle.dumps(((str(exc),), {}))
    return (cls.__module__, cls.__qualname__, payload, text)


def _unpack_exception(packed: tuple[Any, ...]) -> BaseException:
    module, qualname, payload, text = packed
    try:
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(qualname)
        args, state = pickle.loads(payload)
        exc = cls.__new__(cls, *args)
        exc.args = args
        exc.__dict__.update(state)
        return exc
    except Exception:
        return SandboxTaskError(f"{text} (in a sandbox worker)")


class SandboxTaskError(InferlabError):
    """A task raised an exception that could not be rebuilt in the parent."""

    code = "task_error"


def _run_task(channel: _Channel, task: tuple[Any, ...]) -> None:
    _, module, qualname, args, kwargs, limits, label, want_progress, fault = task
    channel.last = None
    channel.out_of_memory = None
    channel.send(("step", label, None))
    retire = False
    try:
        _inject(fault)
        func: Any = importlib.import_module(module)
        for part in qualname.split("."):
            func = getattr(func, part)
        if want_progress:
            kwargs = {**kwargs, "progress": lambda *a: channel.send(("progress", a))}
        apply_limits(limits)
        try:
            value = func(*args, **kwargs)
        finally:
            clear_limits()
        reply: tuple[Any, ...] = ("ok", value, False)
        if channel.out_of_memory is not None:
            oom = channel.out_of_memory
            reply = ("oom", f"{type(oom).__name__}: {str(oom)[:300]}", True)
    except BaseException as exc:  # everything crosses: the parent decides what it means
        clear_limits()
        oom = channel.out_of_memory or out_of_memory_cause(exc)
        if oom is not None:
            # An allocator that failed once may have left the heap in any state: retire.
            retire = True
            reply = ("oom", f"{type(oom).__name__}: {str(oom)[:300]}", True)
        else:
            reply = ("error", _pack_exception(exc), False)
    try:
        channel.send(reply)
    except Exception as exc:  # an unpicklable result
        channel.send(("error", _pack_exception(TypeError(f"the task's result cannot be sent: {exc}")), retire))


def _inject(fault: str | None) -> None:
    if fault == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "abort":
        os.abort()
    elif fault == "hang":
        while True:
            time.sleep(1)


def _set_parent_death_signal() -> None:
    """Die with the service: an orphaned worker would hold memory and a GPU forever."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = os.read(fd, n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def worker_main(preload: Iterable[str]) -> int:
    global _channel
    _set_parent_death_signal()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the service stops its workers itself
    # The protocol gets private descriptors; whatever native code prints goes to stderr.
    in_fd, out_fd = os.dup(0), os.dup(1)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    _channel = _Channel(os.fdopen(out_fd, "wb", buffering=0))
    for name in preload:
        importlib.import_module(name)
    _channel.send(("ready", os.getpid()))
    while True:
        header = _read_exact(in_fd, _HEADER.size)
        if header is None:
            return 0
        data = _read_exact(in_fd, _HEADER.unpack(header)[0])
        if data is None:
            return 0
        task = pickle.loads(data)
        _run_task(_channel, task)
        if task[0] == "task-last":
            return 0


# --- in the service ----------------------------------------------------------------------------


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def failure_from_exit(
    returncode: int,
    stderr_tail: str,
    *,
    step: str,
    shapes: dict[str, list[int]] | None = None,
    killed_by_us: bool = False,
) -> NativeFailure:
    """What a worker's death without an answer means (also for the benchmarker's child)."""
    where = f" during {step}" if step else ""
    if shapes:
        where += f" on inputs of shapes {shapes}"
    tail = f": {stderr_tail}" if stderr_tail else ""
    number = -returncode if returncode < 0 else None
    lowered = stderr_tail.lower()
    if number == signal.SIGXCPU:
        return NativeTimeout(f"the native call used up its CPU-time limit{where}", step=step, shapes=shapes)
    if number == signal.SIGKILL and not killed_by_us:
        return NativeOutOfMemory(
            f"the native process was killed (SIGKILL, most likely the kernel's out-of-memory killer){where}",
            step=step,
            shapes=shapes,
        )
    if any(m in lowered for m in _OOM_MARKERS):
        return NativeOutOfMemory(f"the native call ran out of memory{where}{tail}", step=step, shapes=shapes)
    if number is not None:
        name = signal_name(number)
        return NativeCrash(
            f"the runtime crashed with {name} (signal {number}){where}{tail}",
            signal_name=name,
            signal_number=number,
            step=step,
            shapes=shapes,
        )
    return NativeCrash(
        f"the native process exited with code {returncode} without a result{where}{tail}",
        exit_code=returncode,
        step=step,
        shapes=shapes,
    )


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        self.tasks = 0
        self.drain = asyncio.create_task(self._drain(), name=f"sandbox-stderr-{proc.pid}")

    async def _drain(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            if text:
                self.tail.append(text[:500])

    async def send(self, message: tuple[Any, ...]) -> None:
        assert self.proc.stdin is not None
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        self.proc.stdin.write(_HEADER.pack(len(data)) + data)
        await self.proc.stdin.drain()

    async def receive(self) -> tuple[Any, ...]:
        assert self.proc.stdout is not None
        header = await self.proc.stdout.readexactly(_HEADER.size)
        data = await self.proc.stdout.readexactly(_HEADER.unpack(header)[0])
        message: tuple[Any, ...] = pickle.loads(data)
        return message

    async def kill(self) -> int:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        return await self.wait()

    async def wait(self) -> int:
        code = await self.proc.wait()
        # the stderr pipe closes with the process; what it said last is in the tail
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self.drain), 2.0)
        return code

    def stderr_tail(self, lines: int = 3) -> str:
        return " | ".join(list(self.tail)[-lines:])


class SandboxPool:
    """``size`` workers at most, ``prestart`` of them started by ``start()`` (so the first
    task does not pay the start-up), the rest on demand; each imports ``preload`` before it
    says it is ready. Use from one event loop."""

    def __init__(
        self,
        name: str,
        *,
        size: int = 1,
        prestart: int = 1,
        preload: Iterable[str] = (),
        max_tasks: int = 200,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.size = max(1, size)
        self.prestart = min(max(0, prestart), self.size)
        self.preload = tuple(preload)
        self.max_tasks = max(1, max_tasks)
        self.env = env
        # Test-only: the next task(s) make their worker die this way ("segv", "abort", "hang").
        self.inject_fault: str | None = None
        self.replaced = 0
        self._idle: list[_Worker] = []
        self._live = 0
        self._cond: asyncio.Condition | None = None
        self._closed = False
        self._starting: set[asyncio.Task[None]] = set()

    @property
    def live(self) -> int:
        return self._live

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def start(self) -> None:
        workers = await asyncio.gather(*(self._spawn() for _ in range(self.prestart - self._live)))
        cond = self._condition()
        async with cond:
            self._idle.extend(workers)
            cond.notify_all()

    async def close(self) -> None:
        self._closed = True
        for task in list(self._starting):
            task.cancel()
        idle, self._idle = self._idle, []
        for worker in idle:
            if worker.proc.stdin is not None:
                with contextlib.suppress(Exception):
                    worker.proc.stdin.close()
        for worker in idle:
            try:
                await asyncio.wait_for(worker.proc.wait(), 5.0)
            except TimeoutError:
                await worker.kill()
            worker.drain.cancel()
            self._live -= 1

    async def _spawn(self) -> _Worker:
        self._live += 1
        try:
            env = {**os.environ, **(self.env or {})}
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_REPO), env.get("PYTHONPATH")]))
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "shared.sandbox",
                *self.preload,
                cwd=_REPO,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                limit=1 << 20,
            )
            worker = _Worker(proc)
            try:
                message = await asyncio.wait_for(worker.receive(), START_TIMEOUT_S)
            except (asyncio.IncompleteReadError, TimeoutError):
                code = await worker.kill()
                raise RuntimeError(
                    f"sandbox worker of {self.name} did not start (exit code {code}): {worker.stderr_tail()}"
                ) from None
            assert message[0] == "ready", message
            return worker
        except BaseException:
            self._live -= 1
            raise

    async def _acquire(self) -> _Worker:
        cond = self._condition()
        async with cond:
            while True:
                if self._closed:
                    raise RuntimeError(f"the sandbox pool of {self.name} is closed")
                if self._idle:
                    return self._idle.pop()
                if self._live < self.size:
                    break
                await cond.wait()
        return await self._spawn()

    async def _release(self, worker: _Worker) -> None:
        if self._closed:
            await self._discard(worker, kill=True)
            return
        cond = self._condition()
        async with cond:
            self._idle.append(worker)
            cond.notify()

    async def _discard(self, worker: _Worker, *, kill: bool) -> None:
        """Retire ``worker`` (dead, killed or worn out) and start its replacement in the
        background, so the pool stays warm."""
        if kill:
            await worker.kill()
        else:
            await worker.wait()
        worker.drain.cancel()
        cond = self._condition()
        async with cond:
            self._live -= 1
            self.replaced += 1
            cond.notify()
        if not self._closed and self._live + len(self._starting) < self.prestart:
            task = asyncio.create_task(self._replace(), name=f"sandbox-replace-{self.name}")
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _replace(self) -> None:
        try:
            worker = await self._spawn()
        except Exception:  # the next task spawns one on demand and reports why it cannot
            return
        await self._release(worker)

    async def run(
        self,
        func: Callable[..., T],
        *args: Any,
        limits: Limits | None = None,
        step: str = "",
        progress: Callable[..., None] | None = None,
        **kwargs: Any,
    ) -> T:
        """``func(*args, **kwargs)`` in a worker (``func`` module-level, picklable by
        reference; with ``progress``, it is called with a ``progress=`` callable whose calls
        reach ``progress`` here). Raises what ``func`` raised, or a ``NativeFailure``."""
        limits = limits or Limits()
        fault, self.inject_fault = self.inject_fault, None
        task = (
            "task",
            func.__module__,
            func.__qualname__,
            args,
            kwargs,
            limits,
            step,
            progress is not None,
            fault,
        )
        worker = await self._acquire()
        loop = asyncio.get_running_loop()
        deadline = None if limits.timeout_s is None else loop.time() + limits.timeout_s
        last_step, shapes = step, None
        outcome = "dead"
        try:
            await worker.send(task)
            while True:
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                message = await asyncio.wait_for(worker.receive(), remaining)
                kind = message[0]
                if kind == "step":
                    last_step, shapes = message[1] or step, message[2]
                elif kind == "progress":
                    assert progress is not None
                    progress(*message[1])
                elif kind == "ok":
                    outcome = "retire" if message[2] else "ok"
                    return message[1]  # type: ignore[no-any-return]
                elif kind == "oom":
                    outcome = "retire"
                    where = f" during {last_step}" if last_step else ""
                    if shapes:
                        where += f" on inputs of shapes {shapes}"
                    raise NativeOutOfMemory(
                        f"the native call needed more than its memory limit{_limit_text(limits)}{where}: {message[1]}",
                        step=last_step,
                        shapes=shapes,
                    )
                elif kind == "error":
                    outcome = "retire" if message[2] else "ok"
                    raise _unpack_exception(message[1])
        except TimeoutError:
            outcome = "killed"
            raise NativeTimeout(
                f"the native call did not finish within {limits.timeout_s:g} s"
                + (f" (during {last_step})" if last_step else ""),
                step=last_step,
                shapes=shapes,
            ) from None
        except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
            code = await worker.wait()
            outcome = "gone"
            raise failure_from_exit(code, worker.stderr_tail(), step=last_step, shapes=shapes) from None
        except asyncio.CancelledError:
            outcome = "killed"
            raise
        finally:
            worker.tasks += 1
            if outcome == "ok" and worker.tasks < self.max_tasks:
                await self._release(worker)
            else:
                await asyncio.shield(self._discard(worker, kill=outcome != "gone"))


def _limit_text(limits: Limits) -> str:
    return f" ({limits.memory_bytes / (1 << 30):.1f} GiB)" if limits.memory_bytes else ""


def pool_size(settings: Any, concurrency: int) -> int:
    return max(1, min(int(settings.sandbox_workers), concurrency))


if __name__ == "__main__":
    # Run through the importable module so pickles name ``shared.sandbox``, not ``__main__``.
    from shared import sandbox as _module

    sys.exit(_module.worker_main(sys.argv[1:]))


__all__ = [
    "Limits",
    "NativeCrash",
    "NativeFailure",
    "NativeOutOfMemory",
    "NativeTimeout",
    "SandboxPool",
    "SandboxTaskError",
    "apply_limits",
    "apply_limits_from_env",
    "clear_limits",
    "failure_from_exit",
    "limits_env",
    "limits_for",
    "note_failure",
    "out_of_memory_cause",
    "pool_size",
    "step",
]
