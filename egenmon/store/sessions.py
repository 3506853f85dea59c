"""Web sessions of signed-in users and patients (stored by the digest of their id)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg

from egenmon.store.users import USER_COLUMNS


async def create_session(
    conn: psycopg.AsyncConnection,
    id_sha256: bytes,
    user_id: uuid.UUID,
    lifetime: dt.timedelta,
    csrf_token: str,
    id_token: str | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO sessions (id_sha256, user_id, expires_at, csrf_token, id_token)"
        " VALUES (%s, %s, now() + %s, %s, %s)",
        (id_sha256, user_id, lifetime, csrf_token, id_token),
    )


async def create_patient_session(
    conn: psycopg.AsyncConnection,
    id_sha256: bytes,
    patient_id: uuid.UUID,
    lifetime: dt.timedelta,
    csrf_token: str,
    id_token: str | None = None,
) -> None:
    """A session of a patient (the patient app), signed in through the provider."""
    await conn.execute(
        "INSERT INTO sessions (id_sha256, patient_id, expires_at, csrf_token, id_token)"
        " VALUES (%s, %s, now() + %s, %s, %s)",
        (id_sha256, patient_id, lifetime, csrf_token, id_token),
    )


async def get_session(
    conn: psycopg.AsyncConnection, id_sha256: bytes, idle: dt.timedelta
) -> dict[str, Any] | None:
    """The live session with this id digest and its user or patient; None when absent or
    expired. A patient's session has user_id None and patient_id set (and the user
    columns NULL but for role 'patient' and locale 'sv')."""
    cur = await conn.execute(
        f"SELECT {USER_COLUMNS}, s.csrf_token, s.last_seen_at, s.expires_at, s.id_token,"
        " s.patient_id, p.display_name AS patient_name, now() AS now"
        " FROM sessions s LEFT JOIN users u ON u.id = s.user_id"
        " LEFT JOIN care_units cu ON cu.id = u.care_unit_id"
        " LEFT JOIN patients p ON p.id = s.patient_id"
        " WHERE s.id_sha256 = %s AND s.expires_at > now() AND s.last_seen_at > now() - %s",
        (id_sha256, idle),
    )
    return await cur.fetchone()  # type: ignore[return-value]


async def touch_session(conn: psycopg.AsyncConnection, id_sha256: bytes) -> None:
    await conn.execute(
        "UPDATE sessions SET last_seen_at = now() WHERE id_sha256 = %s", (id_sha256,)
    )


async def delete_session(conn: psycopg.AsyncConnection, id_sha256: bytes) -> None:
    await conn.execute("DELETE FROM sessions WHERE id_sha256 = %s", (id_sha256,))


async def delete_expired_sessions(conn: psycopg.AsyncConnection, idle: dt.timedelta) -> int:
    cur = await conn.execute(
        "DELETE FROM sessions WHERE expires_at <= now() OR last_seen_at <= now() - %s",
        (idle,),
    )
    return cur.rowcount
