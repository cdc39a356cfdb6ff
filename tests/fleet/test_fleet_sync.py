"""`comfyjobs fleet sync` against the three sshd hosts: the operator's manifests become the fleet's
active catalog version, every GPU host installs the listed custom node, and the workers of the hosts
whose nodes changed are restarted (drained); a second sync changes nothing and says so."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fleet.conftest import REPO, FleetUnderTest

pytestmark = pytest.mark.timeout(1500)  # (the fleet's bootstrap, when this module runs first)

NODE = '''"""A custom node for the fleet sync test: it adds nothing."""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
'''


def _operator_tree(folder: Path) -> Path:
    """The operator's working tree: the repository's manifests with a change, and a custom node."""
    tree = folder / "operator"
    for name in ("manifests", "workflows"):
        shutil.copytree(REPO / name, tree / name)
    (tree / "install").mkdir()
    shutil.copytree(REPO / "install" / "configs", tree / "install" / "configs")
    workflows = tree / "manifests" / "workflows.yaml"
    text = workflows.read_text()
    workflows.write_text(text.replace("Text to image with", "Text to image (synced) with", 1))
    node = folder / "fleet-test-node"
    node.mkdir()
    (node / "__init__.py").write_text(NODE)
    git = ["git", "-C", str(node), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "node"], check=True)
    nodes = tree / "install" / "configs" / "custom_nodes.txt"
    nodes.write_text(nodes.read_text() + f"\n{node}\n")
    return tree


def test_sync_publishes_the_catalog_installs_the_nodes_and_restarts_what_changed(
    test_fleet: FleetUnderTest, tmp_path: Path
) -> None:
    tree = _operator_tree(tmp_path)
    args = ["--manifests", str(tree / "manifests"), "--workflows", str(tree / "workflows")]
    args += ["--configs", str(tree / "install" / "configs")]

    ran = test_fleet.fleet("sync", *args)

    assert ran.returncode == 0, ran.output[-6000:]
    assert "[api-1] catalog: changed" in ran.output
    with test_fleet.api() as api:
        txt2img = api.get("/workflows/txt2img").json()
    assert "synced" in txt2img["description"], txt2img
    for host in ("gpu-1", "gpu-2"):
        assert f"[{host}] custom nodes: changed" in ran.output
        assert f"[{host}] restarted comfyjobs-worker-cpu.service" in ran.output
        root = test_fleet.hosts[host].root / "opt" / "comfyjobs" / "ComfyUI" / "custom_nodes"
        assert (root / "fleet-test-node" / "__init__.py").is_file()
    assert ran.output.index("[gpu-1] back:") < ran.output.index("[gpu-2] restarted")  # one at a time

    again = test_fleet.fleet("sync", *args)

    assert again.returncode == 0, again.output[-6000:]
    assert "[api-1] catalog: unchanged" in again.output
    assert "[gpu-1] custom nodes: unchanged" in again.output
    assert "restarted comfyjobs-worker-cpu.service" not in again.output
