"""`inferlab up` supervises its embedded nats-server like the services (the audit's fifth
finding: after kill -9 of the embedded server nothing restarted it, and Ctrl-C still printed
"stopped embedded nats-server")."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from shared.embedded import free_port, port_open
from tests.support.models import mlp
from tests.support.platform import Platform

pytestmark = pytest.mark.fault


async def test_kill_9_of_the_embedded_nats_server_is_recovered_by_inferlab_up_alone(tmp_path: Path) -> None:
    port = free_port()
    platform = await Platform(tmp_path / "home", port, "--services", "registry").start(tmp_path)
    try:
        text = await platform.wait_for(r"started embedded nats-server \(pid \d+\)", timeout=60)
        pid = int(re.findall(r"started embedded nats-server \(pid (\d+)\)", text)[0])
        await platform.wait_for(r"up: registry", timeout=60)
        first = mlp(tmp_path / "first.onnx")
        rc, out, err = await platform.cli(
            "register", str(first), "--name", "first", "--version", "1.0.0", "--wait", "--timeout", "60", cwd=tmp_path
        )
        assert rc == 0, out + err

        os.kill(pid, signal.SIGKILL)
        text = await platform.wait_for(r"restarted embedded nats-server \(pid \d+\)", timeout=60)
        assert "embedded nats-server exited with code" in text
        assert port_open("127.0.0.1", port)

        # The platform works again without anyone's help: a registration after the crash, and
        # what was stored before it is still there (same JetStream store).
        second = mlp(tmp_path / "second.onnx", seed=2)
        rc, out, err = await platform.cli(
            "register",
            str(second),
            "--name",
            "second",
            "--version",
            "1.0.0",
            "--wait",
            "--timeout",
            "120",
            cwd=tmp_path,
        )
        assert rc == 0, out + err
        rc, out, err = await platform.cli("show", "first@1.0.0", cwd=tmp_path)
        assert rc == 0, out + err
    finally:
        code = await platform.stop()
    assert code == 0, platform.text
    assert "stopped embedded nats-server" in platform.text
    assert not port_open("127.0.0.1", port)
