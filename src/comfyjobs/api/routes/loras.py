"""GET /loras: the LoRAs the manifests describe, and whether each is installed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from comfyjobs.api.services import Services, services

router = APIRouter(tags=["workflows"])


@router.get("/loras")
async def list_loras(svc: Annotated[Services, Depends(services)]) -> list[dict[str, Any]]:
    installed = set((await svc.models.lists(["loras"])).get("loras", []))  # none reported yet: none
    return [
        {"name": name, "installed": name in installed, **spec.model_dump()}
        for name, spec in sorted(svc.catalog.current.registry.loras.items())
    ]
