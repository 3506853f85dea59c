"""Alerts (care contacts): reconciliation of a cycle's findings, the worklist and FHIR
reads, status changes and their events."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from egenmon.store.query import Conn, Restrict, keyset_page, restrict_clause
from egenmon.store.webhooks import ENQUEUE, enqueue_args

RECONCILE_LOCK = 0x65676E5F72636E63  # "egn_rcnc"


_SEVERITY_RANK = "array_position(ARRAY['low','medium','high'], {})"


# --- reconciliation: findings of a whole cycle against the alerts, in one transaction ------

FINDING_COLUMNS = (
    "patient_id",
    "key",
    "rule",
    "category",
    "severity",
    "summary",
    "details",
    "evidence",
    "basis",
    "evidence_until",
    "due_at",
    "current",
)


_FINDING_TYPES = (
    "uuid",
    "text",
    "text",
    "text",
    "text",
    "text",
    "jsonb",
    "text[]",
    "text[]",
    "timestamptz",
    "timestamptz",
    "bool",
)


_STAGE = (
    "CREATE TEMPORARY TABLE alert_findings (patient_id uuid NOT NULL, key text NOT NULL,"
    " rule text NOT NULL, category text NOT NULL, severity text NOT NULL,"
    " summary text NOT NULL, details jsonb NOT NULL, evidence text[] NOT NULL,"
    " basis text[] NOT NULL, evidence_until timestamptz, due_at timestamptz NOT NULL,"
    " current boolean NOT NULL)"
    " ON COMMIT DROP"
)


_RANK_F = _SEVERITY_RANK.format("cur.f_severity")


_RANK_A = _SEVERITY_RANK.format("a.severity")


# The NEWS2 score of a staged finding (None for other rules).
_SCORE = "CASE WHEN {0}.rule = 'news2' THEN ({0}.details->>'score')::float8 END"


_UPDATE_OPEN = f"""
WITH cur AS (
    SELECT a.id, a.severity AS old_severity, a.cleared_at IS NOT NULL AS was_cleared,
           f.severity AS f_severity, f.summary, f.details, f.evidence, f.basis,
           f.evidence_until, f.due_at AS f_due, {_SCORE.format("f")} AS f_score,
           f.current AS f_current
    FROM alert_findings f
    JOIN alerts a ON a.patient_id = f.patient_id AND a.key = f.key
                 AND a.status IN ('open', 'acknowledged')
    WHERE f.basis IS DISTINCT FROM a.last_basis
       OR f.severity IS DISTINCT FROM a.current_severity
       OR (a.cleared_at IS NOT NULL AND f.current)
    FOR UPDATE OF a
)
UPDATE alerts a SET
    severity = CASE WHEN {_RANK_F} > {_RANK_A} THEN cur.f_severity ELSE a.severity END,
    current_severity = cur.f_severity,
    summary = cur.summary,
    details = cur.details,
    evidence = ARRAY(SELECT DISTINCT e FROM unnest(a.evidence || cur.evidence) AS e ORDER BY e),
    basis = ARRAY(SELECT DISTINCT b FROM unnest(a.basis || cur.basis) AS b ORDER BY b),
    last_basis = cur.basis,
    evidence_until = GREATEST(a.evidence_until, cur.evidence_until),
    due_at = CASE WHEN {_RANK_F} > {_RANK_A} THEN LEAST(a.due_at, cur.f_due) ELSE a.due_at END,
    peak_score = GREATEST(a.peak_score, cur.f_score),
    cleared_at = CASE WHEN cur.f_current THEN NULL ELSE a.cleared_at END,
    updated_at = %(now)s
FROM cur
WHERE a.id = cur.id
RETURNING a.*, cur.old_severity, cur.was_cleared
"""


# A finding with no open alert for its key opens one when the key has never alerted
# ('first'), or its newest closed alert is of an episode judged: then only a worse
# deviation ('worse': a higher severity than the closed alert's worst, or a NEWS2 score
# above its peak) or a new episode ('new_episode': the deviation was gone for the rule's
# episode gap, cleared_at on the closed alert) opens one. Never on readings the closed
# alert already rested on.
_INSERT_NEW = f"""
WITH prev AS (
    SELECT DISTINCT ON (c.patient_id, c.key) c.patient_id, c.key, c.id, c.severity,
           COALESCE(c.peak_score, {_SCORE.format("c")}) AS peak_score, c.cleared_at, c.basis
    FROM alerts c JOIN alert_findings f ON f.patient_id = c.patient_id AND f.key = c.key
    WHERE c.status IN ('resolved', 'dismissed')
    ORDER BY c.patient_id, c.key, c.opened_at DESC, c.id DESC
), cand AS (
    SELECT f.*, p.id AS prev_id, {_SCORE.format("f")} AS score,
           CASE
               WHEN p.id IS NULL THEN 'first'
               WHEN f.basis <@ p.basis THEN NULL
               WHEN {_SEVERITY_RANK.format("f.severity")} > {_SEVERITY_RANK.format("p.severity")}
                 OR {_SCORE.format("f")} > COALESCE(p.peak_score, 0) THEN 'worse'
               WHEN p.cleared_at IS NOT NULL
                AND %(now)s - p.cleared_at >= COALESCE((%(gaps)s::jsonb ->> f.rule)::float8, 0)
                                              * interval '1 second' THEN 'new_episode'
           END AS reason
    FROM alert_findings f
    LEFT JOIN prev p ON p.patient_id = f.patient_id AND p.key = f.key
    WHERE NOT EXISTS (SELECT 1 FROM alerts a WHERE a.patient_id = f.patient_id
                      AND a.key = f.key AND a.status IN ('open', 'acknowledged'))
)
INSERT INTO alerts (patient_id, key, rule, category, severity, current_severity, summary,
                    details, evidence, basis, last_basis, evidence_until, due_at, opened_at,
                    updated_at, peak_score, previous_id, open_reason)
SELECT f.patient_id, f.key, f.rule, f.category, f.severity, f.severity, f.summary, f.details,
       f.evidence, f.basis, f.basis, f.evidence_until, f.due_at, %(now)s, %(now)s,
       f.score, f.prev_id, f.reason
FROM cand f
WHERE f.reason IS NOT NULL
ON CONFLICT (patient_id, key) WHERE status IN ('open', 'acknowledged') DO NOTHING
RETURNING *
"""


# Whether a deviation is there now is the scan-time evaluation's word (`current`); a
# finding only at an earlier measurement time (a late reading) opens or updates alerts
# but does not keep a deviation present.
_MARK_CLEARED = """
UPDATE alerts a SET cleared_at = %(now)s, updated_at = %(now)s
WHERE a.status IN ('open', 'acknowledged') AND a.cleared_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM alert_findings f
                  WHERE f.patient_id = a.patient_id AND f.key = a.key AND f.current)
RETURNING a.*
"""


# The newest closed alert of a key (no open or newer alert for it) keeps the episode:
# cleared_at is when the deviation was last found gone, NULL while it is still found.
_NEWEST_CLOSED = """
c.status IN ('resolved', 'dismissed')
AND NOT EXISTS (SELECT 1 FROM alerts n WHERE n.patient_id = c.patient_id AND n.key = c.key
                AND n.id <> c.id AND (n.opened_at > c.opened_at
                                      OR n.status IN ('open', 'acknowledged')))
"""


_EPISODE_GONE = f"""
UPDATE alerts c SET cleared_at = %(now)s
WHERE c.cleared_at IS NULL AND {_NEWEST_CLOSED}
  AND NOT EXISTS (SELECT 1 FROM alert_findings f
                  WHERE f.patient_id = c.patient_id AND f.key = c.key AND f.current)
"""


_EPISODE_GOES_ON = f"""
UPDATE alerts c SET cleared_at = NULL
FROM alert_findings f
WHERE f.patient_id = c.patient_id AND f.key = c.key AND c.cleared_at IS NOT NULL
  AND f.current AND {_NEWEST_CLOSED}
"""


_PREVIOUS = (
    "SELECT id, status, severity, cleared_at,"
    f" COALESCE(peak_score, {_SCORE.format('alerts')}) AS peak_score"
    " FROM alerts WHERE id = ANY(%s)"
)


_MARK_READ = """
INSERT INTO alert_scan_state AS s (id, received_until, updated_at) VALUES (true, %s, now())
ON CONFLICT (id) DO UPDATE SET
    received_until = GREATEST(s.received_until, EXCLUDED.received_until), updated_at = now()
"""


_ADD_EVENTS = (
    "INSERT INTO alert_events (alert_id, event, actor, severity, status, note, detail)"
    " SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[],"
    " %s::text[], %s::jsonb[])"
)


Event = tuple[uuid.UUID, str, str, str, str, str | None, Any]


def _event_args(events: Sequence[Event]) -> tuple:
    cols = list(zip(*events, strict=True)) if events else [()] * 7
    details = [orjson.dumps(d).decode() if d is not None else None for d in cols[6]]
    return (*[list(c) for c in cols[:6]], details)


def reconcile(
    conn: psycopg.Connection,
    findings: Iterable[tuple],
    now: dt.datetime,
    payload: Any,
    gaps: Mapping[str, dt.timedelta] | None = None,
    *,
    received_until: dt.datetime | None = None,
    partial: bool = False,
    actor: str = "scheduler",
) -> dict[str, list[dict]]:
    """Bring the alerts in line with a whole cycle's findings, in one transaction.

    findings: tuples in FINDING_COLUMNS order (details a dict). payload(event, row) builds a
    webhook payload. gaps: rule → how long a deviation must be gone before it is a new
    episode after its alert was closed (missing: no wait). received_until: the newest
    arrival this cycle read, recorded with its changes. Returns {"opened", "updated",
    "escalated", "cleared"}: alert rows. Serialised by an advisory lock, so concurrent
    cycles see each other's alerts; the partial unique index makes a second open alert
    per key impossible regardless.

    partial: the findings of some patients and rules only (the rules evaluated as readings
    commit): they open and update alerts, but nothing is marked cleared for want of a
    finding; that stays the whole scan's word. actor: who the events name.
    """
    gap_s = {rule: g.total_seconds() for rule, g in (gaps or {}).items()}
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (RECONCILE_LOCK,))
        cur.execute(_STAGE)
        with cur.copy(
            f"COPY alert_findings ({', '.join(FINDING_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(_FINDING_TYPES)
            for f in findings:
                copy.write_row((*f[:6], Jsonb(f[6]), *f[7:]))
        # The joins with the alerts go by (patient, key): an index keeps every plan an
        # index lookup, whatever the planner thinks of a freshly filled alerts table.
        cur.execute("CREATE INDEX ON alert_findings (patient_id, key)")
        cur.execute("ANALYZE alert_findings")
        changed = cur.execute(_UPDATE_OPEN, {"now": now}).fetchall()
        opened = cur.execute(_INSERT_NEW, {"now": now, "gaps": Jsonb(gap_s)}).fetchall()
        cleared = [] if partial else cur.execute(_MARK_CLEARED, {"now": now}).fetchall()
        if not partial:
            cur.execute(_EPISODE_GONE, {"now": now})
            cur.execute(_EPISODE_GOES_ON)
        if received_until is not None:
            cur.execute(_MARK_READ, (received_until,))
        previous = {
            r["id"]: r
            for r in cur.execute(
                _PREVIOUS, ([r["previous_id"] for r in opened if r["previous_id"]],)
            ).fetchall()
        }
        rank = {"low": 1, "medium": 2, "high": 3}
        escalated = [r for r in changed if rank[r["severity"]] > rank[r["old_severity"]]]
        updated = [r for r in changed if rank[r["severity"]] <= rank[r["old_severity"]]]
        events: list[Event] = []
        notify: list[tuple[uuid.UUID, str, dict]] = []
        for event, rows in (
            ("opened", opened),
            ("escalated", escalated),
            ("updated", updated),
            ("cleared", cleared),
        ):
            for r in rows:
                detail: dict | None = None
                if event == "escalated":
                    detail = {"from": r["old_severity"]}
                elif event == "opened":
                    detail = _why_opened(r, previous.get(r["previous_id"]), now)
                events.append((r["id"], event, actor, r["severity"], r["status"], None, detail))
                if event in ("opened", "escalated"):
                    notify.append((r["id"], event, payload(event, r)))
        if events:
            cur.execute(_ADD_EVENTS, _event_args(events))
        if notify:
            cur.execute(ENQUEUE, enqueue_args(notify))
    return {"opened": opened, "updated": updated, "escalated": escalated, "cleared": cleared}


def _why_opened(row: dict, prev: dict | None, now: dt.datetime) -> dict:
    """The opened event's detail: why this alert opened, and the episode it follows."""
    detail: dict[str, Any] = {"reason": row["open_reason"]}
    if row.get("evidence_until") is not None:
        detail["measured_at"] = row["evidence_until"].astimezone(dt.UTC).isoformat()
    if prev is None:
        return detail
    detail["previous"] = {
        "id": str(prev["id"]),
        "status": prev["status"],
        "severity": prev["severity"],
    }
    if prev["peak_score"] is not None:
        detail["previous"]["score"] = prev["peak_score"]
    if row["open_reason"] == "worse":
        if row["peak_score"] is not None and prev["peak_score"] is not None:
            detail["score"] = {"from": prev["peak_score"], "to": row["peak_score"]}
        detail["severity"] = {"from": prev["severity"], "to": row["severity"]}
    # The closed alert keeps since when its deviation was gone (this cycle leaves it as is).
    if row["open_reason"] == "new_episode" and prev["cleared_at"] is not None:
        normal = prev["cleared_at"]
        detail["within_limits_since"] = normal.astimezone(dt.UTC).isoformat()
        detail["within_limits_hours"] = round((now - normal).total_seconds() / 3600, 2)
    return detail


# --- for the alert-latency benchmark ---------------------------------------------------------


def opened_since(conn: psycopg.Connection, key: str, since: dt.datetime) -> list[str]:
    """The patients (id text) with an alert of `key` opened since `since`."""
    rows = conn.execute(
        "SELECT patient_id::text FROM alerts WHERE key = %s AND opened_at >= %s", (key, since)
    ).fetchall()
    return [r[0] for r in rows]


def openers(conn: psycopg.Connection, key: str) -> dict[str, int]:
    """Alerts of `key` by who opened them (the actor of their `opened` event)."""
    rows = conn.execute(
        "SELECT e.actor, count(*) FROM alert_events e JOIN alerts a ON a.id = e.alert_id"
        " WHERE e.event = 'opened' AND a.key = %s GROUP BY e.actor",
        (key,),
    ).fetchall()
    return {r[0]: int(r[1]) for r in rows}


# --- alerts for the API ---------------------------------------------------------------------

_ALERT_COLUMNS = "a.*, p.care_unit_id"


async def list_alerts(
    conn: psycopg.AsyncConnection,
    *,
    patient_id: uuid.UUID | None = None,
    care_unit_id: uuid.UUID | None = None,
    statuses: Sequence[str] = (),
    severities: Sequence[str] = (),
    rules: Sequence[str] = (),
    categories: Sequence[str] = (),
    limit: int = 500,
) -> list[dict]:
    """Alerts matching every filter given, newest first."""
    where: list[sql.Composable] = [sql.SQL("true")]
    args: list[Any] = []
    for column, value in (("a.patient_id", patient_id), ("p.care_unit_id", care_unit_id)):
        if value is not None:
            where.append(sql.SQL(column + " = %s"))
            args.append(value)
    for column, values in (
        ("a.status", statuses),
        ("a.severity", severities),
        ("a.rule", rules),
        ("a.category", categories),
    ):
        if values:
            where.append(sql.SQL(column + " = ANY(%s)"))
            args.append(list(values))
    query = sql.SQL(
        "SELECT " + _ALERT_COLUMNS + " FROM alerts a JOIN patients p ON p.id = a.patient_id"
        " WHERE {} ORDER BY a.opened_at DESC, a.id LIMIT %s"
    ).format(sql.SQL(" AND ").join(where))
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, [*args, limit])
        return await cur.fetchall()


async def alert_for_update(
    conn: psycopg.AsyncConnection, alert_id: uuid.UUID, lock: bool = True
) -> dict | None:
    """An alert with its patient's care unit, locked for a change unless `lock` is false."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT " + _ALERT_COLUMNS + " FROM alerts a JOIN patients p ON p.id = a.patient_id"
            " WHERE a.id = %s" + (" FOR UPDATE OF a" if lock else ""),
            (alert_id,),
        )
        return await cur.fetchone()


_SET_STATUS = """
UPDATE alerts SET
    status = %(status)s::text,
    updated_at = now(),
    note = COALESCE(%(note)s::text, note),
    notes = notes || jsonb_build_array(jsonb_build_object(
        'at', now(), 'by', %(by)s::text, 'action', %(action)s::text, 'note', %(note)s::text)),
    acknowledged_by = CASE WHEN %(status)s::text = 'acknowledged' THEN %(by)s::text
                      ELSE acknowledged_by END,
    acknowledged_at = CASE WHEN %(status)s::text = 'acknowledged' THEN now()
                      ELSE acknowledged_at END,
    resolved_by = CASE WHEN %(status)s::text = 'resolved' THEN %(by)s::text ELSE resolved_by END,
    resolved_at = CASE WHEN %(status)s::text = 'resolved' THEN now() ELSE resolved_at END,
    dismissed_by = CASE WHEN %(status)s::text = 'dismissed' THEN %(by)s::text
                   ELSE dismissed_by END,
    dismissed_at = CASE WHEN %(status)s::text = 'dismissed' THEN now() ELSE dismissed_at END
WHERE id = %(id)s
RETURNING *
"""


async def set_status(
    conn: psycopg.AsyncConnection,
    alert_id: uuid.UUID,
    action: str,
    status: str,
    by: str,
    note: str | None,
) -> dict:
    """Move an alert to `status` by `action`, noting who and why (notes keep every step)."""
    args = {"id": alert_id, "action": action, "status": status, "by": by, "note": note}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SET_STATUS, args)
        row = await cur.fetchone()
    assert row is not None
    return row


async def add_events(conn: psycopg.AsyncConnection, events: Sequence[Event]) -> None:
    if events:
        await conn.execute(_ADD_EVENTS, _event_args(events))


async def alert_events(conn: psycopg.AsyncConnection, alert_id: uuid.UUID) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT at, event, actor, severity, status, note, detail FROM alert_events"
            " WHERE alert_id = %s ORDER BY at, id",
            (alert_id,),
        )
        return await cur.fetchall()


# --- FHIR reads and searches (Flag, Task) -----------------------------------------------


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
    sql = _ALERT_SELECT + " WHERE a.id = %(id)s" + restrict_clause(restrict, "a.patient_id", params)
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
    updated_low: datetime | None = None,
    updated_high: datetime | None = None,
) -> list[dict[str, Any]] | int:
    """Alerts by patient, status and [updated_low, updated_high) of their last change,
    newest first ((opened_at, id) descending)."""
    params: dict[str, Any] = {}
    where = "true"
    if patient_id is not None:
        params["patient"] = patient_id
        where += " AND a.patient_id = %(patient)s"
    if statuses is not None:
        params["statuses"] = sorted(statuses)
        where += " AND a.status = ANY(%(statuses)s)"
    if updated_low is not None:
        params["ulow"] = updated_low
        where += " AND a.updated_at >= %(ulow)s"
    if updated_high is not None:
        params["uhigh"] = updated_high
        where += " AND a.updated_at < %(uhigh)s"
    where += restrict_clause(restrict, "a.patient_id", params)
    return await keyset_page(
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
