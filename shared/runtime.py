"""What every service's ``__main__`` does: configure logging, connect (waiting for NATS),
declare the streams, start the service, run its workers, expose its micro endpoints plus a
``<service>.health`` endpoint (so ``$SRV.PING`` and ``inferlab status`` find every service),
and stop cleanly on SIGTERM/SIGINT: stop fetching, let in-flight work finish, drain."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import msgspec

from shared.bus import Bus
from shared.config import Settings, SettingsError
from shared.endpoints import Endpoint, serve
from shared.envelope import event_source
from shared.errors import InferlabError
from shared.log import configure, get_logger
from shared.tracing import configure_tracing, shutdown_tracing
from shared.worker import Worker

if TYPE_CHECKING:
    from nats.micro.service import Service as MicroService


class Service(Protocol):
    name: str
    description: str
    workers: list[Worker]

    async def start(self) -> None: ...
    def endpoints(self) -> list[Endpoint]: ...
    async def stop(self) -> None: ...


class HealthRequest(msgspec.Struct):
    pass


class WorkerHealth(msgspec.Struct, kw_only=True):
    durable: str
    handled: int
    failed: int
    dead_lettered: int
    inflight: int


class Health(msgspec.Struct, kw_only=True):
    service: str
    host: str
    pid: int
    uptime_s: float
    workers: list[WorkerHealth]


class ServiceHost:
    """Runs one service instance: its workers as tasks, its endpoints as a micro service."""

    def __init__(self, bus: Bus, service: Service) -> None:
        self.bus = bus
        self.service = service
        # Its facts name the service as their CloudEvents source, whatever the connection is called.
        bus.source = event_source(service.name)
        self.started = time.monotonic()
        self._tasks: list[asyncio.Task[None]] = []
        self._micro: MicroService | None = None

    async def start(self) -> None:
        await self.service.start()
        health = Endpoint(
            "health",
            f"{self.service.name}.health",
            HealthRequest,
            self._health,
            "worker counters of this replica",
        )
        self._micro = await serve(
            self.bus,
            service=self.service.name,
            description=self.service.description,
            endpoints=[*self.service.endpoints(), health],
        )
        self._tasks = [asyncio.create_task(w.run(), name=f"worker-{w.durable}") for w in self.service.workers]

    async def _health(self, _: HealthRequest) -> Health:
        return Health(
            service=self.service.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            uptime_s=round(time.monotonic() - self.started, 3),
            workers=[
                WorkerHealth(
                    durable=w.durable,
                    handled=w.handled,
                    failed=w.failed,
                    dead_lettered=w.dead_lettered,
                    inflight=len(w._inflight),
                )
                for w in self.service.workers
            ],
        )

    async def wait(self) -> None:
        """Returns when a worker stops (a fatal error); raises its exception."""
        if not self._tasks:
            await asyncio.Event().wait()
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    async def stop(self) -> None:
        for worker in self.service.workers:
            worker.stop()
        if self._micro is not None:
            with contextlib.suppress(Exception):
                await self._micro.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.service.stop()


ServiceFactory = Callable[[Bus, Settings], Service]


async def serve_forever(name: str, factory: ServiceFactory, settings: Settings, *, connect_wait: float = 120.0) -> None:
    log = get_logger()
    bus = await Bus.connect(settings, name=f"inferlab-{name}", wait=connect_wait)
    await bus.ensure_streams()
    host = ServiceHost(bus, factory(bus, settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    await host.start()
    log.info("service_started", nats=bus.nc.connected_url.netloc if bus.nc.connected_url else None, pid=os.getpid())
    runner = asyncio.create_task(host.wait())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    log.info("service_stopping")
    await host.stop()
    stopper.cancel()
    failure = runner.exception() if runner.done() and not runner.cancelled() else None
    runner.cancel()
    await bus.close()
    if failure is not None:
        raise failure
    log.info("service_stopped")


def main(name: str, factory: ServiceFactory) -> None:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        sys.exit(2)
    configure(name, settings.log_level, settings.log_format)
    try:
        configure_tracing(name)
        asyncio.run(serve_forever(name, factory, settings))
    except InferlabError as exc:
        get_logger().error("service_failed", error=exc.message, code=exc.code)
        sys.exit(1)
    except KeyboardInterrupt:
        pass
    finally:
        shutdown_tracing()
