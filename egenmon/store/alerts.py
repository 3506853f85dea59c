"""Queries of the alerts part: plans, the rule scan, alert reconciliation and actions,
webhooks and their outbox, the scheduler's leadership and run log, retention.

Synchronous functions serve the rule cycle (run in a worker thread or process) and the
commands; `async` ones serve the API and the scheduler's event loop.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

# Advisory lock keys (one bigint namespace per database): the scheduler's leader lock,
# held for the life of a session, and the lock that serialises reconciliation.
LEADER_LOCK = 0x65676E5F73636864  # "egn_schd"
RECONCILE_LOCK = 0x65676E5F72636E63  # "egn_rcnc"

_SEVERITY_RANK = "array_position(ARRAY['low','medium','high'], {})"


class NotFound(LookupError):
    pass


# --- monitoring plans ----------------------------------------------------------------------

_SET_PLAN = """
WITH cur AS (
    INSERT INTO monitoring_plans AS m (patient_id, protocol, plan, version, set_by, set_at)
    VALUES (%(patient_id)s, %(protocol)s, %(plan)s, 1, %(set_by)s, now())
    ON CONFLICT (patient_id) DO UPDATE SET
        protocol = EXCLUDED.protocol, plan = EXCLUDED.plan, version = m.version + 1,
        set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at
    RETURNING *
), history AS (
    INSERT INTO monitoring_plan_history (patient_id, version, protocol, plan, set_by, set_at)
    SELECT patient_id, version, protocol, plan, set_by, set_at FROM cur
)
SELECT * FROM cur
"""
_GET_PLAN = "SELECT * FROM monitoring_plans WHERE patient_id = %s"
_PLAN_HISTORY = (
    "SELECT version, protocol, plan, set_by, set_at FROM monitoring_plan_history"
    " WHERE patient_id = %s ORDER BY version DESC LIMIT %s"
)
_PATIENT_UNIT = "SELECT care_unit_id FROM patients WHERE id = %s"


def _plan_args(patient_id: uuid.UUID, protocol: str, doc: dict, set_by: str) -> dict:
    return {"patient_id": patient_id, "protocol": protocol, "plan": Jsonb(doc), "set_by": set_by}


def patient_exists(conn: psycopg.Connection, patient_id: uuid.UUID) -> bool:
    return conn.execute(_PATIENT_UNIT, (patient_id,)).fetchone() is not None


def set_plan(
    conn: psycopg.Connection, patient_id: uuid.UUID, protocol: str, doc: dict, set_by: str
) -> dict[str, Any]:
    """Store a patient's plan as a new version, with its history row."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SET_PLAN, _plan_args(patient_id, protocol, doc, set_by)).fetchone()
    assert row is not None
    return row


async def patient_care_unit(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID
) -> tuple[bool, uuid.UUID | None]:
    """(the patient exists, its care unit)."""
    cur = await conn.execute(_PATIENT_UNIT, (patient_id,))
    row = await cur.fetchone()
    return (False, None) if row is None else (True, _get(row, "care_unit_id", 0))


async def aset_plan(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID, protocol: str, doc: dict, set_by: str
) -> dict[str, Any]:
    async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_SET_PLAN, _plan_args(patient_id, protocol, doc, set_by))
        row = await cur.fetchone()
    assert row is not None
    return row


async def aget_plan(conn: psycopg.AsyncConnection, patient_id: uuid.UUID) -> dict | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_GET_PLAN, (patient_id,))
        return await cur.fetchone()


async def plan_history(
    conn: psycopg.AsyncConnection, patient_id: uuid.UUID, limit: int = 50
) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_PLAN_HISTORY, (patient_id, limit))
        return await cur.fetchall()


def get_plan(conn: psycopg.Connection, patient_id: uuid.UUID) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_GET_PLAN, (patient_id,)).fetchone()


def _get(row: Any, key: str, index: int) -> Any:
    return row[key] if isinstance(row, dict) else row[index]


# --- the rule scan (set-based: a few big queries per cycle, never one per patient) --------


def _range(lo: uuid.UUID | None, hi: uuid.UUID | None, column: str) -> sql.Composable:
    parts: list[sql.Composable] = []
    if lo is not None:
        parts.append(sql.SQL(" AND {} >= {}").format(sql.Identifier(column), sql.Literal(lo)))
    if hi is not None:
        parts.append(sql.SQL(" AND {} < {}").format(sql.Identifier(column), sql.Literal(hi)))
    return sql.Composed(parts)


def stream_window(
    conn: psycopg.Connection,
    since: dict[str, dt.datetime],
    default_since: dt.datetime,
    until: dt.datetime,
    lo: uuid.UUID | None = None,
    hi: uuid.UUID | None = None,
    new_since: dt.datetime | None = None,
    batch: int = 20_000,
) -> Iterator[tuple]:
    """(patient_id as text, time, type, value, value2, on_oxygen, dedup_key, new) of every
    reading in its type's window, ordered by patient, through a server-side cursor.

    since: type → the earliest measurement time that type's rules look at. new: the
    reading was received after `new_since` (false when None). The order comes from the
    (patient_id, code, time) index of each chunk, merged: rows stream from the first one
    instead of waiting for a sort of the whole window.
    """
    earliest = min([default_since, *since.values()])
    query = sql.SQL(
        "SELECT patient_id::text, time, type, value, value2, on_oxygen, dedup_key,"
        " COALESCE(received_at > {new_since}, false) FROM readings"
        " WHERE time > {earliest} AND time <= {until}"
        " AND time > {start}{range}"
        " ORDER BY patient_id"
    ).format(
        new_since=sql.Literal(new_since),
        earliest=sql.Literal(earliest),
        until=sql.Literal(until),
        start=_window_start(since, default_since),
        range=_range(lo, hi, "patient_id"),
    )
    with conn.transaction():
        # A sort would hold every row back until the whole window is read; the merged
        # index scans stream. Compiling this simple scan is not worth it either.
        conn.execute("SET LOCAL enable_sort = off")
        conn.execute("SET LOCAL jit = off")
        with conn.cursor(name="alerts_window", binary=True) as cur:
            cur.itersize = batch
            cur.execute(query)
            yield from cur


def _window_start(
    since: dict[str, dt.datetime], default_since: dt.datetime, column: str = "type"
) -> sql.Composable:
    """Where each type's window starts, as an SQL expression over the type column."""
    cases = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}").format(sql.Literal(t), sql.Literal(s))
        for t, s in sorted(since.items())
    )
    return sql.SQL("CASE {} {} ELSE {} END").format(
        sql.SQL(column), cases, sql.Literal(default_since)
    )


def late_rows(
    conn: psycopg.Connection,
    since: dict[str, dt.datetime],
    default_since: dt.datetime,
    until: dt.datetime,
    new_since: dt.datetime,
    late_before: dt.datetime,
    lookback: dt.timedelta,
    lo: uuid.UUID | None = None,
    hi: uuid.UUID | None = None,
) -> list[tuple]:
    """Rows as `stream_window` gives them, of the readings before the window of each patient
    with a late reading: one received after `new_since` but measured before `late_before`.
    Those readings, and every reading of the patient from `lookback` before the earliest
    of them up to where the window starts, so the rules see around them.

    Set-based: new readings are found through the received_at index, their patients'
    readings through the (patient_id, code, time) index, in one query.
    """
    query = sql.SQL(
        "WITH late AS (SELECT patient_id, min(time) AS first FROM readings"
        "  WHERE received_at > {new_since} AND time < {late_before}{range}"
        "  GROUP BY patient_id)"
        " SELECT r.patient_id::text, r.time, r.type, r.value, r.value2, r.on_oxygen,"
        " r.dedup_key, r.received_at > {new_since}"
        " FROM late l JOIN readings r ON r.patient_id = l.patient_id"
        " AND r.time >= l.first - {lookback} AND r.time <= {until}"
        " WHERE r.time <= {start}"
        " ORDER BY r.patient_id, r.time"
    ).format(
        new_since=sql.Literal(new_since),
        late_before=sql.Literal(late_before),
        lookback=sql.Literal(lookback),
        until=sql.Literal(until),
        start=_window_start(since, default_since, "r.type"),
        range=_range(lo, hi, "patient_id"),
    )
    return conn.execute(query).fetchall()


def scan_marks(
    conn: psycopg.Connection, now: dt.datetime
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """(the newest arrival the last committed cycle saw or None, the newest arrival now)."""
    row = conn.execute(
        "SELECT (SELECT received_until FROM alert_scan_state),"
        " (SELECT max(received_at) FROM readings WHERE received_at <= %s)",
        (now,),
    ).fetchone()
    return (row[0], row[1]) if row else (None, None)


def load_plans(
    conn: psycopg.Connection, lo: uuid.UUID | None = None, hi: uuid.UUID | None = None
) -> list[tuple[str, str, str, dt.datetime]]:
    """(patient_id as text, plan document as text, set_by, set_at) of every plan in the
    range."""
    query = sql.SQL(
        "SELECT patient_id::text, plan::text, set_by, set_at FROM monitoring_plans WHERE true{}"
    ).format(_range(lo, hi, "patient_id"))
    return conn.execute(query).fetchall()


def load_devices(
    conn: psycopg.Connection,
    now: dt.datetime,
    stale_before: dt.datetime,
    since: dt.datetime,
    lo: uuid.UUID | None = None,
    hi: uuid.UUID | None = None,
) -> list[tuple[str, str, dt.datetime | None, dt.datetime]]:
    """(patient_id as text, device_id, last seen, bound since) of every active device bound
    now.

    A device's last message is `devices.last_seen`; where that is missing or older than
    `stale_before`, its newest reading received since `since` is looked up instead.
    Silence is counted from the binding's start, but never from before the device was
    registered: a binding dated back (to take in a device's stored history) does not make
    a device registered an hour ago inactive.
    """
    query = sql.SQL(
        "SELECT b.patient_id::text, d.id, GREATEST(d.last_seen, x.seen),"
        " GREATEST(lower(b.during), d.created_at)"
        " FROM device_bindings b JOIN devices d ON d.id = b.device_id"
        " LEFT JOIN LATERAL (SELECT max(r.received_at) AS seen FROM readings r"
        "   WHERE (d.last_seen IS NULL OR d.last_seen < {stale})"
        "   AND r.patient_id = b.patient_id AND r.device_id = d.id AND r.time > {since}) x"
        "   ON true"
        " WHERE b.during @> {now}::timestamptz AND d.status = 'active'{range}"
    ).format(
        stale=sql.Literal(stale_before),
        since=sql.Literal(since),
        now=sql.Literal(now),
        range=_range(lo, hi, "patient_id"),
    )
    return conn.execute(query).fetchall()


def latest_times(
    conn: psycopg.Connection,
    pairs: Sequence[tuple[str, str, str]],
    until: dt.datetime,
) -> dict[tuple[str, str], dt.datetime]:
    """The newest measurement time of each (patient id text, type, LOINC code), in one
    query."""
    if not pairs:
        return {}
    rows = conn.execute(
        "SELECT q.patient_id::text, q.type, x.time"
        " FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS q(patient_id, type, code)"
        " CROSS JOIN LATERAL (SELECT r.time FROM readings r WHERE r.patient_id = q.patient_id"
        "   AND r.code = q.code AND r.time <= %s ORDER BY r.time DESC LIMIT 1) x",
        ([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs], until),
    ).fetchall()
    return {(r[0], r[1]): r[2] for r in rows}


def latest_values(
    conn: psycopg.Connection,
    pairs: Sequence[tuple[str, str, str]],
    until: dt.datetime,
) -> dict[tuple[str, str], tuple[dt.datetime, float]]:
    """The newest (measurement time, value) of each (patient id text, type, LOINC code),
    in one query."""
    if not pairs:
        return {}
    rows = conn.execute(
        "SELECT q.patient_id::text, q.type, x.time, x.value"
        " FROM unnest(%s::uuid[], %s::text[], %s::text[]) AS q(patient_id, type, code)"
        " CROSS JOIN LATERAL (SELECT r.time, r.value FROM readings r"
        "   WHERE r.patient_id = q.patient_id AND r.code = q.code AND r.time <= %s"
        "   ORDER BY r.time DESC LIMIT 1) x",
        ([p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs], until),
    ).fetchall()
    return {(r[0], r[1]): (r[2], r[3]) for r in rows}


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
_ENQUEUE = (
    "INSERT INTO webhook_deliveries (webhook_id, alert_id, event, payload)"
    " SELECT w.id, x.alert_id, x.event, x.payload::jsonb FROM webhooks w"
    " CROSS JOIN unnest(%s::uuid[], %s::text[], %s::text[]) AS x(alert_id, event, payload)"
    " WHERE w.active"
)

Event = tuple[uuid.UUID, str, str, str, str, str | None, Any]


def _event_args(events: Sequence[Event]) -> tuple:
    cols = list(zip(*events, strict=True)) if events else [()] * 7
    details = [orjson.dumps(d).decode() if d is not None else None for d in cols[6]]
    return (*[list(c) for c in cols[:6]], details)


def _enqueue_args(items: Sequence[tuple[uuid.UUID, str, dict]]) -> tuple:
    return (
        [i[0] for i in items],
        [i[1] for i in items],
        [orjson.dumps(i[2]).decode() for i in items],
    )


def reconcile(
    conn: psycopg.Connection,
    findings: Iterable[tuple],
    now: dt.datetime,
    payload: Any,
    gaps: Mapping[str, dt.timedelta] | None = None,
    *,
    received_until: dt.datetime | None = None,
) -> dict[str, list[dict]]:
    """Bring the alerts in line with a whole cycle's findings, in one transaction.

    findings: tuples in FINDING_COLUMNS order (details a dict). payload(event, row) builds a
    webhook payload. gaps: rule → how long a deviation must be gone before it is a new
    episode after its alert was closed (missing: no wait). received_until: the newest
    arrival this cycle read, recorded with its changes. Returns {"opened", "updated",
    "escalated", "cleared"}: alert rows. Serialised by an advisory lock, so concurrent
    cycles see each other's alerts; the partial unique index makes a second open alert
    per key impossible regardless.
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
        cleared = cur.execute(_MARK_CLEARED, {"now": now}).fetchall()
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
                events.append(
                    (r["id"], event, "scheduler", r["severity"], r["status"], None, detail)
                )
                if event in ("opened", "escalated"):
                    notify.append((r["id"], event, payload(event, r)))
        if events:
            cur.execute(_ADD_EVENTS, _event_args(events))
        if notify:
            cur.execute(_ENQUEUE, _enqueue_args(notify))
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


async def enqueue_deliveries(
    conn: psycopg.AsyncConnection, items: Sequence[tuple[uuid.UUID, str, dict]]
) -> None:
    """Outbox rows for every active webhook; commit with the change they tell of."""
    if items:
        await conn.execute(_ENQUEUE, _enqueue_args(items))


async def alert_events(conn: psycopg.AsyncConnection, alert_id: uuid.UUID) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT at, event, actor, severity, status, note, detail FROM alert_events"
            " WHERE alert_id = %s ORDER BY at, id",
            (alert_id,),
        )
        return await cur.fetchall()


# --- webhooks and deliveries ----------------------------------------------------------------

_ADD_WEBHOOK = (
    "INSERT INTO webhooks (url, secret, description, created_by) VALUES (%s, %s, %s, %s)"
    " RETURNING id, url, active, description, created_by, created_at"
)
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
    cur = conn.execute("UPDATE webhooks SET active = %s WHERE id = %s", (active, webhook_id))
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
    cur = await conn.execute("UPDATE webhooks SET active = %s WHERE id = %s", (active, webhook_id))
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


# --- the scheduler ----------------------------------------------------------------------------


async def try_leader_lock(conn: psycopg.AsyncConnection) -> bool:
    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,))
    row = await cur.fetchone()
    return bool(row and _get(row, "pg_try_advisory_lock", 0))


async def holds_leader_lock(conn: psycopg.AsyncConnection) -> bool:
    """Does this session still hold the leader lock? (Raises when the connection is gone.)"""
    cur = await conn.execute(
        "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND pid = pg_backend_pid() AND classid = %s AND objid = %s",
        ((LEADER_LOCK >> 32) & 0xFFFFFFFF, LEADER_LOCK & 0xFFFFFFFF),
    )
    row = await cur.fetchone()
    return bool(row and _get(row, "n", 0))


async def release_leader_lock(conn: psycopg.AsyncConnection) -> None:
    await conn.execute("SELECT pg_advisory_unlock(%s)", (LEADER_LOCK,))


async def start_run(
    conn: psycopg.AsyncConnection, job: str, node: str, started_at: dt.datetime
) -> int:
    cur = await conn.execute(
        "INSERT INTO scheduler_runs (job, node, started_at) VALUES (%s, %s, %s) RETURNING id",
        (job, node, started_at),
    )
    row = await cur.fetchone()
    assert row is not None
    return int(_get(row, "id", 0))


async def finish_run(
    conn: psycopg.AsyncConnection, run_id: int, ok: bool, result: dict | None
) -> None:
    await conn.execute(
        "UPDATE scheduler_runs SET finished_at = now(), ok = %s, result = %s WHERE id = %s",
        (ok, Jsonb(result) if result is not None else None, run_id),
    )


# --- retention --------------------------------------------------------------------------------


async def timescaledb_license(conn: psycopg.AsyncConnection) -> str:
    """`timescale` (community features: policies) or `apache` (drop_chunks only)."""
    cur = await conn.execute("SELECT current_setting('timescaledb.license', true) AS license")
    row = await cur.fetchone()
    return str(_get(row, "license", 0) or "apache") if row else "apache"


async def add_retention_policy(conn: psycopg.AsyncConnection, days: int) -> None:
    await conn.execute(
        "SELECT add_retention_policy('readings', drop_after => %s, if_not_exists => true)",
        (dt.timedelta(days=days),),
    )


async def drop_old_chunks(conn: psycopg.AsyncConnection, older_than: dt.datetime) -> int:
    """Drop the readings chunks wholly older than `older_than`; the number dropped."""
    cur = await conn.execute(
        "SELECT count(*) AS n FROM drop_chunks('readings', older_than => %s::timestamptz)",
        (older_than,),
    )
    row = await cur.fetchone()
    return int(_get(row, "n", 0)) if row else 0


async def prune_runs(conn: psycopg.AsyncConnection, older_than: dt.datetime) -> int:
    cur = await conn.execute("DELETE FROM scheduler_runs WHERE started_at < %s", (older_than,))
    return cur.rowcount
