"""FHIR Subscriptions (R5 Backport IG on R4): the subscriptions table and their events in
the outbox (`webhook_deliveries`, shared with webhooks).

An event row is queued when its change commits (an alert's change, by `webhooks.ENQUEUE`;
new Observations, by `enqueue_observations` right after the batch writer's commit). It is
numbered when it is about to be sent (`number_events`, serialised by an advisory lock), so
the ingest path never waits on a subscription's counter; numbers still only ever grow per
subscription, and a number, once given, is the event's for good (`$events` replays by it).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from egenmon.store.query import Conn

# Wakes the delivery loops of every serve process (LISTEN) when something is queued.
OUTBOX_CHANNEL = "egenmon_outbox"
_NUMBER_LOCK = 0x6567656E737562  # "egensub"

LIVE = ("active", "error")  # statuses that collect events

_COLS = (
    "id, status, topic, patient_id, care_unit_id, codes, scope_unit_id, owner, owner_role,"
    " endpoint, content, headers, hmac_secret, heartbeat_s, timeout_s, max_count, end_at,"
    " reason, criteria, fhir_base, filter, events_since_start, last_sent_at, error, created_at,"
    " updated_at"
)


@dataclass(frozen=True)
class NewSubscription:
    topic: str
    patient_id: uuid.UUID | None
    care_unit_id: uuid.UUID | None
    codes: list[str] | None
    scope_unit_id: uuid.UUID | None
    owner: str
    owner_role: str
    endpoint: str
    content: str
    headers: list[str]
    hmac_secret: str | None
    heartbeat_s: int | None
    timeout_s: int | None
    max_count: int | None
    end_at: dt.datetime | None
    reason: str | None
    criteria: str
    fhir_base: str
    filter: str | None


_CREATE = (
    "WITH s AS (INSERT INTO subscriptions (topic, patient_id, care_unit_id, codes,"
    " scope_unit_id, owner, owner_role, endpoint, content, headers, hmac_secret, heartbeat_s,"
    " timeout_s, max_count, end_at, reason, criteria, fhir_base, filter) VALUES (%(topic)s,"
    " %(patient_id)s, %(care_unit_id)s, %(codes)s, %(scope_unit_id)s, %(owner)s,"
    " %(owner_role)s, %(endpoint)s, %(content)s, %(headers)s, %(hmac_secret)s,"
    " %(heartbeat_s)s, %(timeout_s)s, %(max_count)s, %(end_at)s, %(reason)s, %(criteria)s,"
    f" %(fhir_base)s, %(filter)s) RETURNING {_COLS}),"
    " h AS (INSERT INTO webhook_deliveries (subscription_id, event, payload)"
    " SELECT id, 'handshake', '{}'::jsonb FROM s RETURNING 1)"
    f" SELECT s.*, pg_notify('{OUTBOX_CHANNEL}', '') AS woken FROM s"
)


async def create(conn: Conn, new: NewSubscription) -> dict[str, Any]:
    """A requested subscription, its handshake queued (the delivery loop is woken)."""
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_CREATE, new.__dict__)
        row = await cur.fetchone()
    assert row is not None
    row.pop("woken", None)
    return row


async def get(conn: Conn, subscription_id: uuid.UUID) -> dict[str, Any] | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT {_COLS} FROM subscriptions WHERE id = %s", (subscription_id,))
        return await cur.fetchone()


async def search(
    conn: Conn,
    *,
    owner: str | None,
    statuses: Sequence[str] | None,
    topic: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Subscriptions, newest first; `owner` None: everyone's (an admin's search)."""
    where = ["true"]
    params: dict[str, Any] = {"limit": limit}
    if owner is not None:
        where.append("owner = %(owner)s")
        params["owner"] = owner
    if statuses:
        where.append("status = ANY(%(statuses)s)")
        params["statuses"] = list(statuses)
    if topic is not None:
        where.append("topic = %(topic)s")
        params["topic"] = topic
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {_COLS} FROM subscriptions WHERE {' AND '.join(where)}"
            " ORDER BY created_at DESC, id LIMIT %(limit)s",
            params,
        )
        return await cur.fetchall()


async def switch_off(conn: Conn, subscription_id: uuid.UUID) -> None:
    """Status off: nothing more is queued, nothing queued is sent."""
    await conn.execute(
        "UPDATE subscriptions SET status = 'off', updated_at = now() WHERE id = %s",
        (subscription_id,),
    )


async def set_status(
    conn: Conn, subscription_id: uuid.UUID, status: str, error: str | None
) -> None:
    """Record a delivery's outcome: requested/error → active on success, → error on failure
    (never revives a subscription that is off)."""
    await conn.execute(
        "UPDATE subscriptions SET status = %s, error = %s, updated_at = now(),"
        " last_sent_at = CASE WHEN %s = 'active' THEN now() ELSE last_sent_at END"
        " WHERE id = %s AND status <> 'off'",
        (status, error, status, subscription_id),
    )


async def counts(conn: Conn, subscription_id: uuid.UUID) -> dict[str, int]:
    """The outbox's figures for `$status`: events queued, delivered, pending, failed."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT count(*) FILTER (WHERE focus IS NOT NULL) AS events,"
            " count(*) FILTER (WHERE focus IS NOT NULL AND status = 'delivered') AS delivered,"
            " count(*) FILTER (WHERE focus IS NOT NULL AND status = 'pending') AS pending,"
            " count(*) FILTER (WHERE focus IS NOT NULL AND status = 'failed') AS failed,"
            " count(*) FILTER (WHERE event = 'heartbeat' AND status = 'delivered')"
            " AS heartbeats FROM webhook_deliveries WHERE subscription_id = %s",
            (subscription_id,),
        )
        row = await cur.fetchone()
    return {k: int(v) for k, v in (row or {}).items()}


async def events(
    conn: Conn, subscription_id: uuid.UUID, since: int | None, until: int | None, limit: int
) -> list[dict[str, Any]]:
    """Numbered events of a subscription, by number, within [since, until]."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT event_number, created_at, focus, patient_id FROM webhook_deliveries"
            " WHERE subscription_id = %(id)s AND event_number IS NOT NULL"
            " AND event_number >= %(since)s AND event_number <= %(until)s"
            " ORDER BY event_number LIMIT %(limit)s",
            {
                "id": subscription_id,
                "since": since if since is not None else 0,
                "until": until if until is not None else 2**62,
                "limit": limit,
            },
        )
        return await cur.fetchall()


_NUMBER = """
WITH pending AS (
    SELECT d.id, d.subscription_id,
           row_number() OVER (PARTITION BY d.subscription_id ORDER BY d.id) AS rn
    FROM webhook_deliveries d
    WHERE d.subscription_id IS NOT NULL AND d.event_number IS NULL AND d.focus IS NOT NULL
), n AS (
    SELECT subscription_id, count(*) AS n FROM pending GROUP BY subscription_id
), bumped AS (
    UPDATE subscriptions s SET events_since_start = s.events_since_start + n.n
    FROM n WHERE s.id = n.subscription_id
    RETURNING s.id, s.events_since_start - n.n AS base
)
UPDATE webhook_deliveries d SET event_number = b.base + p.rn
FROM pending p JOIN bumped b ON b.id = p.subscription_id
WHERE d.id = p.id
"""


async def number_events(conn: Conn) -> int:
    """Give every queued event its number (one numbering at a time, across processes)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_NUMBER_LOCK,))
        cur = await conn.execute(_NUMBER)
        return cur.rowcount


_HEARTBEATS = """
WITH due AS (
    UPDATE subscriptions s SET last_sent_at = now()
    WHERE s.status IN ('active', 'error') AND s.heartbeat_s IS NOT NULL
      AND s.last_sent_at + make_interval(secs => s.heartbeat_s) <= now()
      AND NOT EXISTS (
          SELECT 1 FROM webhook_deliveries d WHERE d.subscription_id = s.id
          AND d.status = 'pending' AND d.event = 'heartbeat')
    RETURNING s.id
), q AS (
    INSERT INTO webhook_deliveries (subscription_id, event, payload)
    SELECT id, 'heartbeat', '{}'::jsonb FROM due RETURNING 1
)
SELECT count(*) AS n FROM q
"""

_ENDED = (
    "UPDATE subscriptions SET status = 'off', updated_at = now()"
    " WHERE status <> 'off' AND end_at IS NOT NULL AND end_at <= now()"
)


async def queue_heartbeats(conn: Conn) -> int:
    """Queue a heartbeat for every live subscription quiet for its heartbeat period, and
    switch off those past their end."""
    async with conn.transaction():
        await conn.execute(_ENDED)
        cur = await conn.execute(_HEARTBEATS)
        row = await cur.fetchone()
    return int(row["n"] if isinstance(row, dict) else row[0]) if row else 0


async def next_heartbeat_in(conn: Conn) -> float | None:
    """Seconds until the next heartbeat is due (None: no subscription asks for one)."""
    cur = await conn.execute(
        "SELECT extract(epoch FROM min(last_sent_at + make_interval(secs => heartbeat_s))"
        " - now()) AS s FROM subscriptions WHERE status IN ('active', 'error')"
        " AND heartbeat_s IS NOT NULL"
    )
    row = await cur.fetchone()
    value = (row["s"] if isinstance(row, dict) else row[0]) if row else None
    return None if value is None else max(0.0, float(value))


_PRUNE = """
WITH old AS (
    SELECT id FROM webhook_deliveries
    WHERE subscription_id IS NOT NULL AND status <> 'pending' AND created_at < %(before)s
    LIMIT %(limit)s
), attempts AS (
    DELETE FROM webhook_attempts a USING old WHERE a.delivery_id = old.id
)
DELETE FROM webhook_deliveries d USING old WHERE d.id = old.id
"""


async def prune(conn: Conn, before: dt.datetime, limit: int = 10000) -> int:
    """Forget sent (or given-up) notifications of subscriptions made before `before`, at
    most `limit` at a time: `$events` replays what is kept. Event numbers are never reused
    (the subscription keeps its count)."""
    async with conn.transaction():
        cur = await conn.execute(_PRUNE, {"before": before, "limit": limit})
        return cur.rowcount


# --- new Observations ---------------------------------------------------------------------

_INTEREST = (
    "SELECT s.patient_id, coalesce(s.care_unit_id, s.scope_unit_id) AS unit"
    " FROM subscriptions s WHERE s.topic = 'observation' AND s.status IN ('active', 'error')"
)
_UNIT_PATIENTS = "SELECT id FROM patients WHERE care_unit_id = ANY(%s)"


async def observation_interest(conn: psycopg.AsyncConnection) -> tuple[bool, set[uuid.UUID]]:
    """(everyone, patients): whose new Observations some live subscription may want.
    `everyone` when a subscription names neither a patient nor a care unit."""
    cur = await conn.execute(_INTEREST)
    rows = await cur.fetchall()
    patients: set[uuid.UUID] = set()
    units: set[uuid.UUID] = set()
    for r in rows:
        pid, unit = (r["patient_id"], r["unit"]) if isinstance(r, dict) else r
        if pid is not None:
            patients.add(pid)
        elif unit is not None:
            units.add(unit)
        else:
            return True, set()
    if units:
        cur = await conn.execute(_UNIT_PATIENTS, (list(units),))
        patients |= {r["id"] if isinstance(r, dict) else r[0] for r in await cur.fetchall()}
    return False, patients


_OBSERVATIONS = f"""
WITH x AS (
    SELECT x.patient_id, x.code, x.mdc, x.oid, p.care_unit_id
    FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[]) AS x(patient_id, code, mdc, oid)
    JOIN patients p ON p.id = x.patient_id
), q AS (
    INSERT INTO webhook_deliveries (subscription_id, event, payload, patient_id, focus)
    SELECT s.id, 'event', '{{}}'::jsonb, x.patient_id, 'Observation/' || x.oid
    FROM subscriptions s JOIN x
      ON (s.patient_id IS NULL OR s.patient_id = x.patient_id)
     AND (s.care_unit_id IS NULL OR s.care_unit_id = x.care_unit_id)
     AND (s.scope_unit_id IS NULL OR s.scope_unit_id = x.care_unit_id)
     AND (s.codes IS NULL OR x.code = ANY(s.codes) OR x.mdc = ANY(s.codes))
    WHERE s.topic = 'observation' AND s.status IN ('active', 'error')
    RETURNING 1
)
SELECT pg_notify('{OUTBOX_CHANNEL}', '') FROM (SELECT 1 FROM q LIMIT 1) AS any_queued
"""


async def enqueue_observations(
    conn: psycopg.AsyncConnection,
    observations: Sequence[tuple[uuid.UUID, str, str, str]],
) -> None:
    """Queue an event for each (patient, LOINC, MDC, Observation id) some live
    observation subscription matches."""
    if not observations:
        return
    cols = list(zip(*observations, strict=True))
    await conn.execute(_OBSERVATIONS, [list(c) for c in cols])


async def listen(conn: psycopg.AsyncConnection) -> None:
    await conn.execute(f"LISTEN {OUTBOX_CHANNEL}")
