"""CORS for the origins of registered SMART apps only, on the FHIR API and the token
endpoint (and the SMART configuration).

A request from a registered origin gets `Access-Control-Allow-Origin` naming it (never
`*`, never credentials: apps send Bearer tokens, not cookies); a preflight from one is
answered here. A preflight from any other origin is refused with 403 and no CORS header,
and an actual request from one gets none, so the browser keeps its answer from the page.
The origins come from the clients table, cached for a few seconds and read again when an
unknown origin asks (at most once a second).
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from egenmon.store import clients

__all__ = ["ALLOW_HEADERS", "ALLOW_METHODS", "SmartCors", "cors_path"]

log = logging.getLogger("egenmon.cors")

ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Accept, Prefer, If-None-Exist, If-Match"
EXPOSE_HEADERS = "Location, Content-Location, ETag, Last-Modified"
MAX_AGE = "600"
_FRESH_S = 10.0
_MISS_REFRESH_S = 1.0


def cors_path(path: str) -> bool:
    """The paths a browser app on another origin may call."""
    return (
        path == "/fhir"
        or path.startswith("/fhir/")
        or path == "/oauth/token"
        or path == "/.well-known/smart-configuration"
    )


class SmartCors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._origins: frozenset[str] = frozenset()
        self._loaded = -1e9
        self._lock = asyncio.Lock()

    async def _allowed(self, scope: Scope, origin: str) -> bool:
        now = time.monotonic()
        age = now - self._loaded
        if age < _FRESH_S and (origin in self._origins or age < _MISS_REFRESH_S):
            return origin in self._origins
        async with self._lock:
            if time.monotonic() - self._loaded >= _MISS_REFRESH_S:
                runtime = getattr(scope["app"].state, "runtime", None)
                if runtime is None:
                    return False
                try:
                    async with runtime.pool.connection() as conn:
                        self._origins = frozenset(await clients.origins(conn))
                    self._loaded = time.monotonic()
                except Exception as exc:  # noqa: BLE001  no CORS is the safe answer
                    log.warning("CORS origins could not be read: %s", type(exc).__name__)
                    return False
        return origin in self._origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not cors_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        allowed = await self._allowed(scope, origin)
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if preflight:
            await self._preflight(send, origin if allowed else None)
            return
        if not allowed:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                h = MutableHeaders(scope=message)
                h["Access-Control-Allow-Origin"] = origin
                h["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
                h.append("Vary", "Origin")
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, send: Send, origin: str | None) -> None:
        if origin is None:
            body = b'{"error": "this origin is not registered for any app"}'
            headers = [(b"content-type", b"application/json"), (b"vary", b"Origin")]
            status = 403
        else:
            body = b""
            headers = [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", ALLOW_METHODS.encode()),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                (b"access-control-max-age", MAX_AGE.encode()),
                (b"vary", b"Origin"),
            ]
            status = 204
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
