"""What the fleet writes on a host (its .env, redis.conf, unit files) and how it reads an inventory host
and the secrets: no SSH needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyjobs.errors import FleetError
from comfyjobs.fleet.host_files import Secrets, env_file, redis_conf, unit_files
from comfyjobs.fleet.hosts import fleet_host


def _host(name: str, groups: list[str], **data: object):  # type: ignore[no-untyped-def]
    return fleet_host(name, groups, {"ssh_hostname": "10.0.0.5", **data})


def test_units_carry_the_hosts_paths_once_even_where_they_hold_a_default_path() -> None:
    root = Path("/srv/box1/opt/comfyjobs")  # holds /opt/comfyjobs: replaced once, not twice
    host = _host("g", ["gpu"], gpus=2, install_root=str(root), service_user="svc")

    [(name, text)] = unit_files(host, redis_server="").items()

    assert name == "comfyjobs-worker@.service"
    assert f"EnvironmentFile={root}/.env" in text
    assert f"ExecStart={root}/.venv/bin/comfyjobs worker --gpu %i" in text
    assert "User=svc" in text and "Group=svc" in text
    assert host.workers == ["comfyjobs-worker@0.service", "comfyjobs-worker@1.service"]


def test_a_cpu_host_gets_the_cpu_worker_and_the_api_host_redis_and_api() -> None:
    cpu = _host("c", ["gpu"], cpu=True)
    api = _host("a", ["redis", "api", "inv"])

    assert "worker --cpu" in unit_files(cpu, "")["comfyjobs-worker-cpu.service"]
    files = unit_files(api, "/x/.venv/bin/redis-server")
    assert sorted(files) == ["comfyjobs-api.service", "comfyjobs-redis.service"]
    assert "ExecStart=/x/.venv/bin/redis-server /etc/comfyjobs/redis.conf" in files["comfyjobs-redis.service"]
    assert api.units == ["comfyjobs-redis.service", "comfyjobs-api.service"]


def test_the_env_file_holds_the_fleet_settings_the_hosts_and_the_secrets() -> None:
    secrets = Secrets({"REDIS_PASSWORD": "p@ss word", "API_KEYS": "ops:k-1234"})
    redis_host = _host("a", ["redis", "api"], redis_port=6390)
    gpu = _host(
        "g", ["gpu"], gpus=1, labels=["video"], fleet_env={"QUEUE_NAME": "q"}, env={"QUEUE_NAME": "mine"}
    )

    text = env_file(gpu, redis_host, secrets)

    assert "REDIS_URL=redis://:p%40ss%20word@10.0.0.5:6390/0\n" in text
    assert "WORKER_LABELS=video\n" in text
    assert "QUEUE_NAME=mine\n" in text  # the host's own over the fleet's
    assert "API_KEYS=ops:k-1234\n" in text
    assert "REDIS_PASSWORD" not in text  # (only inside REDIS_URL)
    conf = redis_conf(redis_host, secrets)
    assert 'requirepass "p@ss word"' in conf and "port 6390" in conf and "bind 127.0.0.1 10.0.0.5" in conf


def test_secrets_come_from_the_file_then_the_environment_and_need_a_redis_password(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    path.write_text("REDIS_PASSWORD=from-file\nHF_TOKEN=hf_file\n")

    loaded = Secrets.load(path, environ={"HF_TOKEN": "hf_env"})
    assert loaded.values == {"REDIS_PASSWORD": "from-file", "HF_TOKEN": "hf_env"}
    assert loaded.redacted("url redis://:from-file@h and hf_env") == "url redis://:***@h and ***"

    path.write_text("REDIS_PASWORD=typo\n")
    with pytest.raises(FleetError, match="unknown names REDIS_PASWORD"):
        Secrets.load(path, environ={})
    with pytest.raises(FleetError, match="REDIS_PASSWORD is not set"):
        Secrets.load(tmp_path / "none.env", environ={})


def test_an_inventory_host_that_cannot_be_run_is_refused_with_its_name() -> None:
    with pytest.raises(FleetError, match="gpu host g needs gpus=N"):
        _host("g", ["gpu"])
    with pytest.raises(FleetError, match="host x is in none of the groups"):
        _host("x", ["inv"])
    with pytest.raises(FleetError, match=r"host g: gpus: Input should be greater than or equal to 0"):
        _host("g", ["gpu"], gpus=-1)


def test_the_example_inventory_names_valid_hosts() -> None:
    import runpy

    example = runpy.run_path(str(Path(__file__).resolve().parents[2] / "deploy" / "fleet" / "inventory.py"))
    groups: dict[str, list[str]] = {}
    data: dict[str, dict[str, object]] = {}
    for group, hosts in example.items():
        if group.startswith("_") or not isinstance(hosts, list):
            continue
        for name, host_data in hosts:
            groups.setdefault(name, []).append(group)
            data[name] = {**data.get(name, {}), **host_data}
    hosts = {name: fleet_host(name, groups[name], data[name]) for name in groups}

    assert hosts["api-1"].roles == {"redis", "api"} and hosts["api-1"].address == "10.0.0.10"
    assert hosts["gpu-a100-1"].workers == ["comfyjobs-worker@0.service", "comfyjobs-worker@1.service"]
    assert hosts["gpu-h100-1"].labels == ("video", "80gb")
