"""``fleet bootstrap``: a bare Debian/Ubuntu host to serving, in steps that each look before they act, so
a second run changes nothing and says so: system packages, the service user, the checkout at the pinned
commit, install/install.sh, the .env and redis.conf, the units, started (restarted where what they run
changed). Then, once every host is done, the API's ``/ready`` must list every worker of the inventory."""

from __future__ import annotations

import hashlib
import json
import shlex
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from comfyjobs.errors import FleetError
from comfyjobs.fleet.host_files import Secrets, env_file, redis_conf, unit_files
from comfyjobs.fleet.hosts import FleetHost
from comfyjobs.fleet.remote import PyinfraRemote
from comfyjobs.fleet.services import HostServices

INSTALLED_STAMP = ".comfyjobs-installed"  # in the venv: the commit and options install.sh last ran for
READY_TIMEOUT_S = 900.0


@dataclass
class StepLog:
    """What a host's run changed, step by step (printed, host in front, and summed up at the end)."""

    host: str
    changed: list[str] = field(default_factory=list)

    def said(self, step: str, changed: bool, detail: str = "") -> None:
        if changed:
            self.changed.append(step)
        state = "changed" if changed else "unchanged"
        print(f"[{self.host}] {step}: {state}{f' ({detail})' if detail else ''}", flush=True)

    def summary(self) -> str:
        if not self.changed:
            return f"[{self.host}] nothing to change: already as the inventory says"
        return f"[{self.host}] changed: {', '.join(self.changed)}"


def _packages(remote: PyinfraRemote, host: FleetHost, log: StepLog) -> None:
    python = shlex.quote(host.install_env.get("PYTHON", "python3"))  # (what install.sh will use)
    check = f"command -v git >/dev/null && {python} -c 'import venv, ensurepip' 2>/dev/null && echo present"
    if remote.run(f"{check} || true", step="system packages").output.strip() == "present":
        log.said("system packages", False)
        return
    remote.run(
        "export DEBIAN_FRONTEND=noninteractive; apt-get update -q"
        " && apt-get install -y -q git python3 python3-venv ca-certificates curl",
        step="system packages",
        show=True,
    )
    log.said("system packages", True, "git, python3-venv")


def _user(remote: PyinfraRemote, host: FleetHost, log: StepLog) -> None:
    user = shlex.quote(host.service_user)
    if remote.run(f"id -u {user} >/dev/null 2>&1 && echo yes || true", step="user").output.strip() == "yes":
        log.said("service user", False, host.service_user)
        return
    home = shlex.quote(str(host.data_dir))
    remote.run(f"useradd --system --home-dir {home} --shell /usr/sbin/nologin {user}", step="service user")
    log.said("service user", True, host.service_user)


def target_commit(remote: PyinfraRemote, host: FleetHost) -> tuple[str, str]:
    """(the commit checked out now, or "" for none; the commit ``host.ref`` names: a commit, a branch of
    the origin or a tag; a full commit already here is not fetched again)."""
    root, repo, ref = (shlex.quote(str(v)) for v in (host.install_root, host.repo_url, host.ref))
    script = f"""
[ -d {root}/.git ] || {{ mkdir -p {root}; git -C {root} init -q; git -C {root} remote add origin {repo}; }}
cd {root}
git remote set-url origin {repo}
if ! {{ git cat-file -e {ref}^{{commit}} 2>/dev/null && [ "$(git rev-parse {ref})" = {ref} ]; }}; then
    git fetch -q --tags origin '+refs/heads/*:refs/remotes/origin/*'
fi
want=$(git rev-parse -q --verify origin/{ref}^{{commit}} || git rev-parse -q --verify {ref}^{{commit}}) \\
    || {{ echo "no commit, branch or tag {ref} in {repo}" >&2; exit 3; }}
echo "have=$(git rev-parse -q --verify HEAD || true) want=$want"
"""
    last = remote.run(script, step="checkout").output.strip().splitlines()[-1]
    have, want = (part.split("=", 1)[1] for part in last.split())
    return have, want


def _checkout(remote: PyinfraRemote, host: FleetHost, log: StepLog) -> str:
    """The checkout at ``host.ref``, detached; its commit."""
    have, want = target_commit(remote, host)
    if have != want:
        root = shlex.quote(str(host.install_root))
        remote.run(f"git -C {root} -c advice.detachedHead=false checkout -q --detach {want}", step="checkout")
    log.said("checkout", have != want, want[:12])
    return want


def install_current(remote: PyinfraRemote, host: FleetHost, commit: str) -> bool:
    """Whether install/install.sh last ran for ``commit`` with the host's options."""
    stamp = shlex.quote(str(host.venv / INSTALLED_STAMP))
    have = remote.run(f"cat {stamp} 2>/dev/null || true", step="install").output.strip()
    return have == _stamp(host, commit)


def _stamp(host: FleetHost, commit: str) -> str:
    args = " ".join(shlex.quote(a) for a in host.install_args)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(host.install_env.items()))
    return hashlib.sha256(f"{commit} {args} {env}".encode()).hexdigest()


def _install(remote: PyinfraRemote, host: FleetHost, commit: str, log: StepLog) -> None:
    if install_current(remote, host, commit):
        log.said("install", False, "install/install.sh ran for this commit")
        return
    args = " ".join(shlex.quote(a) for a in host.install_args)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(host.install_env.items()))
    stamp = shlex.quote(str(host.venv / INSTALLED_STAMP))
    root = shlex.quote(str(host.install_root))
    remote.run(
        f"cd {root} && env CI=true {env} install/install.sh {args} </dev/null"
        f" && echo {_stamp(host, commit)} > {stamp}",
        step="install (install/install.sh)",
        show=True,
    )
    log.said("install", True, "install/install.sh")


def _files(remote: PyinfraRemote, host: FleetHost, fleet: Fleet, log: StepLog) -> set[str]:
    """The .env, redis.conf and the data folders; the files that changed (".env", "redis.conf")."""
    dirs = [host.data_dir, host.models, host.units_dir, *([host.etc_dir] if "redis" in host.roles else [])]
    quoted = " ".join(shlex.quote(str(d)) for d in dirs)
    user = shlex.quote(host.service_user)
    remote.run(f"mkdir -p {quoted} && chown {user}: {shlex.quote(str(host.data_dir))}", step="folders")
    text = env_file(host, fleet.redis_host, fleet.secrets)
    changed = {".env"} if remote.write(host.env_file, text, mode="600", step=".env") else set()
    if "redis" in host.roles:
        redis_dir = shlex.quote(str(host.data_dir / "redis"))
        remote.run(f"mkdir -p {redis_dir} && chown {user}: {redis_dir}", step="redis.conf")
        conf = redis_conf(host, fleet.secrets)
        if remote.write(host.etc_dir / "redis.conf", conf, mode="600", step="redis.conf"):
            changed.add("redis.conf")
    log.said("settings (.env, mode 0600)", bool(changed), ", ".join(sorted(changed)))
    return changed


def _units(remote: PyinfraRemote, host: FleetHost, services: HostServices, log: StepLog) -> set[str]:
    """The host's unit files; the names of those that changed."""
    redis_server = ""
    if "redis" in host.roles:
        python = shlex.quote(str(host.venv / "bin" / "python"))
        find = f"{python} -c 'from comfyjobs.redis_server import redis_server_binary as b; print(b())'"
        redis_server = remote.run(find, step="units").output.strip().splitlines()[-1]
    changed = {
        name
        for name, text in unit_files(host, redis_server).items()
        if remote.write(host.units_dir / name, text, mode="644", step=f"unit {name}")
    }
    if changed:
        services.reload()
    log.said(f"units ({services.kind})", bool(changed), ", ".join(host.units))
    return changed


def _started(services: HostServices, host: FleetHost, moved: set[str], log: StepLog) -> None:
    """Every unit running: started where it is not, restarted where what it runs moved."""
    started, restarted = [], []
    for unit in host.units:
        if not services.is_active(unit):
            services.start(unit)
            started.append(unit)
        elif unit in moved:
            services.restart(unit)
            restarted.append(unit)
    detail = "; ".join(
        part
        for part in (
            f"started {', '.join(started)}" if started else "",
            f"restarted {', '.join(restarted)}" if restarted else "",
        )
        if part
    )
    log.said("services", bool(started or restarted), detail or "running")


@dataclass(frozen=True)
class Fleet:
    hosts: dict[str, FleetHost]
    secrets: Secrets

    @property
    def redis_host(self) -> FleetHost:
        found = [h for h in self.hosts.values() if "redis" in h.roles]
        if len(found) != 1:
            raise FleetError(f"inventory: exactly one host must be in the redis group (found {len(found)})")
        return found[0]

    @property
    def api_host(self) -> FleetHost:
        found = [h for h in self.hosts.values() if "api" in h.roles]
        if not found:
            raise FleetError("inventory: no host in the api group")
        return found[0]

    @property
    def worker_count(self) -> int:
        return sum(len(h.workers) for h in self.hosts.values())


def _moved(host: FleetHost, steps: set[str], files: set[str], unit_files_changed: set[str]) -> set[str]:
    """The running units to restart: Redis when its redis.conf or unit changed (not for a new commit:
    the queue stays up), the others when the code, the .env or a unit file changed."""
    code = bool({"checkout", "install"} & steps) or ".env" in files or bool(unit_files_changed)
    return {
        unit
        for unit in host.units
        if (
            ("redis.conf" in files or unit in unit_files_changed)
            if unit == "comfyjobs-redis.service"
            else code
        )
    }


def bootstrap_host(remote: PyinfraRemote, host: FleetHost, fleet: Fleet) -> StepLog:
    log = StepLog(host.name)
    services = HostServices(remote, host)
    _packages(remote, host, log)
    if host.service_user != "root":
        _user(remote, host, log)
    commit = _checkout(remote, host, log)
    files = _files(remote, host, fleet, log)
    _install(remote, host, commit, log)
    unit_files_changed = _units(remote, host, services, log)
    _started(services, host, _moved(host, set(log.changed), files, unit_files_changed), log)
    return log


def wait_for_workers(fleet: Fleet, timeout_s: float = READY_TIMEOUT_S) -> int:
    """Until the API's /ready lists every worker of the inventory as ready; how many it lists."""
    api = fleet.api_host
    url = f"http://{api.address}:{api.api_port}/ready"
    want, seen = fleet.worker_count, 0
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:  # 503 while not ready: its body still lists workers
            body = json.loads(exc.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError):
            body = {}
        seen = sum(1 for w in body.get("workers", []) if w.get("comfyui_ready") and w.get("state") == "ready")
        if seen >= want:
            return seen
        if time.monotonic() > deadline:
            raise FleetError(
                f"{api.name}: /ready lists {seen} of {want} workers ready after {timeout_s:.0f} s"
            )
        time.sleep(1.0)  # (another machine's state: asked again)
