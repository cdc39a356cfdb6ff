"""`comfyjobs up` and `comfyjobs worker --gpus`: everything in the foreground, stopped in order.

A child that exits on its own is restarted after a back-off (``comfyjobs.backoff``: waits of 1, 2, 5, 10,
30 s, none above RESTART_BACKOFF_MAX_S, starting again from 1 s once it has stayed up a minute), and
nothing else is touched. The rule per component, by what its loss costs the rest:

- **API**: stateless; restarted for ever. The workers, their ComfyUIs and Redis go on meanwhile.
- **A worker** (and with it its ComfyUI): restarted for ever; the other workers keep serving, and the
  reconciler puts its job back in line.
- **Redis** (the private one, without REDIS_URL): restarted, but after 5 failures in a row, each within a
  minute of its start (its port taken, its data dir unwritable, a damaged append-only file), `up` gives
  up: nothing works without it. It says so in one log line naming Redis and its last
  error, stops everything and exits 6.

Stop order for `up`: the API first (no new jobs are accepted), then the workers (each finishes its
current job and stops its ComfyUI), then Redis last (the workers write their results to it until the end).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from comfyjobs.backoff import DEFAULT_DELAYS_S, Backoff, capped
from comfyjobs.catalog.bundle import short
from comfyjobs.catalog.publishing import publish_folders
from comfyjobs.catalog.store import opened
from comfyjobs.cli import exit_codes
from comfyjobs.errors import ConfigError
from comfyjobs.jobs.delivery import longest_job_s
from comfyjobs.manifests.loader import load_registry
from comfyjobs.redis_server import RedisServer, redact_url
from comfyjobs.settings import Settings
from comfyjobs.supervisor import Supervisor

log = logging.getLogger(__name__)

REDIS_GIVE_UP_AFTER = 5
REDIS_NEEDED_BECAUSE = "Nothing works without Redis (the queue and every job record are in it)"


def backoff(settings: Settings, give_up_after: int | None = None) -> Backoff:
    """The one restart policy of `up`, per child; ``give_up_after`` only for one nothing works without."""
    return Backoff(capped(DEFAULT_DELAYS_S, settings.restart_backoff_max_s), give_up_after=give_up_after)


def detect_gpus() -> list[int]:
    """GPU indices from nvidia-smi; none when it is missing or fails (then one CPU worker runs)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(line) for line in out.split() if line.strip().isdigit()]


def parse_gpus(spec: str) -> list[int]:
    if spec == "all":
        gpus = detect_gpus()
        if not gpus:
            raise ConfigError("--gpus all: nvidia-smi found no GPU (use --cpu for a CPU worker)")
        return gpus
    try:
        gpus = [int(part) for part in spec.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--gpus {spec!r}: expected 'all' or indices like 0,1") from None
    if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
        raise ConfigError(f"--gpus {spec!r}: expected distinct indices like 0,1")
    return gpus


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "comfyjobs", *args]


def _worker_stop_timeout_s(settings: Settings) -> float:
    # A warm shutdown lets the current job finish (waiting for ComfyUI included), then stops ComfyUI.
    registry = load_registry(settings.manifest_dir, settings.workflow_dir)
    return longest_job_s(settings, registry) + settings.comfyui_stop_timeout_s + 10


def _publish_catalog(settings: Settings, redis_url: str) -> None:
    """A single box runs what its folders hold: they are published and activated before anything starts
    (a publish of unchanged folders is the version already there)."""
    with opened(redis_url, settings.queue_name) as store:
        published = publish_folders(store, settings, activate=True)
    log.info("catalog %s active (from %s)", short(published.version), settings.manifest_dir)


def add_workers(sup: Supervisor, settings: Settings, env: dict[str, str], gpus: list[int] | None) -> None:
    stop_timeout_s = _worker_stop_timeout_s(settings)
    for gpu in gpus if gpus else [None]:
        args = ("worker", "--gpu", str(gpu)) if gpu is not None else ("worker", "--cpu")
        name = f"worker-gpu{gpu}" if gpu is not None else "worker-cpu"
        sup.add(name, _cli(*args), env, stop_timeout_s, backoff(settings))


def run_workers(settings: Settings, gpus: list[int]) -> int:
    sup = Supervisor()
    sup.install_signal_handlers()
    add_workers(sup, settings, dict(os.environ), gpus)
    requested = sup.wait()
    sup.stop_all()
    return exit_codes.OK if requested else exit_codes.CHILD_DIED


def run_up(settings: Settings, *, cpu: bool) -> int:
    host, port, data_dir = settings.api_host, settings.api_port, settings.data_dir
    env = dict(os.environ)
    env.update(DATA_DIR=str(data_dir), API_HOST=host, API_PORT=str(port))
    sup = Supervisor()
    sup.install_signal_handlers()
    try:
        if not settings.redis_url:  # unset or blank
            redis = RedisServer(port=settings.embedded_redis_port, data_dir=data_dir / "redis")
            # Not starting at all (its port taken...) ends `up` at once (exit 5), with Redis's own words.
            first = redis.spawn()
            redis.wait_ready()
            # Then supervised like the rest: killed, it is restarted on the same port and reloads its
            # append-only file; the API and the workers reconnect by themselves.
            sup.add_process(
                "redis",
                redis.spawn,
                redis.stop_timeout_s,
                backoff(settings, give_up_after=REDIS_GIVE_UP_AFTER),
                REDIS_NEEDED_BECAUSE,
                last_words=redis.last_words,
                started=first,
            )
            env["REDIS_URL"] = redis.url  # with its password: the children's environment is theirs alone
            log.info(
                "redis-server (pid %s) on %s, append-only in %s (password in %s)",
                redis.pid,
                redact_url(redis.url),
                data_dir / "redis",
                data_dir / "redis" / "password",
            )
        else:
            log.info("using the Redis at %s", redact_url(settings.redis_url))
        _publish_catalog(settings, settings.redis_url or env["REDIS_URL"])
        add_workers(sup, settings, env, None if cpu else detect_gpus())
        sup.add("api", _cli("api", "--host", host, "--port", str(port)), env, 30.0, backoff(settings))
        log.info("comfyjobs is starting on http://%s:%d (Ctrl-C stops everything)", host, port)
        requested = sup.wait()
    finally:
        # Redis last: the workers write their results to it until they stop.
        sup.stop_all(order=["api", "worker"])
    if not requested and sup.exited is not None:
        log.error("everything stopped: %s could not be kept running (see above)", sup.exited.name)
        return exit_codes.CHILD_DIED
    return exit_codes.OK
