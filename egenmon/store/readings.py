"""The readings hypertable: every statement that writes or reads it.

- The batch writer's statements (COPY straight or through a staging table, INSERT for
  small batches). The batching, the choice of statement and the counting of duplicates
  stay with the writer (`egenmon.ingest.writer`); here are only the statements and the
  COPY loop. Rows are tuples in `COLUMNS` order (the pure normaliser's row shape).
- The rule scan's queries (set-based: a few big queries per cycle, never one per
  patient).
- FHIR Observation reads and searches, through the index ``(patient_id, code, time
  DESC)``: one patient, one code, a time range, in time order, with keyset paging on
  ``(time, dedup_key)`` (the dedup key breaks ties between readings measured at the same
  instant). Several codes of one patient are one ordered index scan per code merged
  (UNION ALL under ORDER BY ... LIMIT), never a sort of everything.
- The clinician UI's counts, series and latest values of one patient.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from egenmon.domain.measurements import TYPES
from egenmon.domain.readings import COLUMNS
from egenmon.store.query import Conn, Restrict, restrict_clause, uuid_range

# The COPY types of the row shape, in COLUMNS order.
COPY_TYPES = (
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
    + ", ".join(f"%s::{t}[]" for t in COPY_TYPES)
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
        copy.set_types(COPY_TYPES)
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


def stream_window(
    conn: psycopg.Connection,
    since: dict[str, dt.datetime],
    default_since: dt.datetime,
    until: dt.datetime,
    lo: uuid.UUID | None = None,
    hi: uuid.UUID | None = None,
    new_since: dt.datetime | None = None,
    batch: int = 20_000,
) -> Iterator[tuple]:
    """(patient_id as text, time, type, value, value2, on_oxygen, dedup_key, new) of every
    reading in its type's window, ordered by patient, through a server-side cursor.

    since: type → the earliest measurement time that type's rules look at. new: the
    reading was received after `new_since` (false when None). The order comes from the
    (patient_id, code, time) index of each chunk, merged: rows stream from the first one
    instead of waiting for a sort of the whole window.
    """
    earliest = min([default_since, *since.values()])
    query = sql.SQL(
        "SELECT patient_id::text, time, type, value, value2, on_oxygen, dedup_key,"
        " COALESCE(received_at > {new_since}, false) FROM readings"
        " WHERE time > {earliest} AND time <= {until}"
        " AND time > {start}{range}"
        " ORDER BY patient_id"
    ).format(
        new_since=sql.Literal(new_since),
        earliest=sql.Literal(earliest),
        until=sql.Literal(until),
        start=_window_start(since, default_since),
        range=uuid_range(lo, hi, "patient_id"),
    )
    with conn.transaction():
        # A sort would hold every row back until the whole window is read; the merged
        # index scans stream. Compiling this simple scan is not worth it either.
        conn.execute("SET LOCAL enable_sort = off")
        conn.execute("SET LOCAL jit = off")
        with conn.cursor(name="alerts_window", binary=True) as cur:
            cur.itersize = batch
            cur.execute(query)
            yield from cur


def _window_start(
    since: dict[str, dt.datetime], default_since: dt.datetime, column: str = "type"
) -> sql.Composable:
    """Where each type's window starts, as an SQL expression over the type column."""
    cases = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(t), sql.Literal(s))
        for t, s in sorted(since.items())
    )
    return sql.SQL("CASE {} {} ELSE {} END").format(
        sql.SQL(column), cases, sql.Literal(default_since)
    )


def late_rows(
    conn: psycopg.Connection,
    since: dict[str, dt.datetime],
    default_since: dt.datetime,
    until: dt.datetime,
    new_since: dt.datetime,
    late_before: dt.datetime,
    lookback: dt.timedelta,
    lo: uuid.UUID | None = None,
    hi: uuid.UUID | None = None,
) -> list[tuple]:
    """Rows as `stream_window` gives them, of the readings before the window of each patient
    with a late reading: one received after `new_since` but measured before `late_before`.
    Those readings, and every reading of the patient from `lookback` before the earliest
    of them up to where the window starts, so the rules see around them.

    Set-based: new readings are found through the received_at index, their patients'
    readings through the (patient_id, code, time) index, in one query.
    """
    query = sql.SQL(
        "WITH late AS (SELECT patient_id, min(time) AS first FROM readings"
        "  WHERE received_at > {new_since} AND time < {late_before}{range}"
        "  GROUP BY patient_id)"
        " SELECT r.patient_id::text, r.time, r.type, r.value, r.value2, r.on_oxygen,"
        " r.dedup_key, r.received_at > {new_since}"
        " FROM late l JOIN readings r ON r.patient_id = l.patient_id"
        " AND r.time >= l.first - {lookback} AND r.time <= {until}"
        " WHERE r.time <= {start}"
        " ORDER BY r.patient_id, r.time"
    ).format(
        new_since=sql.Literal(new_since),
        late_before=sql.Literal(late_before),
        lookback=sql.Literal(lookback),
        until=sql.Literal(until),
        start=_window_start(since, default_since, "r.type"),
        range=uuid_range(lo, hi, "patient_id"),
    )
    return conn.execute(query).fetchall()


def latest_times(
    conn: psycopg.Connection,
    pairs: Sequence[tuple[str, str, str]],
    until: dt.datetime,
) -> dict[tuple[str, str], dt.datetime]:
    """The newest measurement time of each (patient id text, type, LOINC code), in one
    query."""
    if not pairs:
        return {}
    rows = conn.execute(
        "SELECT q.patient_id::text, q.type, x.time"
        " FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS q(patient_id, type, code)"
        " CROSS JOIN LATERAL (SELECT r.time FROM readings r WHERE r.patient_id = q.patient_id"
        "   AND r.code = q.code AND r.time <= %s ORDER BY r.time DESC LIMIT 1) x",
        ([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs], until),
    ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def latest_values(
    conn: psycopg.Connection,
    pairs: Sequence[tuple[str, str, str]],
    until: dt.datetime,
) -> dict[tuple[str, str], tuple[dt.datetime, float]]:
    """The newest (measurement time, value) of each (patient id text, type, LOINC code),
    in one query."""
    if not pairs:
        return {}
    rows = conn.execute(
        "SELECT q.patient_id::text, q.type, x.time, x.value"
        " FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS q(patient_id, type, code)"
        " CROSS JOIN LATERAL (SELECT r.time, r.value FROM readings r"
        "   WHERE r.patient_id = q.patient_id AND r.code = q.code AND r.time <= %s"
        "   ORDER BY r.time DESC LIMIT 1) x",
        ([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs], until),
    ).fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


# --- rules evaluated as readings commit ---------------------------------------------------


def instant_rows(
    conn: psycopg.Connection,
    windows: Sequence[tuple[uuid.UUID, dt.datetime, dt.datetime]],
    codes: Sequence[str],
    lookback: dt.timedelta,
    context_codes: Sequence[str] | None = None,
) -> list[tuple]:
    """Rows as `stream_window` gives them (new: true inside the window) for each
    (patient, lo, hi): every reading of `codes` measured from lo to hi, and the newest of
    each code measured in the `lookback` before lo (of `context_codes` only, when given:
    what the instant rules read at a time in the window). Ordered by patient and time;
    one query, index lookups only (the laterals keep the planner from scanning whole
    chunks)."""
    if not windows:
        return []
    rows = conn.execute(
        "SELECT w.patient_id::text, x.* FROM unnest(%(p)s::uuid[], %(lo)s::timestamptz[],"
        "  %(hi)s::timestamptz[]) AS w(patient_id, lo, hi)"
        " CROSS JOIN unnest(%(codes)s::text[]) AS c(code)"
        " CROSS JOIN LATERAL ("
        "  (SELECT r.time, r.type, r.value, r.value2, r.on_oxygen, r.dedup_key, true"
        "   FROM readings r WHERE r.patient_id = w.patient_id AND r.code = c.code"
        "   AND r.time >= w.lo AND r.time <= w.hi)"
        "  UNION ALL"
        "  (SELECT r.time, r.type, r.value, r.value2, r.on_oxygen, r.dedup_key, false"
        "   FROM readings r WHERE r.patient_id = w.patient_id AND r.code = c.code"
        "   AND r.time < w.lo AND r.time >= w.lo - %(lookback)s AND c.code = ANY(%(context)s)"
        "   ORDER BY r.time DESC LIMIT 1)"
        " ) x",
        {
            "p": [w[0] for w in windows],
            "lo": [w[1] for w in windows],
            "hi": [w[2] for w in windows],
            "codes": list(codes),
            "lookback": lookback,
            "context": list(codes if context_codes is None else context_codes),
        },
    ).fetchall()
    # Sorted here: a sort in the server spilled to disk for a few thousand patients.
    rows.sort(key=lambda r: (r[0], r[1]))
    return rows


def count_received(conn: psycopg.Connection, device_ids: list[str], since: dt.datetime) -> int:
    """Readings of these devices received since `since` (benchmarks: sent == stored)."""
    row = conn.execute(
        "SELECT count(*) FROM readings WHERE device_id = ANY(%s) AND received_at >= %s",
        (device_ids, since),
    ).fetchone()
    return int(row[0]) if row else 0


def received_in_shards(
    conn: psycopg.Connection, since: dt.datetime, shards: Sequence[int]
) -> list[tuple[uuid.UUID, dt.datetime, dt.datetime]]:
    """(patient, earliest, latest measurement time) of the readings received after
    `since` for the patients of `shards` (a worker taking shards over catches up)."""
    if not shards:
        return []
    return conn.execute(
        "SELECT patient_id, min(time), max(time) FROM readings"
        " WHERE received_at > %s AND rule_shard(patient_id) = ANY(%s) GROUP BY patient_id",
        (since, list(shards)),
    ).fetchall()


_OBS_COLS = (
    "r.time, r.patient_id, r.device_id, r.type, r.mdc, r.value, r.value2, r.value3, r.unit,"
    " r.on_oxygen, r.note, r.dedup_key, r.received_at, r.extra"
)


_OBS_NAMES = (
    "time, patient_id, device_id, type, mdc, value, value2, value3, unit, on_oxygen, note,"
    " dedup_key, received_at, extra"
)


@dataclass(frozen=True)
class ObservationFilter:
    """An Observation search in plain values (the FHIR wing parses its parameters into
    one): `types` the measurement types to narrow to (None: any, empty: none),
    [date_low, date_high) the UTC range (None: unbounded), `cursor` the (time, dedup_key)
    keyset position to continue after, in `descending` order."""

    patient: uuid.UUID | None = None
    types: frozenset[str] | None = None
    device: str | None = None
    date_low: datetime | None = None
    date_high: datetime | None = None
    descending: bool = True
    cursor: tuple[datetime, str] | None = None
    # [updated_low, updated_high): when the reading was stored (FHIR _lastUpdated).
    updated_low: datetime | None = None
    updated_high: datetime | None = None


def _codes(q: ObservationFilter) -> list[str] | None:
    """The `code` column values (each type's LOINC code) the query narrows to."""
    if q.types is None:
        return None
    return sorted({TYPES[name].loinc for name in q.types})


def _observation_filters(q: ObservationFilter, params: dict[str, Any], *, cursor: bool) -> str:
    """The conditions on one reading besides its patient, code and visibility."""
    where = "true"
    if q.device is not None:
        params["device"] = q.device
        where += " AND r.device_id = %(device)s"
    if q.date_low is not None:
        params["low"] = q.date_low
        where += " AND r.time >= %(low)s"
    if q.date_high is not None:
        params["high"] = q.date_high
        where += " AND r.time < %(high)s"
    if q.updated_low is not None:
        params["ulow"] = q.updated_low
        where += " AND r.received_at >= %(ulow)s"
    if q.updated_high is not None:
        params["uhigh"] = q.updated_high
        where += " AND r.received_at < %(uhigh)s"
    if cursor and q.cursor is not None:
        params["ct"], params["ck"] = q.cursor
        # The plain time bound lets the index and chunk exclusion do the work; the row
        # comparison settles readings at the cursor's own instant.
        if q.descending:
            where += " AND r.time <= %(ct)s AND (r.time, r.dedup_key) < (%(ct)s, %(ck)s)"
        else:
            where += " AND r.time >= %(ct)s AND (r.time, r.dedup_key) > (%(ct)s, %(ck)s)"
    return where


_ALL_CODES = sorted({t.loinc for t in TYPES.values()})


def _one_patient(patient: str, codes: list[str], where: str, order: str) -> str:
    """One patient's page: an ordered index scan per code, merged (one scan for one code).

    `patient` is an SQL expression (a parameter, or a lateral column).
    """
    branches = [
        f"SELECT {_OBS_COLS} FROM readings r WHERE r.patient_id = {patient}"
        f" AND r.code = %(code{i})s AND {where}"
        f" ORDER BY r.time {order}, r.dedup_key {order} LIMIT %(limit)s"
        for i in range(len(codes))
    ]
    if len(branches) == 1:
        return branches[0]
    union = " UNION ALL ".join(f"({b})" for b in branches)
    return (
        f"SELECT {_OBS_NAMES} FROM ({union}) AS u"
        f" ORDER BY time {order}, dedup_key {order} LIMIT %(limit)s"
    )


async def search_observations(
    conn: Conn, q: ObservationFilter, restrict: Restrict, limit: int
) -> list[dict[str, Any]]:
    """Up to `limit` observations matching `q`, after its cursor, in its order.

    With a patient (named, or the patient a token is for) the page comes from one ordered
    scan of the (patient_id, code, time) index per code. A clinician's search without a
    patient does that for each patient of the care unit (a lateral join) and merges, so
    its cost follows the unit's size, not the store's. Only a system search without a
    patient walks the time index.
    """
    params: dict[str, Any] = {"limit": limit}
    where = _observation_filters(q, params, cursor=True)
    order = "DESC" if q.descending else "ASC"
    codes = _codes(q)
    kind, ident = restrict if restrict is not None else ("all", None)
    patient = q.patient
    if kind == "patient" and patient is None:
        patient = ident
    if kind == "none":
        return []
    if patient is not None or kind == "care_unit":
        use = codes if codes is not None else _ALL_CODES
        for i, code in enumerate(use):
            params[f"code{i}"] = code
        if patient is not None:
            params["patient"] = patient
            if kind == "care_unit":
                # Uncorrelated, so checked once before any index is read.
                params["unit"] = ident
                where += (
                    " AND EXISTS (SELECT 1 FROM patients"
                    " WHERE id = %(patient)s AND care_unit_id = %(unit)s)"
                )
            else:
                where += restrict_clause(restrict, "r.patient_id", params)
            sql = _one_patient("%(patient)s", use, where, order)
        else:
            params["unit"] = ident
            sql = (
                f"SELECT x.* FROM patients p CROSS JOIN LATERAL"
                f" ({_one_patient('p.id', use, where, order)}) AS x"
                " WHERE p.care_unit_id = %(unit)s"
                f" ORDER BY x.time {order}, x.dedup_key {order} LIMIT %(limit)s"
            )
    else:
        if codes is not None and len(codes) == 1:
            params["code"] = codes[0]
            where += " AND r.code = %(code)s"
        elif codes is not None:
            params["codes"] = codes
            where += " AND r.code = ANY(%(codes)s)"
        sql = (
            f"SELECT {_OBS_COLS} FROM readings r WHERE {where}"
            f" ORDER BY r.time {order}, r.dedup_key {order} LIMIT %(limit)s"
        )
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


async def count_observations(conn: Conn, q: ObservationFilter, restrict: Restrict) -> int:
    """How many observations match `q` (whatever its cursor)."""
    params: dict[str, Any] = {}
    where = _observation_filters(q, params, cursor=False)
    if q.patient is not None:
        params["patient"] = q.patient
        where += " AND r.patient_id = %(patient)s"
    where += restrict_clause(restrict, "r.patient_id", params)
    codes = _codes(q)
    if codes is not None:
        params["codes"] = codes
        where += " AND r.code = ANY(%(codes)s)"
    cur = await conn.execute(f"SELECT count(*) AS n FROM readings r WHERE {where}", params)
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def read_observation(
    conn: Conn, time: datetime, digest: str, restrict: Restrict
) -> dict[str, Any] | None:
    """The observation measured at `time` whose dedup key has `digest` (see fhir.ids)."""
    params: dict[str, Any] = {"t": time, "digest": digest}
    sql = (
        f"SELECT {_OBS_COLS} FROM readings r WHERE r.time = %(t)s"
        " AND left(encode(sha256(convert_to(r.dedup_key, 'UTF8')), 'hex'), 16) = %(digest)s"
        + restrict_clause(restrict, "r.patient_id", params)
        + " LIMIT 1"
    )
    cur = await conn.execute(sql, params)
    return await cur.fetchone()


async def lastn(
    conn: Conn, patient_id: uuid.UUID, codes: Sequence[str], per_code: int, restrict: Restrict
) -> list[dict[str, Any]]:
    """The `per_code` most recent observations of each code of one patient."""
    params: dict[str, Any] = {"patient": patient_id, "codes": list(codes), "max": per_code}
    cond = restrict_clause(restrict, "r.patient_id", params)
    sql = (
        f"SELECT {', '.join('l.' + c.strip() for c in _OBS_NAMES.split(','))}"
        " FROM unnest(%(codes)s::text[]) WITH ORDINALITY AS c(code, n)"
        f" CROSS JOIN LATERAL (SELECT {_OBS_COLS} FROM readings r"
        f"  WHERE r.patient_id = %(patient)s AND r.code = c.code{cond}"
        "  ORDER BY r.time DESC, r.dedup_key DESC LIMIT %(max)s) AS l"
        " ORDER BY c.n, l.time DESC, l.dedup_key DESC"
    )
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


async def stored_readings(
    conn: Conn, keys: Iterable[tuple[str, datetime]]
) -> dict[tuple[str, datetime], dict[str, Any]]:
    """The stored rows for (dedup_key, time) pairs, with their message_id, by key."""
    pairs = list(keys)
    if not pairs:
        return {}
    cur = await conn.execute(
        f"SELECT {_OBS_COLS}, r.message_id FROM readings r"
        " JOIN unnest(%(keys)s::text[], %(times)s::timestamptz[]) AS k(dedup_key, time)"
        " ON r.dedup_key = k.dedup_key AND r.time = k.time",
        {"keys": [k for k, _ in pairs], "times": [t for _, t in pairs]},
    )
    return {(row["dedup_key"], row["time"]): row for row in await cur.fetchall()}


async def find_by_dedup_key(conn: Conn, dedup_key: str) -> dict[str, Any] | None:
    """The first stored observation with this dedup key at any time (If-None-Exist)."""
    cur = await conn.execute(
        f"SELECT {_OBS_COLS} FROM readings r WHERE r.dedup_key = %(k)s ORDER BY r.time LIMIT 1",
        {"k": dedup_key},
    )
    return await cur.fetchone()


# --- the patient's own values (the patient app) ---------------------------------------


async def patient_readings(
    conn: Conn,
    patient_id: uuid.UUID,
    codes: Sequence[str],
    since: datetime,
    limit: int,
) -> list[dict[str, Any]]:
    """One patient's readings of the given codes since `since`, newest first, with their
    source and device (None: entered without one)."""
    cur = await conn.execute(
        f"SELECT {_OBS_COLS}, r.source FROM readings r"
        " WHERE r.patient_id = %(p)s AND r.code = ANY(%(codes)s) AND r.time >= %(since)s"
        " ORDER BY r.time DESC, r.dedup_key DESC LIMIT %(limit)s",
        {"p": patient_id, "codes": list(codes), "since": since, "limit": limit},
    )
    return await cur.fetchall()
