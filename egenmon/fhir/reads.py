"""FHIR reads and searches: scopes, who may see which patient, paging links, access log.

Each function here is what one route calls: it checks the token's scopes, parses the
parameters (`egenmon.fhir.search`), asks the store (`egenmon.store.readings`,
`.patients`, `.devices`, `.alerts`, where the visibility restriction is part of the SQL),
renders (`egenmon.fhir.render`), writes the access log and returns the resource or Bundle
as a plain dict.

Decisions:

- A read of a resource the token may not see answers 404, exactly as for one that does
  not exist, so a token cannot probe which ids exist in other care units.
- A search naming a patient the token may not see (another care unit's, or another
  patient's for a patient token) is refused with 403; a search without a patient is
  limited in SQL to what the token may see.
- Every permitted read or search of patient data is logged (patientdatalagen 4:3): the
  patients are the distinct ones returned, plus the patient a search named (a search
  that found nothing still looked at that patient's record). A refused one (403, or a
  read answered 404) is logged too, by `log_refused`, as `read-refused` or
  `search-refused` with its status. The detail names the search parameters, never their
  values (`egenmon.store.access_log.param_names`), so a personnummer never reaches the log.
- Bundle.total is given when it is cheap: a first page that holds every match, or
  ``_summary=count`` / ``_count=0`` / ``_total=accurate``, which count in SQL.
- Links carry the search as given (minus parameters ignored under
  ``Prefer: handling=lenient``) plus ``_cursor``; a Patient search's links leave out
  ``identifier``, so a personnummer is never put in a URL by this server.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import urlencode

from psycopg_pool import AsyncConnectionPool

from egenmon.deps import patient_access
from egenmon.domain.ids import decode_cursor, encode_cursor, parse_observation_id
from egenmon.domain.measurements import TYPES
from egenmon.domain.principals import AuthError, Principal
from egenmon.fhir.outcome import not_found
from egenmon.fhir.render import (
    audit_action_names,
    render_audit_event,
    render_bundle_searchset,
    render_device,
    render_flag,
    render_observation,
    render_patient,
    render_task,
)
from egenmon.fhir.search import (
    ObservationQuery,
    SearchError,
    parse_alert_search,
    parse_audit_search,
    parse_device_search,
    parse_lastn,
    parse_observation_search,
    parse_patient_search,
)
from egenmon.store import access_log, alerts, devices, readings
from egenmon.store import patients as patients_store
from egenmon.store.access_log import log_access, param_names

__all__ = [
    "Context",
    "PatientRefused",
    "cursor_key",
    "lastn",
    "log_refused",
    "read_alert",
    "read_audit_event",
    "read_device",
    "read_observation",
    "read_patient",
    "search_alerts",
    "search_audit_events",
    "search_devices",
    "search_observations",
    "search_patients",
]

Params = list[tuple[str, str]]
_UUID_LEN = 36
_TOTAL_MODES = ("none", "estimate", "accurate")


@dataclass(frozen=True)
class Context:
    """What a read needs besides its parameters."""

    pool: AsyncConnectionPool
    principal: Principal
    base: str  # absolute FHIR base URL, no trailing slash
    tz: tzinfo
    cursor_key: bytes
    lenient: bool = False


def cursor_key(secret: str) -> bytes:
    """The paging cursors' HMAC key, derived from the signing secret for this use only."""
    return hashlib.sha256(b"egenmon fhir paging cursor\x00" + secret.encode()).digest()


# --- shared pieces --------------------------------------------------------------------


class PatientRefused(AuthError):
    """403 for a search naming a patient the token may not see (the access log names the
    patient the search asked about)."""

    def __init__(self, patient_id: uuid.UUID) -> None:
        super().__init__(403, f"this token may not see the data of Patient/{patient_id}")
        self.patient_id = patient_id


async def _ensure_patient(conn: Any, principal: Principal, patient_id: uuid.UUID) -> None:
    """Refuse (403) a search naming a patient the principal may not see."""
    if principal.patient_filter is None:
        return
    if not (await patient_access(conn, principal, patient_id)).visible:
        raise PatientRefused(patient_id)


def _pop(params: Params, name: str) -> tuple[Params, str | None]:
    values = [v for n, v in params if n == name and v != ""]
    rest = [(n, v) for n, v in params if n != name]
    if len(set(values)) > 1:
        raise SearchError(name, "given more than once with different values")
    return rest, (values[0] if values else None)


def _pop_total(params: Params) -> tuple[Params, str | None]:
    rest, total = _pop(params, "_total")
    if total is not None and total not in _TOTAL_MODES:
        raise SearchError("_total", f"must be none, estimate or accurate, not {total!r}")
    return rest, total


def _pop_cursor(params: Params, key: bytes) -> tuple[Params, tuple[datetime, str] | None]:
    rest, token = _pop(params, "_cursor")
    if token is None:
        return rest, None
    try:
        return rest, decode_cursor(token, key)
    except ValueError as exc:
        raise SearchError("_cursor", "not a valid paging cursor") from exc


def _link(base: str, path: str, pairs: Sequence[tuple[str, str]]) -> str:
    return f"{base}/{path}" + (f"?{urlencode(list(pairs))}" if pairs else "")


def _link_pairs(params: Params, leave_out: Sequence[str]) -> Params:
    drop = {"_cursor", *leave_out}
    return [(n, v) for n, v in params if n not in drop and n.partition(":")[0] not in drop]


def _outcome(ignored: Sequence[str], notes: Sequence[str]) -> dict[str, Any] | None:
    issues = [
        {
            "severity": "warning",
            "code": "not-supported",
            "diagnostics": f"{name}: unknown search parameter, ignored (Prefer: handling=lenient)",
        }
        for name in ignored
    ] + [{"severity": "information", "code": "not-found", "diagnostics": n} for n in notes]
    return {"resourceType": "OperationOutcome", "issue": issues} if issues else None


def _searchset(
    ctx: Context,
    path: str,
    resources: list[dict[str, Any]],
    *,
    total: int | None,
    self_pairs: Params,
    next_pairs: Params | None,
    outcome: dict[str, Any] | None = None,
) -> dict[str, Any]:
    links = [("self", _link(ctx.base, path, self_pairs))]
    if next_pairs is not None:
        links.append(("next", _link(ctx.base, path, next_pairs)))
    return render_bundle_searchset(resources, total, links, ctx.base, outcome)


async def _log(
    ctx: Context,
    action: str,
    resource: str,
    patients: set[uuid.UUID],
    detail: dict[str, Any],
) -> None:
    await log_access(ctx.pool, ctx.principal, action, resource, patients, detail)


def _param_names(params: Params) -> list[str]:
    return param_names(params)


async def log_refused(
    ctx: Context,
    interaction: str,
    resource: str,
    status: int,
    reason: str,
    *,
    params: Params | None = None,
    ident: str | None = None,
    patients: Sequence[uuid.UUID] = (),
) -> None:
    """Log a refused read or search (403, or 404 for a read that may be another unit's):
    the outcome and the parameter names, an id only in egenmon's own id forms."""
    detail: dict[str, Any] = {"outcome": "refused", "status": status, "reason": reason}
    if params is not None:
        detail["params"] = _param_names(params)
    if ident is not None:
        detail["id"] = ident if _ID_FORM.fullmatch(ident) else "(other)"
    await log_access(ctx.pool, ctx.principal, f"{interaction}-refused", resource, patients, detail)


# uuids and Observation ids; anything else a client put in the path is not logged.
_ID_FORM = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{14}-[0-9a-f]{16}"
)


# --- Observation ----------------------------------------------------------------------


async def read_observation(ctx: Context, observation_id: str) -> dict[str, Any]:
    ctx.principal.require("Observation", "r")
    try:
        time, digest = parse_observation_id(observation_id)
    except ValueError:
        raise not_found(f"Observation/{observation_id[:64]} is not known") from None
    async with ctx.pool.connection() as conn:
        row = await readings.read_observation(conn, time, digest, ctx.principal.patient_filter)
    if row is None:
        raise not_found(f"Observation/{observation_id} is not known")
    await _log(ctx, "read", "Observation", {row["patient_id"]}, {"id": observation_id})
    return render_observation(row)


def observation_filter(q: ObservationQuery) -> readings.ObservationFilter:
    """What the store needs of an Observation search, in plain values."""
    return readings.ObservationFilter(
        patient=q.patient,
        types=q.types,
        device=q.device,
        date_low=q.date_low,
        date_high=q.date_high,
        descending=q.descending,
        cursor=q.cursor,
        updated_low=q.updated_low,
        updated_high=q.updated_high,
    )


async def search_observations(ctx: Context, params: Params) -> dict[str, Any]:
    ctx.principal.require("Observation", "s")
    rest, total_mode = _pop_total(params)
    q = parse_observation_search(rest, tz=ctx.tz, lenient=ctx.lenient, cursor_key=ctx.cursor_key)
    restrict = ctx.principal.patient_filter
    rows: list[dict[str, Any]] = []
    total: int | None = None
    more = False
    async with ctx.pool.connection() as conn:
        if q.patient is not None:
            await _ensure_patient(conn, ctx.principal, q.patient)
        if q.empty:
            total = 0
        else:
            if not q.count_only:
                rows = await readings.search_observations(
                    conn, observation_filter(q), restrict, q.count + 1
                )
                more = len(rows) > q.count
                rows = rows[: q.count]
            if q.count_only or total_mode == "accurate":
                total = await readings.count_observations(conn, observation_filter(q), restrict)
            elif q.cursor is None and not more:
                total = len(rows)
    if total_mode == "none" and not q.count_only:
        total = None
    patients = {r["patient_id"] for r in rows}
    if q.patient is not None:
        patients.add(q.patient)
    await _log(
        ctx,
        "search",
        "Observation",
        patients,
        {"params": _param_names(params), "returned": len(rows)},
    )
    pairs = _link_pairs(params, q.ignored)
    next_pairs = _next_pairs(ctx, pairs, rows, more, "time", "dedup_key")
    self_pairs = [*pairs, *(("_cursor", v) for n, v in params if n == "_cursor")]
    notes = [f"code: {c} is not a code egenmon holds; it matches nothing" for c in q.unknown_codes]
    return _searchset(
        ctx,
        "Observation",
        [render_observation(r) for r in rows],
        total=total,
        self_pairs=self_pairs,
        next_pairs=next_pairs,
        outcome=_outcome(q.ignored, notes),
    )


async def lastn(ctx: Context, params: Params) -> dict[str, Any]:
    ctx.principal.require("Observation", "s")
    q = parse_lastn(params, lenient=ctx.lenient)
    names = sorted(q.types) if q.types is not None else list(TYPES)
    codes = [TYPES[n].loinc for n in names]
    async with ctx.pool.connection() as conn:
        await _ensure_patient(conn, ctx.principal, q.patient)
        rows = []
        if not q.empty:
            rows = await readings.lastn(conn, q.patient, codes, q.max, ctx.principal.patient_filter)
    await _log(
        ctx,
        "search",
        "Observation",
        {q.patient, *(r["patient_id"] for r in rows)},
        {"operation": "lastn", "params": _param_names(params), "returned": len(rows)},
    )
    notes = [f"code: {c} is not a code egenmon holds; it matches nothing" for c in q.unknown_codes]
    return _searchset(
        ctx,
        "Observation/$lastn",
        [render_observation(r) for r in rows],
        total=len(rows),
        self_pairs=_link_pairs(params, q.ignored),
        next_pairs=None,
        outcome=_outcome(q.ignored, notes),
    )


# --- Patient --------------------------------------------------------------------------


def _as_uuid(text: str) -> uuid.UUID | None:
    if len(text) != _UUID_LEN:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


async def read_patient(ctx: Context, patient_id: str) -> dict[str, Any]:
    ctx.principal.require("Patient", "r")
    pid = _as_uuid(patient_id)
    row = None
    if pid is not None:
        async with ctx.pool.connection() as conn:
            row = await patients_store.read_patient(conn, pid, ctx.principal.patient_filter)
    if row is None:
        raise not_found(f"Patient/{patient_id[:64]} is not known")
    await _log(ctx, "read", "Patient", {row["id"]}, {"id": str(row["id"])})
    return render_patient(row)


async def search_patients(ctx: Context, params: Params) -> dict[str, Any]:
    ctx.principal.require("Patient", "s")
    rest, total_mode = _pop_total(params)
    rest, after = _pop_cursor(rest, ctx.cursor_key)
    q = parse_patient_search(rest, lenient=ctx.lenient)
    count_only = q.summary_count or q.count == 0
    restrict = ctx.principal.patient_filter
    rows: list[dict[str, Any]] = []
    total: int | None = None
    more = False
    if q.no_match:
        total = 0
    else:
        args = {
            "personnummer": q.personnummer,
            "identifier_kind": q.identifier_kind,
            "restrict": restrict,
        }
        async with ctx.pool.connection() as conn:
            rows, total, more = await _page(
                patients_store.search_patients, conn, args, after, q.count, count_only, total_mode
            )
    await _log(
        ctx,
        "search",
        "Patient",
        {r["id"] for r in rows},
        {"params": _param_names(params), "returned": len(rows)},
    )
    # The identity number stays out of every link; a search by it finds at most one.
    pairs = _link_pairs(params, (*q.ignored, "identifier"))
    next_pairs = _next_pairs(ctx, pairs, rows, more and q.personnummer is None, "created_at")
    return _searchset(
        ctx,
        "Patient",
        [render_patient(r) for r in rows],
        total=total,
        self_pairs=pairs,
        next_pairs=next_pairs,
        outcome=_outcome(q.ignored, ()),
    )


# --- Device ---------------------------------------------------------------------------


async def read_device(ctx: Context, device_id: str) -> dict[str, Any]:
    ctx.principal.require("Device", "r")
    async with ctx.pool.connection() as conn:
        row = await devices.read_device(conn, device_id, ctx.principal.patient_filter)
    if row is None:
        raise not_found(f"Device/{device_id[:128]} is not known")
    patients = {row["patient_id"]} if row["patient_id"] else set()
    await _log(ctx, "read", "Device", patients, {"id": device_id})
    return render_device(row)


async def _page(
    search: Any,
    conn: Any,
    args: dict[str, Any],
    after: Any,
    count: int,
    count_only: bool,
    total_mode: str | None,
) -> tuple[list[dict[str, Any]], int | None, bool]:
    """One keyset page (count + 1 rows tell whether there is more) and the total where
    it is free or asked for: (rows, total, more)."""
    rows: list[dict[str, Any]] = []
    total: int | None = None
    more = False
    if not count_only:
        found = await search(conn, **args, after=after, limit=count + 1)
        more = len(found) > count
        rows = found[:count]
    if count_only or total_mode == "accurate":
        total = await search(conn, **args, after=None, limit=None, count_only=True)
    elif after is None and not more:
        total = len(rows)
    return rows, total, more


def _next_pairs(
    ctx: Context,
    pairs: Params,
    rows: list[dict[str, Any]],
    more: bool,
    at: str,
    ident: str = "id",
) -> Params | None:
    """The next link's parameters: these pairs and a cursor after the last row (its `at`
    and `ident` columns), or None when there is no next page."""
    if not more:
        return None
    last = rows[-1]
    return [*pairs, ("_cursor", encode_cursor(last[at], str(last[ident]), ctx.cursor_key))]


async def search_devices(ctx: Context, params: Params) -> dict[str, Any]:
    ctx.principal.require("Device", "s")
    rest, total_mode = _pop_total(params)
    rest, after = _pop_cursor(rest, ctx.cursor_key)
    q = parse_device_search(rest, lenient=ctx.lenient)
    count_only = q.summary_count or q.count == 0
    restrict = ctx.principal.patient_filter
    rows: list[dict[str, Any]] = []
    total: int | None = None
    more = False
    async with ctx.pool.connection() as conn:
        if q.patient is not None:
            await _ensure_patient(conn, ctx.principal, q.patient)
        if q.no_match:
            total = 0
        else:
            args: dict[str, Any] = {
                "patient_id": q.patient,
                "device_id": q.device_id,
                "restrict": restrict,
            }
            if q.identifier is not None:
                args["identifier"] = q.identifier
            rows, total, more = await _page(
                devices.search_devices, conn, args, after, q.count, count_only, total_mode
            )
    patients = {r["patient_id"] for r in rows if r["patient_id"]}
    if q.patient is not None:
        patients.add(q.patient)
    await _log(
        ctx, "search", "Device", patients, {"params": _param_names(params), "returned": len(rows)}
    )
    pairs = _link_pairs(params, q.ignored)
    next_pairs = _next_pairs(ctx, pairs, rows, more, "created_at")
    return _searchset(
        ctx,
        "Device",
        [render_device(r) for r in rows],
        total=total,
        self_pairs=pairs,
        next_pairs=next_pairs,
        outcome=_outcome(q.ignored, ()),
    )


# --- Flag and Task (alerts) -----------------------------------------------------------

_RENDER_ALERT = {"Flag": render_flag, "Task": render_task}


async def read_alert(ctx: Context, resource: str, alert_id: str) -> dict[str, Any]:
    ctx.principal.require(resource, "r")
    row = None
    async with ctx.pool.connection() as conn:
        key = alerts.alert_id(alert_id)
        if key is not None:
            row = await alerts.read_alert(conn, key, ctx.principal.patient_filter)
    if row is None:
        raise not_found(f"{resource}/{alert_id[:64]} is not known")
    await _log(ctx, "read", resource, {row["patient_id"]}, {"id": alert_id})
    return _RENDER_ALERT[resource](row)


async def search_alerts(ctx: Context, resource: str, params: Params) -> dict[str, Any]:
    ctx.principal.require(resource, "s")
    rest, total_mode = _pop_total(params)
    rest, after = _pop_cursor(rest, ctx.cursor_key)
    q = parse_alert_search(rest, resource, lenient=ctx.lenient, tz=ctx.tz)
    count_only = q.summary_count or q.count == 0
    restrict = ctx.principal.patient_filter
    rows: list[dict[str, Any]] = []
    total: int | None = None
    more = False
    async with ctx.pool.connection() as conn:
        if q.patient is not None:
            await _ensure_patient(conn, ctx.principal, q.patient)
        if q.empty:
            total = 0
        else:
            args = {
                "patient_id": q.patient,
                "statuses": q.statuses,
                "restrict": restrict,
                "updated_low": q.updated_low,
                "updated_high": q.updated_high,
            }
            rows, total, more = await _page(
                alerts.search_alerts, conn, args, after, q.count, count_only, total_mode
            )
    patients = {r["patient_id"] for r in rows}
    if q.patient is not None:
        patients.add(q.patient)
    await _log(
        ctx, "search", resource, patients, {"params": _param_names(params), "returned": len(rows)}
    )
    pairs = _link_pairs(params, q.ignored)
    next_pairs = _next_pairs(ctx, pairs, rows, more, "opened_at")
    render = _RENDER_ALERT[resource]
    return _searchset(
        ctx,
        resource,
        [render(r) for r in rows],
        total=total,
        self_pairs=pairs,
        next_pairs=next_pairs,
        outcome=_outcome(q.ignored, ()),
    )


# --- AuditEvent (the access log) ------------------------------------------------------


def _audit_filter(principal: Principal, action: str) -> access_log.LogFilter:
    """Who reads the access log, and which part: an admin all of it; a system with a
    scope naming AuditEvent (system/AuditEvent.rs: the region's log follow-up) all of it;
    a clinician with user/AuditEvent.rs (a care unit's log reviewer) their unit's staff's
    actions and the actions on their unit's patients. Never a patient (their extract is
    /api/v1/me/access-log), and never through a wildcard scope."""
    if principal.role == "admin":
        return access_log.LogFilter()
    named = any(s.resource == "AuditEvent" and action in s.actions for s in principal.scopes)
    if not named or principal.role == "patient":
        raise AuthError(
            403,
            "reading the access log needs a scope naming AuditEvent "
            "(system/AuditEvent.rs or user/AuditEvent.rs)",
        )
    if principal.role == "integrator" and any(
        s.context == "system" and s.resource == "AuditEvent" for s in principal.scopes
    ):
        return access_log.LogFilter()
    if principal.role == "clinician" and principal.care_unit_id:
        return access_log.LogFilter(unit=principal.care_unit_id)
    raise AuthError(403, "this token may not read the access log")


async def read_audit_event(ctx: Context, event_id: str) -> dict[str, Any]:
    scope = _audit_filter(ctx.principal, "r")
    row = None
    if event_id.isdigit() and len(event_id) <= 18:
        async with ctx.pool.connection() as conn:
            row = await access_log.read_entry(conn, int(event_id), scope)
    if row is None:
        raise not_found(f"AuditEvent/{event_id[:64]} is not known")
    await _log(ctx, "read", "AuditEvent", set(row["patient_ids"]), {"id": event_id})
    return render_audit_event(row)


async def search_audit_events(ctx: Context, params: Params) -> dict[str, Any]:
    scope = _audit_filter(ctx.principal, "s")
    rest, total_mode = _pop_total(params)
    rest, after = _pop_cursor(rest, ctx.cursor_key)
    q = parse_audit_search(rest, tz=ctx.tz, lenient=ctx.lenient)
    count_only = q.summary_count or q.count == 0
    rows: list[dict[str, Any]] = []
    total: int | None = None
    more = False
    if q.empty:
        total = 0
    else:
        actions = None
        exclude = False
        if q.actions is not None:
            if "E" in q.actions:  # E is everything that is not C, R, U or D
                actions = audit_action_names({"C", "R", "U", "D"} - q.actions)
                exclude = True
            else:
                actions = audit_action_names(q.actions)
        f = access_log.LogFilter(
            patient_id=q.patient,
            actor=q.agent,
            since=q.since,
            until=q.until,
            actions=actions,
            exclude_actions=exclude,
            unit=scope.unit,
        )
        async with ctx.pool.connection() as conn:
            rows, total, more = await _page(
                _search_entries, conn, {"f": f}, after, q.count, count_only, total_mode
            )
    patients = {q.patient} if q.patient is not None else set()
    await _log(
        ctx,
        "search",
        "AuditEvent",
        patients,
        {"params": _param_names(params), "returned": len(rows)},
    )
    pairs = _link_pairs(params, q.ignored)
    next_pairs = _next_pairs(ctx, pairs, rows, more, "at")
    return _searchset(
        ctx,
        "AuditEvent",
        [render_audit_event(r) for r in rows],
        total=total,
        self_pairs=pairs,
        next_pairs=next_pairs,
        outcome=_outcome(q.ignored, ()),
    )


async def _search_entries(
    conn: Any,
    *,
    f: access_log.LogFilter,
    after: Any,
    limit: int | None,
    count_only: bool = False,
) -> Any:
    return await access_log.search_entries(conn, f, after=after, limit=limit, count_only=count_only)
