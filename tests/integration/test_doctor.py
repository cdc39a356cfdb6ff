"""comfy.doctor and `comfyjobs doctor` against the session worker's real ComfyUI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from comfyjobs.comfy.client import ComfyClient
from comfyjobs.comfy.doctor import check_registry
from comfyjobs.manifests.loader import load_registry
from tests.conftest import REPO
from tests.integration.conftest import Service


def comfyui_url(service: Service) -> str:
    return f"http://127.0.0.1:{service.env['COMFYUI_BASE_PORT']}"


def test_missing_node_class_and_model_are_found(service: Service, tmp_path: Path) -> None:
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    shutil.copytree(REPO / "workflows", tmp_path / "workflows")
    template = json.loads((tmp_path / "workflows" / "txt2img.json").read_text())
    template["4"]["inputs"]["ckpt_name"] = "absent.safetensors"
    template["11"] = {"class_type": "NotARealNode", "inputs": {}}
    (tmp_path / "workflows" / "broken.json").write_text(json.dumps(template))
    workflows = tmp_path / "manifests" / "workflows.yaml"
    entry = "\n  broken:\n    template: broken.json\n    parameters:\n      prompt:\n      lora:\n"
    workflows.write_text(workflows.read_text() + entry)
    registry = load_registry(tmp_path / "manifests", tmp_path / "workflows")
    client = ComfyClient(comfyui_url(service))

    results = check_registry(registry, client.object_info())

    assert results["txt2img"].ready and results["tiny"].ready
    broken = results["broken"]
    assert not broken.ready
    assert broken.missing_nodes == ["NotARealNode"]
    assert broken.missing_models == ["absent.safetensors"]


def test_a_bound_comfyui_would_refuse_is_a_problem(service: Service, tmp_path: Path) -> None:
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    base = tmp_path / "manifests" / "base.yaml"
    base.write_text(base.read_text().replace("    max: 150\n", "    max: 100000\n"))
    registry = load_registry(tmp_path / "manifests", REPO / "workflows")

    found = check_registry(registry, ComfyClient(comfyui_url(service)).object_info())["txt2img"]

    assert found.problems == [
        "steps → node 3 (KSampler).steps: ComfyUI's max is 10000, the manifest allows 100000"
    ]


def test_doctor_command_and_workers_agree(service: Service, api: httpx.Client) -> None:
    env = dict(service.env)
    done = subprocess.run(
        [sys.executable, "-m", "comfyjobs", "doctor", "--comfyui-url", comfyui_url(service), "--json"],
        env=env, cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["txt2img"]["ready"] is True and report["tiny"]["ready"] is True

    listed = {w["id"]: w["availability"] for w in api.get("/workflows").json()}
    assert listed["txt2img"]["ready"] is True and listed["txt2img"]["workers_ready"] == 1
    assert listed["tiny"]["ready"] is True
