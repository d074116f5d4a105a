"""Tables printed into a pipe (``inferlab models | less``, CI logs) keep each row on one line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from services.registry.service import RegistryService
from shared.config import Settings
from tests.support.models import mlp
from tests.support.services import REPO, running

INFERLAB = str(Path(sys.executable).parent / "inferlab")
LONG = "a-model-name-long-enough-that-its-row-cannot-fit-in-eighty-columns-" + "x" * 40
NAME = LONG[:64]  # the longest name the registry takes


def piped_env(**extra: str) -> dict[str, str]:
    """The environment of a pipe in CI: no COLUMNS, no terminal."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
    return {**env, "NO_COLOR": "1", **extra}


def print_table(env: dict[str, str]) -> list[str]:
    code = (
        "from shared.cli.output import table\n"
        f"table('models', ['name', 'size bytes', 'note'], [[{LONG!r}, 123456789, 'ok ' * 20]])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.splitlines()


def test_a_piped_table_is_printed_full_width() -> None:
    lines = print_table(piped_env())
    row = [line for line in lines if LONG in line]
    assert len(row) == 1, "\n".join(lines)
    assert "123456789" in row[0] and ("ok " * 20).strip() in row[0]
    assert max(len(line) for line in lines) > 80


def test_an_explicit_columns_still_wins() -> None:
    lines = print_table(piped_env(COLUMNS="60"))
    assert max(len(line) for line in lines) <= 60
    assert not any(LONG in line for line in lines)  # folded, as asked


async def test_inferlab_models_into_a_pipe(settings: Settings, tmp_path: Path) -> None:
    model = mlp(tmp_path / "long.onnx")
    env = {**piped_env(), **settings.to_env()}
    async with running(settings, RegistryService):
        for args in (["register", str(model), "--name", NAME, "--version", "1.0.0", "--wait"], ["models"]):
            proc = await asyncio.create_subprocess_exec(
                INFERLAB, *args, cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, out.decode() + err.decode()
    rows = [line for line in out.decode().splitlines() if f"{NAME}@1.0.0" in line]
    assert len(rows) == 1, out.decode()
    assert len(rows[0]) > 80
