"""A measurement child dies with its benchmarker (the audit's sixth finding: a killed
benchmarker left its measurement process running, reparented to PID 1, overlapping the next
benchmarker's measurements, and its temporary folder behind)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest

from services.benchmarker import protocol
from tests.support.events import eventually
from tests.support.models import mlp
from tests.support.services import REPO

pytestmark = pytest.mark.fault

PARENT = """
import sys
from services.benchmarker.protocol import MeasureSpec, measure_isolated
measure_isolated(MeasureSpec(model_path=sys.argv[1], provider="CPUExecutionProvider", batch_size=1,
    intra_op_threads=1, concurrency=1, warmup_s=0.05, window_s=0.1, min_duration_s=60.0,
    max_duration_s=120.0, stability_threshold=0.5))
"""


def _children_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), "")
        if ppid == str(parent) and b"services.benchmarker.protocol" in cmdline:
            found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "State:\tZ" in status  # a zombie has stopped; whoever adopted it reaps it


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_kill_9_of_the_benchmarker_ends_its_measurement_child_and_its_folder_is_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = mlp(tmp_path / "m.onnx")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONPATH": str(REPO)}
    parent = await asyncio.create_subprocess_exec(sys.executable, "-c", PARENT, str(model), cwd=REPO, env=env)
    try:

        async def child_running() -> bool:
            return bool(_children_of(parent.pid))

        await eventually(child_running, timeout=60, what="the measurement child")
        [child] = _children_of(parent.pid)
        assert os.getpgid(child) == child  # its own process group
        [folder] = list(scratch.glob(f"inferlab-bench-{parent.pid}-*"))

        parent.send_signal(signal.SIGKILL)
        await parent.wait()

        async def child_gone() -> bool:
            return _gone(child)

        await eventually(child_gone, timeout=10, what="the orphaned measurement child to die")
    finally:
        for pid in _children_of(parent.pid):  # only if the test failed: no orphan outlives it
            os.kill(pid, signal.SIGKILL)
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
    assert folder.exists()  # kill -9 skipped its cleanup...
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(protocol, "_cleaned", False)
    live = scratch / f"inferlab-bench-{os.getpid()}-mine"
    live.mkdir()
    protocol._clean_stale_folders_once()  # ...and the next benchmarker's first run sweeps it
    assert not folder.exists()
    assert live.exists()  # a living process's folder is left alone
