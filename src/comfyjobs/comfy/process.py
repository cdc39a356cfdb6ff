"""The managed ComfyUI process: one per worker, with folders, a port and a lifecycle of its own.

Lifecycle: ``start()`` → ``wait_ready()`` → (``health()`` as often as wanted) → ``stop()``. The process
runs in its own process group and dies with the worker (see ``procs.spawn``). Readiness is an event, not
a poll: ComfyUI logs "To see the GUI go to: ..." once its HTTP server is bound; we watch its output for
that line, then confirm with one request that the server on our port is ours.
"""

from __future__ import annotations

import collections
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import requests

from comfyjobs import procs
from comfyjobs.comfy.client import OutputFile
from comfyjobs.comfy.output_files import output_path
from comfyjobs.errors import ComfyStartError
from comfyjobs.manifests.schema import MODEL_FOLDERS

log = logging.getLogger(__name__)

READY_MARKER = "To see the GUI go to:"
GUARD_NODES_DIR = Path(__file__).resolve().parent / "comfyui_nodes"
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class ComfyHealth:
    running: bool
    ready: bool
    pid: int | None
    restarts: int


@dataclass(frozen=True)
class ComfyInstance:
    """Everything one ComfyUI needs of its own. Outputs, inputs, temp and user data are never shared
    between instances; the models folder always is."""

    comfyui_dir: Path
    python: Path
    port: int
    instance_dir: Path
    model_dir: Path
    gpu: int | None  # None: run on the CPU
    extra_args: tuple[str, ...] = ()
    shared_model_dir: Path | None = None  # MODELS_SHARED_DIR: read beside model_dir (a NAS mount)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def output_dir(self) -> Path:
        return self.instance_dir / "output"

    @property
    def input_dir(self) -> Path:
        return self.instance_dir / "input"

    @property
    def temp_dir(self) -> Path:
        return self.instance_dir / "temp"

    @property
    def log_path(self) -> Path:
        return self.instance_dir / "comfyui.log"

    @property
    def output_folders(self) -> dict[str, Path]:
        """ComfyUI's folders by the ``type`` it gives an output file."""
        return {"output": self.output_dir, "temp": self.temp_dir}

    def copy_output(self, output: OutputFile, dest: Path) -> bool:
        """Copies an output of this instance to ``dest`` straight from its folder instead of over HTTP
        (a copy, not a link: a node that rewrote a file of the same name later must not change what
        was stored). False if it is not a file of its output or temp folder (a text output, or a name
        leading elsewhere): download it then."""
        source = output_path(self.output_folders, output)
        if source is None:
            return False
        try:
            shutil.copyfile(source, dest)
        except OSError:
            return False
        return True

    def prepare(self) -> None:
        for sub in ("output", "input", "temp", "user"):
            (self.instance_dir / sub).mkdir(parents=True, exist_ok=True)
        for folder in MODEL_FOLDERS:
            (self.model_dir / folder).mkdir(parents=True, exist_ok=True)
        lines = ["comfyjobs:", f"  base_path: {self.model_dir.resolve()}", "  is_default: true"]
        lines += [f"  {folder}: {folder}/" for folder in MODEL_FOLDERS]
        if self.shared_model_dir is not None:
            lines += ["comfyjobs_shared:", f"  base_path: {self.shared_model_dir.resolve()}"]
            lines += [f"  {folder}: {folder}/" for folder in MODEL_FOLDERS]
        # Our one custom node package: the Host/Origin guard (comfyui_nodes/comfyjobs_guard).
        lines += ["comfyjobs_nodes:", f"  custom_nodes: {GUARD_NODES_DIR}"]
        (self.instance_dir / "extra_model_paths.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def argv(self) -> list[str]:
        d = self.instance_dir.resolve()
        args = [
            str(self.python), "main.py",
            "--listen", "127.0.0.1",
            "--port", str(self.port),
            "--output-directory", str(d / "output"),
            "--input-directory", str(d / "input"),
            "--temp-directory", str(d / "temp"),
            "--user-directory", str(d / "user"),
            "--database-url", f"sqlite:///{d / 'user' / 'comfyui.db'}",
            "--extra-model-paths-config", str(d / "extra_model_paths.yaml"),
            "--disable-auto-launch",
            "--disable-api-nodes",
        ]  # fmt: skip
        if self.gpu is None:
            args.append("--cpu")
        return args + list(self.extra_args)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["COMFYJOBS_COMFYUI_PORT"] = str(self.port)  # what the guard lets through (see GUARD_NODES_DIR)
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        return env


class ComfyProcess:
    def __init__(self, instance: ComfyInstance, *, start_timeout_s: float, stop_timeout_s: float) -> None:
        self.instance = instance
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._changed = threading.Event()  # set on the ready line and on exit
        self._exited = threading.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._closed = False  # set by close(): no start() after the final stop
        self.restarts = -1  # start() counts; the first start is not a restart

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Spawns ComfyUI; OSErrors (folder missing, disk full) become ComfyStartError."""
        with self._lock:
            if self._closed:
                raise ComfyStartError("the worker is shutting down; ComfyUI is not started again")
            if self._proc is not None and self._proc.poll() is None:
                return
            try:
                self._spawn()
            except OSError as exc:
                raise ComfyStartError(f"cannot start ComfyUI: {exc}") from exc

    def _spawn(self) -> None:  # holds self._lock
        if not (self.instance.comfyui_dir / "main.py").is_file():
            raise FileNotFoundError(f"no main.py in {self.instance.comfyui_dir} (run install/install.sh)")
        self.instance.prepare()
        self._ready.clear()
        self._changed.clear()
        self._exited.clear()
        self._tail.clear()
        log.info("starting ComfyUI on port %d: %s", self.instance.port, shlex.join(self.instance.argv()))
        self._proc = procs.spawn(
            self.instance.argv(),
            cwd=self.instance.comfyui_dir,
            env=self.instance.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.restarts += 1
        self._reader = threading.Thread(
            target=self._read_output, args=(self._proc,), name="comfyui-log", daemon=True
        )
        self._reader.start()

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Blocks until ComfyUI serves HTTP on our port; raises ComfyStartError if it exits or times out."""
        timeout = self.start_timeout_s if timeout_s is None else timeout_s
        if not self._changed.wait(timeout):
            self.stop()
            raise ComfyStartError(f"ComfyUI did not start within {timeout:.0f} s.\n{self.log_tail()}")
        if self._exited.is_set() or not self._ready.is_set():
            code = self._proc.poll() if self._proc else None
            raise ComfyStartError(f"ComfyUI exited during start (exit code {code}).\n{self.log_tail()}")
        self._confirm_identity()
        # Only now that this instance's folders are known to be ours: leftovers of an earlier run go.
        self._clear_outputs()

    def close(self) -> None:
        """The final stop: a supervisor thread racing with shutdown can no longer start it again."""
        with self._lock:
            self._closed = True
        self.stop()

    def stop(self) -> None:
        """SIGTERM to ComfyUI's process group, SIGKILL after ``stop_timeout_s``; waits until it is gone."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            self._ready.clear()
            code = procs.stop_group(proc, self.stop_timeout_s)
            log.info("ComfyUI (pid %d) stopped, exit code %s", proc.pid, code)
        if self._reader is not None:
            self._reader.join(timeout=self.stop_timeout_s)

    def kill(self) -> None:
        """SIGKILL to ComfyUI's process group (it hangs, or is stopped: SIGTERM would not be handled).
        A worker's supervisor sees the exit and starts it again."""
        with self._lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return
            self._ready.clear()
            log.warning("killing ComfyUI (pid %d): it stopped answering", proc.pid)
            procs.signal_group(proc, signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_ready()

    # --- state -------------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def base_url(self) -> str:
        return self.instance.base_url

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def is_ready(self) -> bool:
        return self._ready.is_set() and self.is_running()

    def wait_exit(self, timeout_s: float | None = None) -> bool:
        """Blocks until the current ComfyUI process exits (for the worker's supervisor thread)."""
        return self._exited.wait(timeout_s)

    def wait_until_ready(self, timeout_s: float) -> bool:
        return self._ready.wait(timeout_s) and self.is_running()

    def health(self, timeout_s: float = 5.0) -> ComfyHealth:
        ready = False
        if self.is_ready():
            try:
                ready = requests.get(f"{self.base_url}/system_stats", timeout=timeout_s).ok
            except requests.RequestException:
                ready = False
        return ComfyHealth(self.is_running(), ready, self.pid, max(self.restarts, 0))

    def log_tail(self) -> str:
        return "".join(self._tail) or "(ComfyUI printed nothing)"

    # --- internals ---------------------------------------------------------------------------------

    def _read_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with self.instance.log_path.open("ab") as log_file:
            for raw in proc.stdout:
                log_file.write(raw)
                log_file.flush()
                line = raw.decode("utf-8", "replace")
                self._tail.append(line)
                if READY_MARKER in line and proc is self._proc:
                    self._ready.set()
                    self._changed.set()
        proc.wait()
        if proc is self._proc:
            self._ready.clear()
            self._exited.set()
            self._changed.set()

    def _confirm_identity(self) -> None:
        # A stale ComfyUI on our port would answer too: make sure the one answering has our folders.
        try:
            stats = requests.get(f"{self.base_url}/system_stats", timeout=10).json()
        except (requests.RequestException, ValueError) as exc:
            raise ComfyStartError(f"ComfyUI logged that it started but does not answer: {exc}") from exc
        argv = stats.get("system", {}).get("argv", [])
        if str(self.instance.output_dir.resolve()) not in argv:
            self.stop()
            raise ComfyStartError(f"another process answers on port {self.instance.port}")

    def _clear_outputs(self) -> None:
        # Results are copied out after every job; leftovers from a previous run are only clutter.
        out = self.instance.output_dir
        for path in sorted(out.rglob("*"), reverse=True):
            if path.is_file():
                path.unlink(missing_ok=True)
            elif path.is_dir():
                path.rmdir()


def default_python() -> Path:
    return Path(sys.executable)
