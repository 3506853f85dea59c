"""Assembles the ASGI app and the background services, with explicit start and stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from egenmon import health, openapi
from egenmon.alerts import api as alerts_api
from egenmon.alerts import stream as alerts_stream
from egenmon.alerts.instant import RuleFeed, RuleWorker
from egenmon.alerts.outbox import OutboxSender
from egenmon.alerts.scheduler import Scheduler
from egenmon.domain.principals import AuthError
from egenmon.export import api as export_api
from egenmon.export.jobs import ExportService
from egenmon.fhir import api as fhir_api
from egenmon.fhir import subscription_api
from egenmon.fhir.http import FhirHttp
from egenmon.identity.provider import identity_services
from egenmon.ingest import formats_http as ingest_formats
from egenmon.ingest import http as ingest_http
from egenmon.ingest import payload_http
from egenmon.ingest.mqtt import MqttConsumer
from egenmon.ingest.pipeline import Pipeline
from egenmon.limits import RequestLimits, parameter_error
from egenmon.runtime import Runtime, Service
from egenmon.settings import Settings
from egenmon.store.db import DatabaseError, check_timescaledb, connect, make_pool
from egenmon.store.migrate import has_schema
from egenmon.web import me as patient_api
from egenmon.web import oauth, patient_app, sso
from egenmon.web import routes as web
from egenmon.web.cors import SmartCors
from egenmon.web.sessions import Sessions

log = logging.getLogger("egenmon")


@dataclass(frozen=True)
class Roles:
    """Which parts this process runs (`serve --no-http --no-mqtt --no-scheduler`)."""

    http: bool = True
    mqtt: bool = True
    scheduler: bool = True


S = TypeVar("S", bound=Service)


def check_database(settings: Settings) -> None:
    """Refuse to start on a database without TimescaleDB or without egenmon's schema."""
    with connect(settings.require_database()) as conn:
        check_timescaledb(conn)
        if not has_schema(conn):
            raise DatabaseError("the database has no egenmon schema: run `egenmon migrate`")


def create_app(settings: Settings, roles: Roles = Roles()) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(check_database, settings)
        pool = make_pool(settings.require_database(), settings.pool_min, settings.pool_max)
        await pool.open(wait=True, timeout=30)
        runtime = Runtime(settings=settings, pool=pool)
        app.state.runtime = runtime
        started: list[Service] = []

        async def start(service: S) -> S:
            await service.start()
            started.append(service)
            return service

        try:
            # Started in this order, stopped in reverse: the pipeline first (the HTTP and
            # MQTT edges and FHIR ingest hand it readings), the scheduler last.
            pipeline = runtime.pipeline = await start(Pipeline(settings, pool))
            if roles.http:
                runtime.sessions = await start(Sessions(runtime))
                signin_provider, token_keys = identity_services(settings)
                if signin_provider is not None:
                    runtime.identity = await start(signin_provider)
                    sso.check_relying_party(runtime)
                if token_keys is not None and token_keys is not signin_provider:
                    await start(token_keys)
                runtime.token_keys = token_keys
                runtime.exports = await start(ExportService(settings))
            if roles.mqtt and settings.mqtt is not None:
                runtime.mqtt = await start(MqttConsumer(settings, pipeline, pool=pool))
            # Instant rules: the writer's commits feed the worker owning each patient's shard.
            if settings.instant_rules:
                feed = await start(RuleFeed(settings.require_database()))
                pipeline.writer.committed.append(feed.committed)
            if roles.scheduler and settings.instant_rules:
                runtime.rules = await start(RuleWorker(runtime, feed))
            if roles.http:
                events = alerts_stream.AlertEvents(settings.require_database())
                runtime.alert_events = await start(events)
            if roles.scheduler:
                runtime.scheduler = await start(Scheduler(runtime))
                await start(OutboxSender(runtime))  # webhooks and FHIR Subscriptions
            log.info("egenmon started (%s)", ", ".join(s.name for s in started))
            yield
        finally:
            for service in reversed(started):
                try:
                    await service.stop()
                except Exception:
                    log.exception("stopping %s failed", service.name)
            await pool.close()

    app = FastAPI(
        title="egenmon",
        version="0.1.0",
        lifespan=lifespan,
        description="Patient self-monitoring: device readings to FHIR R4, rules to care contacts.",
        # No Swagger UI or ReDoc: FastAPI loads them from a CDN, and no page of egenmon
        # runs a third party's script. The OpenAPI document stays at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    for router in (
        health.router,
        ingest_http.router,
        subscription_api.router,  # before the FHIR router's catch-all
        export_api.router,  # before the FHIR router, whose catch-all would take its paths
        fhir_api.router,
        alerts_stream.router,
        alerts_api.router,
        web.router,
        sso.router,
        patient_app.router,
        patient_app.api,
        oauth.router,
        patient_api.router,
    ):
        app.include_router(router)
    app.include_router(ingest_formats.router)  # Open mHealth and Bluetooth (issue 17)
    app.include_router(payload_http.router)  # vendor payloads through templates (issue 17)
    app.add_exception_handler(AuthError, auth_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, parameter_error)  # type: ignore[arg-type]
    app.add_middleware(FhirHttp)  # HEAD, gzip and OperationOutcome errors under /fhir
    app.add_middleware(RequestLimits)
    app.add_middleware(SmartCors)  # outside the limits: their refusals carry CORS too
    # Outermost, so that every answer over https carries it, refusals by the limits too.
    app.add_middleware(StrictTransportSecurity)
    app.openapi = lambda: openapi.document(app)  # type: ignore[method-assign]
    return app


HSTS = "max-age=31536000; includeSubDomains"


class StrictTransportSecurity:
    """HSTS on every response to a request that came over https: directly, or through a
    proxy uvicorn trusts (FORWARDED_ALLOW_IPS, default 127.0.0.1), whose
    X-Forwarded-Proto sets the scheme. Never over plain http, where it means nothing and
    would pin a development host."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def send_with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        await self.app(scope, receive, send_with_hsts)


async def auth_error(request: Request, exc: AuthError) -> Response:
    """401/403 in the shape the caller speaks: OperationOutcome, JSON, or the login page."""
    headers = {"WWW-Authenticate": 'Bearer realm="egenmon"'} if exc.status == 401 else None
    path = request.url.path
    if path.startswith("/fhir"):
        code = "login" if exc.status == 401 else "forbidden"
        body = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": exc.message}],
        }
        return JSONResponse(
            body, status_code=exc.status, headers=headers, media_type="application/fhir+json"
        )
    if path.startswith("/ui") and exc.status == 401:
        return RedirectResponse("/login?next=" + path, status_code=303)
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)
