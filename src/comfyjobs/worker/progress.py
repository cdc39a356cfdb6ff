"""A running job's progress: ComfyUI's events turned into progress on the record (at most every
PROGRESS_INTERVAL_S), preview frames into the job's preview, and the nodes' execution times measured."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from comfyjobs.comfy.client import ComfyEvent
from comfyjobs.errors import QueueUnavailableError
from comfyjobs.jobs.record import JobStatus, Progress
from comfyjobs.jobs.worker_store import JobStore
from comfyjobs.media.preview import as_jpeg

log = logging.getLogger(__name__)

PREVIEW_INTERVAL_S = 0.5  # about two preview frames a second reach the clients


class ProgressWriter:
    """Turns ComfyUI's events into progress on the record, and preview frames into the job's preview.

    Progress is written at most every ``interval_s`` (PROGRESS_INTERVAL_S), counted from the prompt's
    start: a fast graph's nodes (and a fast job whole, whose outcome carries its final progress) cost no
    write each.
    The latest progress is written at once when ComfyUI goes quiet (a long node), so it never lags."""

    def __init__(
        self,
        store: JobStore,
        task_id: str,
        expect: dict[str, Any],
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._store = store
        self._interval_s = interval_s
        self._task_id = task_id
        self._expect = expect
        self._progress = Progress()
        self._unwritten = False
        self._written_at = float("inf")  # nothing is due before the prompt starts
        self._preview_at = float("-inf")
        self.started_at: float | None = None  # monotonic: when ComfyUI began executing the prompt
        self._node: tuple[str, float] | None = None  # the node executing now (its class), since when
        self._node_times: list[tuple[str, float]] = []
        self._ended_at: float | None = None
        self._download_written_at = float("-inf")

    @property
    def last(self) -> Progress:
        return self._progress

    def stop(self) -> None:
        """ComfyUI is done with the prompt: its run time and its last node's time end here."""
        if self._ended_at is None:
            self._ended_at = self._clock()

    def _end(self) -> float:
        return self._clock() if self._ended_at is None else self._ended_at

    def run_s(self) -> float | None:
        """Seconds from ComfyUI's start of the prompt to its end (None: it never started)."""
        if self.started_at is None:
            return None
        return self._end() - self.started_at

    def node_times(self) -> list[tuple[str, float]]:
        """(node class, seconds) of each node ComfyUI executed."""
        if self._node is None:
            return list(self._node_times)
        node_type, since = self._node
        return [*self._node_times, (node_type, self._end() - since)]

    def downloading(self, done: int, total: int | None) -> None:
        """The job's models are being fetched: ``done`` bytes of ``total`` (of the file under way)."""
        now = self._clock()
        finished = total is not None and done >= total
        if not finished and now - self._download_written_at < self._interval_s:
            return
        self._download_written_at = now
        percent = round(100.0 * done / total, 1) if total else 0.0
        progress = Progress(stage="downloading", bytes_done=done, bytes_total=total, percent=percent)
        try:
            self._store.update(
                self._task_id, expect=self._expect, status=JobStatus.PROGRESS, progress=progress
            )
        except QueueUnavailableError as exc:
            log.warning("task %s: download progress not recorded: %s", self._task_id, exc)

    def __call__(self, event: ComfyEvent) -> None:
        try:
            self._write(event)
        except QueueUnavailableError as exc:  # progress is best effort; the job's outcome is not
            log.warning("task %s: progress not recorded: %s", self._task_id, exc)

    def _time_node(self, node_type: str | None) -> None:
        now = self._clock()
        if self._node is not None:
            self._node_times.append((self._node[0], now - self._node[1]))
        self._node = (node_type or "unknown", now)

    def _preview(self, event: ComfyEvent) -> None:
        now = self._clock()
        if event.image is None or now - self._preview_at < PREVIEW_INTERVAL_S:
            return
        self._preview_at = now
        try:
            jpeg = as_jpeg(event.image, event.image_type)
        except OSError as exc:
            log.warning("task %s: an unreadable preview frame was skipped: %s", self._task_id, exc)
            return
        self._store.publish_preview(self._task_id, jpeg)

    def _write(self, event: ComfyEvent) -> None:
        if event.kind == "preview":
            self._preview(event)
            return
        if event.kind == "started":
            self.started_at = self._written_at = self._clock()
            return
        if event.kind == "node":
            self._time_node(event.node_type)
            # Steps done so far stay: a decode after the sampler is not "0 %" again.
            self._progress = self._progress.model_copy(
                update={"node": event.node_id, "node_type": event.node_type}
            )
            self._unwritten = True
        elif event.kind == "progress":
            value, maximum = event.value or 0, event.max or 0
            percent = round(100.0 * value / maximum, 1) if maximum else 0.0
            self._progress = Progress(
                value=value, max=maximum, percent=percent, node=event.node_id, node_type=event.node_type
            )
            self._unwritten = True
        if self._unwritten and (
            event.kind == "quiet" or self._clock() - self._written_at >= self._interval_s
        ):
            self._store.update(
                self._task_id, expect=self._expect, status=JobStatus.PROGRESS, progress=self._progress
            )
            self._unwritten, self._written_at = False, self._clock()
