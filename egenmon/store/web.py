"""Queries of the clinician UI: logins, sessions, and what the patient view reads.

Logins and sessions have a synchronous form for commands (`egenmon user add`, the demo
seed) and an asynchronous one for the service. Alerts and plans are read and changed
through the alerts part's own store and lifecycle functions, never with SQL of their own
here.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg

from egenmon.store.admin import Conflict, NotFound

__all__ = ["Conflict", "NotFound"]

# --- logins (commands) --------------------------------------------------------------------


def add_user(
    conn: psycopg.Connection,
    username: str,
    password_hash: str,
    role: str,
    care_unit_id: uuid.UUID | None,
    display_name: str | None = None,
    locale: str = "sv",
) -> uuid.UUID:
    """A new local login; Conflict when the username is taken."""
    try:
        row = conn.execute(
            "INSERT INTO users (username, password_hash, role, care_unit_id, display_name,"
            " locale) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (username, password_hash, role, care_unit_id, display_name, locale),
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"a user named {username!r} exists already") from None
    assert row
    return row[0]


def user_id_by_name(conn: psycopg.Connection, username: str) -> uuid.UUID | None:
    row = conn.execute("SELECT id FROM users WHERE username = %s", (username,)).fetchone()
    return row[0] if row else None


def set_password(conn: psycopg.Connection, username: str, password_hash: str) -> None:
    """A new password; also lifts a lockout and ends the user's sessions."""
    with conn.transaction():
        row = conn.execute(
            "UPDATE users SET password_hash = %s, failed_attempts = 0, locked_until = NULL"
            " WHERE username = %s RETURNING id",
            (password_hash, username),
        ).fetchone()
        if not row:
            raise NotFound(f"unknown user {username!r}")
        conn.execute("DELETE FROM sessions WHERE user_id = %s", (row[0],))


def unlock_user(conn: psycopg.Connection, username: str) -> None:
    """Lift every pause of a login (from every address) and its old-style lock."""
    row = conn.execute(
        "UPDATE users SET failed_attempts = 0, locked_until = NULL WHERE username = %s"
        " RETURNING id",
        (username,),
    ).fetchone()
    if not row:
        raise NotFound(f"unknown user {username!r}")
    conn.execute("DELETE FROM login_throttle WHERE kind = 'account' AND username = %s", (username,))


# --- logins and sessions (service) --------------------------------------------------------

_USER_COLUMNS = (
    "u.id AS user_id, u.username, u.role, u.care_unit_id, u.display_name, u.locale,"
    " cu.name AS care_unit_name"
)


async def find_login(conn: psycopg.AsyncConnection, username: str) -> dict[str, Any] | None:
    """The login named `username` with its hash and lockout state, or None."""
    cur = await conn.execute(
        f"SELECT {_USER_COLUMNS}, u.password_hash, u.failed_attempts, u.locked_until,"
        " now() AS now FROM users u LEFT JOIN care_units cu ON cu.id = u.care_unit_id"
        " WHERE u.username = %s",
        (username,),
    )
    return await cur.fetchone()  # type: ignore[return-value]


async def record_failure(
    conn: psycopg.AsyncConnection, user_id: uuid.UUID, max_attempts: int, lock_for: dt.timedelta
) -> dt.datetime | None:
    """Count a failed login; the `max_attempts`-th in a row locks the login for `lock_for`.

    One UPDATE, so concurrent guesses cannot slip past the count. Returns locked_until.
    """
    cur = await conn.execute(
        "UPDATE users SET"
        " locked_until = CASE WHEN failed_attempts + 1 >= %(max)s THEN now() + %(lock)s"
        "                ELSE locked_until END,"
        " failed_attempts = CASE WHEN failed_attempts + 1 >= %(max)s THEN 0"
        "                   ELSE failed_attempts + 1 END"
        " WHERE id = %(id)s RETURNING locked_until",
        {"max": max_attempts, "lock": lock_for, "id": user_id},
    )
    row = await cur.fetchone()
    return row["locked_until"] if row else None  # type: ignore[call-overload]


async def record_success(
    conn: psycopg.AsyncConnection, user_id: uuid.UUID, new_hash: str | None
) -> None:
    """A good login: clear the failure count, and store a re-hashed password if given."""
    await conn.execute(
        "UPDATE users SET failed_attempts = 0, locked_until = NULL, last_login_at = now(),"
        " password_hash = coalesce(%s, password_hash) WHERE id = %s",
        (new_hash, user_id),
    )


async def create_session(
    conn: psycopg.AsyncConnection,
    id_sha256: bytes,
    user_id: uuid.UUID,
    lifetime: dt.timedelta,
    csrf_token: str,
) -> None:
    await conn.execute(
        "INSERT INTO sessions (id_sha256, user_id, expires_at, csrf_token)"
        " VALUES (%s, %s, now() + %s, %s)",
        (id_sha256, user_id, lifetime, csrf_token),
    )


async def get_session(
    conn: psycopg.AsyncConnection, id_sha256: bytes, idle: dt.timedelta
) -> dict[str, Any] | None:
    """The live session with this id digest and its user; None when absent or expired."""
    cur = await conn.execute(
        f"SELECT {_USER_COLUMNS}, s.csrf_token, s.last_seen_at, s.expires_at, now() AS now"
        " FROM sessions s JOIN users u ON u.id = s.user_id"
        " LEFT JOIN care_units cu ON cu.id = u.care_unit_id"
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


async def set_locale(conn: psycopg.AsyncConnection, user_id: uuid.UUID, locale: str) -> None:
    await conn.execute("UPDATE users SET locale = %s WHERE id = %s", (locale, user_id))


# --- what the patient view reads ----------------------------------------------------------


async def patient_header(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID
) -> dict[str, Any] | None:
    """Who the patient is and which care unit they belong to."""
    cur = await conn.execute(
        "SELECT p.id, p.display_name, p.personnummer, p.identifier_kind, p.care_unit_id,"
        " cu.name AS care_unit_name FROM patients p JOIN care_units cu ON cu.id = p.care_unit_id"
        " WHERE p.id = %s",
        (patient_id,),
    )
    return await cur.fetchone()  # type: ignore[return-value]


async def patient_names(
    conn: psycopg.AsyncConnection, patient_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    """Display name, personnummer and care unit of each patient, by id."""
    if not patient_ids:
        return {}
    cur = await conn.execute(
        "SELECT id, display_name, personnummer, identifier_kind, care_unit_id FROM patients"
        " WHERE id = ANY(%s)",
        (list(patient_ids),),
    )
    return {r["id"]: r for r in await cur.fetchall()}  # type: ignore[call-overload, misc]


async def unit_patient_ids(
    conn: psycopg.AsyncConnection, care_unit_id: uuid.UUID | None
) -> list[uuid.UUID]:
    """The patients of a care unit (every patient for None)."""
    cur = await conn.execute(
        "SELECT id FROM patients WHERE %(unit)s::uuid IS NULL OR care_unit_id = %(unit)s",
        {"unit": care_unit_id},
    )
    return [r["id"] for r in await cur.fetchall()]  # type: ignore[call-overload]


async def reading_counts(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID, codes: Sequence[str], since: dt.datetime
) -> dict[str, int]:
    """How many readings of each code the patient has since `since`."""
    cur = await conn.execute(
        "SELECT code, count(*) AS n FROM readings WHERE patient_id = %s AND code = ANY(%s)"
        " AND time >= %s GROUP BY code",
        (patient_id, list(codes), since),
    )
    return {r["code"]: r["n"] for r in await cur.fetchall()}  # type: ignore[call-overload]


async def readings_raw(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID, codes: Sequence[str], since: dt.datetime
) -> list[dict[str, Any]]:
    """Every reading of these codes since `since`, oldest first; `ms` is the measurement
    time in milliseconds since the epoch (what the charts draw, cheaper than datetimes)."""
    if not codes:
        return []
    cur = await conn.execute(
        "SELECT (extract(epoch FROM time) * 1000)::bigint AS ms, type, value, value2"
        " FROM readings WHERE patient_id = %s AND code = ANY(%s) AND time >= %s ORDER BY time",
        (patient_id, list(codes), since),
    )
    return await cur.fetchall()  # type: ignore[return-value]


async def readings_bucketed(
    conn: psycopg.AsyncConnection,
    patient_id: uuid.UUID,
    codes: Sequence[str],
    since: dt.datetime,
    bucket: dt.timedelta,
) -> list[dict[str, Any]]:
    """Means per time bucket (for dense data over long ranges), oldest first; `ms` is the
    middle of the bucket in milliseconds since the epoch."""
    if not codes:
        return []
    cur = await conn.execute(
        "SELECT (extract(epoch FROM time_bucket(%s, time) + %s / 2) * 1000)::bigint AS ms,"
        " type, avg(value) AS value, avg(value2) AS value2 FROM readings"
        " WHERE patient_id = %s AND code = ANY(%s) AND time >= %s GROUP BY 1, 2 ORDER BY 1",
        (bucket, bucket, patient_id, list(codes), since),
    )
    return await cur.fetchall()  # type: ignore[return-value]


async def latest_readings(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID, codes: Sequence[str]
) -> list[dict[str, Any]]:
    """The newest reading of each code (an index walk per code, not a scan)."""
    cur = await conn.execute(
        "SELECT r.* FROM unnest(%s::text[]) AS c(code) CROSS JOIN LATERAL ("
        " SELECT time, type, value, value2, unit, on_oxygen, device_id, dedup_key"
        " FROM readings WHERE patient_id = %s AND code = c.code ORDER BY time DESC LIMIT 1"
        ") r",
        (list(codes), patient_id),
    )
    return await cur.fetchall()  # type: ignore[return-value]


async def recent_readings(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID, codes: Sequence[str], since: dt.datetime
) -> list[dict[str, Any]]:
    """Readings of these codes since `since` with what an observation id is made of."""
    cur = await conn.execute(
        "SELECT time, type, value, value2, on_oxygen, dedup_key FROM readings"
        " WHERE patient_id = %s AND code = ANY(%s) AND time >= %s ORDER BY time",
        (patient_id, list(codes), since),
    )
    return await cur.fetchall()  # type: ignore[return-value]


async def patient_devices(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID
) -> list[dict[str, Any]]:
    """Devices bound to the patient now, or until recently, newest binding first."""
    cur = await conn.execute(
        "SELECT d.id, d.model, d.manufacturer, d.status, d.last_seen, d.battery,"
        " lower(b.during) AS bound_from, upper(b.during) AS bound_until"
        " FROM device_bindings b JOIN devices d ON d.id = b.device_id"
        " WHERE b.patient_id = %s ORDER BY upper_inf(b.during) DESC, lower(b.during) DESC"
        " LIMIT 10",
        (patient_id,),
    )
    return await cur.fetchall()  # type: ignore[return-value]
