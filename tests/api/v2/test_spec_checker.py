"""The spec checker itself: it must accept what the Comfy API v2 spec allows and reject what it does not."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from tests.api.v2.spec import (
    FORMAT_CHECKER,
    SPEC,
    OperationNotInSpecError,
    check_event,
    check_response,
    check_schema,
    sse_events,
)

JOB_ID = "7f3d2c1b-9a8e-4d6f-b012-3c4d5e6f7a8b"
ASSET_ID = "9f8a1c0d-2b3e-4f56-8a7b-1c2d3e4f5a6b"
ABSOLUTE_URL = f"http://127.0.0.1:8189/api/v2/assets/{ASSET_ID}/content"


def queued_job() -> dict[str, Any]:
    return {
        "id": JOB_ID,
        "status": "queued",
        "created_at": "2026-01-01T00:00:00Z",
        "started_at": None,
        "completed_at": None,
        "expires_at": "2026-01-08T00:00:00+00:00",
        "queue_position": None,
        "progress": None,
        "outputs": [],
        "error": None,
        "urls": {
            "self": f"/api/v2/jobs/{JOB_ID}",
            "events": f"/api/v2/jobs/{JOB_ID}/events",
            "cancel": f"/api/v2/jobs/{JOB_ID}/cancel",
        },
    }


def output(**overrides: Any) -> dict[str, Any]:
    out = {
        "node_id": "9",
        "name": "ComfyUI_00001_.png",
        "type": "image",
        "content_type": "image/png",
        "size_bytes": 1848320,
        "id": ASSET_ID,
        "hash": None,
        "url": ABSOLUTE_URL,
        "url_expires_at": "2026-01-01T01:00:00.123456+02:00",
        "job_id": JOB_ID,
    }
    out.update(overrides)
    return out


def progress(**overrides: Any) -> dict[str, Any]:
    out = {
        "value": 0.42,
        "nodes_done": 11,
        "nodes_total": 31,
        "current_node": "12",
        "current_node_class": "KSampler",
        "step": 21,
        "steps": 50,
        "message": "KSampler 21/50",
    }
    out.update(overrides)
    return out


def succeeded_job() -> dict[str, Any]:
    job = queued_job()
    job.update(
        status="succeeded",
        started_at="2026-01-01T00:00:01Z",
        completed_at="2026-01-01T00:00:43.5Z",
        progress=progress(value=1.0, nodes_done=31, step=None, steps=None, current_node=None),
        outputs=[output()],
        metrics={"queue_ms": 1000, "execution_ms": None},
    )
    return job


def asset(**overrides: Any) -> dict[str, Any]:
    out = {
        "id": ASSET_ID,
        "hash": "blake3:9f8a1c0d",
        "size_bytes": 4816293,
        "content_type": "image/png",
        "file_path": "photo.png",
        "created_new": True,
        "created_at": "2026-01-01T00:00:00Z",
        "url": ABSOLUTE_URL,
        "url_expires_at": "2026-01-01T01:00:00Z",
        "expires_at": None,
    }
    out.update(overrides)
    return out


def error_envelope(code: str = "not_found") -> dict[str, Any]:
    return {"error": {"code": code, "message": "Job not found.", "details": None}}


def fails(match: str, fn: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(AssertionError, match=match):
        fn(*args, **kwargs)


# --- Job --------------------------------------------------------------------------------------------------


def test_valid_queued_job_passes() -> None:
    check_response("GET", f"/api/v2/jobs/{JOB_ID}", 200, queued_job())
    check_response("GET", f"/api/v2/jobs/{JOB_ID}?wait=1", 200, queued_job(), "application/json")
    check_response("POST", "/api/v2/jobs", 201, queued_job(), "application/json; charset=utf-8")
    check_schema("Job", queued_job())


def test_valid_succeeded_job_passes() -> None:
    check_response("GET", f"/api/v2/jobs/{JOB_ID}", 200, succeeded_job())
    check_response("POST", f"/api/v2/jobs/{JOB_ID}/cancel", 200, succeeded_job())


def test_job_missing_expires_at_fails() -> None:
    job = queued_job()
    del job["expires_at"]
    fails(
        r"\$: 'expires_at' is a required property", check_response, "GET", f"/api/v2/jobs/{JOB_ID}", 200, job
    )


@pytest.mark.parametrize("field", ["progress", "error", "started_at", "completed_at", "queue_position"])
def test_job_nullable_fields_are_required_not_optional(field: str) -> None:
    job = queued_job()
    del job[field]
    fails(f"'{field}' is a required property", check_schema, "Job", job)


@pytest.mark.parametrize("field", ["created_at", "expires_at", "started_at"])
def test_naive_datetime_fails(field: str) -> None:
    job = queued_job()
    job[field] = "2026-01-01T00:00:00"
    fails(f"{field}: '2026-01-01T00:00:00' is not a 'date-time'", check_schema, "Job", job)


def test_invalid_status_enum_fails() -> None:
    job = queued_job()
    job["status"] = "pending"
    fails(r"\$\.status: 'pending' is not one of", check_response, "GET", f"/api/v2/jobs/{JOB_ID}", 200, job)


@pytest.mark.parametrize("value", [True, 1.5, "3"])
def test_queue_position_must_be_an_integer(value: Any) -> None:
    job = queued_job()
    job["queue_position"] = value
    fails(r"queue_position: .* is not of type 'integer', 'null'", check_schema, "Job", job)


def test_nullable_allof_progress() -> None:
    job = queued_job()
    job["progress"] = progress()
    check_schema("Job", job)
    job["progress"] = progress(value=1.5)
    fails(r"\$\.progress\.value: 1\.5 is greater than the maximum of 1", check_schema, "Job", job)
    job["progress"] = {"value": 0.5}
    fails(r"\$\.progress: 'nodes_done' is a required property", check_schema, "Job", job)
    job["progress"] = "42%"
    fails(r"\$\.progress: '42%' is not of type 'object'", check_schema, "Job", job)


def test_nullable_allof_error() -> None:
    job = queued_job()
    job.update(status="failed", error={"code": "node_execution_error", "message": "boom", "node_id": None})
    check_schema("Job", job)
    job["error"] = {"code": "node_execution_error"}
    fails(r"\$\.error: 'message' is a required property", check_schema, "Job", job)


def test_metrics_values_are_nullable_integers() -> None:
    job = succeeded_job()
    job["metrics"] = {"queue_ms": None, "execution_ms": 12}
    check_schema("Job", job)
    job["metrics"] = {"queue_ms": "12"}
    fails(r"metrics\.queue_ms: '12' is not of type", check_schema, "Job", job)


def test_job_urls_accept_host_relative_and_absolute_but_not_garbage() -> None:
    job = queued_job()
    job["urls"]["self"] = f"https://cloud.comfy.org/api/v2/jobs/{JOB_ID}"
    check_schema("Job", job)
    job["urls"]["self"] = "/api/v2/jobs/a b"
    fails(r"urls\.self: .* is not a 'uri-reference'", check_schema, "Job", job)


# --- Output / Asset -----------------------------------------------------------------------------------------


def test_output_relative_url_fails_absolute_passes() -> None:
    check_schema("Output", output())
    check_event("output", output(url="https://cdn.example.com/o/abc.png?X-Amz-Signature=f00"))
    fails(r"\$\.url: '/api/v2/x' is not a 'uri'", check_schema, "Output", output(url="/api/v2/x"))

    job = succeeded_job()
    job["outputs"][0]["url"] = f"/api/v2/assets/{ASSET_ID}/content"
    fails(
        r"\$\.outputs\[0\]\.url: .* is not a 'uri'",
        check_response,
        "GET",
        f"/api/v2/jobs/{JOB_ID}",
        200,
        job,
    )


@pytest.mark.parametrize("bad", [{"type": "mask"}, {"size_bytes": True}, {"hash": 7}, {"node_id": 9}])
def test_output_field_types(bad: dict[str, Any]) -> None:
    with pytest.raises(AssertionError):
        check_schema("Output", output(**bad))


def test_asset_responses() -> None:
    check_response("POST", "/api/v2/assets", 201, asset())
    check_response("POST", "/api/v2/assets", 200, asset(created_new=False, hash=None))
    check_response("POST", "/api/v2/assets/from-hash", 201, asset())
    check_response("GET", f"/api/v2/assets/{ASSET_ID}", 200, asset(expires_at="2026-02-01T00:00:00Z"))
    minimal = asset()
    for optional in ("file_path", "created_new", "expires_at"):
        del minimal[optional]
    check_schema("Asset", minimal)
    fails(r"created_new: 1 is not of type 'boolean'", check_schema, "Asset", asset(created_new=1))
    fails(r"\$\.url: 'photo\.png' is not a 'uri'", check_schema, "Asset", asset(url="photo.png"))


def test_asset_missing_url_expires_at_fails() -> None:
    body = asset()
    del body["url_expires_at"]
    fails("'url_expires_at' is a required property", check_schema, "Asset", body)
    fails("None is not of type 'string'", check_schema, "Asset", asset(url_expires_at=None))


# --- statuses and bodies -----------------------------------------------------------------------------------


def test_undeclared_status_fails() -> None:
    fails(
        r"status 418 is not declared by the spec",
        check_response,
        "GET",
        f"/api/v2/jobs/{JOB_ID}",
        418,
        queued_job(),
    )
    fails(r"status 200 is not declared .*201", check_response, "POST", "/api/v2/jobs", 200, queued_job())
    fails(r"status 400 is not declared", check_response, "POST", "/api/v2/jobs", 400, error_envelope())


def test_error_envelope_404_passes() -> None:
    check_response("GET", f"/api/v2/jobs/{JOB_ID}", 404, error_envelope())
    check_response("GET", f"/api/v2/assets/{ASSET_ID}", 404, {"error": {"code": "not_found", "message": "x"}})
    check_response("DELETE", f"/api/v2/assets/{ASSET_ID}", 409, error_envelope("asset_in_use"))
    check_schema(
        "ErrorEnvelope", {"error": {"code": "invalid_workflow", "message": "m", "details": {"a": 1}}}
    )


@pytest.mark.parametrize(
    "body",
    [
        {"detail": "Not Found"},  # FastAPI's default error body
        {"error": "not_found"},
        {"error": {"code": "not_found"}},
        {"error": {"code": 404, "message": "Not Found"}},
        {"error": {"code": "not_found", "message": "x", "details": "none"}},
    ],
)
def test_error_envelope_wrong_shape_fails(body: dict[str, Any]) -> None:
    with pytest.raises(AssertionError, match="does not match the spec"):
        check_response("GET", f"/api/v2/jobs/{JOB_ID}", 404, body)


def test_no_content_responses() -> None:
    check_response("DELETE", f"/api/v2/assets/{ASSET_ID}", 204, None)
    fails("declares no body", check_response, "DELETE", f"/api/v2/assets/{ASSET_ID}", 204, {})
    check_response("HEAD", "/api/v2/assets/by-hash/blake3:9f8a1c0d", 200, None)
    check_response("HEAD", "/api/v2/assets/by-hash/blake3:9f8a1c0d", 404, None)
    fails("declares no body", check_response, "HEAD", "/api/v2/assets/by-hash/x", 404, error_envelope())
    check_response("GET", f"/api/v2/assets/{ASSET_ID}/content", 416, None)


def test_missing_body_fails_where_the_spec_requires_one() -> None:
    fails("requires a body", check_response, "GET", f"/api/v2/jobs/{JOB_ID}", 200, None)
    fails("requires a body", check_response, "GET", f"/api/v2/jobs/{JOB_ID}", 404, None)
    fails("requires a body", check_response, "DELETE", f"/api/v2/assets/{ASSET_ID}", 401, None)


def test_content_types() -> None:
    events = f"/api/v2/jobs/{JOB_ID}/events"
    check_response("GET", events, 200, "event: status\ndata: {}\n\n", "text/event-stream; charset=utf-8")
    fails("not declared", check_response, "GET", events, 200, {"status": "queued"}, "application/json")
    fails("pass content_type", check_response, "GET", events, 200, "event: status\n\n")
    content = f"/api/v2/assets/{ASSET_ID}/content"
    check_response("GET", content, 200, b"\x89PNG", "application/octet-stream")
    check_response("GET", content, 206, b"\x89P", "application/octet-stream")
    fails("not declared", check_response, "GET", f"/api/v2/jobs/{JOB_ID}", 200, queued_job(), "text/html")


def test_response_headers_when_given() -> None:
    path = f"/api/v2/jobs/{JOB_ID}"
    check_response("GET", path, 429, error_envelope("rate_limited"), headers={"retry-after": "5"})
    check_response("GET", path, 429, error_envelope("rate_limited"), headers={})
    fails(
        "header Retry-After",
        check_response,
        "GET",
        path,
        429,
        error_envelope(),
        headers={"Retry-After": "soon"},
    )


# --- operation lookup ---------------------------------------------------------------------------------------


def test_list_jobs_is_not_in_the_spec() -> None:
    assert "get" not in SPEC["paths"]["/api/v2/jobs"], "the spec grew GET /api/v2/jobs: check it directly"
    with pytest.raises(OperationNotInSpecError, match=r"GET /api/v2/jobs: the operation is not in the spec"):
        check_response("GET", "/api/v2/jobs?limit=10", 200, {"jobs": []})


def test_unknown_paths_and_methods_fail() -> None:
    fails("no path in the spec matches", check_response, "GET", "/api/v2/nope", 200, {})
    fails("no path in the spec matches", check_response, "GET", f"/api/v2/jobs/{JOB_ID}/", 200, queued_job())
    fails("not in the spec", check_response, "DELETE", f"/api/v2/jobs/{JOB_ID}", 204, None)
    fails("not in the spec", check_response, "HEAD", f"/api/v2/jobs/{JOB_ID}", 200, None)


def test_concrete_paths_win_over_templates() -> None:
    # /api/v2/assets/from-hash also matches /api/v2/assets/{id}, which has no POST.
    check_response("POST", "/api/v2/assets/from-hash", 404, error_envelope("blob_not_found"))
    fails("status 404 is not declared", check_response, "POST", "/api/v2/assets", 404, error_envelope())


# --- SSE ----------------------------------------------------------------------------------------------------


def test_sse_catalog_comes_from_the_spec() -> None:
    assert sse_events() == {
        "status": "#/components/schemas/StatusEvent",
        "progress": "#/components/schemas/Progress",
        "preview": "#/components/schemas/PreviewEvent",
        "output": "#/components/schemas/Output",
        "log": "#/components/schemas/LogEvent",
    }


def test_sse_status_event() -> None:
    check_event("status", {"status": "running", "queue_position": None})
    check_event("status", {"status": "queued", "queue_position": 3})
    fails(r"'bogus' is not one of", check_event, "status", {"status": "bogus"})
    fails(r"'status' is a required property", check_event, "status", {"queue_position": 1})


def test_sse_other_events() -> None:
    check_event("progress", progress())
    fails("'nodes_total' is a required property", check_event, "progress", {"value": 0, "nodes_done": 0})
    check_event("preview", {"node_id": "9", "content_type": "image/jpeg", "data_base64": "/9j/4AAQ"})
    fails(
        "'data_base64' is a required property", check_event, "preview", {"node_id": "9", "content_type": "x"}
    )
    check_event("log", {"level": "info", "message": "hi"})
    fails(r"is not a 'uri'", check_event, "output", output(url="ComfyUI_00001_.png"))


def test_unknown_sse_event_fails() -> None:
    fails("not in the spec's catalog", check_event, "job", {"status": "running"})
    fails("not in the spec's catalog", check_event, "message", {})


# --- formats and the translation itself -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2026-01-01T00:00:00Z", True),
        ("2026-01-01T00:00:00+00:00", True),
        ("2026-01-01T00:00:00.123456-05:30", True),
        ("2026-01-01T00:00:00", False),
        ("2026-01-01T00:00:00.5", False),
        ("2026-01-01", False),
        ("2026-13-01T00:00:00Z", False),
        ("2026-01-01T25:00:00Z", False),
        ("1767225600", False),
    ],
)
def test_date_time_format(value: str, ok: bool) -> None:
    assert FORMAT_CHECKER.conforms(value, "date-time") is ok


@pytest.mark.parametrize(
    ("value", "uri", "uri_reference"),
    [
        ("http://127.0.0.1:8189/api/v2/assets/a/content", True, True),
        ("https://bucket.s3.amazonaws.com/k?X-Amz-Signature=ab%2Fcd", True, True),
        ("/api/v2/x", False, True),
        ("api/v2/x", False, True),
        ("ComfyUI_00001_.png", False, True),
        ("http:///x", False, True),
        ("https://exa mple.com/x", False, False),
        ("/api/v2/jobs/a b", False, False),
        ("/x%zz", False, False),
    ],
)
def test_uri_formats(value: str, uri: bool, uri_reference: bool) -> None:
    assert FORMAT_CHECKER.conforms(value, "uri") is uri
    assert FORMAT_CHECKER.conforms(value, "uri-reference") is uri_reference


def test_unknown_schema_name_fails() -> None:
    fails("components/schemas/Jobs is not in the spec", check_schema, "Jobs", {})


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        here = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return here + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


def test_every_ref_in_the_spec_resolves() -> None:
    refs = set(_refs(SPEC))
    assert refs, "the spec has no $refs?"
    for ref in refs:
        node: Any = SPEC
        for part in ref.removeprefix("#/").split("/"):
            assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
            node = node[part]


def test_the_checker_does_not_mutate_the_spec() -> None:
    before = copy.deepcopy(SPEC)
    check_response("GET", f"/api/v2/jobs/{JOB_ID}", 200, succeeded_job())
    check_event("status", {"status": "running"})
    assert before == SPEC
