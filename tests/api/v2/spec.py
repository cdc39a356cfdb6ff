"""Checks real HTTP responses of our server against the vendored Comfy API v2 OpenAPI 3.0.3 spec.

The spec's schemas are OpenAPI 3.0 dialect, not plain JSON Schema; they are translated once, at import:

- ``nullable: true`` adds ``null`` to the allowed values (a ``type`` list where the schema has a plain
  ``type``, an ``anyOf`` with ``{"type": "null"}`` otherwise, e.g. for ``allOf``-wrapped ``$ref``\\ s).
  Next to a bare ``$ref`` it has no effect, as OpenAPI 3.0 ignores a ``$ref``'s siblings.
- Validation uses Draft 4 semantics (closest to OpenAPI 3.0's schema dialect: ``$ref`` siblings ignored,
  boolean ``exclusiveMinimum``, ``1.0`` is not an ``integer``; booleans are never numbers).
- Formats are asserted: ``date-time`` is RFC 3339 and needs a timezone offset, ``uri`` must be absolute
  (a scheme; host-relative ``/api/v2/x`` fails), ``uri-reference`` accepts absolute and relative.
  Formats the spec uses only as hints (``int64``, ``double``, ``binary``) are not checked.

``$ref``\\ s to components/schemas are resolved by the validator; those to components/responses,
components/headers and components/parameters are followed here.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry
from referencing.jsonschema import DRAFT4

SPEC_PATH = Path(__file__).resolve().parents[3] / "src" / "comfyjobs" / "api" / "v2" / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))

_SPEC_URI = "urn:comfy-api-v2:openapi"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_EVENTS_PATH = "/api/v2/jobs/{id}/events"


class OperationNotInSpecError(AssertionError):
    """The method + path pair is not an operation the spec declares (e.g. ``GET /api/v2/jobs``)."""


# --- formats -------------------------------------------------------------------------------------------

# RFC 3339 section 5.6 date-time: the offset (Z or +hh:mm) is mandatory.
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
)


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    m = _RFC3339.match(value)
    if m is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    try:
        dt.datetime(year, month, day, hour, minute, min(second, 59))  # 60 is a leap second
    except ValueError:
        return False
    if second > 60:
        return False
    offset = m.group(8)
    if offset not in ("Z", "z"):
        oh, om = int(offset[1:3]), int(offset[4:6])
        if oh > 23 or om > 59:
            return False
    return True


# RFC 3986 characters: unreserved, reserved, and '%' (checked as pct-encoded below).
_URI_CHARS = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]*$")
_BAD_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


def _is_uri_reference(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _URI_CHARS.match(value) or _BAD_PCT.search(value):
        return False
    if value.count("#") > 1:
        return False
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unbalanced '[' in the authority
        return False
    # A relative reference's first path segment may not contain ':' (it would read as a scheme).
    return bool(parts.scheme) or ":" not in value.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]


def _is_absolute_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _is_uri_reference(value) or not _SCHEME.match(value):
        return False
    parts = urlsplit(value)
    # Hierarchical web URLs need a host: "http:/x" or "https://" is not a usable content URL.
    return parts.scheme.lower() not in ("http", "https") or bool(parts.hostname)


def _format_checker() -> FormatChecker:
    checker = FormatChecker()
    # jsonschema's own date-time check is active only with rfc3339-validator installed; keep it only if
    # it really rejects a naive timestamp, else use ours.
    if "date-time" not in checker.checkers or checker.conforms("2026-01-01T00:00:00", "date-time"):
        checker.checks("date-time")(_is_rfc3339)
    # jsonschema needs rfc3987 for these (absent here) and treats "uri" leniently without it: ours always.
    checker.checks("uri")(_is_absolute_uri)
    checker.checks("uri-reference")(_is_uri_reference)
    return checker


FORMAT_CHECKER = _format_checker()


# --- OpenAPI 3.0 schema -> JSON Schema -------------------------------------------------------------------

_SCHEMA_MAP_KEYWORDS = ("properties", "patternProperties")
_SCHEMA_LIST_KEYWORDS = ("allOf", "anyOf", "oneOf")
_SCHEMA_KEYWORDS = ("items", "additionalProperties", "not", "additionalItems")


def _to_json_schema(schema: Any) -> Any:
    """Translate one OpenAPI 3.0 Schema Object (recursively) into Draft 4 JSON Schema."""
    if not isinstance(schema, dict):
        return schema  # e.g. additionalProperties: true
    if "$ref" in schema:
        # OpenAPI 3.0 ignores a $ref's siblings. Local refs are made absolute so that they resolve against
        # the registered spec from any root schema.
        ref = schema["$ref"]
        return {"$ref": f"{_SPEC_URI}{ref}" if ref.startswith("#") else ref}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAP_KEYWORDS:
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LIST_KEYWORDS:
            out[key] = [_to_json_schema(sub) for sub in value]
        elif key in _SCHEMA_KEYWORDS:
            out[key] = _to_json_schema(value)
        elif key in ("nullable", "example", "discriminator", "xml", "externalDocs"):
            continue
        else:
            out[key] = value
    if schema.get("nullable") is True:
        if isinstance(out.get("type"), str) and "enum" not in out:
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [{"type": "null"}, out]}
    return out


def _translated_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """A copy of the spec in which every schema the validator can reach is JSON Schema."""
    out = copy.deepcopy(spec)
    components = out.setdefault("components", {})
    components["schemas"] = {
        name: _to_json_schema(schema) for name, schema in components.get("schemas", {}).items()
    }
    return out


_TRANSLATED = _translated_spec(SPEC)
_REGISTRY: Registry[Any] = Registry().with_resource(_SPEC_URI, DRAFT4.create_resource(_TRANSLATED))


# --- helpers -------------------------------------------------------------------------------------------


def _resolve(node: Any) -> Any:
    """Follow (possibly chained) local ``$ref``\\ s, e.g. to components/responses|headers|parameters."""
    seen: set[str] = set()
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/") or ref in seen:
            raise AssertionError(f"spec: unresolvable $ref {ref!r}")
        seen.add(ref)
        node = SPEC
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                raise AssertionError(f"spec: dangling $ref {ref!r}")
            node = node[part]
    return node


def _where(error: ValidationError) -> str:
    where = "$"
    for part in error.absolute_path:
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    return where


def _describe(error: ValidationError) -> list[str]:
    if error.context:
        # A nullable wrapper fails as "... is not valid under any of the given schemas"; report why the
        # non-null branch rejected the value instead.
        branches: dict[Any, list[ValidationError]] = {}
        for sub in error.context:
            branches.setdefault(sub.relative_schema_path[0], []).append(sub)
        real = [
            errs for errs in branches.values() if not (len(errs) == 1 and errs[0].validator_value == "null")
        ]
        if len(real) == 1:
            return [line for sub in real[0] for line in _describe(sub)]
        best = best_match(error.context)
        if best is not None:
            return [f"at {_where(error)}: {error.message}; best guess: {_describe(best)[0]}"]
    return [f"at {_where(error)}: {error.message}"]


def _short(value: Any, limit: int = 800) -> str:
    text = json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _validate(schema: Mapping[str, Any], instance: Any, what: str) -> None:
    validator = Draft4Validator(dict(schema), registry=_REGISTRY, format_checker=FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        lines = "\n  ".join(line for e in errors for line in _describe(e))
        raise AssertionError(f"{what} does not match the spec:\n  {lines}\nbody: {_short(instance)}")


def _schema_ref(name_or_pointer: str) -> dict[str, str]:
    if name_or_pointer.startswith("#/"):
        return {"$ref": f"{_SPEC_URI}{name_or_pointer}"}
    return {"$ref": f"{_SPEC_URI}#/components/schemas/{name_or_pointer}"}


def _template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}/]+\})", template)
    pattern = "".join(
        f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") and p.endswith("}") else re.escape(p) for p in parts
    )
    return re.compile(f"^{pattern}$")


# Concrete paths win over templated ones (OpenAPI 3.0 "Path Templating Matching").
_PATHS = sorted(
    ((template, _template_regex(template)) for template in SPEC.get("paths", {})),
    key=lambda item: (item[0].count("{"), item[0]),
)


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


def _pick_response(responses: Mapping[Any, Any], status: int, what: str) -> Any:
    by_code = {str(code).upper(): response for code, response in responses.items()}
    for key in (str(status), f"{status // 100}XX", "DEFAULT"):
        if key in by_code:
            return _resolve(by_code[key])
    declared = ", ".join(sorted(str(code) for code in responses))
    raise AssertionError(f"{what}: status {status} is not declared by the spec (declared: {declared})")


def _find_operation(method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    request_path = urlsplit(path).path or path
    matched: list[str] = []
    for template, regex in _PATHS:
        m = regex.match(request_path)
        if m is None:
            continue
        matched.append(template)
        item = SPEC["paths"][template]
        if method.lower() in item:
            return template, item, m.groupdict()
    if not matched:
        raise OperationNotInSpecError(f"{method.upper()} {request_path}: no path in the spec matches")
    offered = sorted({m.upper() for t in matched for m in SPEC["paths"][t] if m in _METHODS})
    raise OperationNotInSpecError(
        f"{method.upper()} {request_path}: the operation is not in the spec "
        f"(path {' / '.join(matched)} declares only {', '.join(offered) or 'nothing'})"
    )


def _check_path_params(item: Mapping[str, Any], operation: Mapping[str, Any], values: dict[str, str]) -> None:
    params = [_resolve(p) for p in [*item.get("parameters", []), *operation.get("parameters", [])]]
    for param in params:
        if param.get("in") == "path" and param["name"] in values and "schema" in param:
            schema = _to_json_schema(param["schema"])
            _validate(schema, values[param["name"]], f"path parameter {param['name']}")


def _check_headers(response: Mapping[str, Any], headers: Mapping[str, str], what: str) -> None:
    present = {name.lower(): value for name, value in headers.items()}
    for name, header in response.get("headers", {}).items():
        header = _resolve(header)
        value = present.get(name.lower())
        if value is None:
            if header.get("required"):
                raise AssertionError(f"{what}: required header {name} is missing")
            continue
        schema = _to_json_schema(_resolve(header.get("schema", {})))
        instance: Any = value
        if schema.get("type") in ("integer", "number"):
            try:
                instance = int(value) if schema["type"] == "integer" else float(value)
            except ValueError:
                raise AssertionError(f"{what}: header {name}: {value!r} is not {schema['type']}") from None
        _validate(schema, instance, f"{what}: header {name}")


# --- public API ----------------------------------------------------------------------------------------


def check_response(
    method: str,
    path: str,
    status: int,
    body: Any | None,
    content_type: str | None = None,
    *,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Raise AssertionError unless ``status`` is declared for the operation and ``body`` matches it.

    ``path`` is the concrete request path (query string ignored); ``body`` is the JSON-decoded body, or
    None for no body. A response the spec declares without content must have body None; one with content
    must have a body. ``content_type`` (the response's Content-Type) must then be one the spec declares;
    when it is omitted, ``application/json`` is assumed. Only JSON bodies are schema-checked. Given
    ``headers``, the response headers the spec declares (e.g. Retry-After) are checked too.
    Raises OperationNotInSpecError (an AssertionError) when the spec has no such operation.
    """
    template, item, values = _find_operation(method, path)
    operation = item[method.lower()]
    _check_path_params(item, operation, values)
    what = f"{method.upper()} {template} ({operation.get('operationId', '?')}) -> {status}"
    response = _pick_response(operation.get("responses", {}), status, what)
    if headers is not None:
        _check_headers(response, headers, what)

    content: dict[str, Any] = response.get("content") or {}
    if not content:
        if body is not None:
            raise AssertionError(f"{what}: the spec declares no body, got {_short(body)}")
        return
    if body is None:
        raise AssertionError(f"{what}: the spec requires a body ({', '.join(content)}), got none")

    declared = {_media_type(media): media for media in content}
    if content_type is None and "application/json" not in declared:
        raise AssertionError(
            f"{what}: the body is not JSON here ({', '.join(content)}); pass content_type to check it"
        )
    media = _media_type(content_type or "application/json")
    key = declared.get(media) or declared.get(f"{media.split('/', 1)[0]}/*") or declared.get("*/*")
    if key is None:
        raise AssertionError(
            f"{what}: content type {content_type!r} is not declared (declared: {', '.join(content)})"
        )
    schema = content[key].get("schema")
    if schema is None or not _is_json(media):
        return  # nothing (or nothing JSON) to validate beyond the body's presence
    _validate(_to_json_schema(schema), body, what)


def check_schema(name: str, instance: Any) -> None:
    """Validate ``instance`` against components/schemas/<name> (e.g. "Job", "Output", "ErrorEnvelope")."""
    if name not in SPEC.get("components", {}).get("schemas", {}):
        raise AssertionError(f"components/schemas/{name} is not in the spec")
    _validate(_schema_ref(name), instance, name)


def sse_events() -> dict[str, str]:
    """The spec's SSE catalog for GET /api/v2/jobs/{id}/events: event name -> schema pointer."""
    catalog = SPEC["paths"][_EVENTS_PATH]["get"]["x-sse-events"]
    out = {}
    for event, entry in catalog.items():
        schema = entry["schema"]
        out[event] = schema["$ref"] if isinstance(schema, dict) else schema
    return out


def check_event(event: str, data: Any) -> None:
    """Validate one SSE frame's JSON ``data`` against the schema the spec's x-sse-events gives ``event``."""
    catalog = sse_events()
    if event not in catalog:
        raise AssertionError(f"SSE event {event!r} is not in the spec's catalog ({', '.join(catalog)})")
    _validate(_schema_ref(catalog[event]), data, f"SSE {event!r} event")
