"""The `pairing_codes` table: one-time codes a patient creates to pair a self-bought device.

Only a code's SHA-256 digest is stored. A code is claimed at most once: the claim is one
UPDATE that sets `used_at` only where it is still unused and unexpired, so two racing
redemptions cannot both succeed.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import psycopg
from psycopg.rows import dict_row


async def create_code(
    conn: Any, digest: bytes, patient_id: uuid.UUID, model: str, ttl: dt.timedelta
) -> dt.datetime:
    """Store a new code's digest; returns when it expires."""
    cur = await conn.execute(
        "INSERT INTO pairing_codes (code_sha256, patient_id, model, expires_at)"
        " VALUES (%s, %s, %s, now() + %s) RETURNING expires_at",
        (digest, patient_id, model, ttl),
    )
    row = await cur.fetchone()
    return row["expires_at"] if isinstance(row, dict) else row[0]


async def codes_since(conn: Any, patient_id: uuid.UUID, since: dt.timedelta) -> int:
    """How many codes the patient created in the last `since`."""
    cur = await conn.execute(
        "SELECT count(*) AS n FROM pairing_codes WHERE patient_id = %s AND created_at > now() - %s",
        (patient_id, since),
    )
    row = await cur.fetchone()
    return int(row["n"] if isinstance(row, dict) else row[0])


def claim_code(conn: psycopg.Connection, digest: bytes) -> tuple[str, dict[str, Any] | None]:
    """Claim a code: ("ok", {patient_id, model}), ("gone", None) for a used or expired
    one, ("unknown", None) for a code never issued."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE pairing_codes SET used_at = now() WHERE code_sha256 = %s"
            " AND used_at IS NULL AND expires_at > now() RETURNING patient_id, model",
            (digest,),
        ).fetchone()
        if row is not None:
            return "ok", row
        known = cur.execute(
            "SELECT 1 FROM pairing_codes WHERE code_sha256 = %s", (digest,)
        ).fetchone()
    return ("gone" if known else "unknown"), None


def set_code_device(conn: psycopg.Connection, digest: bytes, device_id: str) -> None:
    """Record which device a claimed code created."""
    conn.execute(
        "UPDATE pairing_codes SET device_id = %s WHERE code_sha256 = %s", (device_id, digest)
    )
