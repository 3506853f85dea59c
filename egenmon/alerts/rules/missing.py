"""Rules `missing_data` (a patient deviation) and `device_inactive` (a technical one).

clinical.md, missing data: a measurement the plan expects that has not arrived in its
window (36 hours for a daily one) is itself a deviation, told apart from a device that
has stopped reporting at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from egenmon.alerts.plans import Plan
from egenmon.alerts.rules.findings import Finding, Reading, as_utc, hours, iso, prepare

# A device that has sent nothing for 3 days has most likely stopped (battery, pairing,
# phone gateway), not merely been skipped for a day by its patient: twice the daily window.
DEVICE_WINDOW = timedelta(hours=72)


class DeviceStatus(NamedTuple):
    """A device bound to the patient, and when it last sent anything."""

    device_id: str
    last_seen: datetime | None  # None: never sent anything
    bound_since: datetime


def check_missing_data(
    readings: Iterable[Reading],
    plan: Plan,
    now: datetime,
    *,
    latest: Mapping[str, datetime] | None = None,
) -> list[Finding]:
    """One finding listing every expected type with no reading within its window.

    A type is missing when more than its window has passed since its newest reading
    (exactly the window is not yet missing). With no reading, the time counts from
    `latest[type]` when the caller knows an older reading than those passed, else from the
    plan's start; with neither, the type is missing at once (nothing ever arrived and
    there is no start to give grace from).
    """
    now, rows = prepare(readings, now)
    newest_by_type: dict[str, Reading] = {}
    for r in rows:  # oldest first: the last one wins
        newest_by_type[r.type] = r
    missing: list[dict[str, Any]] = []
    evidence: list[str] = []
    for type_, window in sorted(plan.expected.items()):
        last = newest_by_type.get(type_)
        entry: dict[str, Any] = {"type": type_, "window_hours": hours(window)}
        if last is not None:
            since, source = last.time, "reading"
            entry["last_reading"] = last.id
        elif latest is not None and type_ in latest:
            since, source = as_utc(latest[type_], f"latest {type_}"), "reading"
            entry["last_reading"] = None
        elif plan.start is not None:
            since, source = as_utc(plan.start, "plan start"), "plan_start"
            entry["last_reading"] = None
        else:
            missing.append(
                {
                    **entry,
                    "last_reading": None,
                    "since": None,
                    "counted_from": "unknown",
                    "hours_since": None,
                }
            )
            continue
        if now - since <= window:
            continue
        missing.append(
            {
                **entry,
                "since": iso(since),
                "counted_from": source,
                "hours_since": hours(now - since),
            }
        )
        if last is not None:
            evidence.append(last.id)
    if not missing:
        return []
    parts = [
        f"{m['type']} ({m['hours_since']:g} h)"
        if m["hours_since"] is not None
        else f"{m['type']} (never)"
        for m in missing
    ]
    return [
        Finding(
            rule="missing_data",
            severity="low",
            evidence=tuple(evidence),
            details={"missing": missing},
            summary="expected measurements missing: " + ", ".join(parts),
        )
    ]


def check_device_inactive(
    device_id: str,
    last_seen: datetime | None,
    bound_since: datetime,
    window: timedelta,
    now: datetime,
) -> Finding | None:
    """A technical finding when the device has sent nothing for more than `window`.

    Silence counts from the later of its last message and its binding to this patient
    (a device moved from another patient starts afresh), and goes to technical staff.
    """
    now = as_utc(now, "now")
    start = as_utc(bound_since, "bound_since")
    if last_seen is not None:
        start = max(start, as_utc(last_seen, "last_seen"))
    silent = now - start
    if silent <= window:
        return None
    return Finding(
        rule="device_inactive",
        severity="low",
        evidence=(),
        details={
            "device_id": device_id,
            "last_seen": iso(last_seen) if last_seen is not None else None,
            "bound_since": iso(bound_since),
            "silent_hours": hours(silent),
            "window_hours": hours(window),
            "audience": "technical",
        },
        summary=(
            f"device {device_id} silent for {hours(silent):g} h"
            + ("" if last_seen is not None else " (never reported)")
        ),
        key=f"device_inactive:{device_id}",
    )
