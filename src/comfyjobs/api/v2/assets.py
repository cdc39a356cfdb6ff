"""Comfy API v2 assets: POST /api/v2/assets (multipart), POST /api/v2/assets/from-hash,
HEAD /api/v2/assets/by-hash/{hash}, GET /api/v2/assets/{id}, GET /api/v2/assets/{id}/content (Range),
DELETE /api/v2/assets/{id}, and GET /api/v2/health.

These are the assets of POST /assets (one store, one record per tenant, id = sha256 of the bytes), with the
blake3 the v2 contract dedups on. A job's outputs are assets here too, under ``out_<task id>_<n>``.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, File, Form, Header, Response, UploadFile
from fastapi.responses import FileResponse, RedirectResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from comfyjobs import keys
from comfyjobs.api.auth import Caller
from comfyjobs.api.services import Services, owned_task, services
from comfyjobs.api.v2.views import Asset2, asset_view, dump, parse_output_id
from comfyjobs.errors import (
    ApiV2Error,
    AssetNotFoundError,
    MediaError,
    QueueUnavailableError,
    TaskNotFoundError,
)
from comfyjobs.jobs.record import JobRecord, StoredOutput, utc_now
from comfyjobs.storage.assets import ingest_file, spool
from comfyjobs.storage.local import LocalObjectStore
from comfyjobs.storage.objects import output_key
from comfyjobs.tenancy import Principal

router = APIRouter(prefix="/api/v2", tags=["Comfy API v2"])

BLAKE3_REF = re.compile(r"^blake3:([0-9a-f]{64})$")


def _blake3_hex(value: str) -> str | None:
    found = BLAKE3_REF.match(value.strip().lower())
    return found.group(1) if found else None


async def _claim_key(svc: Services, tenant: str, key: str | None) -> None:
    """Single use: a second upload with the same Idempotency-Key is refused (claimed once it succeeded)."""
    if key is None:
        return
    claimed = await svc.redis.set(keys.idempotency(tenant, f"v2-asset:{key}"), "1", nx=True, ex=86400)
    if not claimed:
        raise ApiV2Error(
            "this Idempotency-Key was used before; use a new key", code="idempotency_key_reuse", status=422
        )


@router.post("/assets", status_code=201, response_model=None)
async def post_asset(
    svc: Annotated[Services, Depends(services)],
    caller: Caller,
    response: Response,
    file: Annotated[UploadFile, File()],
    content_type: Annotated[str, Form(max_length=255)],
    file_path: Annotated[str, Form(max_length=1024)],
    expected_hash: Annotated[str | None, Form(max_length=80)] = None,
    tags: Annotated[list[str] | None, Form()] = None,
    expires_in: Annotated[int | None, Form(ge=60, le=604800)] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> dict[str, Any]:
    """Upload an input: 201 for new bytes, 200 when the same bytes were uploaded before."""
    settings = svc.settings
    expected = None
    if expected_hash:
        expected = _blake3_hex(expected_hash)
        if expected is None:
            raise ApiV2Error("expected_hash must be 'blake3:<64 hex>'", code="invalid_request", status=422)
    try:
        spooled = await run_in_threadpool(spool, file.file, settings.input_max_bytes)
    finally:
        await file.close()
    try:
        ingested = await run_in_threadpool(
            ingest_file,
            svc.objects,
            spooled,
            tenant=caller.tenant,
            max_pixels=settings.input_max_pixels,
            filename=file_path,
            expected_blake3=expected,
        )
    except MediaError as exc:
        raise ApiV2Error(f"file: {exc.message}", code="invalid_request", status=422) from None
    finally:
        spooled.unlink(missing_ok=True)
    await _claim_key(svc, caller.tenant, idempotency_key)
    asset, new = await svc.assets.record_new(ingested, caller.tenant)
    if not new:
        response.status_code = 200
    url, url_expires_at = _content_link(svc, asset.id)
    return dump(asset_view(asset, url, url_expires_at, created_new=new))


class FromHash(BaseModel):
    hash: str
    file_path: str | None = None
    tags: list[str] | None = None
    expires_in: int | None = None


@router.post("/assets/from-hash", response_model=None)
async def asset_from_hash(
    body: FromHash, svc: Annotated[Services, Depends(services)], caller: Caller
) -> dict[str, Any]:
    """An asset over bytes this tenant uploaded before, found by their blake3; 404 `blob_not_found`."""
    hex_digest = _blake3_hex(body.hash)
    asset = await svc.assets.by_blake3(hex_digest, caller.tenant) if hex_digest else None
    if asset is None:
        raise ApiV2Error(f"no blob {body.hash[:80]!r} to mint from", code="blob_not_found", status=404)
    asset = await svc.assets.touch(asset)
    url, url_expires_at = _content_link(svc, asset.id)
    return dump(asset_view(asset, url, url_expires_at, created_new=False))


@router.head("/assets/by-hash/{content_hash}", response_model=None)
async def head_asset_by_hash(
    content_hash: str, svc: Annotated[Services, Depends(services)], caller: Caller
) -> Response:
    """200 when these bytes are here for this tenant (from-hash then succeeds), else 404; no body."""
    hex_digest = _blake3_hex(content_hash)
    asset = await svc.assets.by_blake3(hex_digest, caller.tenant) if hex_digest else None
    return Response(status_code=200 if asset is not None else 404)


def _content_link(svc: Services, asset_id: str) -> tuple[str, datetime]:
    """The API's own content route, absolute (the spec's `url` is a URI): it answers with the bytes, or a
    redirect to a presigned URL with S3. Valid as long as the asset is."""
    url = f"{svc.settings.public_base_url}/api/v2/assets/{asset_id}/content"
    return url, utc_now() + timedelta(seconds=svc.settings.url_ttl_s)


async def _output(svc: Services, caller: Principal, asset_id: str) -> tuple[JobRecord, StoredOutput] | None:
    """The job and output behind an output's asset id; None for any other id."""
    parsed = parse_output_id(asset_id)
    if parsed is None:
        return None
    task_id, index = parsed
    try:
        record = await owned_task(svc, task_id, caller)
    except TaskNotFoundError:  # as any unknown asset
        raise AssetNotFoundError(f"no asset {asset_id[:80]!r}") from None
    if index >= len(record.outputs):
        raise AssetNotFoundError(f"no asset {asset_id[:80]!r}")
    return record, record.outputs[index]


@router.get("/assets/{asset_id}", response_model=None)
async def get_asset(
    asset_id: str, svc: Annotated[Services, Depends(services)], caller: Caller
) -> dict[str, Any]:
    """An uploaded asset or a job's output, with a fresh `url`."""
    url, url_expires_at = _content_link(svc, asset_id)
    found = await _output(svc, caller, asset_id)
    if found is not None:
        record, output = found
        view = Asset2(
            id=asset_id,
            hash=None,
            size_bytes=output.size_bytes,
            content_type=output.content_type,
            file_path=output.filename,
            created_at=record.finished_at or record.created_at,
            url=url,
            url_expires_at=url_expires_at,
            expires_at=record.outputs_expire_at,
            job_id=record.task_id,
        )
        return dump(view)
    asset = await svc.assets.visible(asset_id, caller)
    return dump(asset_view(asset, url, url_expires_at))


@router.get("/assets/{asset_id}/content", response_model=None)
async def get_asset_content(
    asset_id: str, svc: Annotated[Services, Depends(services)], caller: Caller
) -> Response:
    """The bytes (Range supported: 206); with S3 storage, a 302 to a presigned URL."""
    found = await _output(svc, caller, asset_id)
    if found is not None:
        record, output = found
        key, content_type, name = (
            output_key(record.task_id, output.filename),
            output.content_type,
            output.filename,
        )
    else:
        asset = await svc.assets.visible(asset_id, caller)
        key, content_type, name = asset.key, asset.content_type, asset.filename or asset.id
    objects = svc.objects
    if isinstance(objects, LocalObjectStore):
        path = await run_in_threadpool(objects.file, key)
        return FileResponse(path, media_type="application/octet-stream")
    link = objects.link(key, content_type=content_type, filename=name, ttl_s=svc.settings.url_ttl_s)
    return RedirectResponse(link.url, status_code=302)


@router.delete("/assets/{asset_id}", status_code=204, response_class=Response)
async def delete_asset(
    asset_id: str, svc: Annotated[Services, Depends(services)], caller: Caller
) -> Response:
    """Deletes an uploaded asset (a second delete is 404). A job's output is deleted with the job's outputs
    (DELETE /tasks/{id}/outputs): 409 `asset_in_use` here."""
    if await _output(svc, caller, asset_id) is not None:
        raise ApiV2Error("a job's output is deleted with its job's outputs", code="asset_in_use", status=409)
    asset = await svc.assets.visible(asset_id, caller)
    await svc.assets.forget(asset)
    await run_in_threadpool(svc.objects.delete, asset.key)
    return Response(status_code=204)


@router.get("/health", response_model=None)
async def health(svc: Annotated[Services, Depends(services)]) -> dict[str, Any]:
    """The API answers and reaches Redis."""
    try:
        await svc.redis.ping()
    except redis.RedisError as exc:
        raise QueueUnavailableError(f"Redis is unavailable: {exc}") from exc
    return {"status": "ok"}
