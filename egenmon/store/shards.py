"""Rule shards: patients hashed into SHARDS shards, each leased to one rule worker.

A lease has an expiry its owner renews; one that ran out may be claimed by any worker.
Times are the database's (`now()`), so the workers' clocks need not agree.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import psycopg

SHARDS = 64  # as in migration 0017 (rule_shard(), the CHECK on rule_shards)


def shard_of(patient_id: uuid.UUID) -> int:
    """The shard of a patient: the last byte of its id modulo SHARDS (SQL: rule_shard)."""
    return patient_id.bytes[15] % SHARDS


async def heartbeat(conn: psycopg.AsyncConnection, node: str, ttl: dt.timedelta) -> list[str]:
    """Record this worker as alive; the nodes alive now (seen within ttl), sorted."""
    await conn.execute(
        "INSERT INTO rule_workers (node, seen_at) VALUES (%s, now())"
        " ON CONFLICT (node) DO UPDATE SET seen_at = now()",
        (node,),
    )
    await conn.execute("DELETE FROM rule_workers WHERE seen_at < now() - %s", (ttl * 6,))
    cur = await conn.execute(
        "SELECT node FROM rule_workers WHERE seen_at >= now() - %s ORDER BY node", (ttl,)
    )
    return [r[0] for r in await cur.fetchall()]


async def renew(conn: psycopg.AsyncConnection, node: str, ttl: dt.timedelta) -> list[int]:
    """Extend this worker's leases (those nobody took from it); the shards it owns."""
    cur = await conn.execute(
        "UPDATE rule_shards SET expires_at = now() + %s WHERE owner = %s RETURNING shard",
        (ttl, node),
    )
    return sorted(r[0] for r in await cur.fetchall())


async def claim(
    conn: psycopg.AsyncConnection, node: str, ttl: dt.timedelta, limit: int
) -> list[int]:
    """Take up to `limit` shards nobody holds (free, or their lease ran out)."""
    if limit <= 0:
        return []
    cur = await conn.execute(
        "UPDATE rule_shards s SET owner = %(node)s, expires_at = now() + %(ttl)s,"
        " claimed_at = now()"
        " WHERE s.shard IN (SELECT shard FROM rule_shards"
        "   WHERE owner IS NULL OR expires_at IS NULL OR expires_at < now()"
        "   ORDER BY shard LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
        " RETURNING s.shard",
        {"node": node, "ttl": ttl, "limit": limit},
    )
    return sorted(r[0] for r in await cur.fetchall())


async def release(conn: psycopg.AsyncConnection, node: str, shards: Sequence[int]) -> None:
    """Give shards up (for another worker to claim at once)."""
    await conn.execute(
        "UPDATE rule_shards SET owner = NULL, expires_at = NULL"
        " WHERE owner = %s AND shard = ANY(%s)",
        (node, list(shards)),
    )


async def leave(conn: psycopg.AsyncConnection, node: str) -> None:
    """A worker stopping: every shard it holds is free, and it is no longer alive."""
    await conn.execute(
        "UPDATE rule_shards SET owner = NULL, expires_at = NULL WHERE owner = %s", (node,)
    )
    await conn.execute("DELETE FROM rule_workers WHERE node = %s", (node,))


def owners(conn: psycopg.Connection) -> dict[int, tuple[str | None, dt.datetime | None]]:
    """shard → (owner, lease expiry): for status and tests."""
    rows = conn.execute("SELECT shard, owner, expires_at FROM rule_shards ORDER BY shard")
    return {r[0]: (r[1], r[2]) for r in rows.fetchall()}


# --- telling other processes which patients to evaluate --------------------------------------

CHANNEL = "egenmon_rules"


async def notify(conn: psycopg.AsyncConnection, payloads: Sequence[str]) -> None:
    """Send payloads on the rules channel (each within NOTIFY's 8000 bytes)."""
    for p in payloads:
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, p))


async def listen(conn: psycopg.AsyncConnection, channel: str) -> None:
    await conn.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel)))
