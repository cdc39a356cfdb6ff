"""`comfyjobs worker`: one Celery consumer that owns one ComfyUI process.

Start order: ComfyUI first (jobs are only taken once it answers), then the heartbeat and the ComfyUI
supervisor, then the Celery consumer. Stop order is the reverse, and it matters:
  1. Celery stops consuming; a warm shutdown (SIGTERM, Ctrl-C) lets the current job finish first.
  2. The heartbeat key is deleted, so `/ready` stops counting this worker.
  3. The supervisor is told to stop, so ComfyUI's exit in step 4 is not mistaken for a crash.
  4. ComfyUI is closed (no restart can follow) and its process group stopped (SIGTERM, then SIGKILL)
     and waited for: nothing is left behind.
If the worker itself is killed outright, the kernel kills ComfyUI (PR_SET_PDEATHSIG, see procs.spawn).
The Celery pool is `solo`: the job runs in this process, the one that owns ComfyUI.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType

import redis
from celery import signals as celery_signals

from comfyjobs.backoff import DEFAULT_DELAYS_S, Backoff, capped
from comfyjobs.catalog.publishing import ensure_active
from comfyjobs.catalog.registries import Versioned
from comfyjobs.catalog.store import CatalogStore
from comfyjobs.comfy.client import ComfyClient
from comfyjobs.comfy.feed import PromptFeed
from comfyjobs.comfy.output_files import ComfyOutputFiles, keeps_older_results
from comfyjobs.comfy.process import ComfyInstance, ComfyProcess, default_python
from comfyjobs.errors import ComfyError, ManifestError
from comfyjobs.heartbeat import DeviceMemory, Heartbeat, WorkerBeat, devices_of
from comfyjobs.jobs.delivery import PIPELINE_DEPTH, JobMessages, make_celery
from comfyjobs.jobs.record import utc_now
from comfyjobs.jobs.worker_store import JobStore
from comfyjobs.provision.model_cache import ModelCache
from comfyjobs.provision.model_refs import ModelUrls
from comfyjobs.settings import Settings
from comfyjobs.storage.models import folders_stamp, list_model_folder
from comfyjobs.storage.objects import open_object_store
from comfyjobs.storage.outputs import OutputSaver
from comfyjobs.worker import tasks
from comfyjobs.worker.availability import AvailabilityMonitor
from comfyjobs.worker.catalog import WorkerCatalog
from comfyjobs.worker.job_guard import Guards
from comfyjobs.worker.on_demand import OnDemandModels
from comfyjobs.worker.parking import ArrivalsListener, Parking
from comfyjobs.worker.runner import LoadedModels, WorkerContext
from comfyjobs.worker.warmup import Warmup

log = logging.getLogger(__name__)


def device_name(gpu: int | None) -> str:
    return "cpu" if gpu is None else f"gpu{gpu}"


class ComfySupervisor:
    """Restarts ComfyUI when it exits on its own. Runs in a thread that lives as long as the worker, which
    is also the thread that spawns the restarted process (PR_SET_PDEATHSIG is per spawning thread)."""

    def __init__(self, comfy: ComfyProcess, on_restart: Callable[[], None], backoff: Backoff) -> None:
        self._comfy = comfy
        self._on_restart = on_restart
        self._backoff = backoff  # never gives up: a worker without its ComfyUI keeps trying
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="comfyui-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def join(self, timeout_s: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        self._backoff.started()
        while True:
            self._comfy.wait_exit()
            if self._stopping.is_set():
                return
            delay = self._backoff.next_delay() or 0.0
            log.error("ComfyUI exited unexpectedly; restarting in %.0f s.\n%s", delay, self._comfy.log_tail())
            if self._stopping.wait(delay):
                return
            try:
                self._comfy.start()
                self._backoff.started()
                self._comfy.wait_ready()
                log.info("ComfyUI restarted (pid %s)", self._comfy.pid)
                self._on_restart()
            except Exception as exc:  # this thread must outlive any one failed restart
                log.error("ComfyUI restart failed: %s", exc)


SYSTEM_STATS_TIMEOUT_S = 2.0  # a heartbeat does not wait longer for ComfyUI's device figures


def system_devices(client: ComfyClient) -> list[DeviceMemory]:
    """Its ComfyUI's devices and their memory, for the heartbeat (none when it does not answer)."""
    try:
        return devices_of(client.system_stats(timeout_s=SYSTEM_STATS_TIMEOUT_S))
    except ComfyError:
        return []


def preview_args(settings: Settings) -> tuple[str, ...]:
    """ComfyUI's --preview-method: with it, ComfyUI sends preview frames while sampling."""
    if settings.comfyui_preview_method == "none":
        return ()
    return ("--preview-method", settings.comfyui_preview_method)


def _exit_on_signal(signum: int, _: FrameType | None) -> None:
    raise SystemExit(128 + signum)


CATALOG_WAIT_LOG_S = 30.0  # a worker waiting for the first published catalog says so this often


def wait_for_catalog(catalog: WorkerCatalog, settings: Settings, client: redis.Redis) -> Versioned:
    """The active catalog version: jobs are built from the versions they record, but the warm-up, the
    capability checks and the time limits need one. With none active yet, this machine's folders are
    published and activated, as the API does (a single box needs no extra step); if they do not pass
    `comfyjobs check`, it waits for a publish."""
    try:
        ensure_active(CatalogStore(client, settings.queue_name), settings)
    except ManifestError as exc:
        log.warning("no catalog is active, and this machine's manifests cannot be published: %s", exc)
    while True:
        found = catalog.wait_active(CATALOG_WAIT_LOG_S)
        if found is not None:
            return found
        log.warning("waiting for a catalog to be published and activated (`comfyjobs catalog publish`)")


def run_worker(settings: Settings, gpu: int | None) -> int:
    """Runs until a shutdown signal; returns the process exit code."""
    redis_client = redis.Redis.from_url(settings.require_redis_url(), health_check_interval=30)
    catalog = WorkerCatalog(redis_client, settings.queue_name, settings.catalog_keep)
    catalog.start()
    device = device_name(gpu)
    worker_id = f"{device}.{os.getpid()}@{socket.gethostname()}"
    instance = ComfyInstance(
        comfyui_dir=settings.comfyui_dir,
        python=settings.comfyui_python or default_python(),
        port=settings.comfyui_base_port + (gpu or 0),
        instance_dir=settings.comfy_instances_dir / device,
        model_dir=settings.model_dir,
        shared_model_dir=settings.models_shared_dir,
        gpu=gpu,
        extra_args=preview_args(settings) + tuple(settings.comfyui_extra_args.split()),
    )
    objects = open_object_store(settings)
    comfy = ComfyProcess(
        instance,
        start_timeout_s=settings.comfyui_start_timeout_s,
        stop_timeout_s=settings.comfyui_stop_timeout_s,
    )
    started_at = utc_now()
    client = ComfyClient(comfy.base_url)
    warm_client = ComfyClient(comfy.base_url)
    control = ComfyClient(comfy.base_url)  # the guards' (cancelling prompts the job threads wait on)
    feed = PromptFeed(client.ws_url)  # one websocket for the job threads' prompts
    guards: Guards | None = None
    parking = Parking()
    model_urls = ModelUrls.from_settings(settings)
    on_demand = OnDemandModels(
        ModelCache(settings.model_cache_root, settings.model_cache_max_bytes, model_urls.download),
        model_urls,
        settings.model_dir,
        settings.models_shared_dir,
        on_fetched=lambda: availability.invalidate(),
    )
    availability = AvailabilityMonitor(
        catalog,
        settings.labels,
        client,
        redis_client,
        parking.wake,
        fetchable=on_demand.fetchable,
        on_checked=lambda: on_demand.look(catalog.active().registry.workflows.values()),
    )
    arrivals = ArrivalsListener(
        redis_client, settings.queue_name, lambda: availability.capabilities.runs, parking
    )
    models = LoadedModels()
    stopping = threading.Event()
    jobs_here: list[Guards] = []  # (its jobs' guards, once Redis and Celery are set up below)

    def beat() -> WorkerBeat:
        ready = comfy.is_ready()
        folders = {
            folder: list_model_folder(settings.model_dir, folder)
            for folder in sorted(catalog.active().registry.model_folders)
        }
        stamp = folders_stamp(settings.model_dir, settings.models_shared_dir)
        # What asks ComfyUI first, so that the beat's time (and expiry) is taken when it is written.
        workflows = availability.current(comfy_ready=ready, folders=stamp)
        devices = system_devices(client) if ready else []
        return WorkerBeat(
            worker_id=worker_id,
            device=device,
            pid=os.getpid(),
            comfyui_ready=ready,
            comfyui_pid=comfy.pid,
            comfyui_restarts=max(comfy.restarts, 0),
            started_at=started_at,
            workflows=workflows,
            models=folders,
            object_info=availability.object_info_digest,
            runs=sorted(availability.capabilities.runs),
            cannot=availability.capabilities.cannot,
            labels=sorted(settings.labels),
            queue=settings.queue_name,
            loaded_models=sorted(models.current()),
            model_loads=models.loads,
            state="starting" if not ready else "warming" if warmup.warming(comfy.pid) else "ready",
            warmup_error=warmup.error,
            warmup_s=warmup.seconds,
            devices=devices,
            jobs_ended=jobs_here[0].ended if jobs_here else 0,
            running=jobs_here[0].running() if jobs_here else [],
            seen_at=utc_now(),
        )

    heartbeat = Heartbeat(redis_client, settings.worker_heartbeat_s, beat)

    def restarted() -> None:
        availability.invalidate()
        models.forget()
        warmup.run(warm_client, comfy)  # (this supervisor thread; jobs wait for it)

    supervisor = ComfySupervisor(
        comfy,
        on_restart=restarted,
        backoff=Backoff(capped(DEFAULT_DELAYS_S, settings.restart_backoff_max_s)),
    )
    # Until Celery installs its own handlers, a SIGTERM unwinds through the `finally` below (stopping
    # ComfyUI) instead of killing the process where it stands.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        t0 = time.monotonic()
        comfy.start()
        comfy.wait_ready()
        log.info("ComfyUI ready on %s after %.1f s", comfy.base_url, time.monotonic() - t0)
        registry = wait_for_catalog(catalog, settings, redis_client).registry
        warmup = Warmup(  # the version active now (a wrong setting stops the worker here)
            registry,
            settings.warmup_workflow,
            settings.warmup_params,
            lambda folder: list_model_folder(settings.model_dir, folder),
            settings.job_time_limit_s,
            settings.comfyui_hang_timeout_s,
        )
        availability.refresh()

        # Another active version: checked now, in the watch's thread (its jobs may already wait).
        def switched(_: Versioned) -> None:
            if comfy.is_ready():
                availability.refresh()
            else:
                availability.invalidate()

        catalog.on_switch(switched)
        arrivals.start()
        supervisor.start()
        app = make_celery(settings, registry)
        messages = JobMessages(app, settings.queue_name)
        local = threading.local()

        def thread_client() -> ComfyClient:
            made: ComfyClient | None = getattr(local, "client", None)
            if made is None:
                made = local.client = ComfyClient(comfy.base_url, feed=feed)
            return made

        store = JobStore(redis_client, settings.job_ttl_s, settings.queue_name, messages)
        adopted = store.adopt_earlier_jobs()
        if adopted:
            log.info("%d waiting job(s) of an earlier version put in their class lanes", adopted)
        guards = Guards(store, worker_id, settings.job_lease_s, lambda ids: control.cancel(*ids))
        guards.start()
        jobs_here.append(guards)

        tasks.bind_context(
            WorkerContext(
                settings=settings,
                worker_id=worker_id,
                catalog=catalog,
                store=store,
                comfy=comfy,
                thread_client=thread_client,
                models=models,
                objects=objects,
                outputs=OutputSaver(objects, instance.temp_dir / "comfyjobs-outputs"),
                comfy_files=ComfyOutputFiles(
                    instance.output_folders,
                    lambda: comfy.restarts,
                    enabled=not keeps_older_results(instance.extra_args),
                ),
                guards=guards,
                warmup=warmup,
                stopping=stopping,
                parking=parking,
                runs=lambda: availability.capabilities.runs,
                on_demand=on_demand,
            )
        )
        tasks.register(app)

        # Announce readiness only once the consumer is up, so `/ready` means "jobs are being taken".
        def consuming(**_: object) -> None:
            heartbeat.start()
            if warmup.enabled:  # jobs are taken once it is done; the heartbeat says "warming" meanwhile
                threading.Thread(target=warmup.run, args=(warm_client, comfy), name="warmup").start()

        celery_signals.worker_ready.connect(consuming, weak=False)

        # A warm shutdown lets the running jobs finish; their threads take no next job.
        def shutting_down(**_: object) -> None:
            stopping.set()
            parking.wake()  # (parked threads end too)

        celery_signals.worker_shutting_down.connect(shutting_down, weak=False)
        worker = app.Worker(
            hostname=worker_id,
            pool="threads",  # PIPELINE_DEPTH jobs: one runs in ComfyUI while the next waits queued there
            concurrency=PIPELINE_DEPTH,
            queues=[settings.queue_name],
            loglevel=settings.log_level,
            without_gossip=True,
            without_mingle=True,
            optimization="fair",
        )
        worker.start()
        return int(worker.exitcode or 0)
    finally:
        heartbeat.stop()
        if guards is not None:
            guards.stop()
            guards.join(settings.comfyui_stop_timeout_s)
        supervisor.stop()
        comfy.close()
        supervisor.join(settings.comfyui_stop_timeout_s)
        client.close()
        warm_client.close()
        control.close()
        feed.close()
        arrivals.stop()
        arrivals.join(settings.comfyui_stop_timeout_s)
        catalog.stop()
        catalog.join(settings.comfyui_stop_timeout_s)
        redis_client.close()
