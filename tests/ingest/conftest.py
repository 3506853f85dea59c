"""Fixtures for HTTP ingest: the app in-process (lifespan run explicitly) and helpers."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import psycopg
import pytest

from egenmon.app import Roles, create_app
from egenmon.settings import Settings

T0 = dt.datetime(2026, 1, 10, 8, 0, tzinfo=dt.UTC)


@contextlib.asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    """The ASGI app with its services started; ASGITransport does not run the lifespan."""
    app = create_app(settings, Roles(mqtt=False, scheduler=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://egenmon") as client:
            yield client, app


@pytest.fixture
def in_app(settings: Settings) -> Callable[[Callable[..., Awaitable]], object]:
    """in_app(async fn(client, app)) runs fn against the app in-process; returns its result."""

    def run(fn: Callable[..., Awaitable]) -> object:
        async def go() -> object:
            async with running_app(settings) as (client, app):
                return await fn(client, app)

        return asyncio.run(go())

    return run


def pipeline_of(app) -> object:
    return app.state.runtime.pipeline


def auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def reading(type_name: str = "heart_rate", minutes: int = 0, **values: object) -> dict:
    """A valid reading at T0 + minutes (heart rate 72/min unless told otherwise)."""
    out: dict = {"type": type_name, "time": (T0 + dt.timedelta(minutes=minutes)).isoformat()}
    if not values:
        values = {"value": 72, "unit": "/min"}
    out.update(values)
    return out


def quarantine_rows(conn: psycopg.Connection) -> list[dict]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM quarantine ORDER BY id").fetchall()


def stored(conn: psycopg.Connection, device_id: str | None = None) -> list[dict]:
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT * FROM readings WHERE %s::text IS NULL OR device_id = %s ORDER BY time, type",
            (device_id, device_id),
        ).fetchall()


@pytest.fixture
def second_patient(cli, care_unit: str) -> str:
    from tests.conftest import make_personnummer

    r = cli(
        "patient",
        "add",
        "--personnummer",
        make_personnummer("19550505"),
        "--care-unit",
        care_unit,
        "--json",
    )
    assert r.code == 0, r.err
    return r.json["id"]


def new_device(cli, patient: str, since: str = "2020-01-01T00:00:00Z") -> dict:
    r = cli(
        "device",
        "add",
        "--patient",
        patient,
        "--model",
        "Test Hub",
        "--id",
        f"hub-{uuid.uuid4().hex[:10]}",
        "--since",
        since,
        "--json",
    )
    assert r.code == 0, r.err
    return {**r.json, "patient": patient}
