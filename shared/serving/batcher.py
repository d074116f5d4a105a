"""Concurrent requests run together: stacked along the batch axis, run once, split back.

The policy, for latency first: a request that arrives alone runs at once (no added delay at
low load). While a run is in progress, new requests queue; the next run takes what queued,
and when more than one is waiting it waits up to ``max_delay_s`` more for the batch to fill
to ``max_batch`` rows. Requests whose shapes do not stack (different trailing sizes, or a
model without a batch axis) run one by one in the same round. The model is read at each run,
so a switch to another version takes effect between batches and no request is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.errors import InferlabError
from shared.serving.errors import InferenceFailed, NotReady
from shared.serving.loader import LoadedModel

Outputs = dict[str, Any]


@dataclass
class Pending:
    feeds: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future[tuple[str, Outputs]] = field(repr=False)


def rows_of(feeds: dict[str, np.ndarray], batchable: bool) -> int:
    if not batchable or not feeds:
        return 1
    sizes = {int(a.shape[0]) if a.ndim else 1 for a in feeds.values()}
    return sizes.pop() if len(sizes) == 1 else 1


def _signature(feeds: dict[str, np.ndarray]) -> tuple[Any, ...]:
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(feeds.items()))


def group(pending: list[Pending], batchable: bool, max_batch: int) -> list[list[Pending]]:
    """Runs for one round, in arrival order: requests with the same trailing shapes and
    dtypes together, up to ``max_batch`` rows a run (a larger request runs alone)."""
    if not batchable:
        return [[p] for p in pending]
    runs: list[list[Pending]] = []
    open_runs: dict[tuple[Any, ...], list[Pending]] = {}
    for p in pending:
        if any(a.ndim == 0 for a in p.feeds.values()):
            runs.append([p])
            continue
        key = _signature(p.feeds)
        current = open_runs.get(key)
        if current is not None and sum(q.rows for q in current) + p.rows <= max_batch:
            current.append(p)
            continue
        current = open_runs[key] = [p]
        runs.append(current)
    return runs


def split(outputs: Outputs, sizes: list[int]) -> list[Outputs] | None:
    """Each request's share of a stacked run's outputs; None when an output does not have one
    row per input row (then the requests must run one by one)."""
    total = sum(sizes)
    bounds = np.cumsum([0, *sizes])
    for value in outputs.values():
        if not isinstance(value, np.ndarray | list) or len(value) != total:
            return None
        if isinstance(value, np.ndarray) and value.ndim == 0:
            return None
    return [{name: value[bounds[i] : bounds[i + 1]] for name, value in outputs.items()} for i in range(len(sizes))]


def run_group(model: LoadedModel, run: list[Pending]) -> list[Outputs | Exception]:
    """Blocking: one stacked run (or one run per request when stacking does not apply)."""
    if len(run) > 1:
        stacked = {name: np.concatenate([p.feeds[name] for p in run]) for name in run[0].feeds}
        with contextlib.suppress(Exception):  # any failure: retried one by one below, for precise errors
            parts = split(model.run(stacked), [p.rows for p in run])
            if parts is not None:
                return list(parts)
    results: list[Outputs | Exception] = []
    for p in run:
        try:
            results.append(model.run(p.feeds))
        except Exception as exc:  # onnxruntime's own exception types
            results.append(InferenceFailed(f"ONNX Runtime failed on this request: {_first_line(exc)}"))
    return results


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


class Batcher:
    """Feeds the current model (``model()``; None while none is loaded) from a queue."""

    def __init__(
        self, model: Callable[[], LoadedModel | None], *, max_batch: int = 32, max_delay_s: float = 0.002
    ) -> None:
        if max_batch < 1 or max_delay_s < 0:
            raise InferlabError("max_batch must be >= 1 and max_delay_s >= 0")
        self.model = model
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self._queue: asyncio.Queue[Pending] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self._task: asyncio.Task[None] | None = None
        self.runs = 0
        self.requests = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="batcher")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(NotReady("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def infer(self, feeds: dict[str, np.ndarray]) -> tuple[str, Outputs]:
        """The outputs of one request and the ref of the model that computed them."""
        model = self.model()
        if model is None:
            raise NotReady("no model is loaded yet")
        future: asyncio.Future[tuple[str, Outputs]] = asyncio.get_running_loop().create_future()
        await self._queue.put(Pending(feeds, rows_of(feeds, model.batchable), future))
        return await future

    async def _collect(self) -> list[Pending]:
        taken = [await self._queue.get()]
        await asyncio.sleep(0)  # let requests already read by the server join
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay_s
        while sum(p.rows for p in taken) < self.max_batch:
            if not self._queue.empty():
                taken.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if len(taken) == 1 or remaining <= 0:
                break  # alone: no reason to wait; else the delay is spent
            try:
                taken.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return taken

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            taken = await self._collect()
            model = self.model()
            if model is None:
                for p in taken:
                    p.future.set_exception(NotReady("no model is loaded"))
                continue
            for run in group(taken, model.batchable, self.max_batch):
                results = await loop.run_in_executor(self._executor, run_group, model, run)
                self.runs += 1
                for p, result in zip(run, results, strict=True):
                    self.requests += 1
                    if p.future.done():
                        continue  # the client went away
                    if isinstance(result, Exception):
                        p.future.set_exception(result)
                    else:
                        p.future.set_result((model.ref, result))
