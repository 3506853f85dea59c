"""Device formats over HTTP: Open mHealth data points and Bluetooth measurements.

`POST /api/v1/omh/dataPoints` and `POST /api/v1/ble/measurements` take device
credentials exactly as `POST /api/v1/readings` does (Bearer device secret), translate the
body with the pure `egenmon.ingest.omh` / `egenmon.ingest.ble`, and hand the readings to
the pipeline (`Pipeline.ingest_translated`): the same normalisation, dedup, batch writer
and quarantine, with source ``omh`` or ``ble``. The answer is the readings route's:
200/422 `{"accepted", "duplicates", "rejected": [{"index": i, "error"}]}` (`index` is the
data point's or measurement's place in the body), 400 for a body that is not the format
(kept whole in quarantine), 401, 413, 503.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from egenmon.auth import bearer
from egenmon.ingest import ble, omh
from egenmon.ingest.http import _json, _read
from egenmon.ingest.normalise import parse_time
from egenmon.ingest.pipeline import MAX_BODY, Pipeline
from egenmon.ingest.service import pipeline_of
from egenmon.ingest.translated import FormatError, Translated
from egenmon.ingest.writer import WriteError

log = logging.getLogger("egenmon.ingest.formats")
router = APIRouter(tags=["ingest"])

MAX_ANONYMOUS_BODY = 64 * 1024

_ANSWER = {
    "200": {"description": "`{accepted, duplicates, rejected: [{index, error}]}`"},
    "400": {"description": "not JSON, or not the format"},
    "401": {"description": "no or bad device credentials"},
    "413": {"description": "body over 1 MiB"},
    "422": {"description": "every item refused (the 200 shape)"},
}


def _doc(schema: dict) -> dict:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"oneOf": [schema, {"type": "array", "items": schema}]}
                }
            },
        },
        "responses": _ANSWER,
    }


_OMH_DOC = _doc(
    {
        "type": "object",
        "required": ["header", "body"],
        "properties": {"header": {"type": "object"}, "body": {"type": "object"}},
    }
)
_BLE_DOC = _doc(
    {
        "type": "object",
        "required": ["characteristic", "value_hex"],
        "properties": {
            "characteristic": {"type": "string", "example": "0x2A35"},
            "value_hex": {"type": "string", "pattern": "^([0-9A-Fa-f]{2})+$"},
            "time": {"type": "string", "format": "date-time"},
            "user_id": {"type": "integer", "minimum": 0, "maximum": 255},
        },
    }
)


@router.post(
    "/api/v1/omh/dataPoints",
    openapi_extra=_OMH_DOC,
    summary="Post Open mHealth (IEEE 1752) data points (Bearer device secret)",
)
async def post_omh(request: Request) -> Response:
    """Store a device's Open mHealth data points; answers once they are committed."""
    return await _ingest(
        request, "omh", lambda body, _pipeline, _at: omh.translate_body(body, parse_time=parse_time)
    )


@router.post(
    "/api/v1/ble/measurements",
    openapi_extra=_BLE_DOC,
    summary="Post Bluetooth health characteristic values (Bearer device secret)",
)
async def post_ble(request: Request) -> Response:
    """Decode and store a device's Bluetooth measurements; answers once committed."""
    return await _ingest(
        request,
        "ble",
        lambda body, pipeline, at: ble.translate_body(
            body, received_at=at, tz=pipeline.settings.tz, parse_time=parse_time
        ),
    )


async def _ingest(
    request: Request,
    source: str,
    translate: Callable[[bytes, Pipeline, dt.datetime], list[Translated]],
) -> Response:
    pipeline = pipeline_of(request.app.state.runtime)
    if pipeline is None:
        return _json({"error": "ingest is not running in this process"}, 503)
    received_at = dt.datetime.now(dt.UTC)
    secret = bearer(request)
    try:
        creds = await pipeline.credentials(secret) if secret else None
        if creds is None or not creds.active:
            return await _unauthorised(request, pipeline, source, creds, secret, received_at)
        body, over = await _read(request, MAX_BODY)
        if over is not None:
            await pipeline.quarantine(
                source=source,
                reason=f"body over 1 MiB ({over} bytes or more; the first 1 MiB is kept)",
                raw=body,
                device_id=creds.device_id,
                received_at=received_at,
            )
            return _json({"error": f"body over 1 MiB ({over} bytes)"}, 413)
        try:
            items = translate(body, pipeline, received_at)
        except FormatError as e:
            await pipeline.quarantine(
                source=source,
                reason=str(e),
                raw=body,
                device_id=creds.device_id,
                received_at=received_at,
            )
            return _json({"error": str(e)}, 400)
        result = await pipeline.ingest_translated(
            items, device_id=creds.device_id, source=source, received_at=received_at
        )
    except WriteError as e:
        return _json(
            {"error": f"readings could not be stored, try again: {e}"}, 503, {"Retry-After": "1"}
        )
    return _json(result.body(), result.status)


async def _unauthorised(
    request: Request,
    pipeline: Pipeline,
    source: str,
    creds: object,
    secret: str | None,
    received_at: dt.datetime,
) -> Response:
    if secret is None:
        error = "no credentials: send Authorization: Bearer <device secret>"
    elif creds is None:
        error = "the device secret is not valid"
    else:
        error = "the device is revoked"
    known = creds is not None
    # As for readings: a revoked device's body is kept whole, a stranger's in part and
    # at a bounded rate.
    if known or pipeline.anonymous_quarantine.take():
        body, over = await _read(request, MAX_BODY if known else MAX_ANONYMOUS_BODY)
        reason = f"401: {error}" + (f" (body truncated, {over} bytes or more)" if over else "")
        await pipeline.quarantine(
            source=source,
            reason=reason,
            raw=body,
            device_id=getattr(creds, "device_id", None),
            received_at=received_at,
        )
    return _json({"error": error}, 401, {"WWW-Authenticate": 'Bearer realm="egenmon"'})
