"""Webhooks and their delivery queue (the outbox of alert notifications)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import orjson
import psycopg
from psycopg.rows import dict_row

ENQUEUE = (
    "INSERT INTO webhook_deliveries (webhook_id, alert_id, event, payload)"
    " SELECT w.id, x.alert_id, x.event, x.payload::jsonb FROM webhooks w"
    " CROSS JOIN unnest(%s::uuid[], %s::text[], %s::text[]) AS x(alert_id, event, payload)"
    " WHERE w.active"
)


def enqueue_args(items: Sequence[tuple[uuid.UUID, str, dict]]) -> tuple:
    return (
        [i[0] for i in items],
        [i[1] for i in items],
        [orjson.dumps(i[2]).decode() for i in items],
    )


async def enqueue_deliveries(
    conn: psycopg.AsyncConnection, items: Sequence[tuple[uuid.UUID, str, dict]]
) -> None:
    """Outbox rows for every active webhook; commit with the change they tell of."""
    if items:
        await conn.execute(ENQUEUE, enqueue_args(items))


# --- webhooks and deliveries ----------------------------------------------------------------

_ADD_WEBHOOK = (
    "INSERT INTO webhooks (url, secret, description, created_by) VALUES (%s, %s, %s, %s)"
    " RETURNING id, url, active, description, created_by, created_at"
)


# The commands (synchronous) and the API (asynchronous) both manage webhooks: each
# statement is one constant with a thin wrapper for each (the `a` prefix is the API's).
_SET_ACTIVE = "UPDATE webhooks SET active = %s WHERE id = %s"
_LIST_WEBHOOKS = (
    "SELECT id, url, active, description, created_by, created_at, secret IS NOT NULL"
    " AS has_secret FROM webhooks ORDER BY created_at"
)


def add_webhook(
    conn: psycopg.Connection, url: str, secret: str | None, description: str | None, by: str
) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_ADD_WEBHOOK, (url, secret, description, by)).fetchone()
    assert row is not None
    return row


def list_webhooks(conn: psycopg.Connection) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_LIST_WEBHOOKS).fetchall()


def set_webhook_active(conn: psycopg.Connection, webhook_id: uuid.UUID, active: bool) -> bool:
    cur = conn.execute(_SET_ACTIVE, (active, webhook_id))
    return cur.rowcount == 1


async def aadd_webhook(
    conn: psycopg.AsyncConnection,
    url: str,
    secret: str | None,
    description: str | None,
    by: str,
) -> dict:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_ADD_WEBHOOK, (url, secret, description, by))
        row = await cur.fetchone()
    assert row is not None
    return row


async def alist_webhooks(conn: psycopg.AsyncConnection) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_LIST_WEBHOOKS)
        return await cur.fetchall()


async def aset_webhook_active(
    conn: psycopg.AsyncConnection, webhook_id: uuid.UUID, active: bool
) -> bool:
    cur = await conn.execute(_SET_ACTIVE, (active, webhook_id))
    return cur.rowcount == 1


_CLAIM = """
UPDATE webhook_deliveries d
SET next_attempt_at = now() + %(lease)s, attempts = d.attempts + 1
FROM webhooks w
WHERE w.id = d.webhook_id AND d.id IN (
    SELECT id FROM webhook_deliveries
    WHERE status = 'pending' AND next_attempt_at <= now()
    ORDER BY next_attempt_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING d.id, d.attempts, d.event, d.payload, w.url, w.secret, w.active
"""


async def claim_deliveries(
    conn: psycopg.AsyncConnection, limit: int, lease: dt.timedelta
) -> list[dict]:
    """Due deliveries, leased so another sender does not take them while they are sent."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_CLAIM, {"limit": limit, "lease": lease})
        return await cur.fetchall()


async def finish_delivery(
    conn: psycopg.AsyncConnection,
    delivery_id: int,
    *,
    status: str,
    http_status: int | None,
    error: str | None,
    next_attempt_at: dt.datetime | None,
    duration_ms: float,
) -> None:
    """Record an attempt and the delivery's new state."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE webhook_deliveries SET status = %s, last_status = %s, last_error = %s,"
            " delivered_at = CASE WHEN %s = 'delivered' THEN now() END,"
            " next_attempt_at = COALESCE(%s, next_attempt_at) WHERE id = %s",
            (status, http_status, error, status, next_attempt_at, delivery_id),
        )
        await conn.execute(
            "INSERT INTO webhook_attempts (delivery_id, status, error, duration_ms)"
            " VALUES (%s, %s, %s, %s)",
            (delivery_id, http_status, error, duration_ms),
        )
