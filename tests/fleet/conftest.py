"""A fleet of three "hosts" for the fleet tests, each a real sshd on 127.0.0.1 with its own root folder:
api-1 (redis, api) and two CPU "GPU" hosts. One inventory (pyinfra's format, as an operator writes it),
one secrets file, an S3 endpoint the hosts share; `comfyjobs fleet bootstrap` brings it up once for the
package, and every test then runs the verbs against it."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fleet.sshd import SshHost, client_key, require_sshd, source_repo, ssh_hosts
from tests.s3 import S3Endpoint
from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
FLEET_TIMEOUT_S = 1500.0  # one verb over the three hosts (bootstrap: three installs side by side)
# What the hosts' install needs from this machine's environment (its package index, CA bundle, proxy):
# an operator passes the same through the inventory's install_env.
FORWARDED = ("PIP_", "UV_", "SSL_CERT", "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


@dataclass
class Ran:
    argv: list[str]
    returncode: int
    output: str
    took_s: float


@dataclass
class FleetUnderTest:
    hosts: dict[str, SshHost]
    inventory: Path
    secrets_file: Path
    secret_values: dict[str, str]
    commit: str
    repo: Path
    api_url: str
    redis_url: str
    api_key: str
    s3_url: str
    log_dir: Path
    runs: list[Ran] = field(default_factory=list)

    def fleet(self, *args: str, timeout_s: float = FLEET_TIMEOUT_S) -> Ran:
        """``comfyjobs fleet ARGS --inventory ours``, as an operator runs it; its output logged."""
        argv = [sys.executable, "-m", "comfyjobs", "fleet", *args, "--inventory", str(self.inventory)]
        env = {**os.environ, "COMFYJOBS_FLEET_SECRETS": str(self.secrets_file)}
        started = time.monotonic()
        done = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        ran = Ran(argv, done.returncode, done.stdout + done.stderr, time.monotonic() - started)
        self.runs.append(ran)
        log = self.log_dir / f"fleet-{len(self.runs):02d}-{args[0]}.log"
        log.write_text(f"$ {' '.join(argv)}\n(rc {ran.returncode}, {ran.took_s:.1f} s)\n{ran.output}")
        return ran

    def new_commit(self, note: str) -> str:
        """A next commit of the hosts' origin (a line added to its README), as a release would be."""
        with (self.repo / "README.md").open("a") as readme:
            readme.write(f"\n<!-- {note} -->\n")
        git = ["git", "-C", str(self.repo), "-c", "user.name=t", "-c", "user.email=t@t"]
        subprocess.run([*git, "commit", "-q", "-am", note], check=True)
        done = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return done.stdout.strip()

    def head(self, host: str) -> str:
        root = self.hosts[host].root / "opt" / "comfyjobs"
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
        return done.stdout.strip()

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30, headers={"X-API-Key": self.api_key})


def write_inventory(path: Path, groups: dict[str, list[tuple[str, dict[str, Any]]]]) -> None:
    lines = ['"""The fleet tests\' inventory (written by tests/fleet/conftest.py)."""', ""]
    for group, hosts in groups.items():
        lines.append(f"{group} = {hosts!r}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="package")
def test_fleet(tmp_path_factory: pytest.TempPathFactory, s3_endpoint: S3Endpoint) -> Iterator[FleetUnderTest]:
    require_sshd()
    folder = tmp_path_factory.mktemp("fleet")
    key = client_key(folder)
    repo, commit = source_repo(REPO, folder / "source")
    values = {
        "REDIS_PASSWORD": f"rp-{secrets.token_hex(12)}",
        "API_KEYS": f"ops:k-{secrets.token_hex(12)}",
        "WEBHOOK_SECRET": f"whsec_{secrets.token_hex(16)}",
        "S3_ACCESS_KEY_ID": "testing",  # (moto's)
        "S3_SECRET_ACCESS_KEY": "testing",
    }
    secrets_file = folder / "secrets.env"
    secrets_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    bucket = s3_endpoint.new_bucket()
    s3_env = {k: v for k, v in s3_endpoint.env(bucket).items() if not k.startswith("AWS_")}
    install_env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED)} | {
        "PYTHON": sys.executable
    }
    common = {
        "repo_url": str(repo),
        "install_args": ["--no-models", "--no-nodes", "--comfyui-source", str((REPO / "ComfyUI").resolve())],
        "install_env": install_env,
        "fleet_env": {**s3_env, "QUEUE_NAME": "fleet", "WORKER_HEARTBEAT_S": "1"},
    }
    api_port, redis_port = free_port(), free_port()
    with ssh_hosts(folder, ["api-1", "gpu-1", "gpu-2"], key) as hosts:
        api_data = hosts["api-1"].data(
            key, **common, api_port=api_port, api_bind="127.0.0.1", redis_port=redis_port
        )
        gpu = [
            (name, hosts[name].data(key, **common, cpu=True, comfyui_base_port=free_port()))
            for name in ("gpu-1", "gpu-2")
        ]
        inventory = folder / "inventory.py"
        write_inventory(inventory, {"redis": [("api-1", api_data)], "api": [("api-1", api_data)], "gpu": gpu})
        fleet = FleetUnderTest(
            hosts=hosts,
            inventory=inventory,
            secrets_file=secrets_file,
            secret_values=values,
            commit=commit,
            repo=repo,
            api_url=f"http://127.0.0.1:{api_port}",
            redis_url=f"redis://:{values['REDIS_PASSWORD']}@127.0.0.1:{redis_port}/0",
            api_key=values["API_KEYS"].split(":", 1)[1],
            s3_url=s3_endpoint.url,
            log_dir=folder,
        )
        first = fleet.fleet("bootstrap", "--ref", commit)
        assert first.returncode == 0, first.output[-6000:]
        yield fleet
