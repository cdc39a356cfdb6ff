"""Models on demand, for real: a worker whose models folder is empty runs txt2img with the checkpoint
given as a URL of a local file server (Range-capable), and a workflow whose checkpoint its `models` list
gives by URL. Two jobs with one URL download it once; the task says `downloading` with bytes while it
does; a URL outside MODEL_URL_ALLOWLIST is a 422; a redirect to a private address and a page that is
not a model fail the job with a clear error; a job whose checkpoint no worker has waits, says why, and
runs once the operator's `models download` gave a worker that checkpoint."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.catalog.folders import copy_folders, edit_workflows
from tests.conftest import REPO
from tests.integration.conftest import WORKER_READY_TIMEOUT_S, Service, active_version, start, stop
from tests.integration.test_service import JOB_TIMEOUT_S, submit
from tests.provision.fileserver import FileServer, Route, running_file_server
from tests.support import JobEvents, free_port, wait_for

SMALL = {"prompt": "fox", "steps": 1, "width": 64, "height": 64}


@pytest.fixture
def server(service: Service) -> Iterator[FileServer]:
    body = (service.model_dir / "checkpoints" / "smoke-sd15.safetensors").read_bytes()
    with running_file_server() as running:
        running.routes["/org/smoke.safetensors"] = Route(body=body)
        running.routes["/org/listed.safetensors"] = Route(body=body)
        running.routes["/org/gained.safetensors"] = Route(body=body)
        running.routes["/org/login"] = Route(
            body=b"<html>sign in</html>", headers={"Content-Type": "text/html"}
        )
        running.routes["/org/moved.safetensors"] = Route(
            status=302, headers={"Location": "http://10.20.30.40/smoke.safetensors"}
        )
        yield running


@pytest.fixture
def fetcher_version(service: Service, api: httpx.Client, server: FileServer, tmp_path: Path) -> Iterator[str]:
    """A version with txt2img-url (its checkpoint a model parameter) and txt2img-listed (a checkpoint no
    worker has, listed with its URL), both for workers labelled `fetch`; active during the test."""
    manifests, workflows = copy_folders(tmp_path)
    base_path = manifests / "base.yaml"
    base = yaml.safe_load(base_path.read_text())
    base["parameters"]["checkpoint_url"] = {
        "type": "model", "folder": "checkpoints", "targets": [{"title": "Checkpoint", "input": "ckpt_name"}],
    }  # fmt: skip
    base_path.write_text(yaml.safe_dump(base, sort_keys=False))
    sha = hashlib.sha256(server.routes["/org/listed.safetensors"].body).hexdigest()

    def add(wfs: dict[str, Any]) -> None:
        params = {k: v for k, v in wfs["txt2img"]["parameters"].items() if k != "checkpoint"}
        fetch = {"labels": ["fetch"]}
        wfs["txt2img-url"] = {
            **wfs["txt2img"],
            "parameters": {**params, "checkpoint_url": None},
            "requires": fetch,
        }
        wfs["txt2img-listed"] = {
            **wfs["txt2img"],
            "parameters": {**params, "checkpoint": {"value": "fetched-sd15.safetensors"}},
            "requires": fetch,
            "models": [{"folder": "checkpoints", "name": "fetched-sd15.safetensors",
                        "url": server.url("/org/listed.safetensors"), "sha256": sha}],
        }  # fmt: skip
        wfs["txt2img-gained"] = {
            **wfs["txt2img"],
            "parameters": {**params, "checkpoint": {"value": "gained-sd15.safetensors"}},
            "requires": fetch,
        }

    edit_workflows(manifests, add)
    with active_version(service, api, manifests, workflows, shows="txt2img-url") as version:
        yield version


def _task(api: httpx.Client, task_id: str) -> dict[str, Any]:
    return dict(api.get(f"/tasks/{task_id}").json())


def test_a_worker_without_the_models_downloads_them_once_and_runs_the_jobs(
    service: Service, api: httpx.Client, events: JobEvents, server: FileServer, fetcher_version: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    url = server.url("/org/smoke.safetensors")
    # Refused at submit: a host outside MODEL_URL_ALLOWLIST, a malformed sha256.
    elsewhere = {**SMALL, "checkpoint_url": "https://example.com/m.safetensors"}
    outside = api.post("/generate", json={"workflow_id": "txt2img-url", "params": elsewhere})
    assert outside.status_code == 422
    assert outside.json()["error"]["fields"][0]["field"] == "params.checkpoint_url"
    assert "not in MODEL_URL_ALLOWLIST" in outside.json()["error"]["fields"][0]["reason"]
    malformed = {**SMALL, "checkpoint_url": {"url": url, "sha256": "x"}}
    bad_sha = api.post("/generate", json={"workflow_id": "txt2img-url", "params": malformed})
    assert bad_sha.status_code == 422

    models, data = tmp_path / "fetch-models", tmp_path / "fetch-data"
    models.mkdir()
    data.mkdir()
    env = {k: v for k, v in service.env.items() if not k.startswith("WARMUP_")} | {
        "WORKER_LABELS": "fetch", "MODEL_DIR": str(models), "DATA_DIR": str(data),
        "COMFYUI_BASE_PORT": str(free_port()), "MODEL_URL_ALLOWLIST": "127.0.0.1",
    }  # fmt: skip
    fetcher = start(["worker", "--cpu"], env, data / "worker.log")
    try:
        jobs = [submit(api, "txt2img-url", **SMALL, seed=s, checkpoint_url=url) for s in (1, 2)]
        listed = submit(api, "txt2img-listed", **SMALL, seed=3)
        for task_id in [*jobs, listed]:
            assert events.wait_terminal(task_id, JOB_TIMEOUT_S + WORKER_READY_TIMEOUT_S) == "SUCCESS", _task(
                api, task_id
            )
            assert _task(api, task_id)["worker"].startswith(f"cpu.{fetcher.pid}@")
        assert len(server.gets("/org/smoke.safetensors")) == 1  # two jobs, one download
        assert len(server.gets("/org/listed.safetensors")) == 1
        downloading = [p for p in events.progress(jobs[0]) + events.progress(jobs[1]) if p.get("stage")]
        assert downloading and downloading[0]["stage"] == "downloading"
        assert downloading[-1]["bytes_total"] == len(server.routes["/org/smoke.safetensors"].body)
        assert (models / "checkpoints" / "fetched-sd15.safetensors").is_symlink()
        cached = [p for p in (data / "model-cache").rglob("*.safetensors")]
        assert len(cached) == 2

        # Clear job errors, nothing half-written: a redirect to a private address, a login page.
        moved = submit(api, "txt2img-url", **SMALL, checkpoint_url=server.url("/org/moved.safetensors"))
        login = submit(api, "txt2img-url", **SMALL, checkpoint_url=server.url("/org/login"))
        assert events.wait_terminal(moved, JOB_TIMEOUT_S) == "FAILURE"
        assert events.wait_terminal(login, JOB_TIMEOUT_S) == "FAILURE"
        moved_error, login_error = _task(api, moved)["error"], _task(api, login)["error"]
        assert moved_error["type"] == "model_download_failed"
        assert "refused: 10.20.30.40 is a private address" in moved_error["message"]
        assert "text/html, not a model file" in login_error["message"]
        assert (
            len([p for p in (data / "model-cache").rglob("*") if p.is_file() and p.suffix != ".lock"])
            == 2 + 2
        )

        # A job no worker can run says why, and runs once a worker gains the model by a download (the
        # operator's `models download`: the worker sees its folders change at its next heartbeat).
        gained = submit(api, "txt2img-gained", **SMALL, seed=4)
        wait_for(
            lambda: "missing model" in (_task(api, gained)["queue"]["blocked"] or ""),
            timeout_s=30,
            what="the job to say why it waits",
        )
        assert "gained-sd15.safetensors" in _task(api, gained)["queue"]["blocked"]
        ini = tmp_path / "models.ini"
        ini.write_text(f"[checkpoints]\ngained-sd15 = {server.url('/org/gained.safetensors')}\n")
        download = subprocess.run(
            [sys.executable, "-m", "comfyjobs", "models", "download", "--file", str(ini)],
            env=env, cwd=REPO, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert download.returncode == 0, download.stdout + download.stderr
        assert events.wait_terminal(gained, JOB_TIMEOUT_S) == "SUCCESS", _task(api, gained)
        assert _task(api, gained)["worker"].startswith(f"cpu.{fetcher.pid}@")
    finally:
        stop(fetcher)
