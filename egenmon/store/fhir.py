"""The SQL behind the FHIR API: reads and searches, shaped the way the tables are indexed.

Observations come from the readings hypertable through its index
``(patient_id, code, time DESC)``: one patient, one code, a time range, in time order,
with keyset paging on ``(time, dedup_key)`` (the dedup key breaks ties between readings
measured at the same instant). Several codes of one patient are one ordered index scan
per code merged (UNION ALL under ORDER BY ... LIMIT), never a sort of everything.

Who may see what is part of every query (`restrict`, from `Principal.patient_filter`):
``None`` (everything), ``("care_unit", id)`` (the patients of one care unit, by a join on
patients, never by filtering fetched pages), ``("patient", id)`` (one patient) or
``("none", _)`` (nothing).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import psycopg

from egenmon.domain.measurements import TYPES
from egenmon.fhir.search import ObservationQuery

__all__ = [
    "Restrict",
    "alert_id",
    "count_observations",
    "find_by_dedup_key",
    "lastn",
    "patient_care_unit",
    "read_alert",
    "read_device",
    "read_observation",
    "read_patient",
    "search_alerts",
    "search_devices",
    "search_observations",
    "search_patients",
    "stored_readings",
]

Restrict = tuple[str, uuid.UUID] | None
# Rows are dicts: the pool sets dict_row on its connections (store/db.py) when it hands
# them out, which the connection's static type cannot show.
Conn = psycopg.AsyncConnection[Any]

_OBS_COLS = (
    "r.time, r.patient_id, r.device_id, r.type, r.mdc, r.value, r.value2, r.value3, r.unit,"
    " r.on_oxygen, r.note, r.dedup_key, r.received_at, r.extra"
)
_OBS_NAMES = (
    "time, patient_id, device_id, type, mdc, value, value2, value3, unit, on_oxygen, note,"
    " dedup_key, received_at, extra"
)


def _restrict(restrict: Restrict, column: str, params: dict[str, Any]) -> str:
    """The condition limiting `column` (a patient id) to what the principal may see."""
    if restrict is None:
        return ""
    kind, ident = restrict
    if kind == "care_unit":
        params["unit"] = ident
        return f" AND {column} IN (SELECT id FROM patients WHERE care_unit_id = %(unit)s)"
    if kind == "patient":
        params["only"] = ident
        return f" AND {column} = %(only)s"
    return " AND false"


def _codes(q: ObservationQuery) -> list[str] | None:
    """The `code` column values (each type's LOINC code) the query narrows to."""
    if q.types is None:
        return None
    return sorted({TYPES[name].loinc for name in q.types})


def _observation_filters(q: ObservationQuery, params: dict[str, Any], *, cursor: bool) -> str:
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
    conn: Conn, q: ObservationQuery, restrict: Restrict, limit: int
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
                where += _restrict(restrict, "r.patient_id", params)
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


async def count_observations(conn: Conn, q: ObservationQuery, restrict: Restrict) -> int:
    """How many observations match `q` (whatever its cursor)."""
    params: dict[str, Any] = {}
    where = _observation_filters(q, params, cursor=False)
    if q.patient is not None:
        params["patient"] = q.patient
        where += " AND r.patient_id = %(patient)s"
    where += _restrict(restrict, "r.patient_id", params)
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
    """The observation measured at `time` whose dedup key has `digest` (see domain.ids)."""
    params: dict[str, Any] = {"t": time, "digest": digest}
    sql = (
        f"SELECT {_OBS_COLS} FROM readings r WHERE r.time = %(t)s"
        " AND left(encode(sha256(convert_to(r.dedup_key, 'UTF8')), 'hex'), 16) = %(digest)s"
        + _restrict(restrict, "r.patient_id", params)
        + " LIMIT 1"
    )
    cur = await conn.execute(sql, params)
    return await cur.fetchone()


async def lastn(
    conn: Conn, patient_id: uuid.UUID, codes: Sequence[str], per_code: int, restrict: Restrict
) -> list[dict[str, Any]]:
    """The `per_code` most recent observations of each code of one patient."""
    params: dict[str, Any] = {"patient": patient_id, "codes": list(codes), "max": per_code}
    cond = _restrict(restrict, "r.patient_id", params)
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


# --- patients -------------------------------------------------------------------------


async def patient_care_unit(conn: Conn, patient_id: uuid.UUID) -> uuid.UUID | None:
    """The patient's care unit; None when there is no such patient."""
    cur = await conn.execute(
        "SELECT care_unit_id FROM patients WHERE id = %(id)s", {"id": patient_id}
    )
    row = await cur.fetchone()
    return row["care_unit_id"] if row else None


_PATIENT_SELECT = (
    "SELECT p.id, p.personnummer, p.identifier_kind, p.display_name, p.created_at,"
    " cu.name AS care_unit_name, cu.hsa_id AS care_unit_hsa_id"
    " FROM patients p JOIN care_units cu ON cu.id = p.care_unit_id"
)


async def read_patient(
    conn: Conn, patient_id: uuid.UUID, restrict: Restrict
) -> dict[str, Any] | None:
    params: dict[str, Any] = {"id": patient_id}
    sql = _PATIENT_SELECT + " WHERE p.id = %(id)s" + _restrict(restrict, "p.id", params)
    cur = await conn.execute(sql, params)
    return await cur.fetchone()


async def search_patients(
    conn: Conn,
    *,
    personnummer: str | None,
    identifier_kind: str | None,
    restrict: Restrict,
    after: tuple[datetime, str] | None,
    limit: int | None,
    count_only: bool = False,
) -> list[dict[str, Any]] | int:
    """Patients by identity number (or all visible), in (created_at, id) order."""
    params: dict[str, Any] = {}
    where = "true"
    if personnummer is not None:
        params["pnr"] = personnummer
        where += " AND p.personnummer = %(pnr)s"
    if identifier_kind is not None:
        params["kind"] = identifier_kind
        where += " AND p.identifier_kind = %(kind)s"
    where += _restrict(restrict, "p.id", params)
    return await _keyset_page(
        conn,
        _PATIENT_SELECT,
        where,
        params,
        key=("p.created_at", "p.id", "uuid"),
        descending=False,
        after=after,
        limit=limit,
        count_only=count_only,
    )


# --- devices --------------------------------------------------------------------------

# A device's patient is the one it is bound to now.
_DEVICE_SELECT = (
    "SELECT d.id, d.model, d.manufacturer, d.status, d.created_at, b.patient_id"
    " FROM devices d LEFT JOIN device_bindings b"
    " ON b.device_id = d.id AND b.during @> now()"
)


async def read_device(conn: Conn, device_id: str, restrict: Restrict) -> dict[str, Any] | None:
    params: dict[str, Any] = {"id": device_id}
    sql = _DEVICE_SELECT + " WHERE d.id = %(id)s" + _restrict(restrict, "b.patient_id", params)
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
) -> list[dict[str, Any]] | int:
    """Devices by current patient and/or id, in (created_at, id) order."""
    params: dict[str, Any] = {}
    where = "true"
    if patient_id is not None:
        params["patient"] = patient_id
        where += " AND b.patient_id = %(patient)s"
    if device_id is not None:
        params["device"] = device_id
        where += " AND d.id = %(device)s"
    where += _restrict(restrict, "b.patient_id", params)
    return await _keyset_page(
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


# --- alerts (Flag, Task) --------------------------------------------------------------


_ALERT_SELECT = (
    "SELECT a.id, a.patient_id, a.rule, a.severity, a.status, a.summary, a.opened_at,"
    " a.updated_at, a.due_at, a.evidence FROM alerts a"
)


def alert_id(text: str) -> uuid.UUID | None:
    """An alert's id (the Flag's and the Task's) from its text; None when malformed."""
    if len(text) != 36:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


async def read_alert(conn: Conn, alert_id: uuid.UUID, restrict: Restrict) -> dict[str, Any] | None:
    params: dict[str, Any] = {"id": alert_id}
    sql = _ALERT_SELECT + " WHERE a.id = %(id)s" + _restrict(restrict, "a.patient_id", params)
    cur = await conn.execute(sql, params)
    return await cur.fetchone()


async def search_alerts(
    conn: Conn,
    *,
    patient_id: uuid.UUID | None,
    statuses: frozenset[str] | None,
    restrict: Restrict,
    after: tuple[datetime, str] | None,
    limit: int | None,
    count_only: bool = False,
) -> list[dict[str, Any]] | int:
    """Alerts by patient and status, newest first ((opened_at, id) descending)."""
    params: dict[str, Any] = {}
    where = "true"
    if patient_id is not None:
        params["patient"] = patient_id
        where += " AND a.patient_id = %(patient)s"
    if statuses is not None:
        params["statuses"] = sorted(statuses)
        where += " AND a.status = ANY(%(statuses)s)"
    where += _restrict(restrict, "a.patient_id", params)
    return await _keyset_page(
        conn,
        _ALERT_SELECT,
        where,
        params,
        key=("a.opened_at", "a.id", "uuid"),
        descending=True,
        after=after,
        limit=limit,
        count_only=count_only,
    )


async def _keyset_page(
    conn: Conn,
    select: str,
    where: str,
    params: dict[str, Any],
    *,
    key: tuple[str, str, str],
    descending: bool,
    after: tuple[datetime, str] | None,
    limit: int | None,
    count_only: bool,
) -> list[dict[str, Any]] | int:
    """One page of `select WHERE where` in keyset order after `after`, or (count_only) how
    many rows match in all. key: the time column, the id column and the id's SQL type."""
    if count_only:
        sql = f"SELECT count(*) AS n FROM ({select} WHERE {where}) AS x"
        cur = await conn.execute(sql, params)
        row = await cur.fetchone()
        return int(row["n"]) if row else 0
    at, ident, id_type = key
    direction, past = ("DESC", "<") if descending else ("ASC", ">")
    if after is not None:
        params["at"], params["aid"] = after
        where += f" AND ({at}, {ident}) {past} (%(at)s, %(aid)s::{id_type})"
    params["limit"] = limit
    sql = f"{select} WHERE {where} ORDER BY {at} {direction}, {ident} {direction} LIMIT %(limit)s"
    cur = await conn.execute(sql, params)
    return await cur.fetchall()
