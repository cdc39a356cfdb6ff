"""Workers take only what they can run: a second worker beside the session's, labelled `video` and with
no models, and a published version with a workflow that requires that label. The session's worker has the
smoke checkpoint and no labels; each job goes to the one that can run it, and one that none can run waits,
says why, and runs once a worker that can is up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.catalog.folders import copy_folders, edit_workflows
from tests.integration.conftest import WORKER_READY_TIMEOUT_S, Service, active_version, start, stop
from tests.integration.test_service import JOB_TIMEOUT_S, submit
from tests.support import JobEvents, free_port, wait_for


@pytest.fixture
def video_version(service: Service, api: httpx.Client, tmp_path: Path) -> Iterator[str]:
    """A version with `tiny-video` (tiny, requiring the `video` label), active during the test."""
    manifests, workflows = copy_folders(tmp_path)

    def add(wfs: dict[str, Any]) -> None:
        wfs["tiny-video"] = {**wfs["tiny"], "requires": {"labels": ["video"]}}

    edit_workflows(manifests, add)
    with active_version(service, api, manifests, workflows, shows="tiny-video") as version:
        yield version


def _worker(api: httpx.Client, task_id: str, events: JobEvents) -> str:
    assert events.wait_terminal(task_id, JOB_TIMEOUT_S) == "SUCCESS", api.get(f"/tasks/{task_id}").json()
    return str(api.get(f"/tasks/{task_id}").json()["worker"])


def test_each_job_goes_to_a_worker_that_can_run_it(
    service: Service, api: httpx.Client, events: JobEvents, video_version: str, tmp_path: Path
) -> None:
    blocked = submit(api, "tiny-video", color=301)
    # The session's worker checks the new version (its catalog watch), and says it cannot run this one
    # (until its next heartbeat: "not checked against catalog ... yet").
    wait_for(
        lambda: "needs labels" in (api.get(f"/tasks/{blocked}").json()["queue"]["blocked"] or ""),
        timeout_s=30,
        what="the job to say why it waits",
    )
    queue = api.get(f"/tasks/{blocked}").json()["queue"]
    assert queue["blocked"] == (
        f"no worker can run tiny-video@{video_version[:12]}: needs labels video (this worker has: none)"
    )
    assert _worker(api, submit(api, "tiny", color=302), events).startswith("cpu.")  # others still run

    models = tmp_path / "video-models"
    models.mkdir()  # no smoke checkpoint: it cannot run txt2img
    data = tmp_path / "video-data"
    env = {k: v for k, v in service.env.items() if not k.startswith("WARMUP_")} | {
        "WORKER_LABELS": "video", "MODEL_DIR": str(models), "DATA_DIR": str(data),
        "COMFYUI_BASE_PORT": str(free_port()),
    }  # fmt: skip
    data.mkdir()
    video = start(["worker", "--cpu"], env, data / "worker.log")
    try:
        assert _worker(api, blocked, events).startswith(f"cpu.{video.pid}@")  # it ran once one could
        wait_for(
            lambda: any(
                w["pid"] == video.pid and w["state"] == "ready" for w in api.get("/ready").json()["workers"]
            ),
            timeout_s=WORKER_READY_TIMEOUT_S,
            what="the video worker",
        )
        images = [
            submit(api, "txt2img", prompt="fox", steps=1, width=64, height=64, seed=s) for s in range(4)
        ]
        videos = [submit(api, "tiny-video", color=310 + i) for i in range(4)]
        assert {_worker(api, t, events).split("@")[0] for t in images} == {f"cpu.{service.worker.pid}"}
        assert {_worker(api, t, events).split("@")[0] for t in videos} == {f"cpu.{video.pid}"}
    finally:
        stop(video)
