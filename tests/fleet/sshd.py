"""Hosts for the fleet tests: each a real OpenSSH sshd (the distribution's) on 127.0.0.1 with its own
port, host key and root folder, which stands for the host's disk (its /opt, /etc, /var/lib). pyinfra
reaches it with standard SSH host data and a client key made for the session."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from comfyjobs.fleet.units import Units
from tests.support import free_port, wait_for

SSHD = Path("/usr/sbin/sshd")


def require_sshd() -> None:
    """sshd (openssh-server, from `install/install.sh --dev`): on CI its absence fails the tests."""
    if SSHD.is_file() and shutil.which("ssh-keygen"):
        return
    message = "no /usr/sbin/sshd: install/install.sh --dev installs openssh-server"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class SshHost:
    name: str
    root: Path  # the host's disk
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def data(self, client_key: Path, **extra: Any) -> dict[str, Any]:
        """Its pyinfra host data: SSH, and the paths comfyjobs uses, all under its root folder."""
        return {
            "ssh_hostname": "127.0.0.1",
            "ssh_port": self.port,
            "ssh_user": "root",
            "ssh_key": str(client_key),
            "ssh_known_hosts_file": "/dev/null",
            "ssh_strict_host_key_checking": "no",
            "install_root": str(self.root / "opt" / "comfyjobs"),
            "etc_dir": str(self.root / "etc" / "comfyjobs"),
            "data_dir": str(self.root / "var" / "lib" / "comfyjobs"),
            "units_dir": str(self.root / "etc" / "systemd" / "system"),
            "service_user": "root",
            "service_manager": "fallback",  # (no systemd in the test environment; README)
            **extra,
        }

    @property
    def units(self) -> Units:
        return Units(self.root / "etc" / "systemd" / "system")

    def start(self) -> None:
        config = self.root / "sshd" / "sshd_config"
        self.proc = subprocess.Popen(
            [str(SSHD), "-D", "-e", "-f", str(config)],
            stdout=(self.root / "sshd" / "sshd.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        wait_for(self._listening, timeout_s=20, what=f"sshd of {self.name}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def _listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop_units(self) -> None:
        """Whatever comfyjobs units run on it (the fixture's cleanup)."""
        run = self.units.run_dir
        for pid_file in sorted(run.glob("*.pid"), reverse=True) if run.is_dir() else []:  # workers first
            self.units.stop(pid_file.name.removesuffix(".pid"))


def client_key(folder: Path) -> Path:
    key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def _configure(host: SshHost, key: Path) -> None:
    sshd = host.root / "sshd"
    sshd.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(sshd / "host_key")], check=True)
    shutil.copy(key.with_suffix(".pub"), sshd / "authorized_keys")
    (sshd / "sshd_config").write_text(
        f"Port {host.port}\nListenAddress 127.0.0.1\nHostKey {sshd / 'host_key'}\n"
        f"AuthorizedKeysFile {sshd / 'authorized_keys'}\nPidFile {sshd / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\nMaxStartups 100\n"
    )


@contextmanager
def ssh_hosts(folder: Path, names: list[str], key: Path) -> Iterator[dict[str, SshHost]]:
    """Started sshd hosts; on the way out, their comfyjobs units and sshd stopped."""
    Path("/run/sshd").mkdir(exist_ok=True)
    hosts = {name: SshHost(name, folder / name, free_port()) for name in names}
    try:
        for host in hosts.values():
            _configure(host, key)
            host.start()
        yield hosts
    finally:
        for host in hosts.values():
            host.stop_units()
            host.stop()


def source_repo(repo: Path, folder: Path) -> tuple[Path, str]:
    """A git repository holding this working tree as one commit (what the hosts check out), and that
    commit: tracked and untracked files that git does not ignore, as `.ci/run`'s clone would have."""
    files = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    target = folder / "comfyjobs.git"
    target.mkdir(parents=True)
    for raw in files:
        name = raw.decode()
        source = repo / name
        if not name or not source.is_file():
            continue
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, dest)
    git = ["git", "-C", str(target), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "fleet test snapshot"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    return target, commit.stdout.strip()
