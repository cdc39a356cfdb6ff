"""Signed links of the ``local`` backend: GET /outputs/{task_id}/{filename} and GET /inputs/{sha256}.

The signature in the query (see storage.signing) is the credential, as with a presigned S3 URL: no API
key is needed, an expired or altered link answers 403. With the ``s3`` backend links point at the bucket
and these routes answer 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from comfyjobs.api.services import Services, services
from comfyjobs.errors import ObjectNotFoundError
from comfyjobs.storage.local import LocalObjectStore
from comfyjobs.storage.objects import content_disposition, input_key, output_key

router = APIRouter(tags=["files"])

Expires = Annotated[int | None, Query(description="Expiry (epoch seconds), part of the signed link.")]
Type = Annotated[str | None, Query(alias="type", max_length=200, description="Content type served.")]
Sig = Annotated[str | None, Query(max_length=200, description="The link's signature.")]


async def _serve(
    svc: Services, key: str, filename: str, expires: int | None, ctype: str | None, sig: str | None
) -> FileResponse:
    store = svc.objects
    if not isinstance(store, LocalObjectStore):
        raise ObjectNotFoundError("files are served from the bucket: read the task or asset for its URL")
    store.verify(key, expires=expires, content_type=ctype, sig=sig)
    path = await run_in_threadpool(store.file, key)
    headers = {
        "Content-Disposition": content_disposition(ctype or "application/octet-stream", filename),
        # Whatever a file holds, it never runs as a page of this origin.
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "sandbox",
    }
    return FileResponse(path, media_type=ctype, headers=headers)


@router.get("/outputs/{task_id}/{filename}", response_class=FileResponse)
async def get_output(
    task_id: str,
    filename: str,
    svc: Annotated[Services, Depends(services)],
    expires: Expires = None,
    content_type: Type = None,
    sig: Sig = None,
) -> FileResponse:
    """A job's output file, through the signed `url` a task read gave."""
    return await _serve(svc, output_key(task_id, filename), filename, expires, content_type, sig)


@router.get("/inputs/{tenant}/{sha256}", response_class=FileResponse)
async def get_input(
    tenant: str,
    sha256: str,
    svc: Annotated[Services, Depends(services)],
    expires: Expires = None,
    content_type: Type = None,
    sig: Sig = None,
) -> FileResponse:
    """An asset's file, through the signed `url` an asset read gave."""
    return await _serve(svc, input_key(tenant, sha256), sha256[:16], expires, content_type, sig)
