"""Bulk export and research extracts: the job table and the streaming reads they make.

One aggregate, the export, rather than a function in each table's module: every read
here streams a whole care unit (or the whole store) through a server-side cursor in
batches (`itersize`), which no other caller does, and they share the job's bounds (the
care unit, `_since`, the transaction time). A stream runs in one transaction, so a file
is one consistent snapshot.

Jobs (`export_jobs`): the API kicks off and polls with the async pool; the runner
thread writes files with a connection of its own (sync).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from egenmon.store.query import Conn

ACTIVE = ("accepted", "running")
_BATCH = 5000

# --- jobs (the API: async) ------------------------------------------------------------

_JOB_COLUMNS = (
    "id, client, role, care_unit_id, level, group_id, unit_filter, types, since,"
    " type_filters, codes, request, status, progress, transaction_time, heartbeat_at,"
    " finished_at, expires_at, output, error, created_at"
)


async def create_job(conn: Conn, job: dict[str, Any], max_active: int) -> uuid.UUID | str:
    """Insert a job unless its client has one running or `max_active` run in all: the
    new id, or "client" / "busy" saying which limit refused it. One transaction with an
    advisory lock, so two kick-offs at once cannot both pass the checks."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('egenmon export kick-off'))")
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE client = %s) AS mine, count(*) AS everyone"
            " FROM export_jobs WHERE status = ANY(%s)",
            (job["client"], list(ACTIVE)),
        )
        row = await cur.fetchone()
        if row and row["mine"]:
            return "client"
        if row and row["everyone"] >= max_active:
            return "busy"
        cur = await conn.execute(
            "INSERT INTO export_jobs (client, role, care_unit_id, level, group_id, unit_filter,"
            " types, since, type_filters, codes, request) VALUES (%(client)s, %(role)s,"
            " %(care_unit_id)s, %(level)s, %(group_id)s, %(unit_filter)s, %(types)s,"
            " %(since)s, %(type_filters)s, %(codes)s, %(request)s) RETURNING id",
            {**job, "type_filters": Jsonb(job["type_filters"])},
        )
        created = await cur.fetchone()
    assert created is not None
    return uuid.UUID(str(created["id"]))


async def get_job(conn: Conn, job_id: uuid.UUID) -> dict[str, Any] | None:
    cur = await conn.execute(f"SELECT {_JOB_COLUMNS} FROM export_jobs WHERE id = %s", (job_id,))
    return await cur.fetchone()


async def cancel_job(conn: Conn, job_id: uuid.UUID) -> None:
    """Cancelled: polls answer 404 from now; the runner stops at its next batch and the
    sweeper removes the files."""
    await conn.execute(
        "UPDATE export_jobs SET status = 'cancelled', expires_at = now(),"
        " finished_at = COALESCE(finished_at, now()) WHERE id = %s",
        (job_id,),
    )


async def record_research(
    conn: Conn,
    job_id: uuid.UUID,
    *,
    client: str,
    role: str,
    unit: uuid.UUID | None,
    output: list[dict[str, Any]],
    request: str,
    keep_hours: float,
) -> None:
    """A research extract written through the admin API, kept like an export's files."""
    await conn.execute(
        "INSERT INTO export_jobs (id, client, role, level, unit_filter, types, request, status,"
        " output, finished_at, expires_at) VALUES (%s, %s, %s, 'research', %s, '{research}',"
        " %s, 'completed', %s, now(), now() + make_interval(secs => %s))",
        (job_id, client, role, unit, request, Jsonb(output), keep_hours * 3600),
    )


# --- Group: a care unit's monitored patients ------------------------------------------

_GROUP_SELECT = (
    "SELECT cu.id, cu.name, cu.hsa_id, cu.created_at,"
    " (SELECT count(*) FROM patients p WHERE p.care_unit_id = cu.id) AS quantity"
    " FROM care_units cu"
)


async def read_group(conn: Conn, unit_id: uuid.UUID) -> dict[str, Any] | None:
    cur = await conn.execute(_GROUP_SELECT + " WHERE cu.id = %s", (unit_id,))
    return await cur.fetchone()


async def search_groups(
    conn: Conn,
    *,
    hsa_id: str | None,
    only_unit: uuid.UUID | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Care units (by HSA-id, or all; `only_unit` for a principal bound to one), in
    (created_at, id) order after `after`."""
    params: dict[str, Any] = {"limit": limit}
    where = "true"
    if hsa_id is not None:
        params["hsa"] = hsa_id
        where += " AND cu.hsa_id = %(hsa)s"
    if only_unit is not None:
        params["unit"] = only_unit
        where += " AND cu.id = %(unit)s"
    if after is not None:
        params["at"], params["aid"] = after
        where += " AND (cu.created_at, cu.id) > (%(at)s, %(aid)s::uuid)"
    cur = await conn.execute(
        f"{_GROUP_SELECT} WHERE {where} ORDER BY cu.created_at, cu.id LIMIT %(limit)s", params
    )
    return await cur.fetchall()


# --- the runner (sync, in its own thread) ---------------------------------------------


def connect(url: str) -> psycopg.Connection[dict[str, Any]]:
    return psycopg.connect(url, row_factory=dict_row, autocommit=True)


def claim_job(conn: psycopg.Connection[Any], job_id: uuid.UUID) -> dict[str, Any] | None:
    """Mark an accepted job running; None when it was cancelled (or taken) meanwhile."""
    return conn.execute(
        f"UPDATE export_jobs SET status = 'running', heartbeat_at = now()"
        f" WHERE id = %s AND status = 'accepted' RETURNING {_JOB_COLUMNS}",
        (job_id,),
    ).fetchone()


def heartbeat(conn: psycopg.Connection[Any], job_id: uuid.UUID, progress: str) -> str | None:
    """Record progress; the job's status now (the runner stops when it is cancelled)."""
    row = conn.execute(
        "UPDATE export_jobs SET progress = %s, heartbeat_at = now() WHERE id = %s RETURNING status",
        (progress, job_id),
    ).fetchone()
    return str(row["status"]) if row else None


def finish_job(
    conn: psycopg.Connection[Any],
    job_id: uuid.UUID,
    output: list[dict[str, Any]],
    keep_hours: float,
) -> bool:
    """Completed, kept `keep_hours`; False when it had been cancelled."""
    row = conn.execute(
        "UPDATE export_jobs SET status = 'completed', output = %s, finished_at = now(),"
        " progress = 'completed', expires_at = now() + make_interval(secs => %s)"
        " WHERE id = %s AND status = 'running' RETURNING id",
        (Jsonb(output), keep_hours * 3600, job_id),
    ).fetchone()
    return row is not None


def fail_job(
    conn: psycopg.Connection[Any], job_id: uuid.UUID, error: str, keep_hours: float
) -> None:
    conn.execute(
        "UPDATE export_jobs SET status = 'failed', error = %s, finished_at = now(),"
        " expires_at = now() + make_interval(secs => %s)"
        " WHERE id = %s AND status IN ('accepted', 'running')",
        (error, keep_hours * 3600, job_id),
    )


def fail_stale(conn: psycopg.Connection[Any], older_than_s: float, keep_hours: float) -> int:
    """Jobs whose runner stopped beating (its process died) are failed, not left running."""
    rows = conn.execute(
        "UPDATE export_jobs SET status = 'failed', finished_at = now(),"
        " error = 'the export was interrupted (its server process stopped); kick it off again',"
        " expires_at = now() + make_interval(secs => %s)"
        " WHERE status IN ('accepted', 'running')"
        " AND heartbeat_at < now() - make_interval(secs => %s) RETURNING id",
        (keep_hours * 3600, older_than_s),
    ).fetchall()
    return len(rows)


def expired_jobs(conn: psycopg.Connection[Any]) -> list[uuid.UUID]:
    rows = conn.execute(
        "SELECT id FROM export_jobs WHERE expires_at <= now() AND status <> 'running'"
    ).fetchall()
    return [r["id"] for r in rows]


def delete_job(conn: psycopg.Connection[Any], job_id: uuid.UUID) -> None:
    conn.execute("DELETE FROM export_jobs WHERE id = %s", (job_id,))


def _stream(
    conn: psycopg.Connection[Any], name: str, query: str, params: dict[str, Any]
) -> Iterator[dict[str, Any]]:
    """Rows of `query` through a server-side cursor, `_BATCH` at a time, in one
    (read-only, repeatable-read) transaction: constant memory whatever the size."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        with conn.cursor(name=name) as cur:
            cur.itersize = _BATCH
            cur.execute(query, params)
            yield from cur


def _unit(alias: str, unit: uuid.UUID | None, params: dict[str, Any]) -> str:
    if unit is None:
        return ""
    params["unit"] = unit
    return f" AND {alias} IN (SELECT id FROM patients WHERE care_unit_id = %(unit)s)"


def stream_patients(
    conn: psycopg.Connection[Any], unit: uuid.UUID | None, since: datetime | None
) -> Iterator[dict[str, Any]]:
    params: dict[str, Any] = {}
    where = "true"
    if unit is not None:
        params["unit"] = unit
        where += " AND p.care_unit_id = %(unit)s"
    if since is not None:
        params["since"] = since
        where += " AND p.created_at > %(since)s"
    query = (
        "SELECT p.id, p.personnummer, p.identifier_kind, p.display_name, p.created_at,"
        " cu.name AS care_unit_name, cu.hsa_id AS care_unit_hsa_id"
        f" FROM patients p JOIN care_units cu ON cu.id = p.care_unit_id WHERE {where}"
        " ORDER BY p.created_at, p.id"
    )
    return _stream(conn, "export_patients", query, params)


def stream_observations(
    conn: psycopg.Connection[Any],
    unit: uuid.UUID | None,
    codes: Sequence[str] | None,
    since: datetime | None,
    until: datetime,
) -> Iterator[dict[str, Any]]:
    """Readings stored (received) after `since` and up to `until` (the transaction time),
    of the care unit's patients (`unit`) or every patient; `codes` the LOINC codes."""
    params: dict[str, Any] = {"until": until}
    where = "r.received_at <= %(until)s" + _unit("r.patient_id", unit, params)
    if codes is not None:
        params["codes"] = list(codes)
        where += " AND r.code = ANY(%(codes)s)"
    if since is not None:
        params["since"] = since
        where += " AND r.received_at > %(since)s"
    query = (
        "SELECT r.time, r.patient_id, r.device_id, r.type, r.mdc, r.value, r.value2, r.value3,"
        " r.unit, r.on_oxygen, r.note, r.dedup_key, r.received_at, r.extra"
        f" FROM readings r WHERE {where}"
    )
    return _stream(conn, "export_observations", query, params)


def stream_devices(
    conn: psycopg.Connection[Any], unit: uuid.UUID | None, since: datetime | None
) -> Iterator[dict[str, Any]]:
    """Devices bound now to the patients exported (or, without a unit, every device)."""
    params: dict[str, Any] = {}
    where = "true"
    if unit is not None:
        where += _unit("b.patient_id", unit, params)
    if since is not None:
        params["since"] = since
        where += " AND d.created_at > %(since)s"
    query = (
        "SELECT d.id, d.model, d.manufacturer, d.status, d.created_at, b.patient_id"
        " FROM devices d LEFT JOIN device_bindings b ON b.device_id = d.id AND b.during @> now()"
        f" WHERE {where} ORDER BY d.created_at, d.id"
    )
    return _stream(conn, "export_devices", query, params)


def stream_alerts(
    conn: psycopg.Connection[Any], unit: uuid.UUID | None, since: datetime | None
) -> Iterator[dict[str, Any]]:
    """Alerts (Flag and Task) of the patients exported, changed after `since`."""
    params: dict[str, Any] = {}
    where = "true" + _unit("a.patient_id", unit, params)
    if since is not None:
        params["since"] = since
        where += " AND a.updated_at > %(since)s"
    query = (
        "SELECT a.id, a.patient_id, a.rule, a.severity, a.status, a.summary, a.opened_at,"
        f" a.updated_at, a.due_at, a.evidence FROM alerts a WHERE {where}"
        " ORDER BY a.opened_at, a.id"
    )
    return _stream(conn, "export_alerts", query, params)


# --- the research extract (sync) ------------------------------------------------------


def care_unit_by_ref(conn: psycopg.Connection[Any], ref: str) -> dict[str, Any] | None:
    """A care unit by uuid or HSA-id."""
    try:
        as_uuid: uuid.UUID | None = uuid.UUID(ref)
    except ValueError:
        as_uuid = None
    return conn.execute(
        "SELECT id, name, hsa_id FROM care_units WHERE id = %s OR hsa_id = %s LIMIT 1",
        (as_uuid, ref),
    ).fetchone()


def research_readings(
    conn: psycopg.Connection[Any], unit: uuid.UUID, low: datetime, high: datetime
) -> Iterator[dict[str, Any]]:
    """The unit's readings measured in [low, high): only the columns an extract may
    carry (no note, message id, dedup key or extra JSON, which can hold free text or
    a device's id)."""
    params: dict[str, Any] = {"low": low, "high": high}
    query = (
        "SELECT r.patient_id, r.device_id, r.time, r.type, r.code, r.value, r.value2,"
        " r.value3, r.unit, r.on_oxygen, r.source FROM readings r"
        " WHERE r.time >= %(low)s AND r.time < %(high)s" + _unit("r.patient_id", unit, params)
    )
    return _stream(conn, "research_readings", query, params)


def research_alerts(
    conn: psycopg.Connection[Any], unit: uuid.UUID, low: datetime, high: datetime
) -> Iterator[dict[str, Any]]:
    """The unit's alerts opened in [low, high), without summary, notes, details,
    evidence or who acted (free text and names)."""
    params: dict[str, Any] = {"low": low, "high": high}
    query = (
        "SELECT a.patient_id, a.rule, a.category, a.severity, a.status, a.opened_at,"
        " a.updated_at, a.acknowledged_at, a.resolved_at, a.dismissed_at FROM alerts a"
        " WHERE a.opened_at >= %(low)s AND a.opened_at < %(high)s"
        + _unit("a.patient_id", unit, params)
    )
    return _stream(conn, "research_alerts", query, params)


def table_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS present", (name,)).fetchone()
    return bool(row and row["present"])
