"""Patients: the registry's patients and the queries over them."""

from __future__ import annotations

import uuid

import psycopg


def count_patients(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM patients").fetchone()
    return int(row[0]) if row else 0


def patient_id_by_number(conn: psycopg.Connection, number: str) -> uuid.UUID | None:
    """The patient with this identity number (personnummer or other), if registered."""
    row = conn.execute("SELECT id FROM patients WHERE personnummer = %s", (number,)).fetchone()
    return row[0] if row else None
