"""The access log: every read of patient data is recorded (the service's `log_access`,
the commands' `record_access`).

What is stored is who, what, whose and how it went, never what was typed: query values
are not logged (a search's parameter names are, through `param_names`), and a detail that
still holds something shaped like a personnummer or samordningsnummer has it masked, so a
value pasted into the wrong field does not stay in an append-only log for good.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from egenmon.domain.principals import Principal
from egenmon.store.query import Conn, keyset_page

# A parameter name as an API defines them (FHIR modifiers and chains included).
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:\-]{0,63}$")
# Six or more digits in a row (with an optional separator before the last four): a
# personnummer, samordningsnummer, phone number or the like.
_DIGITS = re.compile(r"\d{6,8}[-+ ]?\d{4}|\d{6,}")
# egenmon's own ids (uuids, Observation ids) are kept whole, whatever digits they hold.
_IDS_OR_DIGITS = re.compile(
    r"(?P<id>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|[0-9a-f]{14}-[0-9a-f]{16,})|" + _DIGITS.pattern
)
OTHER = "(other)"
MASK = "(masked)"


def param_names(pairs: Iterable[tuple[str, Any]]) -> list[str]:
    """The distinct parameter names of a request, in a form fit for the log: a name that
    is not name-shaped or holds a long run of digits becomes "(other)"."""
    return sorted({_safe_name(str(n)) for n, _ in pairs})


def _safe_name(name: str) -> str:
    return name if _NAME.match(name) and not _DIGITS.search(name) else OTHER


def scrub(value: Any) -> Any:
    """`value` with every digit run that could identify a person masked and NUL removed
    (PostgreSQL's jsonb cannot hold it); uuids and numbers are kept."""
    if isinstance(value, str):
        return _IDS_OR_DIGITS.sub(_mask, value.replace("\x00", ""))
    if isinstance(value, dict):
        return {scrub(str(k)): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    return value


def _mask(m: re.Match[str]) -> str:
    return m.group(0) if m.group("id") else MASK


async def log_access(
    pool: AsyncConnectionPool,
    principal: Principal,
    action: str,
    resource: str,
    patient_ids: Iterable[uuid.UUID],
    detail: Any = None,
) -> None:
    """Append who did what with whose data (patientdatalagen 4:3, HSLF-FS 2016:40 4 kap)."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO access_log (actor, role, care_unit_id, action, resource, patient_ids,"
            " detail) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                principal.subject.replace("\x00", ""),
                principal.role,
                principal.care_unit_id,
                action,
                scrub(resource),
                sorted(set(patient_ids)),
                Jsonb(scrub(detail)) if detail is not None else None,
            ),
        )


def record_access(
    conn: psycopg.Connection,
    *,
    actor: str,
    role: str,
    action: str,
    resource: str,
    patient_ids: list[uuid.UUID] | None = None,
    care_unit_id: uuid.UUID | None = None,
    detail: Any = None,
) -> None:
    """Append to the access log (patientdatalagen 4:3)."""
    conn.execute(
        "INSERT INTO access_log (actor, role, care_unit_id, action, resource, patient_ids,"
        " detail) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (
            actor,
            role,
            care_unit_id,
            action,
            resource,
            patient_ids or [],
            Jsonb(detail) if detail is not None else None,
        ),
    )


# --- reading the log (FHIR AuditEvent, the region's log follow-up) ----------------------

_ENTRY = (
    "SELECT a.id, a.at, a.actor, a.role, a.care_unit_id, cu.hsa_id AS care_unit_hsa_id,"
    " cu.name AS care_unit_name, a.action, a.resource, a.patient_ids, a.detail"
    " FROM access_log a LEFT JOIN care_units cu ON cu.id = a.care_unit_id"
)


@dataclass(frozen=True)
class LogFilter:
    """An access-log search. `actions` are stored action names (None: any);
    `exclude_actions` turns them into the names not to find. `unit` limits the entries to
    one care unit's: its staff's actions and the actions on its patients."""

    patient_id: uuid.UUID | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    actions: tuple[str, ...] | None = None
    exclude_actions: bool = False
    unit: uuid.UUID | None = None
    nothing: bool = False


def _where(f: LogFilter, params: dict[str, Any]) -> str:
    parts = ["true"]
    if f.nothing:
        parts.append("false")
    if f.patient_id is not None:
        params["patient"] = f.patient_id
        parts.append("a.patient_ids @> ARRAY[%(patient)s]::uuid[]")
    if f.actor is not None:
        params["actor"] = f.actor
        parts.append("a.actor = %(actor)s")
    if f.since is not None:
        params["since"] = f.since
        parts.append("a.at >= %(since)s")
    if f.until is not None:
        params["until"] = f.until
        parts.append("a.at < %(until)s")
    if f.actions is not None:
        params["actions"] = list(f.actions)
        parts.append(
            "NOT (a.action = ANY(%(actions)s))"
            if f.exclude_actions
            else "a.action = ANY(%(actions)s)"
        )
    if f.unit is not None:
        params["unit"] = f.unit
        parts.append(
            "(a.care_unit_id = %(unit)s OR a.patient_ids &&"
            " ARRAY(SELECT id FROM patients WHERE care_unit_id = %(unit)s))"
        )
    return " AND ".join(parts)


async def search_entries(
    conn: Conn,
    f: LogFilter,
    *,
    after: tuple[datetime, str] | None,
    limit: int | None,
    count_only: bool = False,
) -> list[dict[str, Any]] | int:
    """Entries newest first (keyset paging on (at, id)), or how many match."""
    params: dict[str, Any] = {}
    return await keyset_page(
        conn,
        _ENTRY,
        _where(f, params),
        params,
        key=("a.at", "a.id", "bigint"),
        descending=True,
        after=after,
        limit=limit,
        count_only=count_only,
    )


async def read_entry(conn: Conn, entry_id: int, f: LogFilter) -> dict[str, Any] | None:
    params: dict[str, Any] = {"id": entry_id}
    cur = await conn.execute(f"{_ENTRY} WHERE a.id = %(id)s AND {_where(f, params)}", params)
    return await cur.fetchone()


# --- the patient's own extract (loggutdrag) ------------------------------------------------


async def patient_extract(
    conn: psycopg.AsyncConnection,
    patient_id: uuid.UUID,
    *,
    limit: int,
    before_id: int | None = None,
) -> list[dict[str, Any]]:
    """Who did what with this patient's data, newest first, `limit` entries before the
    entry `before_id` (keyset paging): the actor (with the login's name and HSA-id when
    the actor is a login of egenmon), the care unit (name and HSA-id), the action, the
    resource, and when. Refused attempts are included; the log's detail is not."""
    cur = await conn.execute(
        "SELECT a.id, a.at, a.actor, a.role, a.action, a.resource,"
        " u.display_name AS actor_name, u.hsa_id AS actor_hsa_id,"
        " a.care_unit_id, cu.name AS care_unit_name, cu.hsa_id AS care_unit_hsa_id"
        " FROM access_log a"
        " LEFT JOIN users u ON u.username = a.actor"
        " LEFT JOIN care_units cu ON cu.id = coalesce(a.care_unit_id, u.care_unit_id)"
        " WHERE a.patient_ids @> ARRAY[%s]::uuid[] AND (%s::bigint IS NULL OR a.id < %s)"
        " ORDER BY a.id DESC LIMIT %s",
        (patient_id, before_id, before_id, limit),
    )
    return await cur.fetchall()  # type: ignore[return-value]


def record_access_each(
    conn: psycopg.Connection[Any],
    *,
    actor: str,
    role: str,
    action: str,
    resource: str,
    patient_ids: Iterable[uuid.UUID],
    care_unit_id: uuid.UUID | None = None,
    detail: Any = None,
) -> int:
    """One access-log entry per patient (a bulk export names each patient on a line of
    their own, so a patient's extract of the log finds it); returns how many."""
    rows = [
        (actor, role, care_unit_id, action, resource, [pid], Jsonb(scrub(detail)))
        for pid in sorted(set(patient_ids))
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO access_log (actor, role, care_unit_id, action, resource, patient_ids,"
            " detail) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
    return len(rows)
