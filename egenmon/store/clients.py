"""The clients of egenmon's SMART authorization server, and the one-time values it saw.

A client is registered by an administrator (`egenmon client add`); removing it keeps the
row (removed_at) so an old client id is never handed out again. `seen_once` records a
client assertion's jti or an authorization code until it expires: the insert that finds
it present is a replay.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from egenmon.store.db import Conflict, NotFound

_COLUMNS = "id, name, jwks, jwks_uri, scopes, redirect_uris, origins, launch_uri, created_at"


def add_client(
    conn: psycopg.Connection,
    *,
    client_id: str,
    name: str,
    scopes: list[str],
    jwks: dict[str, Any] | None = None,
    jwks_uri: str | None = None,
    redirect_uris: list[str] | None = None,
    origins: list[str] | None = None,
    launch_uri: str | None = None,
) -> None:
    try:
        conn.execute(
            "INSERT INTO oauth_clients (id, name, jwks, jwks_uri, scopes, redirect_uris,"
            " origins, launch_uri) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (
                client_id,
                name,
                Jsonb(jwks) if jwks is not None else None,
                jwks_uri,
                scopes,
                redirect_uris or [],
                origins or [],
                launch_uri,
            ),
        )
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"a client with id {client_id} exists already") from None


def list_clients(conn: psycopg.Connection) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT {_COLUMNS} FROM oauth_clients WHERE removed_at IS NULL ORDER BY created_at"
        )
        return cur.fetchall()


def remove_client(conn: psycopg.Connection, client_id: str) -> None:
    row = conn.execute(
        "UPDATE oauth_clients SET removed_at = now() WHERE id = %s AND removed_at IS NULL"
        " RETURNING id",
        (client_id,),
    ).fetchone()
    if row is None:
        raise NotFound(f"no client {client_id!r}")


async def get_client(conn: psycopg.AsyncConnection, client_id: str) -> dict[str, Any] | None:
    """A registered client that has not been removed (a dict row), or None."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM oauth_clients WHERE id = %s AND removed_at IS NULL",
        (client_id,),
    )
    return await cur.fetchone()  # type: ignore[return-value]


async def origins(conn: psycopg.AsyncConnection) -> set[str]:
    """Every origin a registered app may call from (CORS)."""
    cur = await conn.execute(
        "SELECT DISTINCT unnest(origins) AS origin FROM oauth_clients WHERE removed_at IS NULL"
    )
    return {row["origin"] for row in await cur.fetchall()}  # type: ignore[call-overload]


async def seen_once(
    conn: psycopg.AsyncConnection, client_id: str, kind: str, value: str, expires_at: dt.datetime
) -> bool:
    """Record a jti or code; False when it was there already (a replay). Expired values
    are dropped on the way, so the table holds only what may still be replayed."""
    await conn.execute("DELETE FROM oauth_seen WHERE expires_at < now() - interval '5 minutes'")
    cur = await conn.execute(
        "INSERT INTO oauth_seen (client_id, kind, value, expires_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        (client_id, kind, value, expires_at),
    )
    return await cur.fetchone() is not None
