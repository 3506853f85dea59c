"""Alert changes as server-sent events: `GET /api/v1/alerts/stream`.

A trigger on the alerts table (migration 0017) notifies `egenmon_alerts` once per
statement and care unit, on commit; every serve process LISTENs (`AlertEvents`) and fans
the notifications out to its streams, each limited to what its caller may see (a
clinician: their care unit). An event names the care unit, the operation and up to 20
alert ids, no health data: the worklist fetches its live part when one arrives.

The stream is authenticated like the Alerts API (Bearer token or the UI's session; the
session is not kept alive by it: the page's own requests are not activity), logged in
the access log when it opens, and ends after MAX_STREAM_S so a revoked session or token
stops receiving within that time (EventSource reconnects by itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from egenmon.auth import authenticate
from egenmon.deps import get_runtime
from egenmon.domain.principals import AuthError, Principal, roles_allowed
from egenmon.runtime import Runtime
from egenmon.store import shards as shards_store
from egenmon.store.access_log import log_access

log = logging.getLogger("egenmon.alerts.stream")

router = APIRouter(prefix="/api/v1", tags=["alerts"])

CHANNEL = "egenmon_alerts"
KEEPALIVE_S = 15.0
MAX_STREAM_S = 300.0
QUEUE_SIZE = 256
RETRY_MS = 3000
STAFF = ("clinician", "integrator", "admin")
# The header the UI's own requests carry so that they do not keep a session alive.
POLL_HEADER = b"x-egenmon-poll"


_HUBS: set[AlertEvents] = set()


def close_streams() -> None:
    """End every open stream of this process (it is shutting down); signal-handler safe."""
    for hub in list(_HUBS):
        if hub.loop is not None and not hub.loop.is_closed():
            hub.loop.call_soon_threadsafe(hub.close_all)


class AlertEvents:
    """The `alert-events` service: one LISTEN connection, many subscribers."""

    name = "alert-events"

    def __init__(self, url: str) -> None:
        self.url = url
        self._subscribers: dict[int, tuple[uuid.UUID | None, asyncio.Queue[dict | None]]] = {}
        self._next = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        _HUBS.add(self)
        self._task = asyncio.create_task(self._listen(), name="alert-events")

    def close_all(self) -> None:
        for _, q in self._subscribers.values():
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(None)

    async def stop(self) -> None:
        _HUBS.discard(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        self.close_all()

    def subscribe(self, care_unit: uuid.UUID | None) -> tuple[int, asyncio.Queue[dict | None]]:
        """A queue of this care unit's events (None: every unit's)."""
        self._next += 1
        q: asyncio.Queue[dict | None] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers[self._next] = (care_unit, q)
        return self._next, q

    def unsubscribe(self, key: int) -> None:
        self._subscribers.pop(key, None)

    def publish(self, event: dict) -> None:
        unit = event.get("care_unit")
        for want, q in list(self._subscribers.values()):
            if want is not None and str(want) != unit:
                continue
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:  # a slow reader: it refetches on the next event
                pass

    async def _listen(self) -> None:
        while True:
            conn: psycopg.AsyncConnection | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, application_name="egenmon-alert-events"
                )
                await shards_store.listen(conn, CHANNEL)
                self.connected.set()
                # Changes made while no connection listened: every stream refetches.
                self.publish({"op": "resync"})
                async for n in conn.notifies():
                    event = parse(n.payload)
                    if event is not None:
                        self.publish(event)
            except (psycopg.Error, OSError) as e:
                log.warning("alert events lost their connection: %s", type(e).__name__)
            finally:
                self.connected.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(1.0)


def parse(payload: str) -> dict[str, Any] | None:
    """The trigger's notification as an event, or None when it is not one."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("op") not in ("insert", "update"):
        return None
    ids = data.get("ids")
    count = data.get("count")
    return {
        "care_unit": data.get("care_unit") if isinstance(data.get("care_unit"), str) else None,
        "op": data["op"],
        "count": count if isinstance(count, int) else 0,
        "ids": [i for i in ids if isinstance(i, str)][:20] if isinstance(ids, list) else [],
    }


def events_of(runtime: Runtime) -> AlertEvents | None:
    hub = runtime.alert_events
    return hub if isinstance(hub, AlertEvents) else None


def sse(event: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


# Not in the OpenAPI document: an event stream is no request-response operation (and a
# client generated from the document, or a fuzzer, would wait on it for minutes).
@router.get("/alerts/stream", response_model=None, include_in_schema=False)
async def stream(request: Request, care_unit: str | None = None) -> Any:
    """Server-sent events of alert changes in the caller's care unit (`alerts` events)."""
    # The stream is the page's own doing: it must not keep an idle UI session alive.
    request.scope["headers"] = [*request.scope["headers"], (POLL_HEADER, b"1")]
    with contextlib.suppress(AttributeError):
        del request._headers  # Starlette caches the headers it parsed
    principal: Principal = await authenticate(request)
    roles_allowed(principal, STAFF)
    principal.require("Flag", "s")
    runtime = get_runtime(request)
    unit: uuid.UUID | None = None
    if care_unit:
        try:
            unit = uuid.UUID(care_unit)
        except ValueError:
            return JSONResponse({"error": f"care_unit {care_unit!r} is not an id"}, 400)
    if principal.role == "clinician":
        if unit is not None and unit != principal.care_unit_id:
            raise AuthError(403, "you may follow only your own care unit's alerts")
        if principal.care_unit_id is None:
            raise AuthError(403, "you belong to no care unit")
        unit = principal.care_unit_id
    hub = events_of(runtime)
    if hub is None:
        return JSONResponse({"error": "alert events are not served by this process"}, 503)
    await log_access(
        runtime.pool,
        principal,
        "read",
        "alerts-stream",
        [],
        {"care_unit": str(unit) if unit else None},
    )
    key, queue = hub.subscribe(unit)

    async def body() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + MAX_STREAM_S
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            yield sse("ready", {"care_unit": str(unit) if unit else None})
            while True:
                left = ends - loop.time()
                if left <= 0:
                    return
                try:
                    event = await asyncio.wait_for(queue.get(), min(KEEPALIVE_S, left))
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if event is None:
                    return
                yield sse("alerts", event)
        finally:
            hub.unsubscribe(key)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
