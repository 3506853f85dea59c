"""The alert lifecycle: what a finding becomes as an alert, and what clinicians do with it.

An alert is a state, not an event. States: open → acknowledged → resolved, or dismissed
(a false alarm) from open or acknowledged; each step records who, when and a note.

Choices (documented in the README):

- A deviation that clears on its own (the patient re-measured a normal value) keeps its
  alert open, marked `cleared_at`, until a clinician resolves it: a clinician must see
  every deviation egenmon found, even a passing one.
- While open, a worse finding escalates the alert (severity is the worst seen, and the
  due time moves earlier); a milder one only updates `current_severity`.
- Episodes (clinical.md, "Judged at the time things happened"): an alert a clinician
  resolved or dismissed is an episode judged, and the same episode does not alert again,
  however many new readings show the same deviation. A new alert for the same problem
  (key) opens only for
  - a worse deviation: a higher severity than the closed alert's worst, or for news2 a
    higher score than its highest (`open_reason` 'worse'); or
  - a new episode: the deviation was gone ("back within limits": the cycles no longer
    found it) for the rule's episode gap (EPISODE_GAPS), then came back
    (`open_reason` 'new_episode').
  The new alert links the closed one (`previous_id`) and its opened event says why.
  Resolving or dismissing never re-opens on the same readings either: a closed alert
  remembers everything its findings rested on (`basis`).
- Care contact due times: high → within 1 hour; medium → the same day, i.e. the end of
  the local calendar day (EGENMON_TIMEZONE, daylight saving included) but never less
  than 4 hours after the alert opened, so a medium contact is never due before a high
  one; low → within 3 days (72 hours).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from egenmon.alerts.notify import payload
from egenmon.alerts.rules.findings import Finding
from egenmon.domain.ids import parse_observation_id
from egenmon.domain.principals import AuthError, Principal
from egenmon.store import alerts, webhooks

STATUSES = ("open", "acknowledged", "resolved", "dismissed")
OPEN_STATUSES = ("open", "acknowledged")
CATEGORIES = ("clinical", "technical")
# Technical deviations go to technical staff, not the clinician's worklist.
TECHNICAL_RULES = frozenset({"device_inactive"})

# "Back within limits" per rule: how long the deviation must have been gone after its
# alert was closed before it coming back is a new episode. A day of normal values for
# single readings and scores (covers a twice-daily and a three-times-daily routine);
# three days for the trends (the weight window; a new run of BP readings); missing data
# and silent devices are new episodes as soon as a reading or message ended the last one.
EPISODE_GAPS: dict[str, dt.timedelta] = {
    "threshold": dt.timedelta(hours=24),
    "news2": dt.timedelta(hours=24),
    "spo2_drop": dt.timedelta(hours=24),
    "trend_weight": dt.timedelta(hours=72),
    "trend_bp_mean": dt.timedelta(hours=72),
    "missing_data": dt.timedelta(0),
    "device_inactive": dt.timedelta(0),
}

DUE_HIGH = dt.timedelta(hours=1)
DUE_MEDIUM_MIN = dt.timedelta(hours=4)
DUE_LOW = dt.timedelta(days=3)

# action → (statuses it applies to, status it leads to, event)
ACTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "acknowledge": (("open",), "acknowledged"),
    "resolve": (OPEN_STATUSES, "resolved"),
    "dismiss": (OPEN_STATUSES, "dismissed"),
}
MAX_NOTE = 4000


class TransitionError(ValueError):
    """The action does not apply to the alert's status (HTTP 409)."""


class AlertNotFound(LookupError):
    """No alert with that id (HTTP 404)."""


def category(rule: str) -> str:
    """`technical` for deviations of the equipment, `clinical` for those of the patient."""
    return "technical" if rule in TECHNICAL_RULES else "clinical"


def due_at(severity: str, at: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    """When the care contact of an alert of `severity` opened at `at` is due (UTC)."""
    at = at.astimezone(dt.UTC)
    if severity == "high":
        return at + DUE_HIGH
    if severity == "low":
        return at + DUE_LOW
    if severity != "medium":
        raise ValueError(f"unknown severity {severity!r}")
    local = at.astimezone(tz)
    # The next local midnight; zoneinfo gives it the right offset on a 23- or 25-hour day.
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(0), tzinfo=tz)
    return max(midnight.astimezone(dt.UTC), at + DUE_MEDIUM_MIN)


def basis(finding: Finding) -> tuple[str, ...]:
    """What a finding rests on: its evidence, and the facts of findings without readings.

    Never empty: an empty basis would be covered by every closed alert and never re-open.
    """
    items = set(finding.evidence)
    d = finding.details
    if finding.rule == "device_inactive":
        items.add(
            f"device:{d.get('device_id')}:seen:{d.get('last_seen') or 'never'}"
            f":bound:{d.get('bound_since')}"
        )
    elif finding.rule == "missing_data":
        for m in d.get("missing", ()):
            items.add(f"missing:{m.get('type')}:{m.get('since') or 'never'}")
    if not items:
        items.add(f"finding:{finding.key}")
    return tuple(sorted(items))


def evidence_until(evidence: tuple[str, ...] | list[str]) -> dt.datetime | None:
    """Measurement time of the newest evidence (observation ids carry their time)."""
    newest = None
    for oid in evidence:
        try:
            t, _ = parse_observation_id(oid)
        except ValueError:
            continue
        if newest is None or t > newest:
            newest = t
    return newest


def next_status(action: str, status: str) -> str:
    """The status `action` leads to from `status`; TransitionError when it does not apply."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    allowed, target = ACTIONS[action]
    if status not in allowed:
        raise TransitionError(f"cannot {action} an alert that is {status}")
    return target


def alert_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """An alert as the Alerts API shows it (contract fields first)."""
    return {
        "id": str(row["id"]),
        "patient_id": str(row["patient_id"]),
        "rule": row["rule"],
        "severity": row["severity"],
        "status": row["status"],
        "opened_at": _iso(row["opened_at"]),
        "updated_at": _iso(row["updated_at"]),
        "evidence": list(row["evidence"]),
        "details": row["details"],
        "key": row["key"],
        "category": row["category"],
        "current_severity": row["current_severity"],
        "summary": row["summary"],
        "due_at": _iso(row["due_at"]),
        "cleared_at": _iso(row["cleared_at"]),
        "care_unit_id": str(row["care_unit_id"]) if row.get("care_unit_id") else None,
        "acknowledged_by": row["acknowledged_by"],
        "acknowledged_at": _iso(row["acknowledged_at"]),
        "resolved_by": row["resolved_by"],
        "resolved_at": _iso(row["resolved_at"]),
        "dismissed_by": row["dismissed_by"],
        "dismissed_at": _iso(row["dismissed_at"]),
        "notes": row["notes"],
        "open_reason": row.get("open_reason", "first"),
        "previous_id": str(row["previous_id"]) if row.get("previous_id") else None,
    }


def _iso(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).isoformat() if t is not None else None


@dataclass(frozen=True)
class ActionResult:
    alert: dict[str, Any]
    patient_id: uuid.UUID


async def act(
    pool: AsyncConnectionPool,
    principal: Principal,
    alert_id: uuid.UUID,
    action: str,
    note: str | None,
) -> ActionResult:
    """Acknowledge, resolve or dismiss an alert as `principal`, with its event and outbox.

    The care-unit check happens under the row lock, in the same transaction as the change.
    """
    if note is not None and len(note) > MAX_NOTE:
        raise ValueError(f"note is longer than {MAX_NOTE} characters")
    async with pool.connection() as conn, conn.transaction():
        row = await alerts.alert_for_update(conn, alert_id)
        if row is None:
            raise AlertNotFound(f"no alert {alert_id}")
        if not principal.may_see(row["patient_id"], row["care_unit_id"]):
            raise AuthError(403, "the alert's patient is not in your care unit")
        target = next_status(action, row["status"])
        updated = await alerts.set_status(conn, alert_id, action, target, principal.subject, note)
        await alerts.add_events(
            conn,
            [(alert_id, target, principal.subject, updated["severity"], target, note, None)],
        )
        await webhooks.enqueue_deliveries(conn, [(alert_id, target, payload(target, updated))])
        updated["care_unit_id"] = row["care_unit_id"]
    return ActionResult(alert_json(updated), row["patient_id"])
