"""The HTTP conventions FHIR clients rely on, for everything under /fhir.

- Versions and conditional reads: `validators` turns a resource's meta.versionId and
  meta.lastUpdated into an ETag (``W/"<versionId>"``) and a Last-Modified date;
  `not_modified` says whether If-None-Match (which wins when both are sent, RFC 9110
  13.2.2) or If-Modified-Since lets a read answer 304.
- `FhirHttp`, an ASGI middleware for the /fhir paths only:
  HEAD on any read or search is answered as its GET without the body (same status and
  headers); answers over `GZIP_MIN_BYTES` are gzip-compressed for clients that accept
  it, and every answer carries ``Vary: Accept-Encoding``; and an error answer that is
  not already FHIR (the framework's 404, 405 or 422 ``{"detail": ...}``, a parameter
  error's ``{"error": ...}``) becomes an OperationOutcome with the same status and
  headers, its diagnostics the framework's message, in application/fhir+json.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

import orjson
from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from egenmon.fhir.outcome import operation_outcome

__all__ = ["GZIP_MIN_BYTES", "FhirHttp", "not_modified", "validator_headers", "validators"]

FHIR_JSON = "application/fhir+json"
GZIP_MIN_BYTES = 2048  # below about one packet, compressing costs more than it saves
_MAX_ERROR_BODY = 64 * 1024
# http://hl7.org/fhir/issue-type for the statuses the framework answers with itself.
_ISSUE_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
    429: "throttled",
}


# --- versions and conditional reads -----------------------------------------------------


def _parse_instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def validators(resource: Mapping[str, Any]) -> tuple[str | None, datetime | None]:
    """(ETag, last modified) of a resource from its meta; either may be None."""
    meta = resource.get("meta") or {}
    version = meta.get("versionId")
    updated = meta.get("lastUpdated")
    etag = f'W/"{version}"' if isinstance(version, str) and version else None
    modified = _parse_instant(updated) if isinstance(updated, str) else None
    return etag, modified


def validator_headers(etag: str | None, modified: datetime | None) -> dict[str, str]:
    headers = {}
    if etag is not None:
        headers["ETag"] = etag
    if modified is not None:
        headers["Last-Modified"] = email.utils.format_datetime(modified.astimezone(UTC), True)
    return headers


def _opaque(tag: str) -> str:
    return tag.strip().removeprefix("W/")


def not_modified(headers: Headers, etag: str | None, modified: datetime | None) -> bool:
    """Whether a GET with these request headers may be answered 304 (weak comparison)."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None:
        if etag is None:
            return False
        wanted = {_opaque(t) for t in if_none_match.split(",")}
        return "*" in wanted or _opaque(etag) in wanted
    since = headers.get("if-modified-since")
    if since is None or modified is None:
        return False
    try:
        when = email.utils.parsedate_to_datetime(since)
    except (TypeError, ValueError, IndexError):
        return False  # an unreadable date is ignored, as RFC 9110 13.1.3 says
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return modified.replace(microsecond=0) <= when


# --- the middleware -------------------------------------------------------------------


def _is_fhir(path: str) -> bool:
    return path == "/fhir" or path.startswith("/fhir/")


class FhirHttp:
    """HEAD, gzip, Vary and OperationOutcome errors for /fhir (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gzip = GZipMiddleware(
            _OutcomeErrors(app), minimum_size=GZIP_MIN_BYTES, compresslevel=6
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_fhir(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        inner_scope = dict(scope, method="GET") if head else scope

        async def send_fhir(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if "accept-encoding" not in headers.get("vary", "").lower():
                    headers.add_vary_header("Accept-Encoding")
            elif head and message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.gzip(inner_scope, receive, send_fhir)


class _OutcomeErrors:
    """Error answers that are not FHIR yet become OperationOutcomes (same status)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message | None = None
        chunks: list[bytes] = []
        size = 0

        async def capture(message: Message) -> None:
            nonlocal start, size
            if message["type"] == "http.response.start":
                status = int(message["status"])
                ctype = Headers(raw=message.get("headers", [])).get("content-type", "")
                if status >= 400 and not ctype.startswith(FHIR_JSON):
                    start = message
                    return
                await send(message)
            elif message["type"] == "http.response.body" and start is not None:
                body = message.get("body", b"")
                size += len(body)
                if size <= _MAX_ERROR_BODY:
                    chunks.append(body)
                if not message.get("more_body", False):
                    await _send_outcome(send, start, b"".join(chunks))
            else:
                await send(message)

        await self.app(scope, receive, capture)


def _diagnostics(status: int, body: bytes) -> str:
    """The framework's message (for a validation error, each place and what is wrong)."""
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    reason = _reason(status)
    if isinstance(parsed, dict):
        detail = parsed.get("detail", parsed.get("error"))
        if isinstance(detail, str) and detail:
            return detail
        if isinstance(detail, list):  # FastAPI's validation errors
            parts = []
            for err in detail[:10]:
                if isinstance(err, dict):
                    loc = " ".join(str(p) for p in err.get("loc", ()))
                    parts.append(f"{loc}: {err.get('msg', 'invalid')}")
            if parts:
                return "; ".join(parts)
    return reason


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


async def _send_outcome(send: Send, start: Message, body: bytes) -> None:
    status = int(start["status"])
    diagnostics = _diagnostics(status, body)
    code = _ISSUE_CODES.get(status, "exception" if status >= 500 else "invalid")
    severity = "fatal" if status >= 500 else "error"
    payload = orjson.dumps(operation_outcome(severity, code, diagnostics))
    headers = MutableHeaders(raw=list(start.get("headers", [])))
    headers["content-type"] = FHIR_JSON
    headers["content-length"] = str(len(payload))
    await send({"type": "http.response.start", "status": status, "headers": headers.raw})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
