"""Patients: the registry's patients and the queries over them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from egenmon.store.db import Conflict, NotFound
from egenmon.store.query import Conn, Restrict, column, keyset_page, restrict_clause


def count_patients(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM patients").fetchone()
    return int(row[0]) if row else 0


def patient_id_by_number(conn: psycopg.Connection, number: str) -> uuid.UUID | None:
    """The patient with this identity number (personnummer or other), if registered."""
    row = conn.execute("SELECT id FROM patients WHERE personnummer = %s", (number,)).fetchone()
    return row[0] if row else None


async def apatient_id_by_number(conn: psycopg.AsyncConnection, number: str) -> uuid.UUID | None:
    """The patient with this identity number (a patient signing in through the provider)."""
    cur = await conn.execute("SELECT id FROM patients WHERE personnummer = %s", (number,))
    row: Any = await cur.fetchone()
    if row is None:
        return None
    return row["id"] if isinstance(row, dict) else row[0]


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


_PATIENT_UNIT = "SELECT care_unit_id FROM patients WHERE id = %s"


def patient_exists(conn: psycopg.Connection, patient_id: uuid.UUID) -> bool:
    return conn.execute(_PATIENT_UNIT, (patient_id,)).fetchone() is not None


# --- FHIR reads and searches -----------------------------------------------------------


async def patient_care_unit(conn: Conn, patient_id: uuid.UUID) -> uuid.UUID | None:
    """The patient's care unit; None when there is no such patient."""
    cur = await conn.execute(_PATIENT_UNIT, (patient_id,))
    row = await cur.fetchone()
    return column(row, "care_unit_id", 0) if row else None


_PATIENT_SELECT = (
    "SELECT p.id, p.personnummer, p.identifier_kind, p.display_name, p.created_at,"
    " cu.name AS care_unit_name, cu.hsa_id AS care_unit_hsa_id"
    " FROM patients p JOIN care_units cu ON cu.id = p.care_unit_id"
)


async def read_patient(
    conn: Conn, patient_id: uuid.UUID, restrict: Restrict
) -> dict[str, Any] | None:
    params: dict[str, Any] = {"id": patient_id}
    sql = _PATIENT_SELECT + " WHERE p.id = %(id)s" + restrict_clause(restrict, "p.id", params)
    cur = await conn.execute(sql, params)
    return await cur.fetchone()


async def search_patients(
    conn: Conn,
    *,
    personnummer: str | None,
    identifier_kind: str | None,
    restrict: Restrict,
    after: tuple[datetime, str] | None,
    limit: int | None,
    count_only: bool = False,
) -> list[dict[str, Any]] | int:
    """Patients by identity number (or all visible), in (created_at, id) order."""
    params: dict[str, Any] = {}
    where = "true"
    if personnummer is not None:
        params["pnr"] = personnummer
        where += " AND p.personnummer = %(pnr)s"
    if identifier_kind is not None:
        params["kind"] = identifier_kind
        where += " AND p.identifier_kind = %(kind)s"
    where += restrict_clause(restrict, "p.id", params)
    return await keyset_page(
        conn,
        _PATIENT_SELECT,
        where,
        params,
        key=("p.created_at", "p.id", "uuid"),
        descending=False,
        after=after,
        limit=limit,
        count_only=count_only,
    )
