"""Clinician accounts: creation, passwords, lockout and the login lookup."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg

from egenmon.store.db import Conflict, NotFound

# --- logins (commands) --------------------------------------------------------------------


def add_user(
    conn: psycopg.Connection,
    username: str,
    password_hash: str | None,
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


# --- logins (service) --------------------------------------------------------

USER_COLUMNS = (
    "u.id AS user_id, u.username, u.role, u.care_unit_id, u.display_name, u.locale,"
    " cu.name AS care_unit_name"
)


async def find_login(conn: psycopg.AsyncConnection, username: str) -> dict[str, Any] | None:
    """The login named `username` with its hash and lockout state, or None."""
    cur = await conn.execute(
        f"SELECT {USER_COLUMNS}, u.password_hash, u.failed_attempts, u.locked_until,"
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


async def find_by_hsa_id(conn: psycopg.AsyncConnection, hsa_id: str) -> dict[str, Any] | None:
    """The login with this HSA-id (a clinician or admin signing in through the provider)."""
    cur = await conn.execute(
        f"SELECT {USER_COLUMNS}, cu.hsa_id AS care_unit_hsa_id"
        " FROM users u LEFT JOIN care_units cu ON cu.id = u.care_unit_id WHERE u.hsa_id = %s",
        (hsa_id,),
    )
    return await cur.fetchone()  # type: ignore[return-value]


async def record_provider_login(conn: psycopg.AsyncConnection, user_id: uuid.UUID) -> None:
    await conn.execute("UPDATE users SET last_login_at = now() WHERE id = %s", (user_id,))


def set_hsa_id(conn: psycopg.Connection, user_id: uuid.UUID, hsa_id: str | None) -> None:
    """The HSA-id a login is found by when signing in through the provider."""
    try:
        conn.execute("UPDATE users SET hsa_id = %s WHERE id = %s", (hsa_id, user_id))
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"another login has HSA-id {hsa_id}") from None


async def set_locale(conn: psycopg.AsyncConnection, user_id: uuid.UUID, locale: str) -> None:
    await conn.execute("UPDATE users SET locale = %s WHERE id = %s", (locale, user_id))
