"""A running job's progress on its record, against a real Redis: written at most every interval (counted
from the prompt's start), at once when ComfyUI goes quiet, every event at interval 0, and never once the
job is no longer this attempt's."""

from __future__ import annotations

import uuid

import pytest

from comfyjobs.comfy.client import ComfyEvent
from comfyjobs.jobs.record import JobRecord, JobStatus, Progress
from comfyjobs.jobs.worker_store import Take
from comfyjobs.worker.progress import ProgressWriter
from tests.jobs.test_reconciler import Fixture

MINE = {"attempts": 1, "worker": "w-progress"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fx(redis_url: str) -> Fixture:
    return Fixture(redis_url)


def running_job(fx: Fixture) -> str:
    record = JobRecord(task_id="progress-" + uuid.uuid4().hex, workflow_id="tiny")
    fx.admit(record)
    task_id = str(fx.sync.take(Take("w-progress", 60)).task_id)
    assert fx.sync.update(task_id, status=JobStatus.STARTED, **MINE)
    return task_id


def step(value: int, maximum: int = 4) -> ComfyEvent:
    return ComfyEvent("progress", node_id="3", node_type="KSampler", value=value, max=maximum)


def recorded(fx: Fixture, task_id: str) -> Progress:
    record = fx.sync.get(task_id)
    assert record is not None
    return record.progress


def test_progress_is_written_at_most_once_an_interval(fx: Fixture) -> None:
    task_id, clock = running_job(fx), Clock()
    writer = ProgressWriter(fx.sync, task_id, MINE, interval_s=0.25, clock=clock)
    writer(ComfyEvent("started"))

    clock.now += 0.125
    writer(step(1))  # 0.125 s after the start: not yet
    assert recorded(fx, task_id) == Progress()
    assert fx.sync.get(task_id).status == JobStatus.STARTED  # type: ignore[union-attr]

    clock.now += 0.125
    writer(step(2))  # 0.25 s: due
    assert (recorded(fx, task_id).value, recorded(fx, task_id).percent) == (2, 50.0)
    assert fx.sync.get(task_id).status == JobStatus.PROGRESS  # type: ignore[union-attr]

    clock.now += 0.125
    writer(step(3))  # 0.125 s after that write: held back...
    assert recorded(fx, task_id).value == 2
    writer(ComfyEvent("quiet"))  # ...until ComfyUI goes quiet
    assert recorded(fx, task_id).value == 3

    clock.now += 0.5
    writer(ComfyEvent("node", node_id="8", node_type="VAEDecode"))
    # A node after the sampler keeps its steps: 100 % of the sampling, now decoding.
    assert recorded(fx, task_id) == Progress(value=3, max=4, percent=75.0, node="8", node_type="VAEDecode")


def test_interval_zero_writes_every_step(fx: Fixture) -> None:
    task_id, clock = running_job(fx), Clock()
    writer = ProgressWriter(fx.sync, task_id, MINE, interval_s=0, clock=clock)
    writer(ComfyEvent("started"))
    for value in (1, 2, 3, 4):
        writer(step(value))  # no time passes at all
        assert recorded(fx, task_id).value == value


def test_no_progress_is_written_once_the_job_is_not_this_attempts(fx: Fixture) -> None:
    task_id, clock = running_job(fx), Clock()
    writer = ProgressWriter(fx.sync, task_id, MINE, interval_s=0, clock=clock)
    writer(ComfyEvent("started"))
    writer(step(1))
    assert fx.sync.update(task_id, status=JobStatus.CANCELLED)

    writer(step(2))

    record = fx.sync.get(task_id)
    assert record is not None and record.status == JobStatus.CANCELLED and record.progress.value == 1


def test_run_and_node_times_end_with_the_prompt(fx: Fixture) -> None:
    task_id, clock = running_job(fx), Clock()
    writer = ProgressWriter(fx.sync, task_id, MINE, interval_s=0.25, clock=clock)
    assert writer.run_s() is None  # not started yet
    writer(ComfyEvent("started"))
    writer(ComfyEvent("node", node_id="3", node_type="KSampler"))
    clock.now += 2.0
    writer(ComfyEvent("node", node_id="8", node_type="VAEDecode"))
    clock.now += 0.5
    writer.stop()
    clock.now += 10.0  # storing the outputs is not ComfyUI's time

    assert writer.run_s() == 2.5
    assert writer.node_times() == [("KSampler", 2.0), ("VAEDecode", 0.5)]
