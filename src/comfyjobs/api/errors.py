"""The one place where errors become HTTP responses. Body: {"error": {"code", "message", ...}}."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from comfyjobs.errors import (
    ApiV2Error,
    AssetNotFoundError,
    AuthenticationError,
    CatalogError,
    ComfyJobsError,
    ConfigError,
    FieldProblem,
    HashMismatchError,
    IdempotencyConflictError,
    InvalidParamsError,
    MediaError,
    NoActiveCatalogError,
    ObjectNotFoundError,
    PayloadTooLargeError,
    QueueFullError,
    QueueUnavailableError,
    RateLimitedError,
    StorageError,
    TaskFinishedError,
    TaskNotFoundError,
    TaskRunningError,
    UrlSignatureError,
    WorkflowNotFoundError,
)

log = logging.getLogger(__name__)

HTTP_STATUS: dict[type[ComfyJobsError], int] = {
    AuthenticationError: 401,
    InvalidParamsError: 422,
    WorkflowNotFoundError: 404,
    TaskNotFoundError: 404,
    TaskFinishedError: 409,
    IdempotencyConflictError: 409,
    QueueFullError: 429,
    RateLimitedError: 429,
    TaskRunningError: 409,
    AssetNotFoundError: 404,
    ObjectNotFoundError: 404,
    StorageError: 503,
    UrlSignatureError: 403,
    HashMismatchError: 409,
    PayloadTooLargeError: 413,
    MediaError: 422,
    NoActiveCatalogError: 503,
    CatalogError: 404,  # (a job's version, pruned after it ended)
    QueueUnavailableError: 503,
    ConfigError: 500,
}


def status_for(exc: ComfyJobsError) -> int:
    if isinstance(exc, ApiV2Error):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


# The Comfy API v2 names some refusals its own way; the rest keep their code (its envelope is ours).
V2_CODES: dict[type[ComfyJobsError], str] = {
    TaskNotFoundError: "not_found",
    AssetNotFoundError: "not_found",
    ObjectNotFoundError: "not_found",
    QueueFullError: "queue_full",
    InvalidParamsError: "invalid_request",
}


def v2_error(exc: ComfyJobsError) -> ComfyJobsError:
    """``exc`` as the v2 API reports it: the spec's code, and ``details`` (field problems, if any)."""
    if isinstance(exc, ApiV2Error):
        return exc
    code = next((V2_CODES[cls] for cls in type(exc).__mro__ if cls in V2_CODES), exc.code)
    extra = {k: v for k, v in bounded(exc.to_dict()).items() if k not in ("code", "message")}
    return ApiV2Error(exc.message, code=code, status=status_for(exc), details=extra or None)


def error_response(exc: ComfyJobsError, v2: bool = False) -> JSONResponse:
    if v2:
        return _v2_response(exc)
    headers = None
    if isinstance(exc, QueueUnavailableError | StorageError) and not isinstance(exc, ObjectNotFoundError):
        headers = {"Retry-After": "5"}
    elif isinstance(exc, QueueFullError):
        headers = {"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)}
    elif isinstance(exc, RateLimitedError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    elif isinstance(exc, AuthenticationError):
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse({"error": bounded(exc.to_dict())}, status_code=status_for(exc), headers=headers)


def _v2_response(exc: ComfyJobsError) -> JSONResponse:
    plain = error_response(exc)  # the same status and headers (Retry-After, WWW-Authenticate)
    error = v2_error(exc).to_dict()
    error["message"] = excerpt(error["message"], MESSAGE_CHARS)
    headers = {k: v for k, v in plain.headers.items() if k in ("retry-after", "www-authenticate")}
    return JSONResponse({"error": error}, status_code=plain.status_code, headers=headers)


def is_v2(request: Request) -> bool:
    return request.url.path.startswith("/api/v2/")


# A refusal quotes what it refuses, but never whole: an unknown 1 MB parameter name, an unknown workflow
# id or a model name must not come back at full size, once in `message` and again in `fields`.
EXCERPT_CHARS = 200
MESSAGE_CHARS = 2000
FIELDS_SHOWN = 50


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def bounded(error: dict[str, Any]) -> dict[str, Any]:
    """The error body with every string cut to an excerpt and at most FIELDS_SHOWN field problems."""
    out = {
        k: excerpt(v, MESSAGE_CHARS if k == "message" else EXCERPT_CHARS) if isinstance(v, str) else v
        for k, v in error.items()
    }
    fields = error.get("fields")
    if isinstance(fields, list):
        out["fields"] = [
            {k: excerpt(v) if isinstance(v, str) else v for k, v in problem.items()}
            for problem in fields[:FIELDS_SHOWN]
        ]
        if len(fields) > FIELDS_SHOWN:
            out["fields_omitted"] = len(fields) - FIELDS_SHOWN
    return out


QUEUE_FULL_RETRY_AFTER_S = 10  # a guess clients may improve on: the queue drains at the workers' pace

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def _field_name(loc: tuple[int | str, ...], typed_route: bool) -> str:
    """The request field a pydantic location points at, named as in POST /generate (`params.steps`)."""
    if len(loc) >= 2 and loc[0] in ("query", "header", "path"):
        return str(loc[1])  # `wait`, `last-event-id`
    if len(loc) < 2 or loc[0] != "body" or not isinstance(loc[1], str):
        return "body"  # the body itself: not JSON, or not an object
    if typed_route:  # the body is the params object itself
        return f"params.{loc[1]}"
    if loc[1] == "params" and len(loc) > 2:
        return f"params.{loc[2]}"  # later parts name union members (seed: integer | "random")
    return str(loc[1])


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ComfyJobsError)
    async def _ours(request: Request, exc: ComfyJobsError) -> JSONResponse:
        if status_for(exc) >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return error_response(exc, is_v2(request))

    @app.exception_handler(RequestValidationError)
    async def _request_shape(request: Request, exc: RequestValidationError) -> JSONResponse:
        typed_route = request.url.path.startswith("/workflows/")
        problems: dict[str, str] = {}
        for err in exc.errors():
            field = _field_name(tuple(err.get("loc", ())), typed_route)
            if err.get("type") == "extra_forbidden":
                reason = "unknown parameter" if field.startswith("params.") else "unknown field"
            elif err.get("type") == "json_invalid":
                reason = f"not valid JSON: {err.get('ctx', {}).get('error', err.get('msg'))}"
            else:
                reason = str(err.get("msg"))
            problems.setdefault(field, reason)
        return error_response(
            InvalidParamsError([FieldProblem(f, r) for f, r in problems.items()]), is_v2(request)
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        body = {"error": {"code": code, "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        body = {"error": {"code": "internal_error", "message": "internal error; see the API's log"}}
        return JSONResponse(body, status_code=500)
