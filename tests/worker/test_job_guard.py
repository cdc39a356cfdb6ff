"""The worker's job guards against a real Redis: a cancelled job's prompt is stopped, a lost lease stops
it too, a running job's lease is kept alive, and a finished job's lease is released."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from typing import Any, cast

import pytest
import redis

from comfyjobs import keys
from comfyjobs.jobs.record import JobRecord, JobStatus
from comfyjobs.jobs.store import EventId
from comfyjobs.jobs.worker_store import JobStore, Start, Take
from comfyjobs.worker.job_guard import Guards
from tests.jobs.test_reconciler import Fixture
from tests.support import wait_for


class Prompts:
    """The guards' way to stop a prompt in ComfyUI, recorded."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []
        self.calls: list[list[str]] = []
        self.changed = threading.Event()

    def cancel(self, prompt_ids: list[str]) -> None:
        self.cancelled += prompt_ids
        self.calls.append(list(prompt_ids))
        self.changed.set()


@pytest.fixture
def fx(redis_url: str) -> Fixture:
    return Fixture(redis_url)


@pytest.fixture
def prompts() -> Prompts:
    return Prompts()


@pytest.fixture
def guards(fx: Fixture, prompts: Prompts) -> Iterator[Guards]:
    watcher = Guards(fx.sync, "w-test", lease_s=0.9, cancel_prompts=prompts.cancel)  # reads of 0.3 s
    watcher.start()
    yield watcher
    watcher.stop()
    watcher.join(5)


def running_job(fx: Fixture) -> str:
    record = JobRecord(task_id="guarded-" + uuid.uuid4().hex, workflow_id="tiny")
    fx.admit(record)
    task_id = fx.sync.take(Take("w-test", 0.9)).task_id
    assert task_id == record.task_id
    assert fx.sync.update(task_id, status=JobStatus.STARTED, worker="w-test", attempts=1)
    return task_id


def test_a_cancelled_job_has_its_prompt_stopped(fx: Fixture, guards: Guards, prompts: Prompts) -> None:
    others = [running_job(fx) for _ in range(2)]  # one watcher reads every job's stream
    task_id = running_job(fx)
    with guards.guard(others[0]), guards.guard(task_id) as guard, guards.guard(others[1]):
        assert guard.submitting("prompt-1")
        guard.submitted("prompt-1")
        assert fx.run(lambda store, _: store.cancel(task_id))
        assert prompts.changed.wait(10)
        assert prompts.cancelled == ["prompt-1"]
        assert guard.stopped == "cancelled"


def test_a_guard_from_its_jobs_start_sees_a_later_cancel(
    fx: Fixture, guards: Guards, prompts: Prompts
) -> None:
    """A job started by its take is guarded from the take's STARTED event on, not from its first."""
    fx.admit(JobRecord(task_id="guarded-" + uuid.uuid4().hex, workflow_id="tiny"))
    claimed = fx.sync.take(Take("w-test", 0.9, start=Start(3, "outputs/%s/", 5000.0)))
    assert claimed is not None and claimed.started_event is not None
    with guards.guard(claimed.task_id, after=claimed.started_event) as guard:
        assert guard.submitting("prompt-1")
        guard.submitted("prompt-1")
        assert fx.run(lambda store, _: store.cancel(claimed.task_id))
        assert prompts.changed.wait(10)
        assert prompts.cancelled == ["prompt-1"]


def test_a_job_cancelled_before_its_prompt_was_sent_never_sends_it(
    fx: Fixture, guards: Guards, prompts: Prompts
) -> None:
    task_id = running_job(fx)
    assert fx.run(lambda store, _: store.cancel(task_id))  # before the guard even started
    with guards.guard(task_id) as guard:
        wait_for(lambda: guard.stopped, timeout_s=10, what="the guard to see the cancellation")
        assert not guard.submitting("prompt-2")  # refused: ComfyUI never gets it
    assert prompts.cancelled == []


def test_a_prompt_being_sent_is_deleted_before_a_later_cancel_interrupts_another(
    fx: Fixture, guards: Guards, prompts: Prompts
) -> None:
    # The queued job is cancelled while its POST is under way, then the running one: the queued
    # prompt's delete must not go before its POST is over, and the running one's interrupt (which would
    # let ComfyUI start the next prompt) not before that delete.
    running, queued = running_job(fx), running_job(fx)
    with guards.guard(running) as first, guards.guard(queued) as second:
        assert first.submitting("prompt-running")
        first.submitted("prompt-running")
        assert second.submitting("prompt-queued")  # its POST is under way from here
        assert fx.run(lambda store, _: store.cancel(queued))
        wait_for(lambda: second.stopped, timeout_s=10, what="the guard to see the first cancellation")
        assert fx.run(lambda store, _: store.cancel(running))
        wait_for(lambda: first.stopped, timeout_s=10, what="the guard to see the second cancellation")
        assert prompts.cancelled == []  # both wait for the POST under way
        second.submitted("prompt-queued")
        wait_for(lambda: len(prompts.cancelled) == 2, timeout_s=10, what="both prompts cancelled")
        assert prompts.calls[0][0] == "prompt-queued"  # deleted first (a call deletes all, then interrupts)


def test_jobs_cancelled_together_have_their_prompts_cancelled_in_one_call(
    fx: Fixture, prompts: Prompts
) -> None:
    # One call: ComfyUI gets every delete before any interrupt, so the running prompt's interrupt cannot
    # let it start a queued one that is being cancelled too.
    running, queued = running_job(fx), running_job(fx)
    watcher = Guards(fx.sync, "w-test", lease_s=0.9, cancel_prompts=prompts.cancel)
    try:
        with watcher.guard(running) as first, watcher.guard(queued) as second:
            for guard, prompt_id in ((first, "prompt-running"), (second, "prompt-queued")):
                assert guard.submitting(prompt_id)
                guard.submitted(prompt_id)
            assert fx.run(lambda store, _: store.cancel(running))
            assert fx.run(lambda store, _: store.cancel(queued))
            watcher.start()  # its first read sees both
            assert prompts.changed.wait(10)
            assert sorted(prompts.calls[0]) == ["prompt-queued", "prompt-running"]
    finally:
        watcher.stop()
        watcher.join(5)


class ReadHook:
    """The guards' store, with something done once as a blocking read begins over these tasks only."""

    def __init__(self, store: JobStore, tasks: set[str], hook: Callable[[], None]) -> None:
        self._store, self._tasks, self._hook = store, tasks, hook
        self.hooked = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def read_events_of(self, cursors: Mapping[str, EventId], block_s: float | None) -> Any:
        if block_s is not None and set(cursors) == self._tasks and not self.hooked.is_set():
            self._hook()
            self.hooked.set()
        return self._store.read_events_of(cursors, block_s)


def test_a_job_guarded_during_a_read_and_cancelled_first_is_deleted_in_the_same_call(
    fx: Fixture, prompts: Prompts
) -> None:
    # The worker queues its next job in ComfyUI (a guard entered while the watcher's read is under way,
    # over the running job's stream only); the client cancels that job, then the running one. The read
    # returns with the running job's cancel alone: the other's must be in the same call (deleted before
    # the interrupt), or ComfyUI starts it when the running prompt is interrupted.
    running, queued = running_job(fx), running_job(fx)
    with ExitStack() as stack:

        def next_job_queued_then_both_cancelled() -> None:
            second = stack.enter_context(watcher.guard(queued))
            assert second.submitting("prompt-queued")
            second.submitted("prompt-queued")
            assert fx.run(lambda store, _: store.cancel(queued))
            assert fx.run(lambda store, _: store.cancel(running))

        store = ReadHook(fx.sync, {running}, next_job_queued_then_both_cancelled)
        watcher = Guards(cast(JobStore, store), "w-test", lease_s=0.9, cancel_prompts=prompts.cancel)
        stack.callback(watcher.join, 5)
        stack.callback(watcher.stop)
        first = stack.enter_context(watcher.guard(running))
        assert first.submitting("prompt-running")
        first.submitted("prompt-running")
        watcher.start()
        assert prompts.changed.wait(10)
        assert store.hooked.is_set()
        assert sorted(prompts.calls[0]) == ["prompt-queued", "prompt-running"]


def test_a_lost_lease_stops_the_prompt(
    fx: Fixture, guards: Guards, prompts: Prompts, redis_client: redis.Redis
) -> None:
    task_id = running_job(fx)
    with guards.guard(task_id) as guard:
        assert guard.submitting("prompt-3")
        guard.submitted("prompt-3")
        redis_client.set(keys.job_lease(task_id), "another-worker")  # taken back and given elsewhere
        assert prompts.changed.wait(10)
        assert (guard.stopped, prompts.cancelled) == ("lease lost", ["prompt-3"])


def test_a_running_jobs_lease_is_renewed_and_released_at_the_end(
    fx: Fixture, guards: Guards, prompts: Prompts, redis_client: redis.Redis
) -> None:
    task_id = running_job(fx)
    lease = keys.job_lease(task_id)
    with guards.guard(task_id) as guard:
        seen = {"low": int(redis_client.pttl(lease))}

        def renewed() -> bool:  # its time to live went up again: renewed, not left to lapse
            ttl = int(redis_client.pttl(lease))
            went_up, seen["low"] = ttl > seen["low"], ttl
            return went_up

        for _ in range(3):  # longer than the lease's own length, in all
            wait_for(renewed, timeout_s=10, what="the lease to be renewed", interval_s=0.02)
        assert redis_client.get(lease) == b"w-test"
        assert guard.stopped is None
    assert redis_client.exists(lease) == 0
    assert prompts.cancelled == []
