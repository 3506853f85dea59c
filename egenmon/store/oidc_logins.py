"""Sign-ins under way at the OpenID provider: state digest, nonce, PKCE verifier, one use."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg


async def save_login(
    conn: psycopg.AsyncConnection,
    state_sha256: bytes,
    audience: str,
    nonce: str,
    code_verifier: str,
    next_path: str,
    ttl: dt.timedelta,
) -> None:
    await conn.execute(
        "INSERT INTO oidc_logins (state_sha256, audience, nonce, code_verifier, next, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, now() + %s)",
        (state_sha256, audience, nonce, code_verifier, next_path, ttl),
    )


async def take_login(conn: psycopg.AsyncConnection, state_sha256: bytes) -> dict[str, Any] | None:
    """The sign-in with this state digest, removed (a state is good once); None when
    unknown or expired."""
    cur = await conn.execute(
        "DELETE FROM oidc_logins WHERE state_sha256 = %s"
        " RETURNING audience, nonce, code_verifier, next, expires_at > now() AS live",
        (state_sha256,),
    )
    row: Any = await cur.fetchone()
    return row if row and row["live"] else None


async def delete_expired(conn: psycopg.AsyncConnection) -> int:
    cur = await conn.execute("DELETE FROM oidc_logins WHERE expires_at <= now()")
    return cur.rowcount
