"""Rule `threshold`: the newest reading of each type against the plan's limits."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from egenmon.alerts.plans import QUANTITIES, Plan
from egenmon.alerts.rules.findings import (
    Finding,
    Reading,
    iso,
    newest,
    of_type,
    prepare,
    since,
)
from egenmon.domain.measurements import TYPES
from egenmon.domain.severity import SEVERITY_RANK

# A daily measurement always has a reading this recent (the missing-data window); an older
# abnormal reading no longer describes the patient and its alert may be resolved.
THRESHOLD_WINDOW = timedelta(hours=36)


def check_threshold(
    readings: Iterable[Reading],
    plan: Plan,
    now: datetime,
    *,
    window: timedelta = THRESHOLD_WINDOW,
) -> list[Finding]:
    """One finding per measurement type whose newest reading in the window is out of range.

    What opens an alert: the newest reading of a measurement type, measured in the 36
    hours up to `now`, is outside the plan's limits (the patient's own, or the protocol's
    alarm limits). The cycle also evaluates the rule at the measurement time of each
    reading new since the last cycle, so an out-of-range reading uploaded late still
    opens an alert, dated when it was measured.

    Only the newest reading counts: a patient who re-measures after a high value (as home
    BP guidance asks) closes the deviation with the second reading. Blood pressure checks
    systolic (value) and diastolic (value2) and gives one finding for both.
    """
    now, rows = prepare(readings, now)
    recent = since(rows, now - window)
    by_type: dict[str, list[tuple[str, str]]] = {}
    for quantity, (type_, column) in QUANTITIES.items():
        by_type.setdefault(type_, []).append((quantity, column))
    thresholds = plan.effective_thresholds()
    findings = []
    for type_, quantities in by_type.items():
        reading = newest(of_type(recent, type_))
        if reading is None:
            continue
        crossed: list[dict[str, Any]] = []
        for quantity, column in quantities:
            threshold = thresholds.get(quantity)
            value = reading.value if column == "value" else reading.value2
            if threshold is None or value is None:
                continue
            for c in threshold.check(value):
                crossed.append({"quantity": quantity, "value": value, **c.as_dict()})
        if not crossed:
            continue
        severity = max((c["severity"] for c in crossed), key=SEVERITY_RANK.__getitem__)
        unit = TYPES[type_].unit_display
        parts = [f"{c['quantity']} {c['value']:g} {c['op']} {c['limit']:g}" for c in crossed]
        findings.append(
            Finding(
                rule="threshold",
                severity=severity,
                evidence=(reading.id,),
                details={
                    "type": type_,
                    "reading": reading.id,
                    "time": iso(reading.time),
                    "value": reading.value,
                    "value2": reading.value2,
                    "unit": unit,
                    "crossed": crossed,
                },
                summary=f"{type_}: " + ", ".join(parts) + f" {unit}".rstrip(),
                key=f"threshold:{type_}",
            )
        )
    return findings
