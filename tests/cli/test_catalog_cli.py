"""`comfyjobs catalog publish | list | show | diff | activate` against a real Redis."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from comfyjobs.cli import exit_codes
from comfyjobs.cli.main import main
from tests.catalog.folders import copy_folders, edit_workflows, swap_tiny_size


@pytest.fixture
def folders(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    manifests, workflows = copy_folders(tmp_path)
    monkeypatch.chdir(tmp_path)  # (no .env of the checkout)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("QUEUE_NAME", f"test-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("MANIFEST_DIR", str(manifests))
    monkeypatch.setenv("WORKFLOW_DIR", str(workflows))
    return manifests, workflows


def _out(capsys: pytest.CaptureFixture[str], argv: list[str], code: int = exit_codes.OK) -> str:
    assert main(argv) == code
    captured = capsys.readouterr()
    return captured.out if code == exit_codes.OK else captured.err


def test_publish_list_show_diff_and_roll_back(
    folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    manifests, _ = folders
    first = _out(capsys, ["catalog", "publish"]).split()[0]
    assert _out(capsys, ["catalog", "publish"]).startswith(f"{first} already published")

    edit_workflows(manifests, swap_tiny_size)
    second = _out(capsys, ["catalog", "publish", "--no-activate"]).split()[0]
    listed = json.loads(_out(capsys, ["catalog", "list", "--json"]))
    assert [(v["version"], v["active"]) for v in listed] == [(second, False), (first, True)]
    assert "tiny" in listed[0]["workflows"]

    shown = _out(capsys, ["catalog", "show", second[:8]])
    assert "width" in shown and "1(EmptyImage).height" in shown
    diff = _out(capsys, ["catalog", "diff", first[:6], second[:6]])
    assert "+ tiny: input width -> node 1 (EmptyImage).height" in diff

    _out(capsys, ["catalog", "activate", second[:10]])
    assert json.loads(_out(capsys, ["catalog", "list", "--json"]))[0]["active"]
    _out(capsys, ["catalog", "activate", first])  # a rollback
    assert _out(capsys, ["catalog", "show", "active"]).startswith(f"catalog {first} (active)")
    bundle = json.loads(_out(capsys, ["catalog", "show", "active", "--json"]))
    assert set(bundle["manifests"]) == {"base.yaml", "workflows.yaml", "loras.yaml"}


def test_refusals_name_what_is_wrong(folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    manifests, _ = folders
    assert "no such" not in _out(capsys, ["catalog", "list"])
    err = _out(capsys, ["catalog", "activate", "abcdef12"], exit_codes.CATALOG)
    assert "no published catalog version starts with 'abcdef12'" in err
    err = _out(capsys, ["catalog", "show", "active"], exit_codes.CATALOG)
    assert "no catalog is active" in err

    workflows_yaml = manifests / "workflows.yaml"
    workflows_yaml.write_text(workflows_yaml.read_text().replace("input: width", "input: widht", 1))
    err = _out(capsys, ["catalog", "publish"], exit_codes.CONFIG)
    assert "has no input 'widht'" in err
    assert json.loads(_out(capsys, ["catalog", "list", "--json"])) == []  # nothing was published
