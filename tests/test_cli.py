"""The ``inferlab`` command as a user runs it (a real child process), and the shell example."""

from __future__ import annotations

import asyncio
import json
import os
import tarfile
from pathlib import Path

import pytest

from services.registry.service import RegistryService
from shared.config import Settings
from tests.support.cli import INFERLAB, assert_one_line_error, cli
from tests.support.models import digits_classifier, digits_dataset, mlp
from tests.support.services import REPO, running


@pytest.mark.slow
async def test_register_show_alias_download_bundle(settings: Settings, tmp_path: Path) -> None:
    model = digits_classifier(tmp_path / "digits.onnx")
    dataset = digits_dataset(tmp_path / "digits.npz")
    async with running(settings, RegistryService):
        rc, out, err = await cli(
            settings,
            "register",
            str(model),
            "--name",
            "digits",
            "--version",
            "1.0.0",
            "--task",
            "classification",
            "--meta",
            "epochs=3",
            "--meta",
            "owner=ml-team",
            "--tag",
            "team=ml",
            "--dataset",
            str(dataset),
            "--wait",
            "--json",
        )
        assert rc == 0, err
        registered = json.loads(out)
        assert registered["status"] == "registered"
        assert registered["record"]["metadata"] == {"epochs": 3, "owner": "ml-team"}
        assert registered["record"]["dataset_uri"].startswith("nats-obj://")

        rc, out, err = await cli(settings, "register", str(model), "--name", "digits", "--version", "1.0.0", "--wait")
        assert rc == 0 and "registered digits@1.0.0" in out  # same bytes: a no-op answered with the record

        other = mlp(tmp_path / "other.onnx")
        rc, out, err = await cli(settings, "register", str(other), "--name", "digits", "--version", "1.0.0", "--wait")
        assert rc == 1 and "version_exists" in out

        rc, out, _ = await cli(settings, "models")
        assert rc == 0 and "digits@1.0.0" in out and "classification" in out

        rc, out, _ = await cli(settings, "alias", "set", "digits@1.0.0", "production")
        assert rc == 0 and "digits@production -> 1.0.0" in out
        rc, out, _ = await cli(settings, "show", "digits@production", "--json")
        view = json.loads(out)
        assert view["aliases"] == ["production"] and view["record"]["inputs"][0]["name"] == "X"
        rc, out, _ = await cli(settings, "show", "digits@production")
        assert "probabilities" in out and "skl2onnx" in out

        rc, out, _ = await cli(settings, "tag", "digits@1.0.0", "stage=prod")
        assert rc == 0 and "stage=prod" in out
        rc, out, _ = await cli(settings, "models", "--tag", "stage=prod", "--json")
        assert [m["record"]["ref"] for m in json.loads(out)["models"]] == ["digits@1.0.0"]

        rc, out, err = await cli(settings, "download", "digits@production", "-o", str(tmp_path / "dl.onnx"))
        assert rc == 0, err
        assert (tmp_path / "dl.onnx").read_bytes() == model.read_bytes()

        rc, out, err = await cli(settings, "bundle", "digits@production", "-o", str(tmp_path / "b.tar.gz"))
        assert rc == 0, err
        with tarfile.open(tmp_path / "b.tar.gz") as tar:
            names = tar.getnames()
            manifest = json.load(tar.extractfile("manifest.json"))
        assert set(names) == {"model.onnx", "manifest.json"}
        assert manifest["ref"] == "digits@1.0.0" and manifest["runtime"]["opset"]["ai.onnx"] == 17

        rc, out, _ = await cli(settings, "alias", "rm", "digits", "production")
        assert rc == 0
        rc, out, err = await cli(settings, "show", "digits@production")
        assert_one_line_error(rc, err, "no such alias")

        rc, out, _ = await cli(settings, "events", "--json")
        subjects = [json.loads(line)["subject"] for line in out.splitlines()]
        assert "model.registered.digits" in subjects and "model.alias_removed.digits" in subjects
        rc, out, _ = await cli(settings, "events", "model.rejected.>")
        assert "version_exists" in out

        rc, out, _ = await cli(settings, "status", "--service", "registry")
        assert rc == 0 and "registry" in out
        rc, out, _ = await cli(settings, "status", "--service", "ghost")
        assert rc == 1


async def test_user_mistakes_get_one_line_errors(settings: Settings, tmp_path: Path) -> None:
    async with running(settings, RegistryService):
        rc, _, err = await cli(settings, "show", "Not A Ref")
        assert_one_line_error(rc, err, "invalid model reference")
        rc, _, err = await cli(settings, "show", "ghost@1.0.0")
        assert_one_line_error(rc, err, "unknown model")
        rc, _, err = await cli(
            settings, "register", str(tmp_path / "missing.onnx"), "--name", "m", "--version", "1.0.0"
        )
        assert_one_line_error(rc, err, "no such file")
        rc, _, err = await cli(settings, "register", "x.onnx", "--name", "m", "--version", "1.0.0", "--meta", "novalue")
        assert_one_line_error(rc, err, "key=value")
    down = settings.with_overrides(nats_url="nats://127.0.0.1:1")
    rc, _, err = await cli(down, "models")
    assert_one_line_error(rc, err, "cannot reach NATS")


async def test_schema_and_config(settings: Settings, tmp_path: Path) -> None:
    rc, out, _ = await cli(settings, "schema", "model.register")
    schema = json.loads(out)
    assert set(schema["$defs"]["RegisterModel"]["required"]) == {"name", "version", "artifact_uri"}
    rc, out, _ = await cli(settings, "schema", "--out", str(tmp_path / "schemas"))
    assert rc == 0 and (tmp_path / "schemas" / "model.register.json").exists()
    rc, out, _ = await cli(settings.with_overrides(nats_password="hunter2"), "config", "--json")
    config = json.loads(out)
    assert config["nats_password"] == "***" and "hunter2" not in out


async def test_shell_pipeline_registers_with_raw_json(settings: Settings, imports: Path) -> None:
    """The README's non-Python example: bash speaking the NATS protocol, no client library."""
    model = mlp(imports / "shell.onnx")
    host, port = settings.nats_url.removeprefix("nats://").split(":")
    env = {**os.environ, "NATS_HOSTPORT": f"{host}:{port}"}
    script = str(REPO / "examples" / "register_from_shell.sh")
    async with running(settings, RegistryService):
        proc = await asyncio.create_subprocess_exec(
            "bash", script, "shellmodel", "1.0.0", f"file://{model}", env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0
        event = json.loads(out)
        assert event["type"] == "model.registered" and event["record"]["ref"] == "shellmodel@1.0.0"

        proc = await asyncio.create_subprocess_exec(
            "bash", script, "shellmodel", "1.0.1", "file:///etc/passwd", env=env, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 1
        assert json.loads(out)["reason"] == "import_not_allowed"


@pytest.mark.slow
async def test_up_starts_nats_and_services_restarts_crashes_and_stops_cleanly(tmp_path: Path) -> None:
    from shared.embedded import free_port, port_open

    port = free_port()
    settings = Settings(nats_url=f"nats://127.0.0.1:{port}", home=str(tmp_path / "home"), log_level="info")
    env = {**os.environ, **settings.to_env(), "COLUMNS": "200"}
    env.pop("INFERLAB_IMPORT_ROOTS", None)
    proc = await asyncio.create_subprocess_exec(
        INFERLAB,
        "up",
        "--services",
        "registry",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        for _ in range(150):
            rc, _, _ = await cli(settings, "status", "--service", "registry", "--timeout", "0.3")
            if rc == 0:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("registry did not come up")
        # The working tree of `inferlab up` is an import root: file:// registrations from it work.
        model = mlp(tmp_path / "local.onnx")
        rc, out, err = await cli(
            settings, "register", f"file://{model}", "--name", "local", "--version", "1.0.0", "--wait"
        )
        assert rc == 0, out + err

        rc, out, _ = await cli(settings, "status", "--json")
        [instance] = [s for s in json.loads(out) if s["name"] == "registry"]
        assert (Path(settings.home) / "logs" / "registry.log").exists()
        os.kill(await _registry_pid(settings), 9)
        for _ in range(150):
            rc, out, _ = await cli(settings, "status", "--service", "registry", "--json", "--timeout", "0.3")
            if rc == 0 and json.loads(out)[0]["id"] != instance["id"]:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("registry was not restarted")
        rc, out, _ = await cli(settings, "show", "local@1.0.0")
        assert rc == 0  # nothing lost across the crash
    finally:
        proc.send_signal(2)  # Ctrl-C
        output, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = output.decode()
    assert proc.returncode == 0, text
    assert "started embedded nats-server" in text and "restarting in" in text and "stopped embedded" in text
    assert not port_open("127.0.0.1", port)


async def _registry_pid(settings: Settings) -> int:
    """The registry child's pid, from its own health endpoint."""
    import nats

    nc = await nats.connect(settings.nats_url)
    try:
        msg = await nc.request("registry.health", b"{}", timeout=5)
        return int(json.loads(msg.data)["pid"])
    finally:
        await nc.close()
