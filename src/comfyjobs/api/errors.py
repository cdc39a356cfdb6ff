"""The one place where errors become HTTP responses. Body: {"error": {"code", "message", ...}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from comfyjobs.errors import (
    ComfyJobsError,
    ConfigError,
    FieldProblem,
    InvalidParamsError,
    OutputNotFoundError,
    QueueUnavailableError,
    TaskNotFoundError,
    WorkflowNotFoundError,
)

log = logging.getLogger(__name__)

HTTP_STATUS: dict[type[ComfyJobsError], int] = {
    InvalidParamsError: 422,
    WorkflowNotFoundError: 404,
    TaskNotFoundError: 404,
    OutputNotFoundError: 404,
    QueueUnavailableError: 503,
    ConfigError: 500,
}


def status_for(exc: ComfyJobsError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def error_response(exc: ComfyJobsError) -> JSONResponse:
    headers = {"Retry-After": "5"} if isinstance(exc, QueueUnavailableError) else None
    return JSONResponse({"error": exc.to_dict()}, status_code=status_for(exc), headers=headers)


def _field_name(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ComfyJobsError)
    async def _ours(_: Request, exc: ComfyJobsError) -> JSONResponse:
        if status_for(exc) >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _request_shape(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems: dict[str, str] = {}
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            # Union members (seed: integer | "random") add location parts after the field name.
            field = _field_name(loc[:3] if loc[:2] == ("body", "params") else loc[:2])
            reason = "unknown parameter" if err.get("type") == "extra_forbidden" else str(err.get("msg"))
            problems.setdefault(field, reason)
        return error_response(InvalidParamsError([FieldProblem(f, r) for f, r in problems.items()]))
