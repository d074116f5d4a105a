"""`inferlab up` as a child process, as a user runs it: shared by the demo and README tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path

from shared.config import Settings
from tests.support.cli import INFERLAB

# The reduced flow: every figure is real, just measured on less.
CI_SETTINGS = {
    "INFERLAB_CONVERTER_PROFILES": "fp16,int8-dynamic",
    "INFERLAB_CONVERTER_PARITY_SAMPLES": "128",
    "INFERLAB_BENCH_WARMUP_S": "0.1",
    "INFERLAB_BENCH_WINDOW_S": "0.1",
    "INFERLAB_BENCH_MIN_DURATION_S": "0.3",
    "INFERLAB_BENCH_MAX_DURATION_S": "1.0",
    "INFERLAB_VALIDATOR_ATTACK_SAMPLES": "10",
    "INFERLAB_VALIDATOR_ATTACK_QUERIES": "100",
    "INFERLAB_VALIDATOR_ATTACK_TIME_S": "2",
    "INFERLAB_VALIDATOR_NOISE_SAMPLES": "200",
    "INFERLAB_VALIDATOR_BOOTSTRAP": "100",
}


class Platform:
    """`inferlab up ...` as a child process, its output collected line by line."""

    def __init__(self, home: Path, port: int, *args: str) -> None:
        self.settings = Settings(nats_url=f"nats://127.0.0.1:{port}", home=str(home), log_level="info")
        self.env = {**os.environ, **self.settings.to_env(), **CI_SETTINGS, "COLUMNS": "200", "NO_COLOR": "1"}
        self.env.pop("INFERLAB_IMPORT_ROOTS", None)
        self.args = args
        self.lines: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, cwd: Path) -> Platform:
        self.proc = await asyncio.create_subprocess_exec(
            INFERLAB,
            "up",
            *self.args,
            cwd=cwd,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    async def wait_for(self, pattern: str, timeout: float) -> str:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if re.search(pattern, self.text):
                return self.text
            assert self.proc is not None
            if self.proc.returncode is not None:
                break
            await asyncio.sleep(0.2)
        raise AssertionError(f"no {pattern!r} within {timeout:.0f}s; output so far:\n{self.text}")

    async def stop(self) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C
            try:
                await asyncio.wait_for(self.proc.wait(), 60)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
        return self.proc.returncode or 0

    async def cli(self, *args: str, cwd: Path, timeout: float = 60.0) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            INFERLAB,
            *args,
            cwd=cwd,
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
        return proc.returncode or 0, out.decode(), err.decode()
