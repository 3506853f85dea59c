"""Device identifiers (an IEEE 11073 system id and the like, table device_identifiers):
the egenmon device a PHD gateway's identifier names, and the measuring devices a gateway
registers under its authority (a device row, its binding and its identifier at once)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
from psycopg.types.range import Range

from egenmon.store.db import Conflict, NotFound
from egenmon.store.query import Conn, column

__all__ = ["add_identifier", "find_device", "map_identifier", "register_device"]


async def find_device(conn: Conn, system: str, value: str) -> tuple[str, str | None] | None:
    """(device id, registered by) of the device this identifier names, or None."""
    cur = await conn.execute(
        "SELECT device_id, registered_by FROM device_identifiers WHERE system = %s AND value = %s",
        (system, value),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return column(row, "device_id", 0), column(row, "registered_by", 1)


async def add_identifier(
    conn: Conn, system: str, value: str, device_id: str, registered_by: str | None
) -> bool:
    """Record that the identifier names the device; False when it names one already."""
    cur = await conn.execute(
        "INSERT INTO device_identifiers (system, value, device_id, registered_by)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (system, value) DO NOTHING",
        (system, value, device_id, registered_by),
    )
    return cur.rowcount == 1


async def register_device(
    conn: psycopg.AsyncConnection[Any],
    *,
    device_id: str,
    model: str,
    manufacturer: str | None,
    secret_sha256: bytes,
    patient_id: uuid.UUID,
    since: dt.datetime,
    identifier: tuple[str, str],
    registered_by: str,
) -> None:
    """A measuring device, its binding from `since` and its identifier, in one transaction.

    Raises Conflict when the device id or the identifier is taken already."""
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO devices (id, model, manufacturer, acquisition, secret_sha256)"
                " VALUES (%s, %s, %s, 'prescribed', %s)",
                (device_id, model, manufacturer, secret_sha256),
            )
            await conn.execute(
                "INSERT INTO device_bindings (device_id, patient_id, during) VALUES (%s, %s, %s)",
                (device_id, patient_id, Range(since, None, "[)")),
            )
            await conn.execute(
                "INSERT INTO device_identifiers (system, value, device_id, registered_by)"
                " VALUES (%s, %s, %s, %s)",
                (identifier[0], identifier[1], device_id, registered_by),
            )
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"device {device_id} or its identifier is registered already") from None


def map_identifier(conn: psycopg.Connection[Any], system: str, value: str, device_id: str) -> None:
    """Record that an identifier names an existing device (an admin's mapping).

    Raises NotFound for an unknown device, Conflict when the identifier names another."""
    with conn.transaction():
        if conn.execute("SELECT 1 FROM devices WHERE id = %s", (device_id,)).fetchone() is None:
            raise NotFound(f"unknown device {device_id!r}")
        row = conn.execute(
            "INSERT INTO device_identifiers (system, value, device_id) VALUES (%s, %s, %s)"
            " ON CONFLICT (system, value) DO UPDATE SET system = EXCLUDED.system"
            " RETURNING device_id",
            (system, value, device_id),
        ).fetchone()
    if row is None or column(row, "device_id", 0) != device_id:
        raise Conflict(f"{value} names another device already")
