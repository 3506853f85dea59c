"""Care units (vårdenheter): the registry's writes and lookups."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from egenmon.store.db import Conflict, NotFound


def add_care_unit(conn: psycopg.Connection, name: str, hsa_id: str) -> uuid.UUID:
    try:
        row = conn.execute(
            "INSERT INTO care_units (name, hsa_id) VALUES (%s, %s) RETURNING id", (name, hsa_id)
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"a care unit with HSA-id {hsa_id} exists already") from None
    assert row
    return row[0]


def find_care_unit(conn: psycopg.Connection, ref: str) -> uuid.UUID:
    """A care unit by uuid, HSA-id or exact name."""
    try:
        as_uuid: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        as_uuid = None
    row = conn.execute(
        "SELECT id FROM care_units WHERE id = %s OR hsa_id = %s OR name = %s LIMIT 2",
        (as_uuid, ref, ref),
    ).fetchall()
    if len(row) != 1:
        raise NotFound(f"unknown care unit {ref!r}")
    return row[0][0]


async def care_unit_by_hsa_id(conn: psycopg.AsyncConnection, hsa_id: str) -> uuid.UUID | None:
    """The care unit with this HSA-id (a provider's claim or token names units so)."""
    cur = await conn.execute("SELECT id FROM care_units WHERE hsa_id = %s", (hsa_id,))
    row: Any = await cur.fetchone()
    if row is None:
        return None
    return row["id"] if isinstance(row, dict) else row[0]
