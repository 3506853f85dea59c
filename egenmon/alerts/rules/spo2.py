"""Rule `spo2_drop`: SpO2 fallen from the patient's own baseline or below the target range.

clinical.md, COPD and oxygen (BTS 2017): target 94–98% for most, 88–92% for those at risk
of hypercapnia; a fall of 3 percentage points or more, or a value below the patient's
target range, asks for clinical assessment.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from egenmon.alerts.plans import Plan
from egenmon.alerts.rules.findings import (
    Finding,
    Reading,
    between,
    hours,
    iso,
    newest,
    of_type,
    prepare,
    reading_dict,
    since,
)

DROP_POINTS = 3.0
# The baseline is the median of the readings from 14 days back up to 24 hours ago: the
# median is robust to a single bad oximeter reading, and leaving out the last 24 hours keeps
# today's fall from dragging its own baseline down. Five readings is the least that gives a
# median worth comparing with (a third of the daily readings a COPD plan expects).
BASELINE_WINDOW = timedelta(days=14)
CURRENT_WINDOW = timedelta(hours=24)
MIN_BASELINE_READINGS = 5


@dataclass(frozen=True)
class Spo2Baseline:
    median: float | None  # None when fewer than the minimum readings
    readings: tuple[Reading, ...]


def spo2_baseline(
    readings: Iterable[Reading],
    now: datetime,
    *,
    window: timedelta = BASELINE_WINDOW,
    exclude_recent: timedelta = CURRENT_WINDOW,
    min_readings: int = MIN_BASELINE_READINGS,
) -> Spo2Baseline:
    """Median SpO2 of readings measured in [now - 14 d, now - 24 h)."""
    now, rows = prepare(readings, now)
    end = now - exclude_recent
    base = tuple(r for r in between(of_type(rows, "spo2"), now - window, end) if r.time < end)
    if len(base) < min_readings:
        return Spo2Baseline(None, base)
    return Spo2Baseline(float(statistics.median(r.value for r in base)), base)


def check_spo2_drop(
    readings: Iterable[Reading],
    plan: Plan,
    now: datetime,
    *,
    drop_points: float = DROP_POINTS,
    baseline_window: timedelta = BASELINE_WINDOW,
    current_window: timedelta = CURRENT_WINDOW,
    min_baseline: int = MIN_BASELINE_READINGS,
) -> list[Finding]:
    """Oxygen saturation fallen (BTS 2017).

    What opens an alert: the newest SpO2 measured in the 24 hours up to `now` is 3
    percentage points or more under the patient's own baseline, or under the plan's
    target range (94–98 %, or 88–92 % for a patient at risk of hypercapnia). The baseline
    is the median of the SpO2 readings measured from 14 days to 24 hours before `now`
    (at least 5 of them), so it is made of readings from before the drop, by measurement
    time. The cycle evaluates the rule at each new SpO2 reading's own measurement time,
    so a late reading is compared with the baseline of its own day.
    """
    now, rows = prepare(readings, now)
    current = newest(since(of_type(rows, "spo2"), now - current_window))
    if current is None:
        return []
    base = spo2_baseline(
        rows,
        now,
        window=baseline_window,
        exclude_recent=current_window,
        min_readings=min_baseline,
    )
    target_low, target_high = plan.spo2_range
    reasons = []
    drop = None
    if base.median is not None:
        drop = round(base.median - current.value, 1)
        if drop >= drop_points:
            reasons.append("drop")
    if current.value < target_low:
        reasons.append("below_target")
    if not reasons:
        return []
    texts = []
    if "drop" in reasons:
        texts.append(f"{drop:g} points under baseline {base.median:g}")
    if "below_target" in reasons:
        texts.append(f"under target {target_low:g}-{target_high:g}")
    return [
        Finding(
            rule="spo2_drop",
            severity="medium",
            evidence=(current.id,),
            details={
                "reasons": reasons,
                "current": {**reading_dict(current), "on_oxygen": current.on_oxygen},
                "baseline": base.median,
                "baseline_readings": len(base.readings),
                "baseline_min_readings": min_baseline,
                "baseline_hours_ago": [hours(baseline_window), hours(current_window)],
                "drop": drop,
                "drop_limit": drop_points,
                "target": [target_low, target_high],
                "measured_at": iso(current.time),
            },
            summary=f"SpO2 {current.value:g}%: " + "; ".join(texts),
        )
    ]
