"""`POST /api/v1/devices/{id}/payloads`: a vendor payload, mapped by its model's templates.

Device credentials as for readings (Bearer device secret); the id in the path must be
the authenticated device. The answer has the shape of the readings route's.
"""

from __future__ import annotations

import datetime as dt

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from egenmon.auth import bearer
from egenmon.ingest.http import _read, _unauthorised
from egenmon.ingest.payloads import SOURCE, ingest_payload
from egenmon.ingest.pipeline import MAX_BODY
from egenmon.ingest.service import pipeline_of
from egenmon.ingest.writer import WriteError

router = APIRouter(tags=["ingest"])


def _json(body: dict, status: int, headers: dict | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


@router.post(
    "/api/v1/devices/{device_id}/payloads",
    summary="Post a vendor payload, mapped by the device model's templates (Bearer device secret)",
)
async def post_payload(device_id: str, request: Request) -> Response:
    pipeline = pipeline_of(request.app.state.runtime)
    if pipeline is None:
        return _json({"error": "ingest is not running in this process"}, 503)
    received_at = dt.datetime.now(dt.UTC)
    secret = bearer(request)
    try:
        creds = await pipeline.credentials(secret) if secret else None
        if creds is None or not creds.active:
            return await _unauthorised(request, pipeline, creds, secret, received_at)
        if creds.device_id != device_id:
            return _json({"error": "the path names another device than the authenticated one"}, 403)
        body, over = await _read(request, MAX_BODY)
        if over is not None:
            await pipeline.quarantine(
                source=SOURCE,
                reason=f"body over 1 MiB ({over} bytes or more; the first 1 MiB is kept)",
                raw=body,
                device_id=device_id,
                received_at=received_at,
            )
            return _json({"error": f"body over 1 MiB ({over} bytes)"}, 413)
        result = await ingest_payload(pipeline, body, device_id=device_id, received_at=received_at)
    except WriteError as e:
        return _json(
            {"error": f"the payload could not be stored, try again: {e}"}, 503, {"Retry-After": "1"}
        )
    return _json(result.body(), result.status)
