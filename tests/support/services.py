"""Running services against the test's real nats-server: in-process (same event loop, fast)
or as real child processes (for kill -9 and restart tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from shared.bus import Bus
from shared.config import Settings
from shared.runtime import Service, ServiceHost

REPO = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def running(settings: Settings, factory: Callable[[Bus, Settings], Service]) -> AsyncIterator[Service]:
    bus = await Bus.connect(settings, name="test-service")
    await bus.ensure_streams()
    service = factory(bus, settings)
    host = ServiceHost(bus, service)
    await host.start()
    try:
        yield service
    finally:
        await host.stop()
        await bus.close()


class ServiceProcess:
    """``python -m services.<name>`` as a child process with the test's settings."""

    def __init__(self, name: str, settings: Settings, log_dir: Path) -> None:
        self.name = name
        self.settings = settings
        self.log_path = log_dir / f"{name}-{int(time.time() * 1000)}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        env = {**os.environ, **self.settings.to_env(), "PYTHONUNBUFFERED": "1"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", f"services.{self.name}"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        return self

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
