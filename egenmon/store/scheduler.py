"""The scheduler's state: the leader lock, the scan marks and runs, retention."""

from __future__ import annotations

import datetime as dt

import psycopg
from psycopg.types.json import Jsonb

from egenmon.store.query import column

# Advisory lock keys (one bigint namespace per database): the scheduler's leader lock,
# held for the life of a session, and the lock that serialises reconciliation.
LEADER_LOCK = 0x65676E5F73636864  # "egn_schd"


def scan_marks(
    conn: psycopg.Connection, now: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(the newest arrival the last committed cycle saw or None, the newest arrival now)."""
    row = conn.execute(
        "SELECT (SELECT received_until FROM alert_scan_state),"
        " (SELECT max(received_at) FROM readings WHERE received_at <= %s)",
        (now,),
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


# --- the scheduler ----------------------------------------------------------------------------


async def try_leader_lock(conn: psycopg.AsyncConnection) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,))
    row = await cur.fetchone()
    return bool(row and column(row, "pg_try_advisory_lock", 0))


async def holds_leader_lock(conn: psycopg.AsyncConnection) -> bool:
    """Does this session still hold the leader lock? (Raises when the connection is gone.)"""
    cur = await conn.execute(
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND pid = pg_backend_pid() AND classid = %s AND objid = %s",
        ((LEADER_LOCK >> 32) & 0xFFFFFFFF, LEADER_LOCK & 0xFFFFFFFF),
    )
    row = await cur.fetchone()
    return bool(row and column(row, "n", 0))


async def release_leader_lock(conn: psycopg.AsyncConnection) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s)", (LEADER_LOCK,))


async def start_run(
    conn: psycopg.AsyncConnection, job: str, node: str, started_at: dt.datetime
) -> int:
    cur = await conn.execute(
        "INSERT INTO scheduler_runs (job, node, started_at) VALUES (%s, %s, %s) RETURNING id",
        (job, node, started_at),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(column(row, "id", 0))


async def finish_run(
    conn: psycopg.AsyncConnection, run_id: int, ok: bool, result: dict | None
) -> None:
    await conn.execute(
        "UPDATE scheduler_runs SET finished_at = now(), ok = %s, result = %s WHERE id = %s",
        (ok, Jsonb(result) if result is not None else None, run_id),
    )


# --- retention --------------------------------------------------------------------------------


async def timescaledb_license(conn: psycopg.AsyncConnection) -> str:
    """`timescale` (community features: policies) or `apache` (drop_chunks only)."""
    cur = await conn.execute("SELECT current_setting('timescaledb.license', true) AS license")
    row = await cur.fetchone()
    return str(column(row, "license", 0) or "apache") if row else "apache"


async def add_retention_policy(conn: psycopg.AsyncConnection, days: int) -> None:
    await conn.execute(
        "SELECT add_retention_policy('readings', drop_after => %s, if_not_exists => true)",
        (dt.timedelta(days=days),),
    )


async def drop_old_chunks(conn: psycopg.AsyncConnection, older_than: dt.datetime) -> int:
    """Drop the readings chunks wholly older than `older_than`; the number dropped."""
    cur = await conn.execute(
        "SELECT count(*) AS n FROM drop_chunks('readings', older_than => %s::timestamptz)",
        (older_than,),
    )
    row = await cur.fetchone()
    return int(column(row, "n", 0)) if row else 0


async def prune_runs(conn: psycopg.AsyncConnection, older_than: dt.datetime) -> int:
    cur = await conn.execute("DELETE FROM scheduler_runs WHERE started_at < %s", (older_than,))
    return cur.rowcount
