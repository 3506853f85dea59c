"""FHIR Group: a care unit's monitored patients, the group a Bulk Data `$export` names.

A Group's id is its care unit's id, so `GET /fhir/Group?identifier=<HSA-id>` finds the
id an integrator kicks `/fhir/Group/{id}/$export` off with. The members are not listed
(a unit may hold tens of thousands of patients); `quantity` says how many there are, and
the export itself is the way to them. A clinician sees the group of their own care unit
only; another unit's group reads as unknown (404), as every other resource does.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import urlencode

from egenmon.domain.ids import decode_cursor, encode_cursor
from egenmon.domain.principals import Principal
from egenmon.fhir.outcome import not_found
from egenmon.fhir.reads import Context
from egenmon.fhir.render import fhir_instant, render_bundle_searchset
from egenmon.fhir.search import SearchError
from egenmon.store import exports
from egenmon.store.access_log import log_access, param_names

__all__ = ["GROUP_PARAMS", "HSA_SYSTEM", "read_group", "render_group", "search_groups", "unit_of"]

HSA_SYSTEM = "urn:oid:1.2.752.29.4.19"
GROUP_PARAMS = frozenset({"identifier", "_count", "_cursor"})
_DEFAULT_COUNT = 50
_MAX_COUNT = 1000


def render_group(row: dict[str, Any]) -> dict[str, Any]:
    """A care unit as the Group of its monitored patients (pure)."""
    hsa = {"system": HSA_SYSTEM, "value": row["hsa_id"]}
    return {
        "resourceType": "Group",
        "id": str(row["id"]),
        "meta": {"lastUpdated": fhir_instant(row["created_at"])},
        "identifier": [hsa],
        "active": True,
        "type": "person",
        "actual": True,
        "name": f"{row['name']}: monitored patients",
        "quantity": int(row["quantity"]),
        "managingEntity": {"identifier": hsa, "display": row["name"]},
    }


def unit_of(principal: Principal) -> uuid.UUID | None:
    """The one care unit a principal is bound to (None: it sees every unit); a patient
    token sees no group (the nil id matches none)."""
    restrict = principal.patient_filter
    if restrict is None:
        return None
    kind, ident = restrict
    return ident if kind == "care_unit" else uuid.UUID(int=0)


def _as_uuid(text: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(text) if len(text) == 36 else None
    except ValueError:
        return None


async def read_group(ctx: Context, ident: str) -> dict[str, Any]:
    ctx.principal.require("Group", "r")
    unit = _as_uuid(ident)
    only = unit_of(ctx.principal)
    row = None
    if unit is not None and (only is None or only == unit):
        async with ctx.pool.connection() as conn:
            row = await exports.read_group(conn, unit)
    if row is None:
        raise not_found(f"Group/{ident[:64]} is not known")
    await log_access(ctx.pool, ctx.principal, "read", "Group", (), {"id": str(row["id"])})
    return render_group(row)


def _parse(params: list[tuple[str, str]]) -> tuple[str | None, int, str | None]:
    hsa: str | None = None
    count = _DEFAULT_COUNT
    cursor: str | None = None
    for name, value in params:
        if name not in GROUP_PARAMS:
            raise SearchError(name, "not a search parameter of Group here", "not-supported")
        if name == "identifier":
            system, sep, code = value.rpartition("|")
            if sep and system not in (HSA_SYSTEM, ""):
                raise SearchError("identifier", f"only the HSA-id system {HSA_SYSTEM} is known")
            if not code:
                raise SearchError("identifier", "names no value")
            hsa = code
        elif name == "_count":
            if not value.isdigit() or not 0 < int(value) <= _MAX_COUNT:
                raise SearchError("_count", f"must be a whole number from 1 to {_MAX_COUNT}")
            count = int(value)
        else:
            cursor = value
    return hsa, count, cursor


async def search_groups(ctx: Context, params: list[tuple[str, str]]) -> dict[str, Any]:
    ctx.principal.require("Group", "s")
    hsa, count, cursor = _parse(params)
    after = None
    if cursor is not None:
        try:
            after = decode_cursor(cursor, ctx.cursor_key)
        except ValueError:
            raise SearchError("_cursor", "not a valid paging cursor") from None
    async with ctx.pool.connection() as conn:
        rows = await exports.search_groups(
            conn, hsa_id=hsa, only_unit=unit_of(ctx.principal), after=after, limit=count + 1
        )
    more = len(rows) > count
    rows = rows[:count]
    await log_access(
        ctx.pool,
        ctx.principal,
        "search",
        "Group",
        (),
        {"params": param_names(params), "returned": len(rows)},
    )
    pairs = [(n, v) for n, v in params if n != "_cursor"]
    links = [("self", _link(ctx.base, pairs))]
    if more:
        last = rows[-1]
        token = encode_cursor(last["created_at"], str(last["id"]), ctx.cursor_key)
        links.append(("next", _link(ctx.base, [*pairs, ("_cursor", token)])))
    total = len(rows) if cursor is None and not more else None
    return render_bundle_searchset([render_group(r) for r in rows], total, links, ctx.base, None)


def _link(base: str, pairs: list[tuple[str, str]]) -> str:
    return f"{base}/Group" + (f"?{urlencode(pairs)}" if pairs else "")
