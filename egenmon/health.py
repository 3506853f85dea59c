"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from egenmon import metrics as _metrics  # noqa: F401 (registers the metrics)
from egenmon.runtime import Runtime
from egenmon.store import db

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


async def database_ok(runtime: Runtime) -> bool:
    try:
        async with asyncio.timeout(2):
            async with runtime.pool.connection() as conn:
                await db.ping(conn)
        return True
    except Exception:  # noqa: BLE001  any failure means not ready; the reason is in the server log
        return False


async def broker_ok(runtime: Runtime) -> list[str]:
    """What is down of the broker side: "broker" (the readings subscription, or a broker
    that does not answer within a second), "results" (the results connection)."""
    mqtt = runtime.settings.mqtt
    if mqtt is None:
        return []
    consumer = runtime.mqtt
    if consumer is not None:
        if not consumer.is_connected():
            return ["broker"]
        if not consumer.results_connected():
            return ["results"]
        # Connected is not answering: a frozen broker keeps its connections open.
        return [] if await consumer.broker_answers(1.0) else ["broker"]
    try:
        async with asyncio.timeout(1):
            _, writer = await asyncio.open_connection(mqtt.host, mqtt.port)
        writer.close()
        return []
    except (OSError, TimeoutError):
        return ["broker"]


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    runtime: Runtime = request.app.state.runtime
    db, broker = await asyncio.gather(database_ok(runtime), broker_ok(runtime))
    down = ([] if db else ["database"]) + broker
    if down:
        return JSONResponse({"status": "unavailable", "down": down}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
