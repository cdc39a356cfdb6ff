"""Chaos: 200 jobs through `comfyjobs up` while workers, ComfyUI and Redis are SIGKILLed at random.

Every accepted job must end in exactly one final state, none may be lost, a successful job has exactly its
listed outputs on disk (one set), and when `up` stops nothing it started is left running. The counts are
printed (pytest -s, or CI's output on failure)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import redis

from comfyjobs import keys
from comfyjobs.jobs.store import decode_events
from comfyjobs.redis_server import PASSWORD_FILE, load_or_create_password
from tests.conftest import REPO
from tests.integration.conftest import COMFYUI_DIR, WORKER_READY_TIMEOUT_S
from tests.support import free_port, wait_for

JOBS = 200
ROUNDS = 10  # one fault per round, while that round's jobs are in flight
FINAL_STATES = {"SUCCESS", "FAILURE", "CANCELLED"}
TARGETS = ("worker", "comfyui", "redis")
RUN_DEADLINE_S = 900.0


class Service:
    def __init__(
        self, up: subprocess.Popen[bytes], api: httpx.Client, redis_url: str, data_dir: Path
    ) -> None:
        self.up, self.api, self.data_dir = up, api, data_dir
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.seen: dict[int, psutil.Process] = {}
        self.unavailable: list[str] = []  # 503s answered to a GET of a task once every job had finished

    def children(self) -> list[psutil.Process]:
        """``up``'s processes, remembered in ``seen`` (none once ``up`` itself is gone)."""
        try:
            found = psutil.Process(self.up.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.seen.update({p.pid: p for p in found})
        return found

    def find(self, needle: str) -> psutil.Process | None:
        matches = [p for p in self.children() if needle in " ".join(p.cmdline())]
        return matches[0] if matches else None

    def ready(self) -> bool:
        assert self.up.poll() is None, "`comfyjobs up` exited"
        try:
            return self.api.get("/ready").status_code == 200
        except httpx.TransportError:
            return False

    def kill(self, target: str) -> None:
        needle = {"worker": "worker --cpu", "comfyui": "main.py", "redis": "redis-server"}[target]
        assert self.up.poll() is None, "`comfyjobs up` exited"
        victim = wait_for(lambda: self.find(needle), timeout_s=120, what=f"a {target} to kill")
        victim.kill()
        victim.wait(30)
        wait_for(self.ready, timeout_s=WORKER_READY_TIMEOUT_S, what=f"ready again after killing {target}")

    def submit(self, body: dict[str, Any]) -> str:
        """POST with an Idempotency-Key, retried through outages: a retry can never make a second job."""
        headers = {"Idempotency-Key": uuid.uuid4().hex}

        def accepted() -> str | None:
            try:
                resp = self.api.post("/generate", json=body, headers=headers)
            except httpx.TransportError:
                return None
            if resp.status_code == 503:
                return None  # Redis restarting
            assert resp.status_code == 202, resp.text
            return str(resp.json()["task_id"])

        return wait_for(accepted, timeout_s=120, what="the job to be accepted", interval_s=0.2)

    def final_states(self, task_ids: list[str]) -> dict[str, list[str]]:
        """Each task's statuses, as its event stream recorded them, once every task reached a final one."""
        statuses: dict[str, list[str]] = {t: [] for t in task_ids}
        cursors = dict.fromkeys(task_ids, "0-0")
        deadline = time.monotonic() + RUN_DEADLINE_S
        while True:
            open_ = [t for t in task_ids if not (statuses[t] and statuses[t][-1] in FINAL_STATES)]
            if not open_:
                return statuses
            assert time.monotonic() < deadline, f"{len(open_)} job(s) never finished: {open_[:5]}"
            try:
                replies = self.redis.xread({keys.job_events(t): cursors[t] for t in open_[:100]}, block=2000)
            except redis.ConnectionError:
                wait_for(self._redis_answers, timeout_s=60, what="Redis")
                continue
            for stream, entries in replies or []:
                task_id = stream.decode().rsplit(":", 1)[-1]
                for event in decode_events(entries):
                    cursors[task_id] = event.id
                    status = event.changes.get("status")
                    if status:
                        statuses[task_id].append(status)

    def record(self, task_id: str) -> dict[str, Any]:
        """GET /tasks/{task_id}; a 503 (which says to try again) is retried and counted, anything but a 200
        fails with the answer."""

        def answered() -> httpx.Response | None:
            resp = self.api.get(f"/tasks/{task_id}")
            if resp.status_code == 503:
                self.unavailable.append(resp.text)
                return None
            return resp

        resp = wait_for(answered, timeout_s=60, what=f"GET /tasks/{task_id} to be answered", interval_s=0.5)
        assert resp.status_code == 200, f"GET /tasks/{task_id}: {resp.status_code} {resp.text}"
        return dict(resp.json())

    def _redis_answers(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.ConnectionError:
            return False


def body(index: int) -> dict[str, Any]:
    if index % 4 == 0:  # a quarter real diffusion, the rest quick
        return {
            "workflow_id": "txt2img",
            "params": {"prompt": f"fox {index}", "steps": 3, "width": 64, "height": 64},
        }
    return {"workflow_id": "tiny", "params": {"color": index % 256, "width": 16, "height": 16}}


@pytest.mark.timeout(RUN_DEADLINE_S + 300)
def test_chaos(model_dir: Path, tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CHAOS_SEED", "20261123")))
    redis_port, api_port = free_port(), free_port()
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(
        EMBEDDED_REDIS_PORT=str(redis_port), COMFYUI_BASE_PORT=str(free_port()), MODEL_DIR=str(model_dir),
        COMFYUI_DIR=str(COMFYUI_DIR), MANIFEST_DIR=str(REPO / "manifests"),
        WORKFLOW_DIR=str(REPO / "workflows"),
        JOB_LEASE_S="3", RECONCILE_INTERVAL_S="1", WORKER_HEARTBEAT_S="1", MAX_ATTEMPTS="10",
        COMFYUI_HANG_TIMEOUT_S="10", LOG_LEVEL="INFO",
    )  # fmt: skip
    # The embedded Redis's password: made here first, and `up` keeps the one it finds.
    (data_dir / "redis").mkdir(mode=0o700, parents=True, exist_ok=True)
    password = load_or_create_password(data_dir / "redis" / PASSWORD_FILE)
    log = (tmp_path / "up.log").open("wb")
    argv = ["up", "--cpu", "--port", str(api_port), "--data-dir", str(data_dir)]
    up = subprocess.Popen(
        [sys.executable, "-m", "comfyjobs", *argv], env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
    )
    svc = Service(up, httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=30),
                  f"redis://:{password}@127.0.0.1:{redis_port}/0", data_dir)  # fmt: skip
    started = time.monotonic()
    kills: Counter[str] = Counter()
    try:
        wait_for(svc.ready, timeout_s=WORKER_READY_TIMEOUT_S, what="`comfyjobs up`", interval_s=0.5)
        task_ids: list[str] = []
        per_round = JOBS // ROUNDS
        for round_ in range(ROUNDS):
            task_ids += [svc.submit(body(round_ * per_round + i)) for i in range(per_round)]
            target = rng.choice(TARGETS)
            svc.kill(target)
            kills[target] += 1

        statuses = svc.final_states(task_ids)
        records = {t: svc.record(t) for t in task_ids}

        outcome = Counter(r["status"] for r in records.values())
        retried = sum(1 for r in records.values() if r["attempts"] > 1)
        print(
            f"\nchaos: {len(task_ids)} jobs accepted; outcomes {dict(outcome)}; "
            f"lost 0 of {len(task_ids)} (all have a record and a final state); "
            f"kills {dict(kills)}; jobs run more than once: {retried}; "
            f"GETs answered 503: {len(svc.unavailable)} {svc.unavailable[:1]}; "
            f"{time.monotonic() - started:.0f} s"
        )
        assert len(set(task_ids)) == JOBS  # no retried submission made a second job
        for task_id in task_ids:
            finals = [s for s in statuses[task_id] if s in FINAL_STATES]
            assert finals == [records[task_id]["status"]], f"{task_id}: {statuses[task_id]}"  # exactly one
            if records[task_id]["status"] == "SUCCESS":
                on_disk = sorted(p.name for p in (data_dir / "outputs" / task_id).iterdir())
                listed = sorted(o["filename"] for o in records[task_id]["outputs"])
                assert on_disk == listed and listed, f"{task_id}: {on_disk} on disk, {listed} listed"
        assert outcome["SUCCESS"] == JOBS, records_not_done(records)
    finally:
        svc.children()
        up.send_signal(signal.SIGINT)
        code = up.wait(timeout=180)
        _, alive = psutil.wait_procs(list(svc.seen.values()), timeout=30)
        orphans = [
            p for p in psutil.process_iter(["cmdline"]) if str(data_dir) in " ".join(p.info["cmdline"] or [])
        ]
        print(f"chaos: `up` exit code {code}; processes left: {len(alive)}; orphans: {len(orphans)}")
        log.close()
        if os.environ.get("CI"):
            print_log(tmp_path / "up.log")
        assert code == 0
        assert not alive and not orphans, [p.cmdline() for p in alive + orphans]


def records_not_done(records: dict[str, dict[str, Any]]) -> str:
    failed = [(t, r["status"], r["error"]) for t, r in records.items() if r["status"] != "SUCCESS"]
    return f"{len(failed)} not SUCCESS, e.g. {failed[:3]}"


def print_log(path: Path) -> None:
    """The log's errors (with the lines after each, for a traceback), then its last lines."""
    lines = path.read_text(errors="replace").splitlines()
    shown = [i for i, line in enumerate(lines) if " ERROR " in line or line.startswith("Traceback")]
    for i in shown[:20]:
        print("\n".join(lines[i : i + 15])[:3000])
    refused = [line for line in lines if '"GET /tasks/' in line and '" 200 OK' not in line]
    print("\n".join(refused[:20]))
    print("\n".join(lines[-40:])[-4000:])
