"""An API-format and a UI-format export of one graph import to equivalent workflows, and both run."""

from __future__ import annotations

import shutil
from pathlib import Path

from comfyjobs.authoring.importer import import_workflow
from comfyjobs.comfy.client import ComfyClient
from comfyjobs.manifests.loader import load_registry
from comfyjobs.manifests.params import resolve_params, validate_params
from comfyjobs.manifests.patching import build_graph
from comfyjobs.storage.models import DiskModels
from tests.conftest import REPO
from tests.integration.conftest import Service

UI_EXPORT = REPO / "tests" / "authoring" / "data" / "txt2img_ui.json"


def test_api_and_ui_exports_import_to_workflows_that_run(service: Service, tmp_path: Path) -> None:
    manifests, workflows = tmp_path / "manifests", tmp_path / "workflows"
    shutil.copytree(REPO / "manifests", manifests)
    shutil.copytree(REPO / "workflows", workflows)
    comfy = ComfyClient(f"http://127.0.0.1:{service.env['COMFYUI_BASE_PORT']}")

    import_workflow(REPO / "workflows" / "txt2img.json", "t2", manifest_dir=manifests, workflow_dir=workflows,
                    object_info=None)  # fmt: skip
    import_workflow(UI_EXPORT, "t2ui", manifest_dir=manifests, workflow_dir=workflows,
                    object_info=comfy.object_info())  # fmt: skip
    registry = load_registry(manifests, workflows)

    api_wf, ui_wf = registry.workflow("t2"), registry.workflow("t2ui")
    assert list(api_wf.parameters) == list(ui_wf.parameters)
    request = {"prompt": "a boat", "steps": 2, "width": 64, "height": 64, "seed": 3}
    graphs = []
    for workflow in (api_wf, ui_wf):
        params = resolve_params(
            workflow, validate_params(workflow, request), DiskModels(service.model_dir).list
        )
        graphs.append(build_graph(workflow, params, registry.loras))
    assert graphs[0] == graphs[1]

    for graph in graphs:
        outputs = comfy.run(graph, on_event=lambda _: None, timeout_s=120)
        assert [o.node_id for o in outputs] == ["9"]
