"""The workers' store against a real Redis: a take that starts its job in the same step, a job's end in one
round trip (times, outcome, lease, its outputs' expiry, and the worker's next take), and its scripts still
run after Redis forgot them."""

from __future__ import annotations

import redis

from comfyjobs import keys
from comfyjobs.jobs.record import JobStatus
from comfyjobs.jobs.store import decode_events
from comfyjobs.jobs.worker_store import JobTimes, Start, Take
from tests.jobs.test_queue import Line


def started(line: Line, worker: str) -> str:
    task_id = line.add("alice")
    claimed = line.sync.take(Take(worker, 60))
    assert claimed is not None and claimed.task_id == task_id
    assert line.sync.update(task_id, status=JobStatus.STARTED, worker=worker, attempts=1)
    return task_id


def test_a_job_ends_with_its_times_its_outcome_and_its_lease_let_go(redis_url: str) -> None:
    line, client = Line(redis_url), redis.Redis.from_url(redis_url)
    task_id = started(line, "w1")
    run_times = keys.run_times(line.queue)
    client.script_flush()  # as after a restart: the scripts are loaded again as they are used

    mine = {"worker": "w1", "attempts": 1}
    times = JobTimes("tiny", 0.5, 0.25, [("EmptyImage", 0.1)])
    assert line.sync.finish(task_id, "w1", expect=mine, times=times, status=JobStatus.SUCCESS).written

    record = line.sync.get(task_id)
    assert record is not None and record.status == JobStatus.SUCCESS
    assert client.exists(keys.job_lease(task_id)) == 0
    assert float(client.hget(run_times, "tiny") or 0) == 0.25


def test_an_outcome_refused_still_lets_the_lease_go(redis_url: str) -> None:
    line, client = Line(redis_url), redis.Redis.from_url(redis_url)
    task_id = started(line, "w1")
    assert line.sync.update(task_id, status=JobStatus.CANCELLED)

    refused = line.sync.finish(task_id, "w1", expect={"worker": "w1"}, times=None, status=JobStatus.SUCCESS)
    assert not refused.written
    assert line.sync.get(task_id).status == JobStatus.CANCELLED  # type: ignore[union-attr]
    assert client.exists(keys.job_lease(task_id)) == 0


def test_a_worker_cannot_end_a_job_taken_over_by_another(redis_url: str) -> None:
    line, client = Line(redis_url), redis.Redis.from_url(redis_url)
    task_id = started(line, "w1")
    client.set(keys.job_lease(task_id), "w2")  # the job was taken back and given to w2
    assert line.sync.update(task_id, worker="w2", attempts=2)

    mine = {"worker": "w1", "attempts": 1}
    assert not line.sync.finish(task_id, "w1", expect=mine, times=None, status=JobStatus.FAILURE).written
    assert line.sync.get(task_id).status == JobStatus.STARTED  # type: ignore[union-attr]
    assert client.get(keys.job_lease(task_id)) == b"w2"  # not w1's to let go


def test_the_outputs_expiry_goes_with_the_start_then_the_end(redis_url: str) -> None:
    line, client = Line(redis_url), redis.Redis.from_url(redis_url)
    task_id = line.add("alice")
    assert line.sync.take(Take("w1", 60)) is not None
    prefix = f"outputs/{task_id}/"
    started = {"status": JobStatus.STARTED, "worker": "w1", "attempts": 1}
    assert line.sync.update(task_id, expire=(prefix, 5000.0), **started)  # the bound, as it starts
    assert client.zscore(keys.OBJECT_EXPIRY, prefix) == 5000.0
    assert not line.sync.update(task_id, expect={"attempts": 0}, expire=(prefix, 4000.0), **started)
    assert client.zscore(keys.OBJECT_EXPIRY, prefix) == 5000.0  # an update never brings it forward

    mine = {"worker": "w1", "attempts": 1}
    assert line.sync.finish(
        task_id, "w1", expect=mine, times=None, expire=(prefix, 4500.0), status=JobStatus.SUCCESS
    ).written
    assert client.zscore(keys.OBJECT_EXPIRY, prefix) == 4500.0  # the end sets it: OUTPUT_TTL_S from then


START = Start(max_attempts=3, outputs_prefix="outputs/%s/", outputs_expire_at=5000.0)


def test_a_take_can_start_its_job_in_the_same_step(redis_url: str) -> None:
    line, client = Line(redis_url), redis.Redis.from_url(redis_url)
    task_id = line.add("alice")
    client.script_flush()  # as after a restart

    claimed = line.sync.take(Take("w1", 60, start=START))
    assert claimed is not None and claimed.task_id == task_id and claimed.started
    assert claimed.record is not None and claimed.record.status == JobStatus.PENDING  # as it was taken
    assert claimed.record.attempts == 0
    record = line.sync.get(task_id)
    assert record is not None and record.status == JobStatus.STARTED
    assert (record.worker, record.attempts, record.error) == ("w1", 1, None)
    assert record.started_at is not None
    assert client.get(keys.job_lease(task_id)) == b"w1"
    assert client.zscore(keys.queue_running(line.queue), task_id) is not None
    assert client.zscore(keys.OBJECT_EXPIRY, f"outputs/{task_id}/") == 5000.0
    last = decode_events(client.xrange(keys.job_events(task_id)))[-1]  # what the SSE and the guard read
    assert last.changes["status"] == JobStatus.STARTED and last.changes["attempts"] == 1
    assert claimed.started_event == last.id  # (the guard reads from there on)
    assert line.positions([task_id]) == {task_id: None}  # out of line

    # Put back in line (its worker was lost), it starts again as the next attempt.
    assert line.sync.update(task_id, status=JobStatus.PENDING, worker=None)
    again = line.sync.take(Take("w2", 60, start=START))
    assert again is not None and again.started and again.record is not None and again.record.attempts == 1
    assert line.sync.get(task_id).attempts == 2  # type: ignore[union-attr]


def test_a_take_does_not_start_a_job_out_of_attempts_or_gone(redis_url: str) -> None:
    line, client = Line(redis_url), redis.Redis.from_url(redis_url)
    spent = line.add("alice")
    assert line.sync.update(spent, attempts=3)  # every attempt was cut short: the worker fails it
    claimed = line.sync.take(Take("w1", 60, start=START))
    assert claimed is not None and claimed.task_id == spent and not claimed.started
    assert claimed.started_event is None
    assert line.sync.get(spent).status == JobStatus.PENDING  # type: ignore[union-attr]
    assert client.zscore(keys.OBJECT_EXPIRY, f"outputs/{spent}/") is None

    gone = line.add("alice")
    client.delete(keys.job(gone))  # expired while it waited
    claimed = line.sync.take(Take("w1", 60, start=START))
    assert claimed is not None and claimed.task_id == gone and claimed.record is None and not claimed.started
    assert not client.exists(keys.job(gone))  # not brought back to life by the start


def test_a_finish_makes_the_next_take_in_its_round_trip(redis_url: str) -> None:
    line, client = Line(redis_url), redis.Redis.from_url(redis_url)
    task_id = started(line, "w1")
    following = line.add("bob")
    mine = {"worker": "w1", "attempts": 1}
    tickets = client.llen(line.messages.list_key)  # one per job admitted (the first one's is still there)

    going_on = Take("w1", 60, with_ticket=True, start=START)
    finished = line.sync.finish(
        task_id, "w1", expect=mine, times=None, then=going_on, status=JobStatus.SUCCESS
    )

    assert finished.written and finished.took
    assert client.llen(line.messages.list_key) == tickets - 1  # the take took a ticket with its job
    assert finished.taken is not None and finished.taken.task_id == following and finished.taken.started
    assert line.sync.get(task_id).status == JobStatus.SUCCESS  # type: ignore[union-attr]
    assert client.exists(keys.job_lease(task_id)) == 0  # the finished job's lease let go...
    assert client.get(keys.job_lease(following)) == b"w1"  # ...and the next one's taken
    assert line.sync.get(following).status == JobStatus.STARTED  # type: ignore[union-attr]

    # With nothing left in line, the take is made and finds nothing.
    empty = line.sync.finish(
        following, "w1", expect=mine, times=None, then=Take("w1", 60, start=START), status=JobStatus.SUCCESS
    )
    assert empty.written and empty.took and empty.taken is None


def test_a_finish_takes_even_when_redis_forgot_the_take_script(redis_url: str) -> None:
    line, client = Line(redis_url), redis.Redis.from_url(redis_url)
    task_id = started(line, "w1")
    following = line.add("bob")
    client.script_flush()  # as after a restart: the take, sent by its sha, is refused, then sent whole

    finished = line.sync.finish(
        task_id,
        "w1",
        expect={"worker": "w1", "attempts": 1},
        times=JobTimes("tiny", 0.5, 0.25, []),
        then=Take("w1", 60, start=START),
        status=JobStatus.SUCCESS,
    )

    assert finished.written and finished.took
    assert finished.taken is not None and finished.taken.task_id == following
    assert line.sync.get(task_id).status == JobStatus.SUCCESS  # type: ignore[union-attr]
    assert float(client.hget(keys.run_times(line.queue), "tiny") or 0) == 0.25  # counted once
