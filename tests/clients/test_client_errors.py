"""Both clients: each expected failure is a short message and its own exit code, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import api_client_minimal as cj
import pytest
import redis

from comfyjobs.catalog.store import CatalogStore
from comfyjobs.comfy.doctor import WorkflowAvailability
from comfyjobs.jobs.worker_store import Take
from tests.api.conftest import LiveApi
from tests.api.test_availability import MISSING, write_beat
from tests.clients.conftest import run_client
from tests.support import free_port

CLIENTS = ["api_client.py", "api_client_minimal.py"]


@pytest.mark.parametrize("script", CLIENTS)
def test_refused_parameters_name_the_field(script: str, live_api: LiveApi) -> None:
    result = run_client(
        script, "run", "txt2img", "--param", "prompt=a fox", "--param", "steps=0", "--server", live_api.url
    )
    assert result.code == cj.EXIT_REJECTED
    assert "params.steps" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script", CLIENTS)
def test_unknown_task_and_workflow(script: str, live_api: LiveApi) -> None:
    task = run_client(script, "status", "no-such-task", "--server", live_api.url)
    assert task.code == cj.EXIT_NOT_FOUND
    assert "no task 'no-such-task'" in task.stderr
    workflow = run_client(script, "run", "no-such-workflow", "--server", live_api.url)
    assert workflow.code == cj.EXIT_NOT_FOUND
    assert "no-such-workflow" in workflow.stderr
    assert "Traceback" not in task.stderr + workflow.stderr


@pytest.mark.parametrize("script", CLIENTS)
def test_a_job_no_worker_can_run_says_why_it_waits(
    script: str, live_api: LiveApi, redis_client: redis.Redis, beats: list[str]
) -> None:
    queue = live_api.settings.queue_name
    version = CatalogStore(redis_client, queue).require_active()
    write_beat(
        redis_client, beats, "w-clients", runs=[f"tiny@{version}"],
        cannot={f"txt2img@{version}": "missing model checkpoints/sdxl.safetensors"}, queue=queue,
        tiny=WorkflowAvailability(ready=True), txt2img=MISSING,
    )  # fmt: skip
    result = run_client(
        script, "run", "txt2img", "--param", "prompt=a fox", "--timeout", "1", "--server", live_api.url
    )
    assert result.code == cj.EXIT_TIMEOUT
    said = " ".join(result.stderr.split())  # (rich wraps long lines)
    assert f"no worker can run txt2img@{version[:12]}: missing model checkpoints/sdxl.safetensors" in said
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script", CLIENTS)
def test_nothing_listening(script: str) -> None:
    result = run_client(script, "list", "--server", f"http://127.0.0.1:{free_port()}")
    assert result.code == cj.EXIT_UNREACHABLE
    assert "cannot reach the service" in result.stderr and "connection refused" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script", CLIENTS)
def test_timeout_ends_the_wait_for_a_job_that_never_starts(script: str, live_api: LiveApi) -> None:
    # No worker consumes this API's queue: the job stays PENDING; the client must give up by itself.
    result = run_client(script, "run", "tiny", "--timeout", "1", "--server", live_api.url, timeout_s=60)
    assert result.code == cj.EXIT_TIMEOUT
    assert "still PENDING after 1 s" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script", CLIENTS)
def test_a_job_is_queued_with_its_priority_and_webhook(script: str, live_api: LiveApi) -> None:
    result = run_client(
        script, "run", "tiny", "--priority", "9", "--timeout", "0.5", "--server", live_api.url
    )
    assert result.code == cj.EXIT_TIMEOUT  # (no worker here)
    claimed = live_api.store.take(Take("w-clients", 60))
    assert claimed is not None and claimed.record is not None and claimed.record.priority == 9
    # This service has no WEBHOOK_SECRET: the refusal names the field.
    hooked = run_client(
        script, "run", "tiny", "--webhook-url", "https://example.com/h", "--server", live_api.url
    )
    assert hooked.code == cj.EXIT_REJECTED
    assert "webhook_url" in hooked.stderr and "WEBHOOK_SECRET" in hooked.stderr
    assert (
        run_client(script, "run", "tiny", "--priority", "10", "--server", live_api.url).code == cj.EXIT_USAGE
    )


@pytest.mark.parametrize("script", CLIENTS)
def test_bad_usage(script: str, live_api: LiveApi) -> None:
    result = run_client(script, "run", "tiny", "--param", "color", "--server", live_api.url)
    assert result.code == cj.EXIT_USAGE
    assert "expected NAME=VALUE" in result.stderr


@pytest.mark.parametrize("script", CLIENTS)
def test_list_as_json(script: str, live_api: LiveApi) -> None:
    result = run_client(script, "list", "--json", "--server", live_api.url)
    assert result.code == 0, result.stderr
    listed = json.loads(result.stdout)
    assert {"txt2img", "tiny", "img2img"} <= {w["id"] for w in listed["workflows"]}
    assert listed["loras"][0]["prompt_prefix"] == "pixel art,"


def test_library_shortcuts(live_api: LiveApi, tmp_path: Path) -> None:
    task_id = cj.generate("tiny", {"color": 9}, server=live_api.url)
    seen: list[str] = []
    with pytest.raises(cj.WaitTimeoutError) as raised:
        cj.wait(task_id, timeout_s=0.5, server=live_api.url, on_update=lambda t: seen.append(t["status"]))
    assert raised.value.exit_code == cj.EXIT_TIMEOUT
    assert seen[0] == "PENDING"
    assert cj.download({"outputs": []}, tmp_path, server=live_api.url) == []
    with pytest.raises(cj.ApiError) as refused:
        cj.generate("tiny", {"color": "red"}, server=live_api.url)
    assert refused.value.status == 422
    assert refused.value.fields[0]["field"] == "params.color"


def test_parameters_are_typed_by_the_workflow() -> None:
    workflow = {
        "parameters": [
            {"name": "steps", "type": "integer"},
            {"name": "seed", "type": "integer"},
            {"name": "cfg", "type": "number"},
            {"name": "prompt", "type": "string"},
            {"name": "lora", "type": "choice", "nullable": True},
            {"name": "tiling", "type": "boolean"},
        ]
    }
    args = ["steps=4", "seed=random", "cfg=6.5", "prompt=123", "lora=none", "tiling=yes", "extra=1"]
    assert cj.parse_param_args(args, workflow) == {
        "steps": 4,
        "seed": "random",
        "cfg": 6.5,
        "prompt": "123",
        "lora": None,
        "tiling": True,
        "extra": "1",
    }


@pytest.mark.parametrize("script", CLIENTS)
def test_a_server_that_is_not_comfyjobs(script: str, live_api: LiveApi) -> None:
    # /docs answers 200 with HTML: a wrong --server (a proxy's page, another app) must read as such.
    result = run_client(script, "list", "--server", f"{live_api.url}/docs#")
    assert result.code == cj.EXIT_UNREACHABLE, result.stderr
    assert "Traceback" not in result.stderr


def test_outputs_that_cannot_be_saved(live_api: LiveApi, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the output folder should go")
    with pytest.raises(cj.ApiError) as raised:
        cj.download({"outputs": []}, blocker / "sub", server=live_api.url)
    assert raised.value.exit_code == cj.EXIT_SAVE
    assert "cannot create" in str(raised.value)
