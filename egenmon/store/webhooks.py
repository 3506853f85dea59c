"""Webhooks and their delivery queue (the outbox of alert notifications)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence

import orjson
import psycopg
from psycopg.rows import dict_row

# One statement: outbox rows for every active webhook that may see the alert's patient
# (an unbound hook, or one bound to the patient's care unit) and an event for every live
# FHIR Subscription whose topic and filters match; the delivery loops are woken at commit.
ENQUEUE = """
WITH x AS (
    SELECT x.alert_id, x.event, x.payload, a.patient_id, a.rule, p.care_unit_id
    FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS x(alert_id, event, payload)
    JOIN alerts a ON a.id = x.alert_id JOIN patients p ON p.id = a.patient_id
), hooks AS (
    INSERT INTO webhook_deliveries (webhook_id, alert_id, event, payload, patient_id)
    SELECT w.id, x.alert_id, x.event, x.payload::jsonb, x.patient_id
    FROM webhooks w JOIN x ON w.care_unit_id IS NULL OR w.care_unit_id = x.care_unit_id
    WHERE w.active
    RETURNING 1
), subs AS (
    INSERT INTO webhook_deliveries (subscription_id, alert_id, event, payload, patient_id, focus)
    SELECT s.id, x.alert_id, 'event', jsonb_build_object('alert_event', x.event), x.patient_id,
           CASE s.topic WHEN 'alert-flag' THEN 'Flag/' ELSE 'Task/' END || x.alert_id
    FROM subscriptions s JOIN x
      ON (s.patient_id IS NULL OR s.patient_id = x.patient_id)
     AND (s.care_unit_id IS NULL OR s.care_unit_id = x.care_unit_id)
     AND (s.scope_unit_id IS NULL OR s.scope_unit_id = x.care_unit_id)
     AND (s.codes IS NULL OR x.rule = ANY(s.codes))
    WHERE s.topic IN ('alert-flag', 'alert-task') AND s.status IN ('active', 'error')
    RETURNING 1
)
SELECT pg_notify('egenmon_outbox', '')
FROM (SELECT 1 FROM hooks UNION ALL SELECT 1 FROM subs LIMIT 1) AS any_queued
"""


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

_HOOK_COLS = "id, url, active, description, created_by, created_at, care_unit_id, owner_role"
_ADD_WEBHOOK = (
    "INSERT INTO webhooks (url, secret, description, created_by) VALUES (%s, %s, %s, %s)"
    f" RETURNING {_HOOK_COLS}"
)
_ADD_OWNED = (
    "INSERT INTO webhooks (url, secret, description, created_by, care_unit_id, owner_role)"
    f" VALUES (%s, %s, %s, %s, %s, %s) RETURNING {_HOOK_COLS}"
)


# The commands (synchronous) and the API (asynchronous) both manage webhooks: each
# statement is one constant with a thin wrapper for each (the `a` prefix is the API's).
_SET_ACTIVE = "UPDATE webhooks SET active = %s WHERE id = %s"
_LIST_WEBHOOKS = (
    f"SELECT {_HOOK_COLS}, secret IS NOT NULL AS has_secret FROM webhooks ORDER BY created_at"
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
WITH claimed AS (
    UPDATE webhook_deliveries d
    SET next_attempt_at = now() + %(lease)s, attempts = d.attempts + 1
    WHERE d.id IN (
        SELECT id FROM webhook_deliveries
        WHERE status = 'pending' AND next_attempt_at <= now()
          AND (focus IS NULL OR event_number IS NOT NULL)
        ORDER BY next_attempt_at, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    RETURNING d.id, d.attempts, d.event, d.payload, d.webhook_id, d.subscription_id,
              d.event_number, d.focus, d.patient_id, d.alert_id, d.created_at
)
SELECT c.*, coalesce(w.url, s.endpoint) AS url, w.secret,
       coalesce(w.active, s.status <> 'off') AS active,
       w.created_by AS hook_owner, w.owner_role AS hook_role, w.care_unit_id AS hook_unit,
       s.status AS sub_status, s.topic, s.content, s.headers, s.hmac_secret, s.timeout_s,
       s.events_since_start, s.scope_unit_id, s.owner, s.owner_role, s.fhir_base,
       s.id AS sub_id
FROM claimed c
LEFT JOIN webhooks w ON w.id = c.webhook_id
LEFT JOIN subscriptions s ON s.id = c.subscription_id
ORDER BY c.subscription_id, c.event_number, c.id
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


# --- webhooks an integrator registers (the API): owned, bound to its care unit -------------


async def aadd_owned_webhook(
    conn: psycopg.AsyncConnection,
    url: str,
    secret: str | None,
    description: str | None,
    owner: str,
    care_unit_id: uuid.UUID | None,
    owner_role: str,
) -> dict:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_ADD_OWNED, (url, secret, description, owner, care_unit_id, owner_role))
        row = await cur.fetchone()
    assert row is not None
    return row


async def aget_webhook(conn: psycopg.AsyncConnection, webhook_id: uuid.UUID) -> dict | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_HOOK_COLS}, secret IS NOT NULL AS has_secret FROM webhooks WHERE id = %s",
            (webhook_id,),
        )
        return await cur.fetchone()


async def alist_owned_webhooks(conn: psycopg.AsyncConnection, owner: str) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_HOOK_COLS}, secret IS NOT NULL AS has_secret FROM webhooks"
            " WHERE created_by = %s ORDER BY created_at",
            (owner,),
        )
        return await cur.fetchall()


async def aupdate_webhook(
    conn: psycopg.AsyncConnection,
    webhook_id: uuid.UUID,
    *,
    url: str | None,
    description: str | None,
    active: bool | None,
) -> dict | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "UPDATE webhooks SET url = coalesce(%s, url),"
            " description = coalesce(%s, description), active = coalesce(%s, active)"
            f" WHERE id = %s RETURNING {_HOOK_COLS}, secret IS NOT NULL AS has_secret",
            (url, description, active, webhook_id),
        )
        return await cur.fetchone()


async def adelivery_log(
    conn: psycopg.AsyncConnection, webhook_id: uuid.UUID, limit: int = 100
) -> list[dict]:
    """The latest deliveries to a webhook, with their attempts counted (no payloads)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id, alert_id, event, status, attempts, created_at, delivered_at,"
            " last_status, last_error FROM webhook_deliveries WHERE webhook_id = %s"
            " ORDER BY id DESC LIMIT %s",
            (webhook_id, limit),
        )
        return await cur.fetchall()
