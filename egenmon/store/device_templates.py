"""Vendor payload templates per device model (table device_templates)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from egenmon.store.query import Conn, column

__all__ = ["list_templates", "put_template", "template_for_device"]


def put_template(
    conn: psycopg.Connection[Any], model: str, content: Any, fhir: Any, added_by: str
) -> bool:
    """Store the model's template set (replacing one it had); True when it is new."""
    row = conn.execute(
        "INSERT INTO device_templates (model, content, fhir, added_by) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (model) DO UPDATE SET content = EXCLUDED.content, fhir = EXCLUDED.fhir,"
        " added_at = now(), added_by = EXCLUDED.added_by RETURNING (xmax = 0) AS inserted",
        (model, Jsonb(content), Jsonb(fhir), added_by),
    ).fetchone()
    return bool(row and column(row, "inserted", 0))


def list_templates(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every model's template set, by model."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT model, content, fhir, added_at, added_by FROM device_templates ORDER BY model"
        ).fetchall()


async def template_for_device(
    conn: Conn, device_id: str
) -> tuple[str, Any, Any, dt.datetime] | None:
    """(model, content, fhir, added_at) of the template set of the device's model, or
    (model, None, None, None) when the model has none; None for an unknown device."""
    cur = await conn.execute(
        "SELECT d.model, t.content, t.fhir, t.added_at FROM devices d"
        " LEFT JOIN device_templates t ON t.model = d.model WHERE d.id = %s",
        (device_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return (
        column(row, "model", 0),
        column(row, "content", 1),
        column(row, "fhir", 2),
        column(row, "added_at", 3),
    )
