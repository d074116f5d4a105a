"""Module-level functions the sandbox tests run in worker processes (a worker imports a task
by reference, so they cannot live in a test function)."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from shared import sandbox
from shared.errors import InferlabError


class Refused(InferlabError):
    """An exception whose ``__init__`` takes other arguments than its ``args``."""

    code = "refused"

    def __init__(self, reason: str, detail: dict[str, int]) -> None:
        super().__init__(f"refused: {reason}")
        self.reason = reason
        self.detail = detail


def echo(value: Any) -> Any:
    return value


def pid() -> int:
    return os.getpid()


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)


def segfault_while_feeding() -> None:
    sandbox.step("variant inference", {"token_ids": [1, 12], "length": [1]})
    os.kill(os.getpid(), signal.SIGSEGV)


def abort() -> None:
    os.abort()


def exit_quietly() -> None:
    os._exit(3)


def sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def burn_cpu() -> None:
    while True:
        pass


def allocate(nbytes: int) -> int:
    return int(np.ones(nbytes, dtype=np.uint8).sum())


def refuse() -> None:
    raise Refused("no", {"a": 1})


def count(n: int, progress: Callable[[int], None]) -> int:
    for i in range(n):
        progress(i)
    return n


def run_model(path: str, rows: int = 1) -> list[float]:
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    shape = [rows] + [d if isinstance(d, int) else 4 for d in first.shape[1:]]
    feed = {first.name: np.ones(shape, dtype=np.float32)}
    sandbox.step("inference", {k: list(v.shape) for k, v in feed.items()})
    return [float(v) for v in session.run(None, feed)[0].ravel()]
