"""The README's commands, run as a reader would, so the documentation cannot rot.

Every fenced ``sh`` or ``python`` block of README.md carries a marker on the line before it:
``<!-- readme-test: run -->`` (run in order with bash, exit status 0), ``<!-- readme-test:
python -->`` (run with this interpreter) or ``<!-- readme-test: skip (why) -->``. A block without
a marker fails the test, so a new example cannot silently go untested. The blocks run in one
working folder against a live platform started the README's way (`inferlab up --demo`, the
reduced CI settings of tests/test_demo.py)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from shared.embedded import free_port
from tests.support.platform import Platform
from tests.support.services import REPO

README = REPO / "README.md"
MARKER = re.compile(r"^<!-- readme-test: (run|python|skip \(.+\)) -->$")
FENCE = re.compile(r"^```(\w*)\s*$")


def blocks(text: str) -> list[tuple[str, str, str, int]]:
    """(marker, language, code, line number) of every fenced block that has code to run."""
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, start = m.group(1), i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        code = "\n".join(lines[i + 1 : end]) + "\n"
        previous = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(previous.strip())
        if lang in ("sh", "bash", "python"):
            assert marker, f"README.md:{start + 1}: a ```{lang} block needs a <!-- readme-test: ... --> marker"
            out.append((marker.group(1), lang, code, start + 1))
        i = end + 1
    return out


def test_every_runnable_block_is_marked() -> None:
    found = blocks(README.read_text())
    kinds = [k.split(" ")[0] for k, _, _, _ in found]
    assert kinds.count("run") >= 5 and kinds.count("python") == 1 and "skip" in kinds
    for marker, lang, _, line in found:
        if marker == "python":
            assert lang == "python", line
        if marker == "run":
            assert lang in ("sh", "bash"), line


@pytest.mark.slow
async def test_readme_commands_run_against_a_live_platform(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(REPO / "examples")  # the README's paths are relative to the repo
    port = free_port()
    platform = await Platform(tmp_path / "home", port, "--demo", "--demo-models", "mlp").start(work)
    env = {
        **platform.env,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
        "NATS_HOSTPORT": f"127.0.0.1:{port}",  # examples/register_from_shell.sh
    }
    try:
        await platform.wait_for(r"demo (finished|incomplete) in \d+ s", timeout=200)
        for marker, _, code, line in blocks(README.read_text()):
            if marker.startswith("skip"):
                continue
            if marker == "python":
                script = work / f"readme_{line}.py"
                script.write_text(code)
                argv = [sys.executable, str(script)]
            else:
                argv = ["bash", "-euo", "pipefail", "-c", code]
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=work, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
            )
            out, _ = await asyncio.wait_for(proc.communicate(), 240)
            text = out.decode(errors="replace")
            assert proc.returncode == 0, f"README.md:{line} failed ({proc.returncode}):\n{code}\n---\n{text}"
            assert "Traceback" not in text, f"README.md:{line}:\n{text}"
            if marker == "python":
                assert "sdk-model@1.0.0" in text and "ready" in text, text
        assert (work / "digits-mlp.html").stat().st_size > 10_000
        assert (work / "digits.tar.gz").exists() and (work / "history" / "latency_samples.parquet").exists()
    finally:
        assert await platform.stop() == 0, platform.text
