"""HTTP ingest, `POST /api/v1/readings`, and the admins' quarantine list.

The readings route is the hot path: no pydantic body model and no JSON encoder of
FastAPI's on it. It reads the body itself (bounded by the 1 MiB limit as it streams),
lets the pipeline do the rest and answers with orjson.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from egenmon.auth import bearer
from egenmon.deps import PrincipalDep
from egenmon.domain.principals import roles_allowed
from egenmon.ingest.pipeline import MAX_BODY, Pipeline
from egenmon.ingest.quarantine import entry_json, list_entries
from egenmon.ingest.service import pipeline_of
from egenmon.ingest.writer import WriteError
from egenmon.store.access_log import log_access

log = logging.getLogger("egenmon.ingest.http")
router = APIRouter(tags=["ingest"])

# What a stranger's body may cost in quarantine (a device's is kept whole up to 1 MiB).
MAX_ANONYMOUS_BODY = 64 * 1024

_READINGS_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["readings"],
                    "properties": {
                        "message_id": {"type": "string"},
                        "device_id": {"type": "string"},
                        "battery": {"type": "number", "minimum": 0, "maximum": 1},
                        "readings": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 1000,
                            "items": {"type": "object"},
                        },
                    },
                }
            }
        },
    },
}


def _json(body: dict, status: int, headers: dict | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


async def _read(request: Request, limit: int) -> tuple[bytes, int | None]:
    """The body, at most `limit` bytes of it; and its size when it was over the limit."""
    declared = request.headers.get("content-length")
    over: int | None = None
    if declared is not None and declared.isdigit() and int(declared) > limit:
        over = int(declared)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            chunks.append(chunk[: len(chunk) - (size - limit)])
            over = max(over or 0, size)
            break
        chunks.append(chunk)
    return b"".join(chunks), over


@router.post(
    "/api/v1/readings",
    openapi_extra=_READINGS_DOC,
    summary="Post a Reading message v1 (Bearer device secret)",
)
async def post_readings(request: Request) -> Response:
    """Store a device's readings; answers once the accepted ones are committed."""
    pipeline = pipeline_of(request.app.state.runtime)
    if pipeline is None:
        return _json({"error": "ingest is not running in this process"}, 503)
    received_at = dt.datetime.now(dt.UTC)
    secret = bearer(request)
    try:
        creds = await pipeline.credentials(secret) if secret else None
        if creds is None or not creds.active:
            return await _unauthorised(request, pipeline, creds, secret, received_at)
        body, over = await _read(request, MAX_BODY)
        if over is not None:
            reason = f"body over 1 MiB ({over} bytes or more; the first 1 MiB is kept)"
            await pipeline.quarantine(
                source="http",
                reason=reason,
                raw=body,
                device_id=creds.device_id,
                received_at=received_at,
            )
            return _json({"error": f"body over 1 MiB ({over} bytes)"}, 413)
        result = await pipeline.ingest(
            body, device_id=creds.device_id, source="http", received_at=received_at
        )
    except WriteError as e:
        return _json(
            {"error": f"readings could not be stored, try again: {e}"}, 503, {"Retry-After": "1"}
        )
    return _json(result.body(), result.status)


async def _unauthorised(
    request: Request,
    pipeline: Pipeline,
    creds,
    secret: str | None,
    received_at: dt.datetime,
) -> Response:
    if secret is None:
        error = "no credentials: send Authorization: Bearer <device secret>"
    elif creds is None:
        error = "the device secret is not valid"
    else:
        error = "the device is revoked"
    # A revoked device's readings may be a patient's real data: kept whole, like any
    # device's. A stranger's body is kept only in part and only at a bounded rate.
    known = creds is not None
    if known or pipeline.anonymous_quarantine.take():
        body, over = await _read(request, MAX_BODY if known else MAX_ANONYMOUS_BODY)
        reason = f"401: {error}" + (f" (body truncated, {over} bytes or more)" if over else "")
        await pipeline.quarantine(
            source="http",
            reason=reason,
            raw=body,
            device_id=creds.device_id if known else None,
            received_at=received_at,
        )
    elif pipeline.anonymous_quarantine.dropped() == 1:
        log.warning(
            "requests without valid credentials arrive faster than %.0f/s; the "
            "excess is refused without being quarantined",
            pipeline.anonymous_quarantine.rate,
        )
    return _json({"error": error}, 401, {"WWW-Authenticate": 'Bearer realm="egenmon"'})


@router.get("/api/v1/quarantine", summary="Rejected bodies and readings (admin only)")
async def get_quarantine(
    request: Request,
    principal: PrincipalDep,
    include_resolved: bool = False,
    device: str | None = None,
    source: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    """Quarantine entries, newest first (`before`: an id, for the next page)."""
    roles_allowed(principal, ("admin",))
    runtime = request.app.state.runtime
    async with runtime.pool.connection() as conn:
        entries = await list_entries(
            conn,
            include_resolved=include_resolved,
            device_id=device,
            source=source,
            limit=limit,
            before_id=before,
        )
    await log_access(
        runtime.pool, principal, "read", "quarantine", [], {"entries": [e["id"] for e in entries]}
    )
    return _json({"entries": [entry_json(e) for e in entries]}, 200)
