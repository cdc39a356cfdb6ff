"""`custom_nodes.txt`: which ComfyUI custom nodes to clone into ``custom_nodes/``, at which commit or tag.

    https://github.com/org/ComfyUI-Foo.git@v1.2.0      a tag (or a branch)
    https://github.com/org/repo@0123abc                a commit (7 to 40 hex digits)
    /srv/nodes/my-node                                 a local repository (also file://...)

Each node is cloned (or, when already there, fetched and moved to its pin) and its ``requirements.txt`` is
installed into the service's environment under the constraints files, so that no node can swap torch or
torchvision. One node failing (unreachable host, unknown pin, conflicting requirement) is reported with
the reason and never stops the others.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import DEVNULL, PIPE, Popen
from typing import Literal, NoReturn, Protocol

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from comfyjobs.cli import exit_codes
from comfyjobs.errors import CustomNodesFileError, CustomNodesProblem

NodeStatus = Literal["installed", "updated", "present", "failed"]

# A backstop per git command. Refused connections fail at once and stalled transfers after 20 s (see
# _GIT_CONFIG); a host that drops packets fails when the kernel gives up connecting (about 2 min on Linux).
GIT_TIMEOUT_S = 600.0
PIP_TIMEOUT_S = 1800.0  # a node's requirements may pull large wheels

_SCHEMES = frozenset({"https", "http", "ssh", "git", "file"})
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
_SCP = re.compile(r"^(?:[^@/:\s]+@)?[^@/:\s]+:")  # git's scp-like syntax: [user@]host:path
_COMMIT = re.compile(r"^[0-9a-fA-F]{7,40}$")
# A practical subset of git-check-ref-format: enough for tags and branches, nothing a shell or git
# option parser could misread (no leading '-').
_REF = re.compile(r"^(?![-/])(?!.*\.\.)(?!.*//)[A-Za-z0-9._/+-]+(?<![./])(?<!\.lock)$")
_COMMENT = re.compile(r"(^|\s)#.*$")  # '#' starts a comment at the line's start or after a space
_FOLDER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")

# Never prompt (no terminal in an install script or a container) and give up on a stalled transfer
# instead of hanging: below 1 kB/s for 20 s. ssh gets the same through BatchMode and ConnectTimeout.
_GIT_CONFIG = ("http.lowSpeedLimit=1000", "http.lowSpeedTime=20", "advice.detachedHead=false")
_REASON_LINES = 6


@dataclass(frozen=True)
class CustomNodeEntry:
    name: str  # the folder under custom_nodes/: the repository's name without .git
    url: str  # what git clones: a URL, or an absolute local path
    pin: str | None  # a commit (hex), a tag or a branch; None: the default branch as first cloned
    line: int


@dataclass(frozen=True)
class NodeInstallResult:
    entry: CustomNodeEntry
    status: NodeStatus
    path: Path  # comfyui_dir/custom_nodes/<name>
    commit: str | None = None  # what is checked out (full hash), when known
    reason: str | None = None  # why it failed; None otherwise

    @property
    def ok(self) -> bool:
        return self.status != "failed"


class PipRunner(Protocol):
    """Installs one requirements file into ``python``'s environment; returns None or why it failed."""

    def __call__(self, requirements: Path, *, python: Path, constraints: Sequence[Path]) -> str | None: ...


# --- the file --------------------------------------------------------------------------------------


def parse_custom_nodes(path: Path) -> list[CustomNodeEntry]:
    """Reads and checks ``path``; relative local paths in it are relative to its folder. Raises
    CustomNodesFileError listing every problem (file:line: reason)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CustomNodesFileError([CustomNodesProblem(str(path), None, f"cannot read: {exc}")]) from exc
    return parse_custom_nodes_text(text, source_name=str(path), base_dir=path.parent)


def parse_custom_nodes_text(
    text: str, *, source_name: str = "custom_nodes.txt", base_dir: Path | None = None
) -> list[CustomNodeEntry]:
    entries: list[CustomNodeEntry] = []
    problems: list[CustomNodesProblem] = []
    seen: dict[str, int] = {}  # casefolded folder name -> the line that claimed it first
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        try:
            entry = _parse_line(line, line_no, base_dir or Path.cwd())
        except ValueError as exc:
            problems.append(CustomNodesProblem(source_name, line_no, str(exc)))
            continue
        # Folder names that differ only in case are one folder on macOS/Windows, and one module name
        # to a human reading ComfyUI's log.
        first = seen.setdefault(entry.name.casefold(), line_no)
        if first != line_no:
            reason = f"duplicate folder name {entry.name!r} (already given at line {first})"
            problems.append(CustomNodesProblem(source_name, line_no, reason))
            continue
        entries.append(entry)
    if problems:
        raise CustomNodesFileError(problems)
    return entries


def _parse_line(spec: str, line_no: int, base_dir: Path) -> CustomNodeEntry:
    if any(c.isspace() for c in spec):
        raise ValueError(f"expected one URL or path per line, got {spec!r}")
    local = False
    if scheme := _SCHEME.match(spec):
        if scheme["scheme"].lower() not in _SCHEMES:
            raise ValueError(f"unsupported scheme in {spec!r} (use https, http, ssh, git or file)")
        path_start = spec.find("/", scheme.end())
        if path_start < 0:
            raise ValueError(f"{spec!r} names no repository")
    elif spec.startswith(("/", "./", "../", "~")):
        local, path_start = True, 0
    elif scp := _SCP.match(spec):
        path_start = scp.end()
    else:
        raise ValueError(
            f"not a git URL or path: {spec!r} (expected https://host/org/repo[.git][@pin], "
            "git@host:org/repo[@pin], file://... or a local path)"
        )

    # The pin is the last '@' in the repository path: one in "git@host:" or "https://user@host/" is not.
    at = spec.rfind("@", path_start)
    source, pin = (spec[:at], spec[at + 1 :]) if at >= 0 else (spec, None)
    if pin is not None and not (_COMMIT.match(pin) or _REF.match(pin)):
        raise ValueError(f"bad pin {pin!r} (expected a commit of 7-40 hex digits, a tag or a branch)")

    name = source[path_start:].rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    if not _FOLDER.match(name):
        raise ValueError(f"cannot take a folder name from {source!r} (got {name!r})")
    if local:
        path = Path(source).expanduser()
        source = str((path if path.is_absolute() else base_dir / path).resolve())
    return CustomNodeEntry(name=name, url=source, pin=pin, line=line_no)


# --- running git and pip ---------------------------------------------------------------------------


class _StepError(Exception):
    """One step of one node failed; the message is the reason shown to the user."""


def _run(cmd: Sequence[str], *, cwd: Path | None, timeout_s: float, what: str) -> str:
    """Runs ``cmd`` (stdin closed) and returns its stdout; raises _StepError with the tail of its output.

    The command gets its own process group so that a timeout (or Ctrl-C) also ends what it started
    (git-remote-https, ssh, pip's build backends), which would otherwise keep its pipes open."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "PIP_NO_INPUT": "1"}
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:  # a caller's own ssh setup wins
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes -o ConnectTimeout=15"
    try:
        proc = Popen(
            list(cmd), cwd=cwd, env=env, stdin=DEVNULL, stdout=PIPE, stderr=PIPE, start_new_session=True
        )
    except OSError as exc:
        raise _StepError(f"{what}: cannot run {cmd[0]}: {exc}") from exc
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except BaseException as exc:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise _StepError(f"{what}: timed out after {timeout_s:g} s") from exc
        raise
    if proc.returncode != 0:
        raise _StepError(f"{what} failed (exit {proc.returncode}): {_tail(err) or _tail(out)}")
    return out.decode(errors="replace")


def _tail(output: bytes) -> str:
    lines = [line.rstrip() for line in output.decode(errors="replace").splitlines() if line.strip()]
    return "\n".join(lines[-_REASON_LINES:])


def install_requirements(requirements: Path, *, python: Path, constraints: Sequence[Path]) -> str | None:
    """The default PipRunner: ``uv pip install`` when uv sits next to ``python`` (install.sh puts it in the
    venv), else ``python -m pip``, else a uv on PATH (a venv made by uv has no pip). Every constraints file
    is passed with ``-c``, so a requirement that contradicts one fails instead of replacing the pin."""
    args = ["-r", str(requirements.resolve()), *(a for c in constraints for a in ("-c", str(c.resolve())))]
    uv = python.parent / "uv"
    if os.access(uv, os.X_OK):
        cmd = [str(uv), "pip", "install", "--quiet", "--python", str(python), *args]
    elif _has_pip(python):
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar=off"]
        cmd = [*pip, *args]
    elif path_uv := shutil.which("uv"):
        cmd = [path_uv, "pip", "install", "--quiet", "--python", str(python), *args]
    else:
        return f"cannot install {requirements.name}: no uv next to {python}, no pip in it, no uv on PATH"
    try:
        # From the node's folder: pip and uv resolve `./sub` and `-e .` lines against the working directory.
        _run(cmd, cwd=requirements.parent, timeout_s=PIP_TIMEOUT_S, what=f"installing {requirements.name}")
    except _StepError as exc:
        return str(exc)
    return None


def _has_pip(python: Path) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('pip') is None)"
    try:
        return subprocess.run([str(python), "-c", probe], stdin=DEVNULL, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# --- installing ------------------------------------------------------------------------------------


def install_custom_nodes(
    entries: Sequence[CustomNodeEntry],
    comfyui_dir: Path,
    *,
    python: Path,
    constraints: Sequence[Path],
    pip_runner: PipRunner = install_requirements,
    git_timeout_s: float = GIT_TIMEOUT_S,
) -> list[NodeInstallResult]:
    """Puts every node at its pin in ``comfyui_dir/custom_nodes`` and installs its requirements into
    ``python``'s environment under ``constraints``; returns one result per entry, in order."""
    git = _Git(git_timeout_s)
    results = []
    for entry in entries:
        target = comfyui_dir / "custom_nodes" / entry.name
        commit: str | None = None
        reason: str | None = None
        try:
            if target.exists() or target.is_symlink():
                status: NodeStatus = git.update(entry, target)
            else:
                git.clone(entry, target)
                status = "installed"
            commit = git(target, "rev-parse", "HEAD")
            # Also when the checkout was already right: the environment may be new, or a last try failed.
            if (requirements := target / "requirements.txt").is_file():
                reason = pip_runner(requirements, python=python, constraints=constraints)
                status = "failed" if reason else status
        except (_StepError, OSError) as exc:  # OSError: custom_nodes/ not writable, say
            status, reason = "failed", str(exc)
        results.append(NodeInstallResult(entry, status, target, commit, reason))
    return results


@dataclass(frozen=True)
class _Git:
    timeout_s: float

    def __call__(self, repo: Path | None, *args: str) -> str:
        where = ("-C", str(repo)) if repo is not None else ()
        cmd = ["git", *where, *(arg for c in _GIT_CONFIG for arg in ("-c", c)), *args]
        return _run(cmd, cwd=None, timeout_s=self.timeout_s, what=f"git {args[0]}").strip()

    def clone(self, entry: CustomNodeEntry, target: Path) -> None:
        """Clones and checks out the pin beside ComfyUI, and moves the result into custom_nodes/ only once
        complete: ComfyUI imports every folder there (hidden ones too), so a half-made one must never be."""
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent.parent, prefix=".custom-node-") as tmp:
            work = Path(tmp) / entry.name
            self(None, "clone", "--quiet", "--", entry.url, str(work))
            if entry.pin is not None:
                self.checkout(work, self.resolve(entry, work) or _pin_not_found(entry))
            else:
                self.submodules(work)
            work.rename(target)

    def update(self, entry: CustomNodeEntry, target: Path) -> NodeStatus:
        """An existing folder: left alone unless it is a clone of this entry's repository, then moved to the
        pin (fetching only when the pin is not already known locally, so re-runs work offline)."""
        if not target.is_dir() or not (target / ".git").exists():
            raise _StepError(f"{target} exists and is not a git checkout; left as it is (move it away)")
        try:
            origin = self(target, "remote", "get-url", "origin")
        except _StepError as exc:
            raise _StepError(f"{target} is a git checkout without an 'origin' remote; left as it is") from exc
        if _normalise_source(origin) != _normalise_source(entry.url):
            raise _StepError(
                f"{target} is a clone of {origin}, not {entry.url}; left as it is (move it away)"
            )
        if entry.pin is None:
            return "present"  # unpinned: whatever was cloned first; pin it to move it

        head = self(target, "rev-parse", "HEAD")
        # A commit or a tag already here answers without the network; a branch moves, so it is fetched.
        if self.resolve(entry, target, remote_branches=False) == head:
            return "present"
        self(target, "fetch", "--quiet", "--tags", "--force", "origin")
        commit = self.resolve(entry, target)
        if commit is None and _COMMIT.match(entry.pin) and len(entry.pin) == 40:
            # A commit on no branch or tag (a pull request's, say): servers hand out reachable ones by hash.
            with contextlib.suppress(_StepError):
                self(target, "fetch", "--quiet", "origin", entry.pin)
            commit = self.resolve(entry, target)
        if commit is None:
            _pin_not_found(entry)
        if commit == head:
            return "present"
        self.checkout(target, commit)
        return "updated"

    def resolve(self, entry: CustomNodeEntry, repo: Path, *, remote_branches: bool = True) -> str | None:
        """The commit the pin names in ``repo``, or None. A tag beats a branch of the same name, as in git."""
        pin = entry.pin
        candidates = [pin] if pin is not None and _COMMIT.match(pin) else []
        candidates += [f"refs/tags/{pin}"] + ([f"refs/remotes/origin/{pin}"] if remote_branches else [])
        for candidate in candidates:
            with contextlib.suppress(_StepError):
                return self(repo, "rev-parse", "--verify", "--quiet", f"{candidate}^{{commit}}")
        return None

    def checkout(self, repo: Path, commit: str) -> None:
        self(repo, "checkout", "--quiet", "--detach", commit)
        self.submodules(repo)

    def submodules(self, repo: Path) -> None:
        if (repo / ".gitmodules").is_file():
            self(repo, "submodule", "update", "--init", "--recursive")


def _pin_not_found(entry: CustomNodeEntry) -> NoReturn:
    raise _StepError(f"pin {entry.pin!r} not found in {entry.url}")


def _normalise_source(url: str) -> str:
    return url.rstrip("/").removesuffix(".git").removeprefix("file://")


# --- summary and exit code -------------------------------------------------------------------------

_STATUS_STYLES = {"installed": "green", "updated": "green", "present": "cyan", "failed": "bold red"}


def print_summary(results: Sequence[NodeInstallResult], console: Console | None = None) -> int:
    """Prints one row per node (folder, source, pin, commit, status, reason); returns how many failed."""
    console = console or Console()
    table = Table(title="custom nodes")
    for column in ("node", "source", "pin", "commit", "status", "reason"):
        table.add_column(column, overflow="fold")
    for result in results:
        table.add_row(
            result.entry.name,
            escape(result.entry.url),
            result.entry.pin or "-",
            result.commit[:10] if result.commit else "-",
            f"[{_STATUS_STYLES[result.status]}]{result.status}[/]",
            escape(result.reason or ""),  # pip and git output may hold [brackets]
        )
    console.print(table)
    return sum(1 for r in results if not r.ok)


def run_nodes_install(file: Path, comfyui_dir: Path, *, python: Path, constraints: list[Path]) -> int:
    """0: every node in place with its requirements; 1: some failed (listed); 3: an invalid file, or a
    missing ComfyUI folder or constraints file (printed to stderr)."""
    try:
        entries = parse_custom_nodes(file)
    except CustomNodesFileError as exc:
        print(f"comfyjobs: {exc.message}", file=sys.stderr)
        return exit_codes.CONFIG
    # Without its constraints an install could replace torch: refuse rather than run unconstrained.
    missing = [str(c) for c in constraints if not c.is_file()]
    if missing:
        print(f"comfyjobs: constraints file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return exit_codes.CONFIG
    if not entries:
        print(f"{file}: no custom nodes listed, nothing to install")
        return exit_codes.OK
    if not comfyui_dir.is_dir():  # a wrong COMFYUI_DIR would otherwise grow a stray custom_nodes/ folder
        print(f"comfyjobs: ComfyUI folder not found: {comfyui_dir}", file=sys.stderr)
        return exit_codes.CONFIG
    results = install_custom_nodes(entries, comfyui_dir, python=python, constraints=constraints)
    return exit_codes.ERROR if print_summary(results) else exit_codes.OK
