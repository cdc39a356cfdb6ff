"""GET /ui: the web app's pages and their static files (comfyjobs/ui/static), open like /docs — they hold
no data: every datum is fetched from the API with the caller's key. A strict Content-Security-Policy: no
inline script or style, nothing from another origin but the outputs' signed links (images, media)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse, JSONResponse

from comfyjobs.api.services import Services, services
from comfyjobs.jobs.queue import PRIORITY_DEFAULT
from comfyjobs.ui import STATIC_DIR

UI_PREFIX = "/ui"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' blob: data: https: http:; media-src 'self' blob: https: http:; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}
_FILES = {p.name: p for p in STATIC_DIR.iterdir() if p.suffix in _TYPES}

router = APIRouter(tags=["ui"], include_in_schema=False)


@router.get(UI_PREFIX)
async def playground() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type=_TYPES[".html"], headers=HEADERS)


@router.get(f"{UI_PREFIX}/static/{{name}}")
async def static_file(name: str) -> FileResponse:
    path = _FILES.get(name)
    if path is None:
        raise HTTPException(status_code=404, detail=f"no file {name!r} in the web app")
    return FileResponse(path, media_type=_TYPES[path.suffix], headers=HEADERS)


@router.get(f"{UI_PREFIX}/config")
async def config(svc: Annotated[Services, Depends(services)]) -> JSONResponse:
    """What the pages need before the first request: whether they must ask for a key, and the priorities
    a (non-admin) key may ask for."""
    found = {
        "keys_required": bool(svc.settings.accepted_api_keys),
        "max_priority": svc.settings.tenant_max_priority,
        "default_priority": min(PRIORITY_DEFAULT, svc.settings.tenant_max_priority),
    }
    return JSONResponse(found, headers=HEADERS)
