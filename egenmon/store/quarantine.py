"""The quarantine table: what ingest refused, kept whole for a look and a replay."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row

_QUARANTINE_COLUMNS = (
    "received_at, source, device_id, topic, reason, raw, kind, message_id, reading_index"
)


_QUARANTINE_INSERT = (
    f"INSERT INTO quarantine ({_QUARANTINE_COLUMNS})"
    " SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::bytea[], %s::text[], %s::text[], %s::int[]) RETURNING id"
)


_QUARANTINE_FIELDS = (
    "id, received_at, source, device_id, topic, kind, message_id, reading_index, reason,"
    " length(raw) AS size, resolved_at, resolution, replayed_at"
)


# The longest text a quarantine entry keeps in reason, topic or device_id; the raw body
# (bytea) is kept whole.
MAX_TEXT = 1000


def safe_text(text: str | None, limit: int = MAX_TEXT) -> str | None:
    """Text that a PostgreSQL text column, JSON and a log line can all hold, at most
    `limit` characters: what is not printable (NUL and other control characters, lone
    surrogates, invalid bytes decoded with surrogateescape) is written as a Python escape
    (\\x00, \\ud800), printable Unicode stays as it is. Used for everything of a
    quarantine entry that is text, so that no content can make its insert fail."""
    if text is None:
        return None
    if not isinstance(text, str):
        text = repr(text)
    if len(text) <= limit and text.isprintable():
        return text
    out = "".join(c if c.isprintable() else _escape(c) for c in text[: limit + 1])
    return out if len(out) <= limit else out[: limit - 3] + "..."


def _escape(c: str) -> str:
    n = ord(c)
    if n <= 0xFF:
        return f"\\x{n:02x}"
    if n <= 0xFFFF:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


@dataclass(frozen=True)
class QuarantineEntry:
    """What goes into quarantine: the raw bytes and why they were refused."""

    received_at: dt.datetime
    source: str
    reason: str
    raw: bytes
    device_id: str | None = None
    topic: str | None = None
    kind: str = "message"  # or "reading"
    message_id: str | None = None
    reading_index: int | None = None


async def insert_quarantine(
    conn: psycopg.AsyncConnection, entries: Sequence[QuarantineEntry]
) -> list[int]:
    """Store entries in quarantine (one statement); returns their ids.

    No content makes this fail: the raw body is bytes (bytea), every text is made safe
    (safe_text), so what remains to fail it is an outage (or a bug)."""
    if not entries:
        return []
    columns = (
        [e.received_at for e in entries],
        [safe_text(e.source, 20) for e in entries],
        [safe_text(e.device_id, 200) for e in entries],
        [safe_text(e.topic) for e in entries],
        [safe_text(e.reason) or "?" for e in entries],
        [bytes(e.raw) for e in entries],
        [e.kind for e in entries],
        [safe_text(e.message_id, 200) for e in entries],
        [e.reading_index for e in entries],
    )
    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(_QUARANTINE_INSERT, columns)
        return [r[0] for r in await cur.fetchall()]


async def list_quarantine(
    conn: psycopg.AsyncConnection,
    *,
    include_resolved: bool = False,
    device_id: str | None = None,
    source: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
    with_raw: bool = True,
) -> list[dict[str, Any]]:
    """Entries, newest first; open ones only unless include_resolved."""
    where = [
        "(%s OR resolved_at IS NULL)",
        "(%s::text IS NULL OR device_id = %s)",
        "(%s::text IS NULL OR source = %s)",
        "(%s::bigint IS NULL OR id < %s)",
    ]
    raw = ", raw" if with_raw else ""
    sql = (
        f"SELECT {_QUARANTINE_FIELDS}{raw} FROM quarantine WHERE {' AND '.join(where)}"
        " ORDER BY id DESC LIMIT %s"
    )
    params = (include_resolved, device_id, device_id, source, source, before_id, before_id, limit)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


async def get_quarantine(conn: psycopg.AsyncConnection, ids: Sequence[int]) -> list[dict[str, Any]]:
    """Entries by id, with their raw bytes, in the order asked for (missing ones left out)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_QUARANTINE_FIELDS}, raw FROM quarantine WHERE id = ANY(%s)", (list(ids),)
        )
        found = {r["id"]: r for r in await cur.fetchall()}
    return [found[i] for i in ids if i in found]


async def record_replay(
    conn: psycopg.AsyncConnection, entry_id: int, resolution: str, resolved: bool
) -> None:
    """Note what a replay did; a replay that stored the entry also resolves it."""
    await conn.execute(
        "UPDATE quarantine SET replayed_at = now(), resolution = %s,"
        " resolved_at = CASE WHEN %s THEN coalesce(resolved_at, now()) ELSE resolved_at END"
        " WHERE id = %s",
        (resolution, resolved, entry_id),
    )
