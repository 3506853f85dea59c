"""The readings hypertable: the batch writer's statements (COPY straight or through a
staging table, INSERT for small batches).

The batching, the choice of statement and the counting of duplicates stay with the
writer (`egenmon.ingest.writer`); here are only the statements and the COPY loop.
Rows are tuples in `COLUMNS` order (the pure normaliser's row shape).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from egenmon.ingest.normalise import COLUMNS

# The COPY types of the row shape, in COLUMNS order.
TYPES = (
    "timestamptz",
    "uuid",
    "text",
    "text",
    "text",
    "text",
    "float8",
    "float8",
    "float8",
    "text",
    "bool",
    "text",
    "text",
    "text",
    "timestamptz",
    "text",
    "jsonb",
)
_EXTRA = COLUMNS.index("extra")
_COLS = ", ".join(COLUMNS)

_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS readings_staging "
    "(LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
# Ordered by the unique index's key: two batches sharing rows wait on each other in the
# same order and cannot deadlock.
_MOVE = (
    f"INSERT INTO readings ({_COLS}) SELECT {_COLS} FROM readings_staging "
    "ORDER BY dedup_key, time ON CONFLICT DO NOTHING RETURNING dedup_key, time"
)
COPY_DIRECT = f"COPY readings ({_COLS}) FROM STDIN (FORMAT BINARY)"
_COPY_STAGING = f"COPY readings_staging ({_COLS}) FROM STDIN (FORMAT BINARY)"
_INSERT_SMALL = (
    f"INSERT INTO readings ({_COLS}) SELECT * FROM unnest("
    + ", ".join(f"%s::{t}[]" for t in TYPES)
    + f") AS r ({_COLS}) ORDER BY dedup_key, time ON CONFLICT DO NOTHING"
    " RETURNING dedup_key, time"
)
# One row: plain parameters cost a third less to send than seventeen one-element arrays.
_INSERT_ONE = (
    f"INSERT INTO readings ({_COLS}) VALUES ({', '.join('%s' for _ in COLUMNS)})"
    " ON CONFLICT DO NOTHING RETURNING dedup_key, time"
)


async def connect_writer(url: str) -> psycopg.AsyncConnection:
    """A writer's connection: autocommit (a small batch is one statement; larger ones
    open a transaction), with its staging table."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await conn.execute(_STAGING)
    return conn


async def copy_direct(conn: psycopg.AsyncConnection, rows: list[tuple]) -> bool:
    """COPY straight into the hypertable; False if a row was there already (or a
    concurrent COPY deadlocked with this one): nothing of the batch is stored then."""
    try:
        # One statement on an autocommit connection: its own transaction, committed
        # when the COPY ends, two round trips fewer than BEGIN ... COMMIT.
        async with conn.cursor() as cur:
            await copy_rows(cur, COPY_DIRECT, rows)
    except (psycopg.errors.UniqueViolation, psycopg.errors.DeadlockDetected):
        return False
    return True


async def insert_one(conn: psycopg.AsyncConnection, row: tuple) -> set[tuple]:
    """Insert one row unless stored; returns its (dedup key, time) if it was new."""
    if row[_EXTRA] is not None and not isinstance(row[_EXTRA], Jsonb):
        row = (*row[:_EXTRA], Jsonb(row[_EXTRA]), *row[_EXTRA + 1 :])
    async with conn.cursor() as cur:
        await cur.execute(_INSERT_ONE, row, prepare=True)
        return {(k, t) for k, t in await cur.fetchall()}


async def insert_small(conn: psycopg.AsyncConnection, rows: list[tuple]) -> set[tuple]:
    """Insert a few rows in one statement (one round trip with its commit); returns the
    (dedup key, time) of those not stored before."""
    columns = [list(c) for c in zip(*rows, strict=True)]
    # COPY takes dicts for jsonb as they are; an array parameter needs Jsonb.
    columns[_EXTRA] = [
        None if x is None or isinstance(x, Jsonb) else Jsonb(x) for x in columns[_EXTRA]
    ]
    async with conn.cursor() as cur:
        await cur.execute(_INSERT_SMALL, columns, prepare=True)
        return {(k, t) for k, t in await cur.fetchall()}


async def insert_staged(conn: psycopg.AsyncConnection, rows: list[tuple]) -> set[tuple]:
    """COPY into the staging table, then move the rows not stored yet into the
    hypertable, in one transaction; returns the (dedup key, time) of those."""
    async with conn.cursor() as cur:
        async with conn.transaction():
            await copy_rows(cur, _COPY_STAGING, rows)
            await cur.execute(_MOVE)
        return {(k, t) for k, t in await cur.fetchall()}


async def copy_rows(cur: psycopg.AsyncCursor, statement: str, rows: list[tuple]) -> None:
    async with cur.copy(statement) as copy:
        copy.set_types(TYPES)
        # What copy.write_row does, less a coroutine per row: the formatter fills its
        # buffer synchronously and hands it over when full (about a sixth of the writer's
        # time at 1000-row batches).
        write_row = copy.formatter.write_row
        for row in rows:
            if data := write_row(row):
                await copy.write(data)


async def reading_counts(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID, codes: Sequence[str], since: dt.datetime
) -> dict[str, int]:
    """How many readings of each code the patient has since `since`."""
    cur = await conn.execute(
        "SELECT code, count(*) AS n FROM readings WHERE patient_id = %s AND code = ANY(%s)"
        " AND time >= %s GROUP BY code",
        (patient_id, list(codes), since),
    )
    return {r["code"]: r["n"] for r in await cur.fetchall()}  # type: ignore[call-overload]


async def readings_raw(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID, codes: Sequence[str], since: dt.datetime
) -> list[dict[str, Any]]:
    """Every reading of these codes since `since`, oldest first; `ms` is the measurement
    time in milliseconds since the epoch (what the charts draw, cheaper than datetimes)."""
    if not codes:
        return []
    cur = await conn.execute(
        "SELECT (extract(epoch FROM time) * 1000)::bigint AS ms, type, value, value2"
        " FROM readings WHERE patient_id = %s AND code = ANY(%s) AND time >= %s ORDER BY time",
        (patient_id, list(codes), since),
    )
    return await cur.fetchall()  # type: ignore[return-value]


async def readings_bucketed(
    conn: psycopg.AsyncConnection,
    patient_id: uuid.UUID,
    codes: Sequence[str],
    since: dt.datetime,
    bucket: dt.timedelta,
) -> list[dict[str, Any]]:
    """Means per time bucket (for dense data over long ranges), oldest first; `ms` is the
    middle of the bucket in milliseconds since the epoch."""
    if not codes:
        return []
    cur = await conn.execute(
        "SELECT (extract(epoch FROM time_bucket(%s, time) + %s / 2) * 1000)::bigint AS ms,"
        " type, avg(value) AS value, avg(value2) AS value2 FROM readings"
        " WHERE patient_id = %s AND code = ANY(%s) AND time >= %s GROUP BY 1, 2 ORDER BY 1",
        (bucket, bucket, patient_id, list(codes), since),
    )
    return await cur.fetchall()  # type: ignore[return-value]


async def latest_readings(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID, codes: Sequence[str]
) -> list[dict[str, Any]]:
    """The newest reading of each code (an index walk per code, not a scan)."""
    cur = await conn.execute(
        "SELECT r.* FROM unnest(%s::text[]) AS c(code) CROSS JOIN LATERAL ("
        " SELECT time, type, value, value2, unit, on_oxygen, device_id, dedup_key"
        " FROM readings WHERE patient_id = %s AND code = c.code ORDER BY time DESC LIMIT 1"
        ") r",
        (list(codes), patient_id),
    )
    return await cur.fetchall()  # type: ignore[return-value]


async def recent_readings(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID, codes: Sequence[str], since: dt.datetime
) -> list[dict[str, Any]]:
    """Readings of these codes since `since` with what an observation id is made of."""
    cur = await conn.execute(
        "SELECT time, type, value, value2, on_oxygen, dedup_key FROM readings"
        " WHERE patient_id = %s AND code = ANY(%s) AND time >= %s ORDER BY time",
        (patient_id, list(codes), since),
    )
    return await cur.fetchall()  # type: ignore[return-value]
