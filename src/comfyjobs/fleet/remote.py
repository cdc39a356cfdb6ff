"""One host as the fleet's steps see it: run a command, write a file. Over pyinfra's connection to it (SSH
with its host data), from inside a pyinfra operation (``python.call``), so the same steps run from
``comfyjobs fleet`` and from ``pyinfra INVENTORY deploy/fleet/<verb>.py``."""

from __future__ import annotations

import io
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from comfyjobs.errors import FleetError


@dataclass(frozen=True)
class Ran:
    ok: bool
    output: str  # stdout and stderr, as lines came


class PyinfraRemote:
    def __init__(self, host: Any, redact: Any = lambda text: text) -> None:
        self._host = host  # a pyinfra.api.Host (its connection)
        self.name: str = host.name
        self._redact = redact

    def run(self, command: str, *, step: str, check: bool = True, show: bool = False) -> Ran:
        """``command`` in bash on the host; FleetError naming the host and ``step`` when it fails and
        ``check``. ``show``: its output printed as it comes, host in front (long steps)."""
        from pyinfra.api.command import StringCommand

        wrapped = StringCommand("bash", "-c", shlex.quote(f"set -euo pipefail; {command}"))
        ok, output = self._host.run_shell_command(wrapped, print_output=show)
        ran = Ran(bool(ok), self._redact(output.output))
        if check and not ran.ok:
            tail = "\n".join(ran.output.splitlines()[-15:])
            raise FleetError(f"{self.name}: {step} failed:\n{tail}")
        return ran

    def write(self, path: Path, text: str, *, mode: str, step: str) -> bool:
        """``path`` holds ``text`` (mode ``mode``), written only when it differs; True when written. A
        file for secrets is never readable by others, not even while it is written."""
        import hashlib

        want = hashlib.sha256(text.encode()).hexdigest()
        q = shlex.quote(str(path))
        looked = self.run(
            f"{{ sha256sum {q} | cut -d' ' -f1; stat -c %a {q}; }} 2>/dev/null || true", step=step
        )
        if looked.output.split() == [want, mode]:
            return False
        temp = f"{path}.comfyjobs-new"
        q_temp, q_path = shlex.quote(temp), shlex.quote(str(path))
        self.run(
            f"mkdir -p {shlex.quote(str(path.parent))} && install -m {mode} /dev/null {q_temp}", step=step
        )
        if not self._host.put_file(io.BytesIO(text.encode()), temp):
            raise FleetError(f"{self.name}: {step} failed: could not upload {path}")
        self.run(f"chmod {mode} {q_temp} && mv -f {q_temp} {q_path}", step=step)
        return True

    def put(self, path: Path, data: bytes, *, step: str) -> None:
        """``data`` uploaded to ``path`` (its folder made)."""
        self.run(f"mkdir -p {shlex.quote(str(path.parent))}", step=step)
        if not self._host.put_file(io.BytesIO(data), str(path)):
            raise FleetError(f"{self.name}: {step} failed: could not upload {path}")
