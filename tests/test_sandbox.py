"""The sandbox pool with real worker processes: crashes, aborts, timeouts, CPU and memory
limits become precise exceptions, the pool keeps serving, other tasks are untouched."""

from __future__ import annotations

import asyncio
import platform
import resource
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.config import Settings
from shared.errors import NativeCrash, NativeOutOfMemory, NativeTimeout
from shared.sandbox import Limits, SandboxPool, failure_from_exit, limits_for
from tests.support import sandbox_tasks as tasks
from tests.support.sandbox_models import allocating_model, endless_model, nchwc_crash_model


@pytest.fixture
async def pool() -> AsyncIterator[SandboxPool]:
    pool = SandboxPool("test", size=2, prestart=2, preload=["numpy"])
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def test_a_segfault_is_a_native_crash_and_the_pool_keeps_serving(pool: SandboxPool) -> None:
    before = await pool.run(tasks.pid)
    with pytest.raises(NativeCrash) as caught:
        await pool.run(tasks.segfault_while_feeding, step="fp16 conversion")
    crash = caught.value
    assert crash.code == "crashed"
    assert (crash.signal_name, crash.signal_number) == ("SIGSEGV", signal.SIGSEGV)
    assert crash.step == "variant inference"
    assert crash.shapes == {"token_ids": [1, 12], "length": [1]}
    assert "SIGSEGV" in crash.message and "token_ids" in crash.message
    assert await pool.run(tasks.echo, 41) == 41
    assert pool.replaced == 1
    assert pool.live <= pool.size
    assert isinstance(before, int)


async def test_abort_and_exit_without_answer_are_crashes(pool: SandboxPool) -> None:
    with pytest.raises(NativeCrash) as aborted:
        await pool.run(tasks.abort, step="quantize")
    assert aborted.value.signal_name == "SIGABRT" and aborted.value.step == "quantize"
    with pytest.raises(NativeCrash) as exited:
        await pool.run(tasks.exit_quietly)
    assert exited.value.exit_code == 3 and exited.value.signal_number is None
    assert await pool.run(tasks.echo, "ok") == "ok"


async def test_a_crash_leaves_the_task_on_the_other_worker_untouched(pool: SandboxPool) -> None:
    slow = asyncio.create_task(pool.run(tasks.sleep, 1.0))
    await asyncio.sleep(0.2)  # the slow task holds one worker; the crash takes the other
    with pytest.raises(NativeCrash):
        await pool.run(tasks.segfault)
    assert await slow == 1.0


async def test_wall_clock_timeout_kills_the_worker(pool: SandboxPool) -> None:
    with pytest.raises(NativeTimeout) as caught:
        await pool.run(tasks.sleep, 60, limits=Limits(timeout_s=0.5), step="parity check")
    assert caught.value.code == "timed_out" and "0.5 s" in caught.value.message
    assert await pool.run(tasks.sleep, 0.01) == 0.01


async def test_cpu_limit_is_a_timeout(pool: SandboxPool) -> None:
    with pytest.raises(NativeTimeout) as caught:
        await pool.run(tasks.burn_cpu, limits=Limits(cpu_s=1, timeout_s=30))
    assert "CPU" in caught.value.message


async def test_memory_limit_refuses_an_allocation(pool: SandboxPool) -> None:
    with pytest.raises(NativeOutOfMemory) as caught:
        await pool.run(tasks.allocate, 3 << 30, limits=Limits(memory_bytes=1 << 30))
    assert caught.value.code == "out_of_memory" and "MemoryError" in caught.value.message
    # the limit is per task: the next one, with a larger limit, allocates
    assert await pool.run(tasks.allocate, 100 << 20, limits=Limits(memory_bytes=1 << 30)) == 100 << 20


async def test_a_model_that_allocates_far_past_the_limit_is_out_of_memory(pool: SandboxPool, tmp_path: Path) -> None:
    huge = allocating_model(tmp_path / "huge.onnx")  # 10^11 floats
    moderate = allocating_model(tmp_path / "moderate.onnx", elements=(30_000, 25_000))  # 3 GB: the OS would allow it
    for model in (huge, moderate):
        with pytest.raises(NativeOutOfMemory) as caught:
            await pool.run(tasks.run_model, str(model), limits=Limits(memory_bytes=1 << 30, timeout_s=60))
        assert caught.value.step == "inference" and caught.value.shapes == {"x": [1, 4]}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    assert rss < 2 << 30  # none of it happened in this process


async def test_a_model_that_never_finishes_times_out(pool: SandboxPool, tmp_path: Path) -> None:
    model = endless_model(tmp_path / "endless.onnx")
    with pytest.raises(NativeTimeout):
        await pool.run(tasks.run_model, str(model), limits=Limits(timeout_s=1.0))
    assert await pool.run(tasks.echo, 1) == 1


async def test_task_exceptions_cross_as_themselves(pool: SandboxPool) -> None:
    with pytest.raises(tasks.Refused) as caught:
        await pool.run(tasks.refuse)
    assert caught.value.reason == "no" and caught.value.detail == {"a": 1} and caught.value.code == "refused"
    with pytest.raises(ValueError):
        await pool.run(int, "not a number")


async def test_progress_calls_reach_the_parent(pool: SandboxPool) -> None:
    seen: list[int] = []
    assert await pool.run(tasks.count, 3, progress=seen.append) == 3
    assert seen == [0, 1, 2]


async def test_cancelling_a_task_kills_its_worker_and_the_pool_recovers(pool: SandboxPool) -> None:
    task = asyncio.create_task(pool.run(tasks.sleep, 60))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await pool.run(tasks.echo, 2) == 2


async def test_a_worn_out_worker_is_replaced() -> None:
    pool = SandboxPool("test", size=1, prestart=1, max_tasks=3)
    await pool.start()
    try:
        pids = [await pool.run(tasks.pid) for _ in range(7)]
    finally:
        await pool.close()
    assert len(set(pids)) == 3


async def test_injected_faults(pool: SandboxPool) -> None:
    pool.inject_fault = "segv"
    with pytest.raises(NativeCrash):
        await pool.run(tasks.echo, 1, step="verify")
    pool.inject_fault = "hang"
    with pytest.raises(NativeTimeout):
        await pool.run(tasks.echo, 1, limits=Limits(timeout_s=0.3))
    assert await pool.run(tasks.echo, 3) == 3


@pytest.mark.slow
async def test_a_hundred_crashes_leave_the_pool_serving_and_memory_flat() -> None:
    pool = SandboxPool("test", size=2, prestart=2)  # nothing preloaded: restarts are cheap
    await pool.start()
    try:
        await _hundred_crashes(pool)
    finally:
        await pool.close()


async def _hundred_crashes(pool: SandboxPool) -> None:
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    for _ in range(10):  # warm up the parent's allocations
        with pytest.raises(NativeCrash):
            await pool.run(tasks.segfault)
    before = rss()
    for _ in range(100):
        with pytest.raises(NativeCrash):
            await pool.run(tasks.segfault)
    after = rss()
    assert await pool.run(tasks.echo, "alive") == "alive"
    assert pool.live <= pool.size
    assert after - before < 8 << 20, (before, after)


def test_exit_codes_mean_what_they_say() -> None:
    assert isinstance(failure_from_exit(-signal.SIGKILL, "", step="x"), NativeOutOfMemory)
    assert isinstance(failure_from_exit(-signal.SIGKILL, "", step="x", killed_by_us=True), NativeCrash)
    assert isinstance(failure_from_exit(-signal.SIGXCPU, "", step="x"), NativeTimeout)
    oom = failure_from_exit(
        -signal.SIGABRT, "terminate called after throwing an instance of 'std::bad_alloc'", step="x"
    )
    assert isinstance(oom, NativeOutOfMemory)
    crash = failure_from_exit(-signal.SIGSEGV, "", step="fp16", shapes={"x": [1]})
    assert isinstance(crash, NativeCrash) and crash.signal_name == "SIGSEGV" and "fp16" in crash.message


def test_limits_are_sized_from_the_model() -> None:
    settings = Settings()
    small = limits_for(settings, 10.0, model_bytes=1 << 20)
    big = limits_for(settings, 10.0, model_bytes=1 << 30)
    assert small.memory_bytes == settings.sandbox_memory_bytes
    assert big.memory_bytes == int(settings.sandbox_memory_model_factor * (1 << 30))
    assert small.timeout_s == 10.0 and small.cpu_s is not None and small.cpu_s >= 10.0


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="NchwcTransformer runs on x86_64 only")
async def test_upstream_reproducer_float16_encoder_crashes_onnxruntime(pool: SandboxPool, tmp_path: Path) -> None:
    """Issue 15's crash, cut down: ONNX Runtime's NchwcTransformer segfaults creating a session
    on this float16 graph (microsoft/onnxruntime#28392). When an upgrade fixes it, this test
    fails: drop the entry in docs/reliability.md then."""
    model = nchwc_crash_model(tmp_path / "encoder16.onnx", float16=True)
    with pytest.raises(NativeCrash) as caught:
        await pool.run(tasks.run_model, str(model), step="loading the model")
    assert caught.value.signal_name == "SIGSEGV" and caught.value.step == "loading the model"
    # the float32 original loads and runs
    fp32 = nchwc_crash_model(tmp_path / "encoder32.onnx")
    assert len(await pool.run(tasks.run_model, str(fp32))) == 1 * 4 * 3  # (batch, time, classes)
