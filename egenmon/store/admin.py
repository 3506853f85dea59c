"""Queries for the registry: care units, patients, devices and bindings (synchronous)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg.types.range import Range


class NotFound(LookupError):
    pass


class Conflict(ValueError):
    pass


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


def add_device(
    conn: psycopg.Connection,
    device_id: str,
    model: str,
    secret_sha256: bytes,
    *,
    patient_id: uuid.UUID,
    since: dt.datetime,
    manufacturer: str | None = None,
    acquisition: str = "prescribed",
) -> None:
    """A device and its first binding, in one transaction."""
    with conn.transaction():
        try:
            conn.execute(
                "INSERT INTO devices (id, model, manufacturer, acquisition, secret_sha256)"
                " VALUES (%s, %s, %s, %s, %s)",
                (device_id, model, manufacturer, acquisition, secret_sha256),
            )
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"device {device_id} exists already") from None
        except psycopg.errors.CheckViolation:
            raise Conflict(
                "device id must be 1-64 letters, digits, '.' or '-', starting with a "
                "letter or digit (it is a FHIR id and an MQTT topic level)"
            ) from None
        bind_device(conn, device_id, patient_id, since)


def bind_device(
    conn: psycopg.Connection,
    device_id: str,
    patient_id: uuid.UUID,
    since: dt.datetime,
    until: dt.datetime | None = None,
) -> int:
    """Bind a device to a patient over [since, until); the database refuses overlaps."""
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO device_bindings (device_id, patient_id, during)"
                " VALUES (%s, %s, %s) RETURNING id",
                (device_id, patient_id, Range(since, until, "[)")),
            ).fetchone()
    except psycopg.errors.ExclusionViolation:
        raise Conflict(
            f"device {device_id} is already bound to a patient during that time"
        ) from None
    assert row
    return row[0]


def end_binding(conn: psycopg.Connection, device_id: str, at: dt.datetime) -> int:
    """Close the device's open binding at `at`; returns how many were closed."""
    cur = conn.execute(
        "UPDATE device_bindings SET during = tstzrange(lower(during), %s, '[)')"
        " WHERE device_id = %s AND upper_inf(during) AND lower(during) < %s",
        (at, device_id, at),
    )
    return cur.rowcount


def revoke_device(conn: psycopg.Connection, device_id: str) -> None:
    cur = conn.execute(
        "UPDATE devices SET status = 'revoked', revoked_at = coalesce(revoked_at, now())"
        " WHERE id = %s",
        (device_id,),
    )
    if cur.rowcount == 0:
        raise NotFound(f"unknown device {device_id!r}")


def get_device(conn: psycopg.Connection, device_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT id, model, manufacturer, acquisition, status, created_at, revoked_at,"
            " last_seen, battery FROM devices WHERE id = %s",
            (device_id,),
        ).fetchone()
    if not row:
        raise NotFound(f"unknown device {device_id!r}")
    return row


def record_access(
    conn: psycopg.Connection,
    *,
    actor: str,
    role: str,
    action: str,
    resource: str,
    patient_ids: list[uuid.UUID] | None = None,
    care_unit_id: uuid.UUID | None = None,
    detail: Any = None,
) -> None:
    """Append to the access log (patientdatalagen 4:3)."""
    conn.execute(
        "INSERT INTO access_log (actor, role, care_unit_id, action, resource, patient_ids,"
        " detail) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            actor,
            role,
            care_unit_id,
            action,
            resource,
            patient_ids or [],
            Jsonb(detail) if detail is not None else None,
        ),
    )
