"""Warm-up: WARMUP_WORKFLOW (with WARMUP_PARAMS) run on the worker's ComfyUI after it starts and after
every restart, before the worker takes a job, so the first user job does not pay for loading models.

Warmth is per ComfyUI process: a job is taken only once the ComfyUI running now (its pid) was warmed, so
a job can never slip in between a restart and its warm-up. A failed warm-up is logged and reported in the
heartbeat (``warmup_error``), and the worker goes on taking jobs: a cold start beats no start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from comfyjobs.comfy.client import ComfyClient
from comfyjobs.errors import ComfyJobsError, ConfigError, InvalidParamsError
from comfyjobs.manifests.params import resolve_params, validate_params
from comfyjobs.manifests.patching import build_graph
from comfyjobs.manifests.registry import Registry

log = logging.getLogger(__name__)

WarmupState = Literal["warming", "warm", "failed"]


class Warmup:
    def __init__(
        self,
        registry: Registry,
        workflow_id: str | None,
        params: Mapping[str, Any],
        list_models: Callable[[str], list[str] | None],
        time_limit_s: float,
    ) -> None:
        """Checks the workflow and its parameters now (a ConfigError names what is wrong): a typo must
        stop the worker at start, not show up as a failed warm-up at every restart."""
        self._registry = registry
        self._workflow_id = workflow_id
        self._list_models = list_models
        self._time_limit_s = time_limit_s
        self._changed = threading.Condition()
        self._warm_pid: int | None = None  # the ComfyUI process last warmed (or that failed to)
        self.state: WarmupState | None = None  # None: no warm-up configured, or none run yet
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

    def run(self, client: ComfyClient, comfy_pid: int | None) -> None:
        """Warms the ComfyUI of ``comfy_pid`` (blocking); jobs wait for it meanwhile."""
        if self._workflow_id is None:
            return
        with self._changed:
            self.state = "warming"
        started = time.monotonic()
        error: str | None = None
        try:
            workflow = self._registry.workflow(self._workflow_id)
            params = resolve_params(workflow, self._request, self._list_models)
            graph = build_graph(workflow, params, self._registry.loras)
            client.run(graph, on_event=lambda _: None, timeout_s=self._time_limit_s)
        except ComfyJobsError as exc:
            error = exc.message
        except Exception as exc:  # reported, never fatal: the worker takes jobs cold
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.monotonic() - started
        if error is None:
            log.info("warm-up (%s) done in %.1f s", self._workflow_id, seconds)
        else:
            log.error("warm-up (%s) failed after %.1f s: %s", self._workflow_id, seconds, error)
        with self._changed:
            self.state = "warm" if error is None else "failed"
            self.error, self.seconds, self._warm_pid = error, seconds, comfy_pid
            self._changed.notify_all()

    def wait(self, comfy_pid: int | None, timeout_s: float) -> bool:
        """True once the ComfyUI of ``comfy_pid`` is warmed (or the warm-up failed, or there is none)."""
        if self._workflow_id is None:
            return True
        with self._changed:
            return self._changed.wait_for(lambda: self._warm_pid == comfy_pid, timeout_s)

    def warming(self, comfy_pid: int | None) -> bool:
        """Whether jobs still wait for this ComfyUI's warm-up (for the heartbeat)."""
        with self._changed:
            return self._workflow_id is not None and self._warm_pid != comfy_pid
