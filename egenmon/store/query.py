"""Helpers the table modules share: who may see what, keyset paging, patient-id ranges
and rows read by name or position.

Who may see what is part of every FHIR query (`restrict`, from `Principal.patient_filter`):
``None`` (everything), ``("care_unit", id)`` (the patients of one care unit, by a join on
patients, never by filtering fetched pages), ``("patient", id)`` (one patient) or
``("none", _)`` (nothing).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql


def column(row: Any, key: str, index: int) -> Any:
    """A column of a row, whether the connection hands out dicts (the pool) or tuples."""
    return row[key] if isinstance(row, dict) else row[index]


def uuid_range(lo: uuid.UUID | None, hi: uuid.UUID | None, name: str) -> sql.Composable:
    """` AND name >= lo AND name < hi` (a bound left out when None): one worker's share of
    the rule scan's patients."""
    parts: list[sql.Composable] = []
    if lo is not None:
        parts.append(sql.SQL(" AND {} >= {}").format(sql.Identifier(name), sql.Literal(lo)))
    if hi is not None:
        parts.append(sql.SQL(" AND {} < {}").format(sql.Identifier(name), sql.Literal(hi)))
    return sql.Composed(parts)


Restrict = tuple[str, uuid.UUID] | None


# Rows are dicts: the pool sets dict_row on its connections (store/db.py) when it hands
# them out, which the connection's static type cannot show.
Conn = psycopg.AsyncConnection[Any]


def restrict_clause(restrict: Restrict, column: str, params: dict[str, Any]) -> str:
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


async def keyset_page(
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
