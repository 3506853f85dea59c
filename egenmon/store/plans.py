"""Monitoring plans: the current plan of each patient and its version history."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from egenmon.store.query import uuid_range

# --- monitoring plans ----------------------------------------------------------------------

_SET_PLAN = """
WITH cur AS (
    INSERT INTO monitoring_plans AS m (patient_id, protocol, plan, version, set_by, set_at)
    VALUES (%(patient_id)s, %(protocol)s, %(plan)s, 1, %(set_by)s, now())
    ON CONFLICT (patient_id) DO UPDATE SET
        protocol = EXCLUDED.protocol, plan = EXCLUDED.plan, version = m.version + 1,
        set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at
    RETURNING *
), history AS (
    INSERT INTO monitoring_plan_history (patient_id, version, protocol, plan, set_by, set_at)
    SELECT patient_id, version, protocol, plan, set_by, set_at FROM cur
)
SELECT * FROM cur
"""


# The commands (synchronous) and the API and UI (asynchronous) both read and set plans:
# each statement is one constant with a thin wrapper for each (the `a` prefix is async).
_GET_PLAN = "SELECT * FROM monitoring_plans WHERE patient_id = %s"


_PLAN_HISTORY = (
    "SELECT version, protocol, plan, set_by, set_at FROM monitoring_plan_history"
    " WHERE patient_id = %s ORDER BY version DESC LIMIT %s"
)


def _plan_args(patient_id: uuid.UUID, protocol: str, doc: dict, set_by: str) -> dict:
    return {"patient_id": patient_id, "protocol": protocol, "plan": Jsonb(doc), "set_by": set_by}


def set_plan(
    conn: psycopg.Connection, patient_id: uuid.UUID, protocol: str, doc: dict, set_by: str
) -> dict[str, Any]:
    """Store a patient's plan as a new version, with its history row."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SET_PLAN, _plan_args(patient_id, protocol, doc, set_by)).fetchone()
    assert row is not None
    return row


async def aset_plan(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID, protocol: str, doc: dict, set_by: str
) -> dict[str, Any]:
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SET_PLAN, _plan_args(patient_id, protocol, doc, set_by))
        row = await cur.fetchone()
    assert row is not None
    return row


async def aget_plan(conn: psycopg.AsyncConnection, patient_id: uuid.UUID) -> dict | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GET_PLAN, (patient_id,))
        return await cur.fetchone()


async def plan_history(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID, limit: int = 50
) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_PLAN_HISTORY, (patient_id, limit))
        return await cur.fetchall()


def get_plan(conn: psycopg.Connection, patient_id: uuid.UUID) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_GET_PLAN, (patient_id,)).fetchone()


def plans_for(
    conn: psycopg.Connection, patient_ids: list[uuid.UUID]
) -> list[tuple[str, str, str, dt.datetime]]:
    """As `load_plans`, for the patients named."""
    return conn.execute(
        "SELECT patient_id::text, plan::text, set_by, set_at FROM monitoring_plans"
        " WHERE patient_id = ANY(%s)",
        (patient_ids,),
    ).fetchall()


def load_plans(
    conn: psycopg.Connection, lo: uuid.UUID | None = None, hi: uuid.UUID | None = None
) -> list[tuple[str, str, str, dt.datetime]]:
    """(patient_id as text, plan document as text, set_by, set_at) of every plan in the
    range."""
    query = sql.SQL(
        "SELECT patient_id::text, plan::text, set_by, set_at FROM monitoring_plans WHERE true{}"
    ).format(uuid_range(lo, hi, "patient_id"))
    return conn.execute(query).fetchall()
