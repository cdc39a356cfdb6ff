"""deploy/: the systemd units, redis.conf, the fleet's env file and compose.yaml say what they must.

Nothing here starts a service: the units are parsed (and checked by `systemd-analyze verify` where it is
installed), the env file is loaded as Settings, compose.yaml is parsed as YAML.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dotenv import dotenv_values

from comfyjobs.errors import ConfigError
from comfyjobs.manifests.loader import load_registry
from comfyjobs.manifests.params import validate_params
from comfyjobs.settings import Settings, redis_url_problem, setting_names
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
SYSTEMD = DEPLOY / "systemd"
ENV_EXAMPLE = DEPLOY / "comfyjobs.env.example"
COMPOSE = DEPLOY / "compose.yaml"
UNIT_SECTIONS = {"Unit", "Service", "Install"}
VENV_COMFYJOBS = "/opt/comfyjobs/.venv/bin/comfyjobs"

Unit = dict[str, dict[str, list[str]]]


def parse_unit(text: str) -> Unit:
    """A systemd unit file: section → key → every value given (systemd allows a key more than once)."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    logical = re.sub(r"\\\n", " ", text)  # line continuations
    for number, raw in enumerate(logical.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1]
            assert name not in unit, f"line {number}: section [{name}] twice"
            section = unit[name] = {}
            continue
        key, sep, value = line.partition("=")
        assert sep and section is not None, f"line {number}: not `Key=value` inside a section: {line!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def one(unit: Unit, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}: expected one value, got {values}"
    return values[0]


def words(unit: Unit, section: str, key: str) -> list[str]:
    """Every space-separated word of every value of a list-valued key (After=, Wants=...)."""
    return [word for value in unit.get(section, {}).get(key, []) for word in value.split()]


def unit_files() -> dict[str, Unit]:
    return {path.name: parse_unit(path.read_text()) for path in sorted(SYSTEMD.glob("*.service"))}


def comfyjobs_units() -> dict[str, Unit]:
    return {
        name: unit
        for name, unit in unit_files().items()
        if name.startswith("comfyjobs-") and name != "comfyjobs-redis.service"
    }


def redis_conf() -> dict[str, list[str]]:
    conf: dict[str, list[str]] = {}
    for raw in (SYSTEMD / "redis.conf").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            assert key.lower() not in conf, f"redis.conf: {key} twice"
            conf[key.lower()] = shlex.split(value)
    return conf


def env_example() -> dict[str, str]:
    values = dotenv_values(ENV_EXAMPLE)
    return {key: value or "" for key, value in values.items()}


# --- systemd -----------------------------------------------------------------------------------------


def test_the_three_units_are_there() -> None:
    assert set(unit_files()) == {
        "comfyjobs-api.service",
        "comfyjobs-worker@.service",
        "comfyjobs-redis.service",
    }


@pytest.mark.parametrize("name", sorted(p.name for p in SYSTEMD.glob("*.service")))
def test_every_unit_is_complete(name: str) -> None:
    unit = unit_files()[name]
    assert set(unit) == UNIT_SECTIONS
    exec_start = shlex.split(one(unit, "Service", "ExecStart"))
    assert Path(exec_start[0]).is_absolute(), exec_start
    assert one(unit, "Service", "Restart") in {"on-failure", "always"}
    assert one(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in words(unit, "Unit", "After")
    assert "network-online.target" in words(unit, "Unit", "Wants")
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    assert one(unit, "Service", "NoNewPrivileges") == "yes"
    assert one(unit, "Service", "User") not in {"root", "0"}


def test_comfyjobs_units_run_the_venv_entry_point_with_the_fleet_env_file() -> None:
    units = comfyjobs_units()
    assert set(units) == {"comfyjobs-api.service", "comfyjobs-worker@.service"}
    data_dir = Path(env_example()["DATA_DIR"])
    for name, unit in units.items():
        assert shlex.split(one(unit, "Service", "ExecStart"))[0] == VENV_COMFYJOBS, name
        assert one(unit, "Service", "EnvironmentFile") == "/etc/comfyjobs/comfyjobs.env", name
        assert one(unit, "Service", "WorkingDirectory") == "/opt/comfyjobs", name
        assert one(unit, "Service", "User") == "comfyjobs", name
        # DATA_DIR stays writable under ProtectSystem=: it is the unit's state directory (or listed).
        state = [Path("/var/lib") / d for d in words(unit, "Service", "StateDirectory")]
        writable = state + [Path(p.lstrip("-")) for p in words(unit, "Service", "ReadWritePaths")]
        assert data_dir in writable, (name, writable)
        assert one(unit, "Service", "ProtectSystem") in {"yes", "full"}, name  # /opt stays writable


def test_api_unit_starts_after_redis() -> None:
    unit = unit_files()["comfyjobs-api.service"]
    assert shlex.split(one(unit, "Service", "ExecStart"))[1:] == ["api"]
    assert "comfyjobs-redis.service" in words(unit, "Unit", "After")
    assert int(one(unit, "Service", "TimeoutStopSec")) >= 30


def test_worker_unit_is_a_template_per_gpu_that_its_comfyui_cannot_outlive() -> None:
    unit = unit_files()["comfyjobs-worker@.service"]
    assert shlex.split(one(unit, "Service", "ExecStart"))[1:] == ["worker", "--gpu", "%i"]
    assert one(unit, "Service", "Restart") == "always"
    assert float(one(unit, "Service", "RestartSec")) > 0
    # The whole control group is killed in the end (mixed: SIGTERM to the worker first, so its current
    # job can finish; control-group would also SIGTERM ComfyUI at once). Never `process` or `none`.
    assert one(unit, "Service", "KillMode") in {"mixed", "control-group"}
    assert int(one(unit, "Service", "TimeoutStopSec")) >= 120
    # The GPU's device nodes stay reachable and JIT compilation allowed.
    service = unit["Service"]
    assert service.get("PrivateDevices", ["no"]) == ["no"]
    assert "DevicePolicy" not in service
    assert "DeviceAllow" not in service
    assert "ProtectClock" not in service  # implies DeviceAllow=char-rtc: before systemd 252, nothing else
    assert service.get("MemoryDenyWriteExecute", ["no"]) == ["no"]
    assert (
        "systemctl enable --now comfyjobs-worker@0 comfyjobs-worker@1"
        in (SYSTEMD / "comfyjobs-worker@.service").read_text()
    )


def test_redis_unit_and_config_keep_every_job() -> None:
    unit = unit_files()["comfyjobs-redis.service"]
    exec_start = shlex.split(one(unit, "Service", "ExecStart"))
    assert Path(exec_start[0]).name == "redis-server"
    assert exec_start[1:] == ["/etc/comfyjobs/redis.conf"]
    conf = redis_conf()
    assert conf["appendonly"] == ["yes"]
    assert conf["appendfsync"] == ["everysec"]
    assert conf["maxmemory-policy"] == ["noeviction"]
    assert conf["protected-mode"] == ["yes"]
    assert conf["daemonize"] == ["no"]
    assert conf["requirepass"] and len(conf["requirepass"][0]) >= 16
    assert conf["bind"] and not {"0.0.0.0", "*", "-*", "::", "-::*"} & set(conf["bind"])
    # Its data directory is the one systemd creates for the redis user (and leaves writable).
    assert [Path(conf["dir"][0])] == [Path("/var/lib") / d for d in words(unit, "Service", "StateDirectory")]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    # ExecStart binaries must exist for verify: the same command lines with /bin/true in front.
    for path in SYSTEMD.glob("*.service"):
        text = re.sub(r"^ExecStart=\S+", "ExecStart=/bin/true", path.read_text(), flags=re.MULTILINE)
        (tmp_path / path.name).write_text(text)
    targets = [tmp_path / "comfyjobs-api.service", tmp_path / "comfyjobs-redis.service"]
    targets.append(tmp_path / "comfyjobs-worker@0.service")  # an instance of the template beside it
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, targets)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # verify exits 0 despite unknown keys or unparsable values ("..., ignoring"): none may name ours.
    ours = [line for line in output.splitlines() if str(tmp_path) in line or "comfyjobs-" in line]
    assert ours == []


# --- the fleet's env file --------------------------------------------------------------------------------


def test_env_example_names_only_settings_and_matches_redis_conf() -> None:
    env = env_example()
    known = setting_names()
    assert [name for name in env if name not in known and not name.startswith("AWS_")] == []
    for name in ("REDIS_URL", "DATA_DIR", "MODEL_DIR", "COMFYUI_DIR", "PUBLIC_URL", "API_KEYS"):
        assert name in env, name
    assert {"WEBHOOK_SECRET", "WARMUP_WORKFLOW", "WARMUP_PARAMS"} <= set(env)
    # Across machines the outputs must be in a bucket (local: the API would need the workers' disks).
    assert env["STORAGE_BACKEND"] == "s3" and env["S3_BUCKET"]
    assert redis_url_problem(env["REDIS_URL"]) is None
    url, conf = urlsplit(env["REDIS_URL"]), redis_conf()
    assert url.password == conf["requirepass"][0]
    assert url.hostname in conf["bind"] and url.hostname != "127.0.0.1"  # the private address
    assert url.port == int(conf["port"][0])
    for name in ("DATA_DIR", "MODEL_DIR", "COMFYUI_DIR"):
        assert Path(env[name]).is_absolute(), name


def test_env_example_loads_as_settings_once_its_blanks_are_filled(monkeypatch: pytest.MonkeyPatch) -> None:
    env = env_example()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="API_KEYS"):  # as shipped: refused until keys are filled in
        Settings.load(_env_file=None)
    monkeypatch.setenv("API_KEYS", "alice:k-alice-0123456789")
    settings = Settings.load(_env_file=None)
    assert settings.storage_backend == "s3"
    assert settings.webhook_secret is None
    assert settings.warmup_params == json.loads(env["WARMUP_PARAMS"])
    # The warm-up names a real workflow and parameters it accepts.
    assert settings.warmup_workflow is not None
    registry = load_registry(REPO / "manifests", REPO / "workflows")
    validate_params(registry.workflow(settings.warmup_workflow), settings.warmup_params)


# --- Docker Compose ------------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(document, dict)
    return document


def command(service: dict[str, Any]) -> list[str]:
    value = service.get("command", [])
    return shlex.split(value) if isinstance(value, str) else [str(word) for word in value]


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} with ``variables`` set (an unset one: KeyError)."""
    return re.sub(r"\$\{(\w+)(?:[:?-][^}]*)?\}", lambda m: variables[m.group(1)], text)


def workers(services: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if command(s)[:2] == ["comfyjobs", "worker"]}


def gpu_reservations(service: dict[str, Any]) -> list[dict[str, Any]]:
    devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    assert isinstance(devices, list)
    return [d for d in devices if "gpu" in d.get("capabilities", [])]


def test_compose_has_redis_api_and_a_worker_per_gpu() -> None:
    services = compose()["services"]
    assert {"redis", "api"} <= set(services)
    assert command(services["api"])[:2] == ["comfyjobs", "api"]
    found = workers(services)
    assert len(found) >= 2, sorted(services)
    assert {name for name in services if name.startswith("worker")} == set(found)
    seen: list[str] = []
    for name, worker in found.items():
        (reservation,) = gpu_reservations(worker)  # exactly one device entry...
        assert reservation["driver"] == "nvidia"
        assert "count" not in reservation
        (device,) = reservation["device_ids"]  # ...for exactly one GPU
        seen.append(str(device))
        # Its container sees that one GPU only, as index 0.
        assert command(worker)[2:] == ["--gpu", "0"], name
        assert "ports" not in worker, f"{name} publishes ports"
    assert len(set(seen)) == len(seen), f"two workers on one GPU: {seen}"
    assert not gpu_reservations(services["api"])


def test_compose_services_share_redis_and_nothing_else_on_disk() -> None:
    document = compose()
    services = document["services"]
    ours = {name: s for name, s in services.items() if command(s)[:1] == ["comfyjobs"]}
    assert len(ours) >= 3
    environments = [s["environment"] for s in ours.values()]
    urls = {env["REDIS_URL"] for env in environments}
    assert len(urls) == 1, urls
    # Compose fills ${VAR...} in; the password is the variable Redis requires.
    url = urlsplit(interpolate(urls.pop(), {"REDIS_PASSWORD": "p4ssw0rd-0123456789"}))
    assert redis_url_problem(url.geturl()) is None
    assert (url.hostname, url.port, url.password) == ("redis", 6379, "p4ssw0rd-0123456789")
    assert interpolate(services["redis"]["environment"]["REDIS_PASSWORD"], {"REDIS_PASSWORD": "x"}) == "x"
    assert {str(s["env_file"]) for s in ours.values()} == {"comfyjobs.env"}
    assert (DEPLOY / "comfyjobs.env.example").is_file()
    known = setting_names()
    assert all(name in known for env in environments for name in env)
    # Each worker has a DATA_DIR of its own (two ComfyUIs must never share their folders) and the
    # models read-only.
    data_volumes: list[str] = []
    for name, worker in workers(services).items():
        mounts = [str(v).split(":") for v in worker["volumes"]]
        data_dir = worker["environment"]["DATA_DIR"]
        (data,) = [m[0] for m in mounts if m[1] == data_dir]
        data_volumes.append(data)
        (models,) = [m for m in mounts if m[1] == worker["environment"]["MODEL_DIR"]]
        assert models[2:] == ["ro"], name
        assert data in document["volumes"] and models[0] in document["volumes"]
    assert len(set(data_volumes)) == len(data_volumes), data_volumes


def test_compose_redis_keeps_every_job() -> None:
    redis_service = compose()["services"]["redis"]
    assert str(redis_service["image"]).startswith("redis:7")
    line = " ".join(command(redis_service))
    assert "--appendonly yes" in line
    assert "--maxmemory-policy noeviction" in line
    assert "--requirepass" in line
    assert "ports" not in redis_service
    assert any(str(v).endswith(":/data") for v in redis_service["volumes"])


def test_compose_builds_from_the_deploy_dockerfile() -> None:
    build = compose()["services"]["api"]["build"]
    dockerfile = (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve()
    assert dockerfile == DEPLOY / "Dockerfile"
    text = dockerfile.read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, flags=re.MULTILINE)
    assert "v0.3.75" in text
    assert "install/constraints.txt" in text and "requirements.lock.txt" in text
