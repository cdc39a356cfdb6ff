"""Taking in a raw API-format graph (POST /api/v2/jobs): policy, asset references, and a check against the
``/object_info`` the live workers publish, all before anything is queued.

Inputs may name an uploaded asset two ways: a ``core/ASSET`` reference (``{"__type": "core/ASSET", "info":
{"id": ...}}``), or, on a file-upload input (LoadImage's ``image``...), the file name it was uploaded under.
Either becomes an InputRef on the job ("<node id>.<input>"), which the worker stages as for manifest jobs.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from starlette.concurrency import run_in_threadpool

from comfyjobs import keys
from comfyjobs.api.availability import FleetView
from comfyjobs.errors import ApiV2Error, QueueUnavailableError
from comfyjobs.graphs.validate import GRAPH, NodeProblem, check_graph, is_ui_format
from comfyjobs.jobs.record import InputRef
from comfyjobs.storage.assets import ASSET_ID, Asset, AssetRecords

OBJECT_INFOS_KEPT = 8  # distinct ComfyUI installs seen at once in a fleet: usually one


def _invalid(message: str, problems: Mapping[str, list[NodeProblem]]) -> ApiV2Error:
    details = {
        "node_errors": {
            node_id: [{"field": p.field, "reason": p.reason, "message": p.message} for p in found]
            for node_id, found in problems.items()
        }
    }
    return ApiV2Error(message, code="invalid_workflow", status=422, details=details)


def _missing_asset(node_id: str, field: str, why: str) -> ApiV2Error:
    return ApiV2Error(
        f"node {node_id}, input {field!r}: {why}",
        code="missing_asset",
        status=422,
        details={"node_id": node_id, "field": field},
    )


def _upload_inputs(object_info: Mapping[str, Any], class_type: str) -> set[str]:
    """The inputs of a class that take an uploaded file (``image_upload``, ``video_upload``...)."""
    info = object_info.get(class_type)
    if not isinstance(info, Mapping):
        return set()
    found = set()
    for group in ("required", "optional"):
        for name, spec in (info.get("input", {}).get(group) or {}).items():
            options = (
                spec[1] if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict) else {}
            )
            if any(k.endswith("_upload") and v for k, v in options.items()):
                found.add(name)
    return found


@dataclass(frozen=True)
class Policy:
    enabled: bool
    allow: frozenset[str] | None
    deny: frozenset[str]


class GraphIntake:
    def __init__(
        self, client: aioredis.Redis, fleet: FleetView, assets: AssetRecords, policy: Policy, hold_s: int
    ) -> None:
        self._redis = client
        self._hold_s = hold_s  # an asset a job uses stays at least this long (JOB_TTL_S)
        self._fleet = fleet
        self._assets = assets
        self._policy = policy
        self._object_infos: OrderedDict[str, dict[str, Any]] = OrderedDict()

    async def accept(self, graph: Any, tenant: str) -> dict[str, InputRef]:
        """The graph's input files, once it passed; ApiV2Error (422, or 403 by policy) otherwise."""
        if not self._policy.enabled:
            raise ApiV2Error(
                "this server does not run raw graphs (RAW_WORKFLOWS=false)", code="forbidden", status=403
            )
        if is_ui_format(graph):
            raise ApiV2Error(
                "the workflow is in ComfyUI's UI format (nodes and links): export it with "
                "'Export (API)' and submit that",
                code="workflow_format_ui",
                status=422,
            )
        infos = await self._object_infos_now()
        inputs = await self._asset_inputs(graph, tenant, infos)
        if not infos:
            return inputs  # no worker has reported yet: the job waits for one, as manifest jobs do
        staged = {(node_id, name) for node_id, _, name in (w.rpartition(".") for w in inputs)}
        best: dict[str, list[NodeProblem]] | None = None
        for info in infos:
            problems = check_graph(
                graph, info, staged=staged, allow=self._policy.allow, deny=self._policy.deny
            )
            if not problems:
                return inputs
            if best is None or len(problems) < len(best):
                best = problems
        assert best is not None
        first = next(iter(best.values()))[0]
        raise _invalid(f"no worker can run this graph: {first.message}", best)

    async def _asset_inputs(
        self, graph: Any, tenant: str, infos: list[dict[str, Any]]
    ) -> dict[str, InputRef]:
        if not isinstance(graph, dict):
            return {}  # the check says why
        inputs: dict[str, InputRef] = {}
        for node_id, node in graph.items():
            if not isinstance(node, dict) or not isinstance(node.get("inputs"), dict):
                continue
            uploads = set().union(*(_upload_inputs(i, str(node.get("class_type"))) for i in infos))
            for name, value in node["inputs"].items():
                asset = await self._referenced(str(node_id), name, value, tenant, name in uploads)
                if asset is not None:
                    inputs[f"{node_id}.{name}"] = InputRef(
                        asset_id=asset.id,
                        sha256=asset.sha256,
                        key=asset.key,
                        content_type=asset.content_type,
                        extension=asset.extension,
                    )
        return inputs

    async def _referenced(
        self, node_id: str, name: str, value: Any, tenant: str, upload_input: bool
    ) -> Asset | None:
        if isinstance(value, dict) and value.get("__type") == "core/ASSET":
            info = value.get("info")
            asset_id = info.get("id") if isinstance(info, dict) else None
            if not isinstance(asset_id, str) or not asset_id:
                raise _missing_asset(node_id, name, "a core/ASSET reference needs info.id")
            asset = await self._assets.get(asset_id, tenant) if ASSET_ID.match(asset_id) else None
            if asset is None:
                raise _missing_asset(
                    node_id, name, f"no asset {asset_id[:80]!r} (unknown, deleted or expired)"
                )
            return await self._assets.touch(asset, self._hold_s)
        if upload_input and isinstance(value, str) and value:
            asset = await self._assets.by_filename(value, tenant)
            return await self._assets.touch(asset, self._hold_s) if asset else None
        return None

    async def _object_infos_now(self) -> list[dict[str, Any]]:
        digests = sorted({b.object_info for b in await self._fleet.beats() if b.object_info})
        found = []
        for digest in digests:
            info = self._object_infos.get(digest)
            if info is None:
                info = await self._load(digest)
                if info is None:
                    continue
                self._object_infos[digest] = info
                while len(self._object_infos) > OBJECT_INFOS_KEPT:
                    self._object_infos.popitem(last=False)
            found.append(info)
        return found

    async def _load(self, digest: str) -> dict[str, Any] | None:
        try:
            raw = await self._redis.get(keys.object_info(digest))
        except redis.RedisError as exc:
            raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc
        if raw is None:
            return None
        loaded: dict[str, Any] = await run_in_threadpool(json.loads, raw)  # megabytes: off the loop
        return loaded


__all__ = ["GRAPH", "GraphIntake", "Policy"]
