"""A job's input files, handed to the worker's own ComfyUI for one run.

Each media parameter's stored object is uploaded through ComfyUI's POST /upload/image (into a subfolder
of its input folder, under a content-addressed name), and the parameter's value becomes the name the
loader node takes. ComfyUI has no API to delete an input, so after the job the worker removes the files
from the input folder of the ComfyUI it owns and started (``--input-directory``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import TracebackType
from typing import Any

from comfyjobs.comfy.client import ComfyClient
from comfyjobs.errors import MediaError, ObjectNotFoundError
from comfyjobs.jobs.record import InputRef
from comfyjobs.storage.objects import ObjectStore

log = logging.getLogger(__name__)

SUBFOLDER = "comfyjobs"


class StagedInputs:
    def __init__(self, client: ComfyClient, store: ObjectStore, input_dir: Path) -> None:
        self._client = client
        self._store = store
        self._folder = input_dir / SUBFOLDER
        self._staged: list[str] = []

    def stage(self, params: dict[str, Any], inputs: dict[str, InputRef]) -> dict[str, Any]:
        """``params`` with each media parameter's value replaced by its uploaded name."""
        staged = dict(params)
        for name, ref in inputs.items():
            staged[name] = self._upload(f"params.{name}", ref)
        return staged

    def stage_graph(self, graph: dict[str, Any], inputs: dict[str, InputRef]) -> dict[str, Any]:
        """A raw graph (RAW_GRAPH jobs) with each ``"<node id>.<input>"`` of ``inputs`` set to its file's
        uploaded name."""
        staged = {node_id: dict(node) for node_id, node in graph.items()}
        for where, ref in inputs.items():
            node_id, _, name = where.rpartition(".")
            node = staged[node_id]
            node["inputs"] = {**node["inputs"], name: self._upload(where, ref)}
        return staged

    def _upload(self, name: str, ref: InputRef) -> str:
        try:
            with self._store.open(ref.key) as data:
                uploaded = self._client.upload_input(ref.upload_name, data, ref.content_type, SUBFOLDER)
        except ObjectNotFoundError:
            raise MediaError(
                f"{name}: asset {ref.asset_id} is no longer stored (deleted, or expired after ASSET_TTL_S)"
            ) from None
        self._staged.append(ref.upload_name)
        return uploaded

    def __enter__(self) -> StagedInputs:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for name in self._staged:
            try:
                (self._folder / name).unlink(missing_ok=True)
            except OSError as err:
                log.warning("input %s not removed from ComfyUI's input folder: %s", name, err)
