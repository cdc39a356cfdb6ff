"""Warm-up: WARMUP_WORKFLOW (with WARMUP_PARAMS) run on the worker's ComfyUI after it starts and after
every restart, before the worker takes a job, so the first user job does not pay for loading models.

Warmth is per ComfyUI process: a job is taken only once the ComfyUI running now (its pid) was warmed. The
warm-up starts when ComfyUI does (and after each restart); a job thread that finds the running ComfyUI
not warmed and nobody warming it runs the warm-up itself first. A failed warm-up is logged and reported in the
heartbeat (``warmup_error``), and the worker goes on taking jobs: a cold start beats no start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from comfyjobs.comfy.client import ComfyClient
from comfyjobs.comfy.process import ComfyProcess
from comfyjobs.errors import ComfyHungError, ComfyJobsError, ConfigError, InvalidParamsError
from comfyjobs.manifests.params import resolve_params, validate_params
from comfyjobs.manifests.patching import build_graph
from comfyjobs.manifests.registry import Registry

log = logging.getLogger(__name__)


class Warmup:
    def __init__(
        self,
        registry: Registry,
        workflow_id: str | None,
        params: Mapping[str, Any],
        list_models: Callable[[str], list[str] | None],
        time_limit_s: float,
        hang_timeout_s: float,
    ) -> None:
        """Checks the workflow and its parameters now (a ConfigError names what is wrong): a typo must
        stop the worker at start, not show up as a failed warm-up at every restart."""
        self._registry = registry
        self._workflow_id = workflow_id
        self._list_models = list_models
        self._time_limit_s = time_limit_s
        self._hang_timeout_s = hang_timeout_s
        self._changed = threading.Condition()
        self._warm_pid: int | None = None  # the ComfyUI process last warmed (or that failed to)
        self._warming_pid: int | None = None  # the one a warm-up was begun for
        self.error: str | None = None
        self.seconds: float | None = None
        if workflow_id is None:
            return
        if workflow_id not in registry.workflows:
            known = ", ".join(sorted(registry.workflows))
            raise ConfigError(f"WARMUP_WORKFLOW: no workflow {workflow_id!r} (known: {known})")
        workflow = registry.workflow(workflow_id)
        if workflow.media_parameters:
            names = ", ".join(p.name for p in workflow.media_parameters)
            raise ConfigError(
                f"WARMUP_WORKFLOW: {workflow_id} takes media ({names}); choose one that does not"
            )
        try:
            self._request = validate_params(workflow, params)
        except InvalidParamsError as exc:
            raise ConfigError(f"WARMUP_PARAMS: {exc.message}") from None

    @property
    def enabled(self) -> bool:
        return self._workflow_id is not None

    def run(self, client: ComfyClient, comfy: ComfyProcess) -> None:
        """Warms the running ComfyUI (blocking), unless it is warm or being warmed already: called when
        it starts and after each restart."""
        self._warm(client, comfy, wait_s=0.0)

    def ensure(self, client: ComfyClient, comfy: ComfyProcess, timeout_s: float) -> bool:
        """Before a job is taken: True once the running ComfyUI is warm (or its warm-up failed). Warms it
        here if nobody is doing it (a restart whose warm-up never began); waits up to ``timeout_s`` for
        one under way."""
        return self._warm(client, comfy, wait_s=timeout_s)

    def warming(self, comfy_pid: int | None) -> bool:
        """Whether jobs still wait for this ComfyUI's warm-up (for the heartbeat)."""
        with self._changed:
            return self._workflow_id is not None and self._warm_pid != comfy_pid

    def _warm(self, client: ComfyClient, comfy: ComfyProcess, wait_s: float) -> bool:
        pid = comfy.pid
        if self._workflow_id is None or self._warm_pid == pid:
            return True  # (each job asks: no lock once this ComfyUI is warm)
        with self._changed:
            if self._warm_pid == pid:
                return True
            mine = self._warming_pid != pid
            if mine:
                self._warming_pid = pid
            elif wait_s <= 0:
                return False
            else:
                return self._changed.wait_for(lambda: self._warm_pid == pid, wait_s)
        error, seconds = self._run_once(client, comfy)
        with self._changed:
            self.error, self.seconds, self._warm_pid = error, seconds, pid
            self._changed.notify_all()
        return True

    def _run_once(self, client: ComfyClient, comfy: ComfyProcess) -> tuple[str | None, float]:
        assert self._workflow_id is not None
        started = time.monotonic()
        error: str | None = None
        try:
            workflow = self._registry.workflow(self._workflow_id)
            params = resolve_params(workflow, self._request, self._list_models)
            graph = build_graph(workflow, params, self._registry.loras)
            client.run(
                graph,
                on_event=lambda _: None,
                timeout_s=workflow.time_limit_s or self._time_limit_s,
                is_alive=comfy.is_running,
                hang_timeout_s=self._hang_timeout_s,
            )
        except ComfyHungError as exc:
            error = exc.message
            comfy.kill()  # its supervisor starts another, which is warmed in turn
        except ComfyJobsError as exc:
            error = exc.message
        except Exception as exc:  # reported, never fatal: the worker takes jobs cold
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.monotonic() - started
        if error is None:
            log.info("warm-up (%s) done in %.1f s", self._workflow_id, seconds)
        else:
            log.error("warm-up (%s) failed after %.1f s: %s", self._workflow_id, seconds, error)
        return error, seconds
