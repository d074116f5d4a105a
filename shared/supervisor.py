"""The process supervisor behind ``inferlab up``: embedded NATS when needed, every built
service as a child process, restarts with exponential backoff (the embedded nats-server too:
same port, same JetStream store, so the services' reconnects find it again), and a clean stop
on Ctrl-C.

Each child writes its JSON logs to ``<home>/logs/<service>.log``; the supervisor prints one
readable line per lifecycle change (started, exited, restarting) and logs it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import Settings, env_name
from shared.embedded import EmbeddedNats, EmbeddedServerError, loopback_target, port_open
from shared.log import get_logger

SERVICES = ("registry", "converter", "benchmarker", "validator")
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 30.0  # a child that ran this long resets its backoff


def available_services() -> list[str]:
    """Services whose package exists in this installation (absent ones are skipped)."""
    return [s for s in SERVICES if importlib.util.find_spec(f"services.{s}") is not None]


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    backoff: float = BACKOFF_START_S
    started_at: float = 0.0
    log_path: Path | None = None
    history: list[str] = field(default_factory=list)


Notify = Callable[[str], None]


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        services: list[str] | None = None,
        notify: Notify | None = None,
        extra_import_roots: list[Path] | None = None,
    ) -> None:
        self.settings = settings
        self.services = services if services is not None else available_services()
        self.notify = notify or (lambda line: None)
        self.log = get_logger(component="supervisor")
        self.home = settings.home_path
        self.nats: EmbeddedNats | None = None
        self.children = {name: Child(name) for name in self.services}
        self._stopping = asyncio.Event()
        self.extra_import_roots = extra_import_roots or []
        self.nats_restarts = 0

    # --- NATS ---------------------------------------------------------------------------------

    def start_nats_if_needed(self) -> str:
        """Start nats-server when the URL is a loopback address where nothing listens."""
        target = loopback_target(self.settings.nats_url)
        if target is None:
            self._say(f"using NATS at {self.settings.nats_url}")
            return self.settings.nats_url
        host, port = target
        if port_open(host, port):
            self._say(f"using the NATS server already listening on {host}:{port}")
            return self.settings.nats_url
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.nats = EmbeddedNats(
            self.home / "nats",
            host=host if host != "localhost" else "127.0.0.1",
            port=port,
            log_file=logs / "nats-server.log",
            monitor_port=self.settings.embedded_nats_monitor_port,
        )
        self.nats.start()
        pid = self.nats.process.pid if self.nats.process else 0
        self.log.info("nats_started", pid=pid, host=host, port=port, store=str(self.home / "nats"))
        self._say(f"started embedded nats-server (pid {pid}) on {host}:{port} (JetStream store {self.home / 'nats'})")
        return self.settings.nats_url

    async def _watch_nats(self) -> None:
        """Restart the embedded nats-server when it dies (kill -9, OOM): same port and store,
        with backoff while it keeps failing."""
        nats = self.nats
        assert nats is not None
        backoff = BACKOFF_START_S
        while not self._stopping.is_set():
            process = nats.process
            assert process is not None
            started = time.monotonic()
            code = await asyncio.to_thread(process.wait)
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= STABLE_AFTER_S:
                backoff = BACKOFF_START_S
            self.log.warning("nats_exited", code=code, restart_in_s=backoff, restarts=self.nats_restarts)
            self._say(f"embedded nats-server exited with code {code}; restarting it in {backoff:.0f}s")
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=backoff)
                if self._stopping.is_set():
                    return
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                try:
                    await asyncio.to_thread(nats.start)
                except EmbeddedServerError as exc:
                    self.log.error("nats_restart_failed", error=str(exc), retry_in_s=backoff)
                    self._say(f"embedded nats-server did not restart ({exc}); trying again in {backoff:.0f}s")
                    continue
                self.nats_restarts += 1
                pid = nats.process.pid if nats.process else 0
                self.log.info("nats_restarted", pid=pid, port=nats.port, restarts=self.nats_restarts)
                self._say(
                    f"restarted embedded nats-server (pid {pid}) on {nats.host}:{nats.port}, same store; "
                    "the services reconnect by themselves"
                )
                break

    # --- children -----------------------------------------------------------------------------

    def child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.settings.to_env(), "PYTHONUNBUFFERED": "1"}
        if not os.environ.get(env_name("import_roots")):
            roots = [*self.settings.effective_import_roots, *self.extra_import_roots]
            env[env_name("import_roots")] = ",".join(str(r) for r in roots)
        return env

    async def _spawn(self, child: Child) -> None:
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        child.log_path = logs / f"{child.name}.log"
        out = open(child.log_path, "ab")  # noqa: SIM115 (owned by the child process)
        try:
            child.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"services.{child.name}",
                env=self.child_env(),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the supervisor only; it stops children in order
            )
        finally:
            out.close()
        child.started_at = time.monotonic()
        self.log.info("child_started", service=child.name, pid=child.process.pid, restarts=child.restarts)
        self._say(f"{child.name} started (pid {child.process.pid}), logs in {child.log_path}")

    async def _watch(self, child: Child) -> None:
        while not self._stopping.is_set():
            await self._spawn(child)
            assert child.process is not None
            code = await child.process.wait()
            if self._stopping.is_set():
                return
            ran = time.monotonic() - child.started_at
            if ran >= STABLE_AFTER_S:
                child.backoff = BACKOFF_START_S
            child.restarts += 1
            self.log.warning(
                "child_exited",
                service=child.name,
                code=code,
                ran_s=round(ran, 1),
                restart_in_s=child.backoff,
                restarts=child.restarts,
            )
            self._say(f"{child.name} exited with code {code} after {ran:.1f}s; restarting in {child.backoff:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=child.backoff)
            child.backoff = min(child.backoff * 2, BACKOFF_MAX_S)

    async def run(self, *, ready: Callable[[], None] | None = None) -> None:
        self.start_nats_if_needed()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stopping.set)
        watchers = [asyncio.create_task(self._watch(c)) for c in self.children.values()]
        if self.nats is not None:
            watchers.append(asyncio.create_task(self._watch_nats(), name="nats-watcher"))
        if not self.services:
            self._say("no services are installed; running NATS only")
        if ready:
            ready()
        try:
            await self._stopping.wait()
        finally:
            self._say("stopping services…")
            await self._stop_children()
            for w in watchers:
                w.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            if self.nats is not None:
                self._say(self._stop_nats())

    def _stop_nats(self) -> str:
        """Stop the embedded server; the line says what really happened."""
        assert self.nats is not None
        process = self.nats.process
        if process is None or process.poll() is not None:
            code = None if process is None else process.returncode
            self.log.warning("nats_not_running_at_stop", code=code)
            return f"embedded nats-server was not running (it had exited with code {code})"
        self.nats.stop()
        if process.poll() is None:
            return "embedded nats-server did not stop"
        self.log.info("nats_stopped", code=process.returncode)
        return "stopped embedded nats-server"

    def stop(self) -> None:
        self._stopping.set()

    async def _stop_children(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        running = [c.process for c in self.children.values() if c.process and c.process.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), timeout=timeout)
        except TimeoutError:
            for proc in running:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await asyncio.gather(*(p.wait() for p in running), return_exceptions=True)

    def _say(self, line: str) -> None:
        self.notify(line)
