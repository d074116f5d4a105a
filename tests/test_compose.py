"""compose.yaml and the Dockerfile, checked without a Docker engine: commands are real entry
points, every INFERLAB_* variable is a known setting with a value that parses, volumes and ports
agree, images are pinned, and NATS runs the shipped server config. `docker compose config`
validates the file against the Compose Specification where the compose plugin is installed."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml

from shared.cli.app import build_parser
from shared.config import Settings, env_name
from shared.embedded import nats_server_binary
from shared.supervisor import SERVICES
from tests.support.services import REPO

COMPOSE = REPO / "compose.yaml"
DOCKERFILE = REPO / "Dockerfile"
NATS_CONF = "deploy/nats/nats-server.conf"
KNOWN = {env_name(f.name) for f in msgspec.structs.fields(Settings)}
_INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


def _defaults(value: Any) -> Any:
    """A compose value with ``${VAR:-default}`` replaced by its default (what runs when the
    user sets nothing)."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [_defaults(v) for v in value]
    if isinstance(value, dict):
        return {k: _defaults(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _module_of(svc: dict[str, Any]) -> str | None:
    command = svc.get("command") or []
    if command[:2] == ["python", "-m"] and len(command) == 3:
        return command[2]
    return None


def _inferlab_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The platform's services (not NATS, not the optional inference server)."""
    return {name: svc for name, svc in services.items() if name not in ("nats", "serve")}


def test_the_serve_profile_runs_inferlab_serve_as_the_pipeline_user(services: dict[str, dict[str, Any]]) -> None:
    serve = services["serve"]
    assert serve["profiles"] == ["serve"]
    args = build_parser().parse_args(_defaults(serve["command"])[1:])  # the CLI accepts exactly these
    assert args.func.__name__ == "cmd_serve" and args.ref == "digits@production"
    assert (args.host, args.port) == ("0.0.0.0", 8080)
    env = _defaults(serve["environment"])
    settings = Settings.from_env({k: str(v) for k, v in env.items()})
    assert settings.nats_url == "nats://nats:4222" and settings.nats_user == "pipeline"
    assert serve["environment"]["INFERLAB_NATS_PASSWORD"] == services["nats"]["environment"]["PIPELINE_PASSWORD"]
    assert [p.split(":")[0] for p in _defaults(serve["ports"])] == ["127.0.0.1"]  # no auth: local by default
    assert "/readyz" in " ".join(serve["healthcheck"]["test"])


def test_every_service_runs_a_real_entry_point(services: dict[str, dict[str, Any]]) -> None:
    ours = _inferlab_services(services)
    assert {n.removesuffix("-gpu") for n in ours} == set(SERVICES)
    for name, svc in ours.items():
        module = _module_of(svc)
        assert module == f"services.{name.removesuffix('-gpu')}", (name, svc.get("command"))
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{module} has no __main__"


def test_every_inferlab_variable_is_a_setting_and_parses(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in _inferlab_services(services).items():
        env = _defaults(svc["environment"])
        unknown = sorted(k for k in env if k.startswith("INFERLAB_") and k not in KNOWN)
        assert not unknown, f"{name}: not settings: {unknown}"
        settings = Settings.from_env({k: str(v) for k, v in env.items()})
        assert settings.nats_url == "nats://nats:4222"
        # each service authenticates as its own NATS user (deploy/nats/nats-server.conf)
        assert settings.nats_user == name.removesuffix("-gpu") and settings.nats_password
        assert settings.home == "/var/lib/inferlab"


def test_healthchecks_ask_nats_micro_discovery_for_the_service(services: dict[str, dict[str, Any]]) -> None:
    parser = build_parser()
    for name, svc in _inferlab_services(services).items():
        test = svc["healthcheck"]["test"]
        assert test[:5] == ["CMD", "inferlab", "status", "--service", name.removesuffix("-gpu")], (name, test)
        args = parser.parse_args(test[2:])  # the CLI accepts exactly these arguments
        assert args.func.__name__ == "cmd_status"
    nats = services["nats"]["healthcheck"]["test"]
    assert "http://127.0.0.1:8222/healthz?js-enabled-only=true" in nats


def test_nats_runs_the_shipped_server_config_with_jetstream_on_a_volume(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    nats = services["nats"]
    command = nats["command"]
    assert command[:2] == ["-c", "/etc/nats/nats-server.conf"]
    assert "--jetstream" in command and command[command.index("--store_dir") + 1] == "/data"
    assert command[command.index("--http_port") + 1] == "8222"
    assert f"./{NATS_CONF}:/etc/nats/nats-server.conf:ro" in nats["volumes"]
    assert "nats-data:/data" in nats["volumes"]
    published = {p.split(":")[-1] for p in _defaults(nats["ports"])}
    assert published == {"4222", "8222"}
    assert all(p.startswith("127.0.0.1:") for p in _defaults(nats["ports"]) if p.endswith(":8222"))
    env = nats["environment"]
    for user in (*SERVICES, "pipeline", "admin"):
        assert f"{user.upper()}_PASSWORD" in env, user
    for name, svc in _inferlab_services(services).items():
        # the password a service logs in with is the one the server was given for its user
        user = name.removesuffix("-gpu")
        assert svc["environment"]["INFERLAB_NATS_PASSWORD"] == env[f"{user.upper()}_PASSWORD"], name


def test_the_nats_config_is_the_one_the_permission_tests_use(services: dict[str, dict[str, Any]]) -> None:
    conf = REPO / NATS_CONF
    assert conf.is_file(), f"compose mounts {NATS_CONF}, which is missing"
    users_tests = [
        p for p in (REPO / "tests").glob("test_*.py") if p.name != Path(__file__).name and NATS_CONF in p.read_text()
    ]
    assert users_tests, f"no test loads {NATS_CONF}: compose would ship an untested server config"
    # Quoted strings hold subjects such as "$JS.API.>", and comments hold prose: neither is an
    # environment reference.
    code = re.sub(r'"[^"]*"|#.*', "", conf.read_text())
    env = services["nats"]["environment"]
    for variable in sorted(set(re.findall(r"\$([A-Z][A-Z0-9_]*)", code))):
        assert variable in env, f"{NATS_CONF} reads ${variable}, which compose does not set"


def test_volumes_and_data_paths_agree(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose["volumes"])
    used = set()
    for name, svc in services.items():
        for mount in svc.get("volumes", []):
            source, target = mount.split(":")[:2]
            if source.startswith("./"):
                # ./imports is created by Docker on first start (users drop models in it); the NATS
                # config has its own test below
                if source not in ("./imports", f"./{NATS_CONF}"):
                    assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                used.add(source)
            assert target.startswith("/"), mount
    assert used == declared, f"declared but unused: {declared - used}; used but undeclared: {used - declared}"
    for name, svc in _inferlab_services(services).items():
        targets = [m.split(":")[1] for m in svc.get("volumes", [])]
        assert "/var/lib/inferlab" in targets, f"{name}: INFERLAB_HOME is not on a volume"
    history = _defaults(services["benchmarker"]["environment"])["INFERLAB_HISTORY_PATH"]
    assert history.startswith("/var/lib/inferlab/")
    # one DuckDB writer per file: the CPU and GPU benchmarkers keep separate histories
    cpu = {m.split(":")[0] for m in services["benchmarker"]["volumes"]}
    gpu = {m.split(":")[0] for m in services["benchmarker-gpu"]["volumes"]}
    assert not cpu & gpu


def test_gpu_profile_reserves_nvidia_devices_and_cpu_workers_can_step_aside(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in ("converter-gpu", "benchmarker-gpu"):
        svc = services[name]
        assert svc["profiles"] == ["gpu"]
        [device] = svc["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
        assert svc["build"]["target"] == "gpu"
    for name in ("converter", "benchmarker", "registry", "validator", "nats"):
        assert "profiles" not in services[name], f"{name} must start by default (CPU)"
    for name in ("converter", "benchmarker"):
        assert services[name]["deploy"]["replicas"] == "${INFERLAB_CPU_WORKERS:-1}"
    providers = _defaults(services["benchmarker-gpu"]["environment"])["INFERLAB_BENCH_PROVIDERS"]
    assert "CUDAExecutionProvider" in providers


def _stages(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^FROM\s+(\S+)\s+AS\s+(\S+)", text, re.MULTILINE)]


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    image = services["nats"]["image"]
    match = re.fullmatch(r"nats:(\d+\.\d+\.\d+)(-alpine)?(@sha256:[0-9a-f]{64})?", image)
    assert match, f"NATS image not pinned to an exact version: {image}"
    served = subprocess.run([str(nats_server_binary()), "--version"], capture_output=True, text=True, check=True)
    assert match.group(1) in served.stdout, "compose's NATS differs from the nats-server the tests run"
    text = DOCKERFILE.read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?", base.group(1))
    for source, _ in _stages(text):
        assert source == "${PYTHON_IMAGE}" or source in {name for _, name in _stages(text)}, source
    for name, svc in _inferlab_services(services).items():
        assert re.fullmatch(r"inferlab(-gpu)?:\$\{INFERLAB_IMAGE_TAG:-\d+\.\d+\.\d+\}", svc["image"]), name


def test_dockerfile_is_multi_stage_slim_non_root_and_pinned_by_constraints(services: dict[str, Any]) -> None:
    text = DOCKERFILE.read_text()
    stages = [name for _, name in _stages(text)]
    assert stages[:2] == ["build", "runtime"] and "gpu" in stages
    for svc in _inferlab_services(services).values():
        assert svc["build"]["target"] in stages
    runtime = text.split("AS runtime", 1)[1].split("\nFROM ", 1)[0]
    assert re.search(r"^USER inferlab$", runtime, re.MULTILINE), "the runtime stage must not run as root"
    assert "COPY --from=build /opt/inferlab /opt/inferlab" in runtime
    install = re.search(r"pip install[^\n]*-c constraints\.txt \.(\s|$)", text)
    assert install, "the image must install the project pinned by constraints.txt, without extras (no torch)"
    instructions = [line for line in text.split("AS gpu", 1)[0].lower().splitlines() if not line.startswith("#")]
    assert not any("torch" in line for line in instructions), "no torch in the CPU image"
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.MULTILINE):
        for path in copied.split():
            assert (REPO / path).exists(), path
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert next(line for line in ignore if not line.startswith("#")) == "*"
    for path in ("pyproject.toml", "constraints.txt", "README.md", "shared/", "services/"):
        assert f"!{path}" in ignore, path


def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this host")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"the docker compose plugin is not installed here ({probe.stderr.strip()[:80]})")
    for args in ([], ["--profile", "gpu"]):
        done = subprocess.run(
            [docker, "compose", "-f", str(COMPOSE), *args, "config", "--quiet"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr
    listed = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "--profile", "gpu", "config", "--services"],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
    )
    assert set(listed.stdout.split()) == {"nats", *SERVICES, "converter-gpu", "benchmarker-gpu"}
