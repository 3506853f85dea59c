"""Monitoring plans as stored and shown: from a clinician's request to a stored version,
and from the stored row to what the API and the UI show (the defaults in force included).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import psycopg

from egenmon.alerts.plans import (
    NEWS2_FRESHNESS,
    Plan,
    Threshold,
    build_plan,
    canonical_quantity,
    check_limits,
)
from egenmon.domain.severity import SEVERITIES
from egenmon.store import patients, plans

# Set by the store as columns, not kept in the plan document.
_COLUMNS = ("set_by", "set_at", "started_at")


class PlanError(ValueError):
    """A plan request that names something wrong; the message says what."""


def make_plan(
    protocol: str,
    thresholds: Iterable[str] | Mapping[str, Mapping[str, Any]] = (),
    *,
    news2_scale2: bool = False,
    spo2_target: tuple[float, float] | list[float] | None = None,
    expected_hours: Mapping[str, float | None] | None = None,
    news2_freshness_hours: float | None = None,
    instructions: Mapping[str, str] | Iterable[str] = (),
) -> Plan:
    """A plan from request values: CLI threshold strings ``TYPE:LOW:HIGH`` or a mapping
    quantity → {"low", "high", "severity"}; expected windows in hours (None removes).

    The one validation of a clinician's plan, for the CLI, the UI and the API alike: limits
    through `check_limits` (plausible per measurement type, low below high), unknown
    quantities, types and fields refused with a PlanError naming them."""
    try:
        if isinstance(thresholds, Mapping):
            given: dict[str, Threshold] = {}
            for q, t in thresholds.items():
                quantity = canonical_quantity(q)
                if quantity in given:
                    raise ValueError(f"threshold for {quantity} given twice")
                given[quantity] = _threshold(quantity, t)
            own: Mapping[str, Threshold] | Iterable[str] = given
        else:
            own = list(thresholds)
        expected = None
        if expected_hours is not None:
            expected = {t: _window(t, h) for t, h in expected_hours.items()}
        target = None
        if spo2_target is not None:
            if len(spo2_target) != 2:
                raise ValueError("spo2_target is [low, high]")
            target = (float(spo2_target[0]), float(spo2_target[1]))
        fresh = None
        if news2_freshness_hours is not None:
            fresh = dt.timedelta(hours=float(news2_freshness_hours))
        return build_plan(
            protocol,
            own,
            expected=expected,
            news2_scale2=news2_scale2,
            spo2_target=target,
            news2_freshness=fresh,
            instructions=instructions,
        )
    except (ValueError, TypeError) as e:
        raise PlanError(str(e)) from None


_THRESHOLD_FIELDS = ("low", "high", "severity")
# A measurement expected less often than every 90 days is not monitoring.
MAX_WINDOW_HOURS = 90 * 24


def _threshold(quantity: str, given: Mapping[str, Any]) -> Threshold:
    unknown = sorted(set(given) - set(_THRESHOLD_FIELDS))
    if unknown:
        raise ValueError(f"thresholds.{quantity}: unknown field {', '.join(unknown)}")
    limits = check_limits(quantity, given.get("low"), given.get("high"))
    severity = given.get("severity", "medium")
    if severity not in SEVERITIES:
        raise ValueError(f"thresholds.{quantity}: severity must be one of {', '.join(SEVERITIES)}")
    return Threshold(low=limits.low, high=limits.high, severity=severity)


def _window(type_: str, hours: Any) -> dt.timedelta | None:
    if hours is None:
        return None
    if isinstance(hours, bool) or not isinstance(hours, int | float):
        raise ValueError(f"expected.{type_}: {hours!r} is not a number of hours")
    if not 0 < hours <= MAX_WINDOW_HOURS:
        raise ValueError(f"expected.{type_}: {hours:g} hours is not within 0-{MAX_WINDOW_HOURS}")
    return dt.timedelta(hours=float(hours))


def document(plan: Plan) -> dict[str, Any]:
    """What is stored of a plan: what the clinician chose, without who and when."""
    return {k: v for k, v in plan.to_dict().items() if k not in _COLUMNS}


def from_row(row: Mapping[str, Any] | None) -> Plan:
    """The plan in force for a stored row (None: the `general` protocol)."""
    if row is None:
        return build_plan("general")
    return Plan.from_dict(
        {**row["plan"], "set_by": row["set_by"], "set_at": row["set_at"].isoformat()}
    )


def view(patient_id: uuid.UUID, row: Mapping[str, Any] | None) -> dict[str, Any]:
    """A plan as the API shows it: what was set, by whom and when, and the limits in force."""
    plan = from_row(row)
    return {
        "patient_id": str(patient_id),
        "protocol": plan.protocol,
        "default": row is None,
        "version": row["version"] if row else None,
        "set_by": row["set_by"] if row else None,
        "set_at": row["set_at"].astimezone(dt.UTC).isoformat() if row else None,
        "news2_scale2": plan.news2_scale2,
        "spo2_target": list(plan.spo2_range),
        "news2_freshness_hours": (plan.news2_freshness or NEWS2_FRESHNESS).total_seconds() / 3600,
        "expected": {t: w.total_seconds() / 3600 for t, w in sorted(plan.expected.items())},
        "thresholds": {
            q: {"low": t.low, "high": t.high, "severity": t.severity}
            for q, t in sorted(plan.thresholds.items())
        },
        "instructions": dict(sorted(plan.instructions.items())),
        "effective_thresholds": {
            q: {
                "low": t.low,
                "high": t.high,
                "severity": t.severity,
                "alarms": [
                    {"op": a.op, "limit": a.limit, "severity": a.severity, "source": a.source}
                    for a in t.alarms
                ],
            }
            for q, t in sorted(plan.effective_thresholds().items())
        },
    }


def set_plan(
    conn: psycopg.Connection, patient_id: uuid.UUID, plan: Plan, set_by: str
) -> dict[str, Any]:
    """Store `plan` as the patient's new plan version; PlanError for an unknown patient."""
    if not patients.patient_exists(conn, patient_id):
        raise PlanError(f"unknown patient {patient_id}")
    row = plans.set_plan(conn, patient_id, plan.protocol, document(plan), set_by)
    return view(patient_id, row)
