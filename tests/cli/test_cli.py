from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from comfyjobs.cli import exit_codes
from comfyjobs.cli.main import main
from comfyjobs.cli.up import parse_gpus
from comfyjobs.errors import ConfigError
from tests.conftest import REPO


def test_check_accepts_the_shipped_manifests(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert main(["check"]) == exit_codes.OK
    out = capsys.readouterr().out
    assert "ok  txt2img" in out and "ok  tiny" in out


def test_check_reports_file_key_reason_and_exits_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    workflows = tmp_path / "manifests" / "workflows.yaml"
    workflows.write_text(
        workflows.read_text().replace("template: tiny.json", "template: tiny.json\n    colour: red")
    )
    monkeypatch.setenv("MANIFEST_DIR", str(tmp_path / "manifests"))
    monkeypatch.setenv("WORKFLOW_DIR", str(REPO / "workflows"))

    assert main(["check"]) == exit_codes.CONFIG
    err = capsys.readouterr().err
    assert f"{workflows}: workflows.tiny.colour: unknown key" in err


def test_bad_setting_exits_3(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_HEARTBEAT_S", "-1")
    assert main(["check"]) == exit_codes.CONFIG
    assert "WORKER_HEARTBEAT_S" in capsys.readouterr().err


def test_worker_without_redis_url_exits_3(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "")
    assert main(["worker", "--cpu"]) == exit_codes.CONFIG
    assert "REDIS_URL is not set" in capsys.readouterr().err


def test_gpu_lists() -> None:
    assert parse_gpus("0,1") == [0, 1]
    assert parse_gpus("3") == [3]
    for bad in ("0,0", "x", "", "-1"):
        with pytest.raises(ConfigError):
            parse_gpus(bad)


def test_worker_whose_comfyui_cannot_start_exits_4(redis_url: str, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = dict(
        os.environ, REDIS_URL=redis_url, COMFYUI_DIR=str(tmp_path / "no-comfyui"), DATA_DIR=str(tmp_path)
    )
    done = subprocess.run(
        [sys.executable, "-m", "comfyjobs", "worker", "--cpu"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == exit_codes.COMFYUI
    assert "no main.py in" in done.stderr
    assert "Traceback" not in done.stderr


def test_deps_lists_classes_and_models(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["deps", str(REPO / "workflows" / "txt2img.json")]) == exit_codes.OK
    out = capsys.readouterr().out
    assert "KSampler" in out
    assert "checkpoints/smoke-sd15.safetensors" in out


def test_deps_on_a_file_that_is_no_workflow_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("[1, 2]")
    assert main(["deps", str(bad)]) == exit_codes.ERROR
    assert "workflow_import_failed" in capsys.readouterr().err


def test_import_writes_a_workflow_that_passes_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    shutil.copytree(REPO / "workflows", tmp_path / "workflows")
    monkeypatch.setenv("MANIFEST_DIR", str(tmp_path / "manifests"))
    monkeypatch.setenv("WORKFLOW_DIR", str(tmp_path / "workflows"))

    assert main(["import", str(REPO / "workflows" / "tiny.json"), "--id", "tiny2"]) == exit_codes.OK
    assert main(["check"]) == exit_codes.OK
    assert "ok  tiny2" in capsys.readouterr().out
    assert main(["import", str(REPO / "workflows" / "tiny.json"), "--id", "tiny2"]) == exit_codes.ERROR
