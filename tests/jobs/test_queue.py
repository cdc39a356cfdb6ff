"""The one queue against a real Redis: priorities, tenants taking turns, positions that match the order
jobs are really taken in, and a job cancelled in line never taken."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

import redis
import redis.asyncio as aioredis

from comfyjobs import keys
from comfyjobs.jobs.delivery import RUN_JOB_TASK, JobMessages, make_celery
from comfyjobs.jobs.queue import Affinity
from comfyjobs.jobs.record import JobRecord, JobStatus, utc_now
from comfyjobs.jobs.store import AsyncJobStore
from comfyjobs.jobs.worker_store import Blocked, Claimed, JobStore, Take
from comfyjobs.manifests.loader import load_registry
from comfyjobs.settings import Settings
from tests.conftest import REPO

T = TypeVar("T")


class Line:
    def __init__(self, redis_url: str) -> None:
        self.queue = f"line-{uuid.uuid4().hex[:8]}"
        settings = Settings.load(redis_url=redis_url, queue_name=self.queue)
        registry = load_registry(REPO / "manifests", REPO / "workflows")
        self.messages = JobMessages(make_celery(settings, registry), self.queue)
        self.sync = JobStore(redis.Redis.from_url(redis_url), 3600, self.queue, self.messages)
        self.redis_url = redis_url

    def run(self, work: Callable[[AsyncJobStore], Awaitable[T]]) -> T:
        async def main() -> T:
            client = aioredis.Redis.from_url(self.redis_url)
            try:
                return await work(AsyncJobStore(client, 3600, self.queue, self.messages))
            finally:
                await client.aclose()

        return asyncio.run(main())

    def add(
        self,
        tenant: str,
        priority: int = 5,
        models: tuple[str, ...] = (),
        age_s: float = 0,
        workflow_id: str = "tiny",
        version: str | None = None,
    ) -> str:
        record = JobRecord(
            task_id=f"{tenant}-{uuid.uuid4().hex[:12]}", workflow_id=workflow_id, tenant=tenant,
            priority=priority, models=list(models), created_at=utc_now() - timedelta(seconds=age_s),
            catalog_version=version,
        )  # fmt: skip
        assert self.run(lambda store: store.admit(record)).outcome == "created"
        return record.task_id

    def positions(self, task_ids: list[str]) -> dict[str, int | None]:
        async def read(store: AsyncJobStore) -> dict[str, int | None]:
            return {t: (await store.place(t)).position for t in task_ids}

        return self.run(read)

    def take_all(self, runs: frozenset[str] | None = None) -> list[str]:
        taken = []
        while isinstance(claimed := self.sync.take(Take("w1", 60, runs=runs)), Claimed):
            assert claimed.record is not None and claimed.record.task_id == claimed.task_id
            taken.append(claimed.task_id)
        return taken


def test_a_higher_priority_job_is_taken_first_and_counted_so(redis_url: str) -> None:
    line = Line(redis_url)
    low = [line.add("alice", priority=0) for _ in range(20)]
    urgent = line.add("alice", priority=9)

    assert line.positions([urgent, low[0], low[-1]]) == {urgent: 1, low[0]: 2, low[-1]: 21}
    assert line.take_all() == [urgent, *low]  # FIFO within a priority


def test_tenants_take_turns(redis_url: str) -> None:
    line = Line(redis_url)
    flood = [line.add("alice") for _ in range(10)]
    single = line.add("bob")

    assert line.positions([single])[single] == 2  # one job per taker ahead of it, not ten
    taken = line.take_all()
    assert taken[:3] == [flood[0], single, flood[1]]
    assert taken[3:] == flood[2:]


def test_positions_match_the_order_jobs_are_taken_in(redis_url: str) -> None:
    line = Line(redis_url)
    rng = random.Random(7)
    jobs = [line.add(rng.choice(["a", "b", "c"]), priority=rng.choice([0, 5, 5, 9])) for _ in range(40)]
    one = line.sync.take(Take("w0", 60))  # the turns have moved once
    assert one is not None
    waiting = [t for t in jobs if t != one.task_id]

    positions = line.positions(waiting)
    taken = line.take_all()

    assert sorted(positions.values()) == list(range(1, len(waiting) + 1))  # each place once
    assert taken == sorted(waiting, key=lambda t: positions[t] or 0)
    assert line.positions(waiting) == dict.fromkeys(waiting)  # none in line any more


def test_a_job_cancelled_in_line_is_never_taken(redis_url: str) -> None:
    line = Line(redis_url)
    first, cancelled, last = line.add("alice"), line.add("bob"), line.add("alice")
    assert line.sync.update(cancelled, status=JobStatus.CANCELLED)

    assert line.positions([last])[last] == 2
    assert line.take_all() == [first, last]
    # The depths agree: nothing is counted that is not in a lane.
    depths = redis.Redis.from_url(line.redis_url).hgetall(keys.queue_prefix(line.queue) + "depths")
    assert {int(v) for v in depths.values()} <= {0}


def take(line: Line, loaded: str, max_skip: int = 4, max_wait_s: float = 600) -> str | None:
    claimed = line.sync.take(Take("w1", 60, affinity=Affinity(frozenset({loaded}), max_skip, max_wait_s)))
    return claimed.task_id if claimed else None


def test_a_worker_prefers_jobs_using_the_model_it_has_loaded(redis_url: str) -> None:
    line = Line(redis_url)
    a1 = line.add("alice", models=("a.safetensors",))
    b1 = line.add("alice", models=("b.safetensors",))
    a2 = line.add("alice", models=("a.safetensors",))
    other = line.add("bob", models=("a.safetensors",))

    assert take(line, "b.safetensors") == b1  # overtakes a1, and bob's head
    assert line.sync.get(a1).skips == 1  # type: ignore[union-attr]
    assert line.sync.get(other).skips == 1  # type: ignore[union-attr]
    # Alice used her turn: bob's is next, then alice's in order.
    assert [take(line, "a.safetensors") for _ in range(3)] == [other, a1, a2]


def test_an_overtaken_job_runs_within_its_bound(redis_url: str) -> None:
    line = Line(redis_url)
    due = line.add("alice", models=("a.safetensors",))
    affine = [line.add("alice", models=("b.safetensors",)) for _ in range(3)]

    assert take(line, "b.safetensors", max_skip=1) == affine[0]
    assert take(line, "b.safetensors", max_skip=1) == due  # overtaken once: no more
    assert line.take_all() == affine[1:]


def test_a_job_waiting_past_the_bound_is_not_overtaken(redis_url: str) -> None:
    line = Line(redis_url)
    old = line.add("alice", models=("a.safetensors",), age_s=120)
    line.add("alice", models=("b.safetensors",))

    assert take(line, "b.safetensors", max_wait_s=60) == old


def test_a_model_on_disk_is_cheaper_than_one_to_download(redis_url: str) -> None:
    line = Line(redis_url)
    fetch = line.add("alice", models=("on-demand/1111-far.safetensors",))
    listed = line.add("alice", models=("listed.safetensors",))
    cached = line.add("bob", models=("on-demand/2222-near.safetensors",))
    plain = line.add("carol", models=("plain.safetensors",))
    here = Affinity(
        frozenset(), 4, 600,
        on_disk=frozenset({"on-demand/2222-near.safetensors"}), lacking=frozenset({"listed.safetensors"}),
    )  # fmt: skip

    # Nothing loaded: the job whose download is on disk overtakes the one that needs a download.
    claimed = line.sync.take(Take("w1", 60, affinity=here))
    assert claimed is not None and claimed.task_id == cached
    assert line.sync.get(fetch).skips == 1  # type: ignore[union-attr]
    # Then alice's next (a listed model this worker lacks) yields to carol's, read from disk.
    claimed = line.sync.take(Take("w1", 60, affinity=here))
    assert claimed is not None and claimed.task_id == plain
    # Only downloads are left: in order.
    assert line.take_all() == [fetch, listed]


def test_a_loaded_model_is_cheaper_than_one_on_disk(redis_url: str) -> None:
    line = Line(redis_url)
    on_disk = line.add("alice", models=("on-demand/2222-near.safetensors",))
    loaded = line.add("bob", models=("a.safetensors",))
    near = frozenset({"on-demand/2222-near.safetensors"})
    here = Affinity(frozenset({"a.safetensors"}), 4, 600, on_disk=near)

    claimed = line.sync.take(Take("w1", 60, affinity=here))
    assert claimed is not None and claimed.task_id == loaded
    assert line.take_all() == [on_disk]


def test_a_worker_that_downloads_nothing_takes_in_order(redis_url: str) -> None:
    line = Line(redis_url)
    jobs = [line.add(t, models=(m,)) for t, m in [("alice", "a.safetensors"), ("bob", "b.safetensors")]]
    claimed = line.sync.take(Take("w1", 60, affinity=Affinity(frozenset(), 4, 600)))
    assert claimed is not None and claimed.task_id == jobs[0]  # both read from disk: no reason to skip


def test_a_take_without_a_ticket_removes_one_from_the_list(redis_url: str) -> None:
    line = Line(redis_url)
    client = redis.Redis.from_url(line.redis_url)
    jobs = [line.add("alice") for _ in range(3)]
    assert client.llen(line.messages.list_key) == 3  # one ticket per job put in line

    # A worker holding a ticket takes with it; going on to the next job, it takes one of the line's.
    assert line.sync.take(Take("w1", 60)) is not None
    assert client.llen(line.messages.list_key) == 3
    assert line.sync.take(Take("w1", 60, with_ticket=True)) is not None
    assert client.llen(line.messages.list_key) == 2

    # A message that is not a ticket (an earlier version's, naming its job) is left where it was.
    legacy = json.dumps({"headers": {"task": RUN_JOB_TASK, "id": jobs[2]}})
    client.delete(line.messages.list_key)
    client.rpush(line.messages.list_key, line.messages.ticket(), legacy)
    claimed = line.sync.take(Take("w1", 60, with_ticket=True))
    assert claimed is not None and claimed.task_id == jobs[2]
    assert [m.decode() for m in client.lrange(line.messages.list_key, 0, -1)][-1] == legacy
    assert client.llen(line.messages.list_key) == 2  # nothing taken: the next was not a ticket
    assert line.sync.take(Take("w1", 60, with_ticket=True)) is None  # an empty line takes nothing
    assert client.llen(line.messages.list_key) == 2


def test_an_idle_thread_takes_the_next_ticket_itself_and_leaves_other_messages_to_celery(
    redis_url: str,
) -> None:
    line = Line(redis_url)
    client = redis.Redis.from_url(line.redis_url)
    assert line.sync.take_ticket(0.05) == "timeout"  # nothing came

    job = line.add("alice")  # its ticket: taken as Celery's consumer would, then the take is ours
    assert line.sync.take_ticket(0.05) == "taken"
    assert client.llen(line.messages.list_key) == 0
    claimed = line.sync.take(Take("w1", 60))
    assert claimed is not None and claimed.task_id == job

    legacy = json.dumps({"headers": {"task": RUN_JOB_TASK, "id": "old-job"}})
    client.lpush(line.messages.list_key, legacy)
    assert line.sync.take_ticket(0.05) == "not_a_ticket"
    assert [m.decode() for m in client.lrange(line.messages.list_key, 0, -1)] == [legacy]  # for Celery


def test_a_worker_takes_only_the_classes_it_runs_keeping_priority_and_turns(redis_url: str) -> None:
    line = Line(redis_url)
    v1, v2 = "1" * 64, "2" * 64
    a1 = line.add("alice", workflow_id="txt2img", version=v1)
    b1 = line.add("bob", workflow_id="video", version=v1)
    a2 = line.add("alice", workflow_id="video", version=v1)
    b2 = line.add("bob", workflow_id="txt2img", version=v1)
    urgent_video = line.add("carol", priority=9, workflow_id="video", version=v1)
    a3 = line.add("alice", workflow_id="txt2img", version=v2)  # another version: another class

    image = frozenset({f"txt2img@{v1}"})
    # The urgent job is not its class: the order among its own classes is as if the others were not there.
    assert line.take_all(runs=image) == [a1, b2]
    assert isinstance(line.sync.take(Take("w1", 60, runs=image)), Blocked)  # others still wait
    # Turns went alice (a1), bob (b2): alice's turn again.
    assert line.take_all(runs=frozenset({f"video@{v1}"})) == [urgent_video, a2, b1]
    assert line.take_all(runs=frozenset({f"txt2img@{v2}", f"video@{v1}"})) == [a3]
    assert line.sync.take(Take("w1", 60, runs=image)) is None  # nothing waits


def test_a_blocked_take_hands_its_ticket_on_and_a_going_on_take_leaves_them(redis_url: str) -> None:
    line = Line(redis_url)
    line.add("alice", workflow_id="video", version="1" * 64)
    client = redis.Redis.from_url(redis_url)
    list_key = line.messages.list_key
    assert client.llen(list_key) == 1  # the job's ticket
    client.rpop(list_key)  # taken by this worker's Celery consumer: it holds it now
    assert isinstance(line.sync.take(Take("w1", 60, runs=frozenset({"x@"}))), Blocked)
    assert client.llen(list_key) == 1  # handed on, for a worker that runs video
    assert isinstance(line.sync.take(Take("w1", 60, with_ticket=True, runs=frozenset({"x@"}))), Blocked)
    assert client.llen(list_key) == 1  # a take without a ticket in hand adds none
    (taken,) = line.take_all(runs=frozenset({f"video@{'1' * 64}"}))
    assert taken.startswith("alice-")
    client.close()


def test_the_take_reads_a_head_per_class_not_the_jobs(redis_url: str) -> None:
    """10,000 waiting jobs of a class the worker does not run cost its take no more than 10."""
    line = Line(redis_url)
    client = redis.Redis.from_url(redis_url)
    for _ in range(10):
        line.add("alice", workflow_id="video", version="1" * 64)
    mine = line.add("bob", workflow_id="tiny", version="1" * 64)
    before = _claim_calls(client)
    (first,) = line.take_all(runs=frozenset({f"tiny@{'1' * 64}"}))
    assert first == mine
    lua_commands = _claim_calls(client) - before

    async def many(store: AsyncJobStore) -> None:
        for _ in range(10_000 - 10):
            record = JobRecord(
                task_id=uuid.uuid4().hex, workflow_id="video", tenant="alice", catalog_version="1" * 64
            )
            assert (await store.admit(record)).outcome == "created"

    line.run(many)
    mine = line.add("bob", workflow_id="tiny", version="1" * 64)
    before = _claim_calls(client)
    assert line.take_all(runs=frozenset({f"tiny@{'1' * 64}"})) == [mine]
    assert _claim_calls(client) - before == lua_commands
    client.close()


def _claim_calls(client: redis.Redis) -> int:
    """Commands Redis has run in scripts so far (ZRANGE and the like a take makes)."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in _TAKE_COMMANDS)


_TAKE_COMMANDS = {f"cmdstat_{c}" for c in ("zrange", "smembers", "zcard", "lrange", "hget", "zscore")}


def test_jobs_an_earlier_version_put_in_line_are_taken_and_its_takes_leave_nothing_stale(
    redis_url: str,
) -> None:
    line = Line(redis_url)
    client = redis.Redis.from_url(redis_url)
    prefix = keys.queue_prefix(line.queue)
    old = line.add("alice", workflow_id="video", version="1" * 64)
    # As an earlier version left it: in the tenant's lane only.
    client.delete(f'{prefix}clane:5:"alice":video@{"1" * 64}', f'{prefix}classes:5:"alice"')
    new = line.add("alice", workflow_id="video", version="1" * 64)
    assert line.sync.adopt_earlier_jobs() == 1
    # A worker of the earlier version takes `new` from the tenant's lane and leaves its class entry.
    client.zrem(f'{prefix}lane:5:"alice"', new)
    client.hincrby(f"{prefix}depths", "5", -1)
    assert line.take_all(runs=frozenset({f"video@{'1' * 64}"})) == [old]  # not `new` a second time
    later = line.add("alice", workflow_id="video", version="1" * 64)
    assert line.take_all(runs=frozenset({f"video@{'1' * 64}"})) == [later]  # the stale entry dropped
    assert client.zcard(f'{prefix}clane:5:"alice":video@{"1" * 64}') == 0
    client.close()


def test_a_job_whose_record_expired_while_blocked_leaves_the_line(redis_url: str) -> None:
    line = Line(redis_url)
    client = redis.Redis.from_url(redis_url)
    gone = line.add("alice", workflow_id="video", version="9" * 64)  # a version no worker runs any more
    client.delete(keys.job(gone))  # (JOB_TTL_S)
    assert line.sync.take(Take("w1", 60, runs=frozenset({"tiny@"}))) is None  # not "blocked" for ever
    assert line.positions([gone]) == {gone: None}
    client.close()
