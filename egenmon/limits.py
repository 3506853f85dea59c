"""Request limits every route shares, checked before a route runs (an ASGI middleware).

- **query and path**: a parameter name or value with a control character (NUL and the
  like) is a 400 naming the parameter; one in the path (`/fhir/Device/%00`) a 400 too.
  No route has a use for them, and PostgreSQL text cannot hold NUL (that was a 500 on
  `/api/v1/alerts` and `/api/v1/quarantine`).
- **body size, while streaming**: a declared Content-Length over the route's limit is a
  413 before a byte is read; a chunked body is counted as it arrives and refused at the
  limit, so a 200 MB upload costs at most the limit in memory. HTTP ingest keeps its
  own 1 MiB check (it quarantines what a device sent).
- **JSON API bodies** (`/api/...` but readings, `/ui`): parsed once here with the
  platform's one JSON parser (`egenmon.jsonbody`), so a repeated key or deep nesting is a
  400 naming it, not last-wins. Readings and FHIR parse their bodies themselves, to
  quarantine what they refuse.

And `parameter_error`, the app's handler for query and path parameters that a route's
types refuse: a 400 naming the parameter (FastAPI answers 422 for them by default).

Refusals are in the shape the caller speaks: an OperationOutcome under /fhir, else
`{"error": ...}`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from egenmon.jsonbody import JsonBodyError, loads, quote_key

__all__ = [
    "API_BODY",
    "FHIR_BODY",
    "BodyTooLarge",
    "RequestLimits",
    "body_limit",
    "parameter_error",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MiB = 1024 * 1024
FHIR_BODY = 8 * MiB  # a Bundle of up to 1000 Observations
API_BODY = 1 * MiB  # Alerts API, plans, webhooks, UI forms
READINGS_PATH = "/api/v1/readings"  # limited by its route, which quarantines the first 1 MiB
# Device formats read, limit and quarantine their bodies as the readings route does.
DEVICE_BODY_PATHS = frozenset({READINGS_PATH, "/api/v1/omh/dataPoints", "/api/v1/ble/measurements"})

_CONTROL = frozenset(chr(c) for c in (*range(0x20), *range(0x7F, 0xA0)))


class BodyTooLarge(Exception):
    """Raised from `receive` when a streamed body passes its route's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the body is over {limit // MiB} MiB")
        self.limit = limit


def body_limit(path: str) -> int | None:
    """The most bytes a request body on `path` may have (None: the route limits it)."""
    if path in DEVICE_BODY_PATHS:
        return None
    if path.startswith("/api/v1/devices/") and path.endswith("/payloads"):
        return None  # vendor payloads: limited and quarantined by their route (issue 17)
    if path == "/fhir" or path.startswith("/fhir/"):
        return FHIR_BODY
    return API_BODY


def path_problem(path: str) -> str | None:
    """Why a (decoded) path is refused: a control character, such as %00 in an id."""
    if _CONTROL.isdisjoint(path):
        return None
    return "the path: control characters (such as NUL) are not allowed in a path"


def query_problem(query: bytes) -> str | None:
    """Why a query string is refused (naming the parameter), or None."""
    if not query:
        return None
    for part in query.split(b"&"):
        name, _, value = part.partition(b"=")
        name_text = _decode(name)
        value_text = _decode(value)
        if not _CONTROL.isdisjoint(name_text) or not _CONTROL.isdisjoint(value_text):
            return (
                f"query parameter {quote_key(name_text)}: control characters (such as NUL) "
                "are not allowed in a parameter's name or value"
            )
    return None


def _decode(raw: bytes) -> str:
    return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8", "replace")


def _is_json_body(scope: Scope) -> bool:
    """Whether FastAPI would parse this request's body as JSON (no type, or a JSON type)."""
    path = scope["path"]
    if path in DEVICE_BODY_PATHS or not (path.startswith("/api/") or path.startswith("/ui")):
        return False
    if scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
        return False
    ctype = _header(scope, b"content-type")
    if ctype is None:
        return True
    main = ctype.split(";")[0].strip().lower()
    return main == "application/json" or (
        main.startswith("application/") and main.endswith("+json")
    )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class RequestLimits:
    """The ASGI middleware; see the module's docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        fhir = path == "/fhir" or path.startswith("/fhir/")
        problem = path_problem(path) or query_problem(scope.get("query_string", b""))
        if problem is not None:
            await _refuse(send, fhir, 400, "invalid", problem)
            return
        limit = body_limit(path)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = (_header(scope, b"content-length") or "").strip()
        if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
            await _refuse(send, fhir, 413, "too-costly", BodyTooLarge(limit).args[0])
            return
        counted = _Counted(receive, limit)
        if _is_json_body(scope):
            try:
                body = await counted.read_all()
            except BodyTooLarge as exc:
                await _refuse(send, fhir, 413, "too-costly", exc.args[0])
                return
            if body.strip():
                try:
                    loads(body)
                except JsonBodyError as exc:
                    await _refuse(send, fhir, 400, "invalid", f"the body {exc}")
                    return
            receive = _replay(body, receive)
        else:
            receive = counted.receive
        guarded = _Guarded(send, counted, fhir)
        try:
            await self.app(scope, receive, guarded.send)
        except BodyTooLarge as exc:
            if guarded.started:
                raise
            await _refuse(send, fhir, 413, "too-costly", exc.args[0])


class _Counted:
    """`receive` that counts body bytes and raises `BodyTooLarge` past the limit."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.size = 0
        self.over = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.limit:
                self.over = True
                raise BodyTooLarge(self.limit)
        return message

    async def read_all(self) -> bytes:
        chunks = []
        while True:
            message = await self.receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


class _Guarded:
    """`send` that answers 413 in place of whatever a route made of a body cut off at the
    limit (a route's own catch-all would otherwise turn it into a 400 or a 500)."""

    def __init__(self, send: Send, counted: _Counted, fhir: bool) -> None:
        self._send = send
        self._counted = counted
        self._fhir = fhir
        self._replaced = False
        self.started = False

    async def send(self, message: Message) -> None:
        self.started = True
        if message["type"] == "http.response.start" and self._counted.over:
            self._replaced = True
            limit = self._counted.limit
            await _refuse(self._send, self._fhir, 413, "too-costly", BodyTooLarge(limit).args[0])
            return
        if self._replaced:
            return
        await self._send(message)


async def _refuse(send: Send, fhir: bool, status: int, code: str, text: str) -> None:
    if fhir:
        body = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": text}],
        }
        media = b"application/fhir+json"
    else:
        body = {"error": text}
        media = b"application/json"
    payload = json.dumps(body, ensure_ascii=False).encode()
    headers = [(b"content-type", media), (b"content-length", str(len(payload)).encode())]
    if status == 413:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def parameter_error(request: Request, exc: RequestValidationError) -> Response:
    """A query or path parameter the route's types refuse (a number out of range, not a
    number) is a 400 naming it; a body the route's model refuses stays FastAPI's 422."""
    errors = exc.errors()
    if not errors or any(e.get("loc", ("",))[0] not in ("query", "path") for e in errors):
        return await request_validation_exception_handler(request, exc)
    parts = []
    for e in errors:
        loc = e.get("loc", ())
        name = str(loc[1]) if len(loc) > 1 else "?"
        parts.append(f"{loc[0]} parameter {quote_key(name)}: {e.get('msg', 'invalid')}")
    return JSONResponse({"error": "; ".join(parts)}, status_code=400)
