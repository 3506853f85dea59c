"""Patients: the registry's patients and the queries over them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from egenmon.store.db import Conflict, NotFound


def count_patients(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM patients").fetchone()
    return int(row[0]) if row else 0


def patient_id_by_number(conn: psycopg.Connection, number: str) -> uuid.UUID | None:
    """The patient with this identity number (personnummer or other), if registered."""
    row = conn.execute("SELECT id FROM patients WHERE personnummer = %s", (number,)).fetchone()
    return row[0] if row else None


def add_patient(
    conn: psycopg.Connection,
    number: str,
    kind: str,
    care_unit_id: uuid.UUID,
    display_name: str | None = None,
) -> uuid.UUID:
    try:
        row = conn.execute(
            "INSERT INTO patients (personnummer, identifier_kind, care_unit_id, display_name)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (number, kind, care_unit_id, display_name),
        ).fetchone()
    except psycopg.errors.UniqueViolation:
        raise Conflict("a patient with that identity number exists already") from None
    assert row
    return row[0]


def get_patient(conn: psycopg.Connection, patient_id: uuid.UUID | str) -> dict[str, Any]:
    try:
        pid = uuid.UUID(str(patient_id))
    except ValueError:
        raise NotFound(f"unknown patient {patient_id!r}") from None
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM patients WHERE id = %s", (pid,)).fetchone()
    if not row:
        raise NotFound(f"unknown patient {patient_id}")
    return row


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
