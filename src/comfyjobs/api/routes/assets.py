"""POST /assets (multipart upload), GET /assets/{id}, DELETE /assets/{id}: input files for media
parameters. An asset's id is the sha256 of its bytes; uploading the same bytes again returns the same
asset (and keeps it ASSET_TTL_S longer)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from comfyjobs.api.auth import Caller
from comfyjobs.api.services import Services, services
from comfyjobs.api.views import AssetView
from comfyjobs.errors import FieldProblem, InvalidParamsError, MediaError
from comfyjobs.storage.assets import ingest_file, spool

router = APIRouter(tags=["assets"])


@router.post(
    "/assets",
    status_code=201,
    response_model=AssetView,
    responses={
        413: {"description": "Over INPUT_MAX_BYTES (`payload_too_large`)."},
        422: {"description": "Not decodable, or over INPUT_MAX_PIXELS (`invalid_params`, field `file`)."},
    },
)
async def upload_asset(
    file: Annotated[UploadFile, File(description="The file: an image, mask, video, audio or any file.")],
    svc: Annotated[Services, Depends(services)],
    caller: Caller,
) -> AssetView:
    """Upload an input file; use the returned `id` as the value of a media parameter."""
    settings = svc.settings
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
            filename=file.filename,
        )
    except MediaError as exc:
        raise InvalidParamsError([FieldProblem("file", exc.message)]) from None
    finally:
        spooled.unlink(missing_ok=True)
    return AssetView.from_asset(await svc.assets.record(ingested, caller.tenant), svc.links)


@router.get("/assets/{asset_id}", response_model=AssetView)
async def get_asset(asset_id: str, svc: Annotated[Services, Depends(services)], caller: Caller) -> AssetView:
    """The asset with a fresh download `url` (valid for URL_TTL_S). A tenant's key sees its own assets;
    an admin key any tenant's."""
    return AssetView.from_asset(await svc.assets.visible(asset_id, caller), svc.links)


@router.delete("/assets/{asset_id}", status_code=204, response_class=Response)
async def delete_asset(
    asset_id: str, svc: Annotated[Services, Depends(services)], caller: Caller
) -> Response:
    """Deletes the asset and its stored file (jobs still waiting to use it will fail, saying so)."""
    asset = await svc.assets.visible(asset_id, caller)
    await svc.assets.forget(asset)
    await run_in_threadpool(svc.objects.delete, asset.key)
    return Response(status_code=204)
