"""Devices and their bindings to patients: the registry's writes, the ingest path's
credential and binding lookups, device health, revocations and the change channel."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg.types.range import Range
from psycopg_pool import AsyncConnectionPool

from egenmon.store.db import Conflict, NotFound
from egenmon.store.query import Conn, Restrict, keyset_page, restrict_clause, uuid_range

NOTIFY_CHANNEL = "egenmon_device"


async def listen_device_changes(conn: psycopg.AsyncConnection) -> None:
    """Subscribe the (autocommit) connection to the device changes (NOTIFY_CHANNEL)."""
    await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")


# The digest is the key: a device authenticates with its secret alone.
_CREDENTIALS = "SELECT id, status, secret_sha256 FROM devices WHERE secret_sha256 = %s"


_BINDINGS = (
    "SELECT patient_id, lower(during), upper(during) FROM device_bindings"
    " WHERE device_id = %s ORDER BY lower(during) DESC"
)


# One statement for every device heard from since the last flush. GREATEST keeps the
# latest time when two processes flush out of order; the battery follows the newest note.
_HEALTH = (
    "UPDATE devices AS d SET last_seen = GREATEST(d.last_seen, v.seen),"
    " battery = CASE WHEN v.battery IS NOT NULL"
    " AND (d.last_seen IS NULL OR v.battery_at >= d.last_seen) THEN v.battery"
    " ELSE d.battery END"
    " FROM unnest(%s::text[], %s::timestamptz[], %s::real[], %s::timestamptz[])"
    " AS v(id, seen, battery, battery_at) WHERE d.id = v.id"
)


async def device_by_digest(
    conn: psycopg.AsyncConnection, digest: bytes
) -> tuple[str, str, bytes] | None:
    """(device id, status, stored digest) of the device whose secret has this digest."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_CREDENTIALS, (digest,), prepare=True)
        return await cur.fetchone()


BindingRow = tuple[Any, dt.datetime | None, dt.datetime | None]


async def device_bindings(conn: psycopg.AsyncConnection, device_id: str) -> list[BindingRow]:
    """(patient id, start, end) of every binding of the device, newest first."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_BINDINGS, (device_id,), prepare=True)
        return await cur.fetchall()


async def update_device_health(
    conn: psycopg.AsyncConnection,
    notes: Sequence[tuple[str, dt.datetime, float | None, dt.datetime | None]],
) -> None:
    """Set last_seen and battery of many devices at once: (id, seen, battery, battery_at)."""
    if not notes:
        return
    ids, seen, battery, battery_at = (list(c) for c in zip(*notes, strict=True))
    await conn.execute(_HEALTH, (ids, seen, battery, battery_at))


async def revoked_device_ids(pool: AsyncConnectionPool) -> list[str]:
    """Ids of every revoked device, oldest revocation first."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id FROM devices WHERE status = 'revoked' ORDER BY revoked_at, id"
        )
        rows = await cur.fetchall()
    return [r["id"] if isinstance(r, dict) else r[0] for r in rows]


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


def load_devices(
    conn: psycopg.Connection,
    now: dt.datetime,
    stale_before: dt.datetime,
    since: dt.datetime,
    lo: uuid.UUID | None = None,
    hi: uuid.UUID | None = None,
) -> list[tuple[str, str, dt.datetime | None, dt.datetime]]:
    """(patient_id as text, device_id, last seen, bound since) of every active device bound
    now.

    A device's last message is `devices.last_seen`; where that is missing or older than
    `stale_before`, its newest reading received since `since` is looked up instead.
    Silence is counted from the binding's start, but never from before the device was
    registered: a binding dated back (to take in a device's stored history) does not make
    a device registered an hour ago inactive.
    """
    query = sql.SQL(
        "SELECT b.patient_id::text, d.id, GREATEST(d.last_seen, x.seen),"
        " GREATEST(lower(b.during), d.created_at)"
        " FROM device_bindings b JOIN devices d ON d.id = b.device_id"
        " LEFT JOIN LATERAL (SELECT max(r.received_at) AS seen FROM readings r"
        "   WHERE (d.last_seen IS NULL OR d.last_seen < {stale})"
        "   AND r.patient_id = b.patient_id AND r.device_id = d.id AND r.time > {since}) x"
        "   ON true"
        " WHERE b.during @> {now}::timestamptz AND d.status = 'active'{range}"
    ).format(
        stale=sql.Literal(stale_before),
        since=sql.Literal(since),
        now=sql.Literal(now),
        range=uuid_range(lo, hi, "patient_id"),
    )
    return conn.execute(query).fetchall()


# --- FHIR reads and searches -----------------------------------------------------------

# A device's patient is the one it is bound to now.
_DEVICE_SELECT = (
    "SELECT d.id, d.model, d.manufacturer, d.status, d.created_at, b.patient_id,"
    # The identifiers PHD gateways name the device by (IEEE 11073 system ids), issue 17.
    " (SELECT array_agg(i.system || '|' || i.value ORDER BY i.system, i.value)"
    "  FROM device_identifiers i WHERE i.device_id = d.id) AS identifiers"
    " FROM devices d LEFT JOIN device_bindings b"
    " ON b.device_id = d.id AND b.during @> now()"
)


async def read_device(conn: Conn, device_id: str, restrict: Restrict) -> dict[str, Any] | None:
    params: dict[str, Any] = {"id": device_id}
    sql = (
        _DEVICE_SELECT + " WHERE d.id = %(id)s" + restrict_clause(restrict, "b.patient_id", params)
    )
    cur = await conn.execute(sql, params)
    return await cur.fetchone()


async def search_devices(
    conn: Conn,
    *,
    patient_id: uuid.UUID | None,
    device_id: str | None,
    restrict: Restrict,
    after: tuple[datetime, str] | None,
    limit: int | None,
    count_only: bool = False,
    identifier: tuple[str, str] | None = None,
) -> list[dict[str, Any]] | int:
    """Devices by current patient, id and/or identifier (system, value), in (created_at,
    id) order."""
    params: dict[str, Any] = {}
    where = "true"
    if identifier is not None:
        params["isys"], params["ival"] = identifier
        where += (
            " AND EXISTS (SELECT 1 FROM device_identifiers i WHERE i.device_id = d.id"
            " AND i.system = %(isys)s AND i.value = %(ival)s)"
        )
    if patient_id is not None:
        params["patient"] = patient_id
        where += " AND b.patient_id = %(patient)s"
    if device_id is not None:
        params["device"] = device_id
        where += " AND d.id = %(device)s"
    where += restrict_clause(restrict, "b.patient_id", params)
    return await keyset_page(
        conn,
        _DEVICE_SELECT,
        where,
        params,
        key=("d.created_at", "d.id", "text"),
        descending=False,
        after=after,
        limit=limit,
        count_only=count_only,
    )


async def end_patient_binding(
    conn: Conn, device_id: str, patient_id: uuid.UUID, at: dt.datetime
) -> int:
    """Close the device's open binding to this patient at `at` (its history stays);
    returns how many were closed (0: not bound to this patient now)."""
    cur = await conn.execute(
        "UPDATE device_bindings SET during = tstzrange(lower(during), %s, '[)')"
        " WHERE device_id = %s AND patient_id = %s AND upper_inf(during) AND lower(during) < %s",
        (at, device_id, patient_id, at),
    )
    return cur.rowcount
