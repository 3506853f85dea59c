"""The OpenAPI document true to the served API: what FastAPI makes, plus what it cannot see.

FastAPI sees neither the FHIR routes' parameters (they read the request themselves) nor
the errors routes answer outside their signatures. This adds: the Bearer scheme; for the
FHIR routes their path id, search parameters (from `fhir.capability.RESOURCES`, as the
CapabilityStatement is) and request bodies; and on every operation the error statuses
it can answer, in the media type it answers them (an OperationOutcome under /fhir).
Clients and fuzzers (schemathesis in the suite) then reach every operation.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from egenmon.fhir.capability import RESOURCES

__all__ = ["document"]

_FHIR = "application/fhir+json"
_OUTCOME = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {"resourceType": {"const": "OperationOutcome"}, "issue": {"type": "array"}},
}
_ERROR: dict[str, Any] = {"type": "object", "required": ["error"], "properties": {"error": {}}}
# FastAPI's {"detail": [...]} for a refused body model
_VALIDATION: dict[str, Any] = {"type": "object"}
_REASONS = {
    400: "Bad request: names what is wrong",
    401: "No or bad credentials",
    403: "Not allowed for these credentials",
    404: "Not found",
    405: "Method not allowed on this path (Allow names those that are)",
    406: "Only JSON is served",
    413: "Body over the limit",
    415: "Unsupported media type",
    422: "Unprocessable: names what is wrong",
    503: "The store is unavailable; try again",
}
_FHIR_ERRORS = (400, 401, 403, 404, 405, 406, 413, 415, 422, 503)
_API_ERRORS = (400, 401, 403, 404, 413, 422, 503)
_OPEN = ("/healthz", "/readyz", "/metrics", "/fhir/metadata", "/api/v1/devices/pair")
_FORM = {
    "application/x-www-form-urlencoded": {
        "schema": {"type": "object", "additionalProperties": {"type": "string"}}
    }
}


def _resource_body(kind: str) -> dict[str, Any]:
    schema = {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"const": kind}},
    }
    return {"required": True, "content": {_FHIR: {"schema": schema}}}


_FORMAT = {
    "name": "_format",
    "in": "query",
    "required": False,
    "schema": {"enum": ["json", "application/json", "application/fhir+json"]},
}


def _query(names: list[str]) -> list[dict[str, Any]]:
    return [
        {"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in names
    ] + [_FORMAT]


def _search_parameters(names: list[str]) -> list[dict[str, Any]]:
    return _query([*names, "_count", "_summary", "_total", "_cursor"])


_EXPORT = [
    *_query(["_type", "_since", "_typeFilter", "_outputFormat"]),
    {"name": "Prefer", "in": "header", "required": True, "schema": {"const": "respond-async"}},
]


def _path_parameters(path: str, operation: dict[str, Any]) -> None:
    """Every {name} of the path as a path parameter (handlers that read the request
    themselves declare none)."""
    params = operation.setdefault("parameters", [])
    declared = {p["name"] for p in params if p.get("in") == "path"}
    params[:0] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", path)
        if name not in declared
    ]


def _fhir_details(path: str, method: str) -> dict[str, Any]:
    """Parameters and body of a FHIR operation, from the capability table."""
    if path.endswith("/$export"):  # Bulk Data kick-off (egenmon.export.api)
        accepted = {
            "description": "Accepted: poll the status URL in Content-Location",
            "headers": {"Content-Location": {"schema": {"type": "string"}}},
            "content": {_FHIR: {"schema": _OUTCOME}},
        }
        busy = {
            "description": "An export of this client runs already, or the server is busy",
            "content": {_FHIR: {"schema": _OUTCOME}},
        }
        responses = {"202": accepted, "429": busy}
        return {"parameters": copy.deepcopy(_EXPORT), "responses": responses}
    parts = path.removeprefix("/fhir").strip("/").split("/")
    spec = next((s for s in RESOURCES if parts and s.type == parts[0]), None)
    out: dict[str, Any] = {}
    if spec is None:
        if method == "post" and path in ("/fhir", "/fhir/"):
            out["requestBody"] = _resource_body("Bundle")
        return out
    names = sorted(spec.param_names)
    if len(parts) == 2 and parts[1] == "{id}":
        out["parameters"] = [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
            _FORMAT,
        ]
    elif len(parts) == 2 and parts[1] == "$lastn":
        out["parameters"] = _query(["patient", "code", "max"])
    elif method == "get":
        out["parameters"] = _search_parameters(names)
    elif len(parts) == 2 and parts[1] == "_search":
        out["requestBody"] = {"required": False, "content": _FORM}
    elif len(parts) == 1 and method == "post":
        out["requestBody"] = _resource_body(spec.type)
        out["parameters"] = [
            {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
            for h in ("If-None-Exist", "Prefer")
        ]
    return out


def _errors(path: str, method: str, operation: dict[str, Any]) -> None:
    fhir = path.startswith("/fhir")
    media, schema = (_FHIR, _OUTCOME) if fhir else ("application/json", _ERROR)
    responses = operation.setdefault("responses", {})
    for status in _FHIR_ERRORS if fhir else _API_ERRORS:
        if path in _OPEN and status in (401, 403, 404):
            continue
        if str(status) in responses and not (status == 422 and not fhir):
            continue
        item_schema = schema
        if status == 422 and not fhir:
            # A refused body model is FastAPI's {"detail": ...}; a route's own 422 an error.
            item_schema = {"anyOf": [_ERROR, _VALIDATION]}
        responses[str(status)] = {
            "description": _REASONS[status],
            "content": {media: {"schema": item_schema}},
        }
    if fhir and "200" in responses:
        responses["200"]["content"] = {_FHIR: {"schema": {"type": "object"}}}
    creates = method == "post" and path.endswith(tuple(f"/{s.type}" for s in RESOURCES))
    if fhir and creates and "201" not in responses:
        responses["201"] = {"description": "Created", "content": {_FHIR: {"schema": {}}}}


def document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (made once, then kept, as FastAPI does)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    doc = copy.deepcopy(doc)
    doc.setdefault("components", {})["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A device secret (readings) or an access token (everything else)",
        }
    }
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            if path.startswith("/fhir"):
                for key, value in _fhir_details(path, method).items():
                    operation[key] = value
            _path_parameters(path, operation)
            if path not in _OPEN:
                operation["security"] = [{"bearer": []}]
            _errors(path, method, operation)
    metrics = doc.get("paths", {}).get("/metrics", {}).get("get")
    if metrics is not None:  # Prometheus text, not JSON
        metrics["responses"]["200"]["content"] = {"text/plain": {"schema": {"type": "string"}}}
    app.openapi_schema = doc
    return doc
