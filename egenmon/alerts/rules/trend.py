"""Rules `trend_weight` (heart failure) and `trend_bp_mean` (hypertension).

Both are windowed: the engine evaluates them at the scan time and at the measurement time
of every reading new since the last cycle (`now` is then that reading's time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

from egenmon.alerts.plans import Plan
from egenmon.alerts.rules.findings import (
    Finding,
    Reading,
    hours,
    iso,
    of_type,
    prepare,
    reading_dict,
)
from egenmon.settings import DEFAULT_TIMEZONE

# clinical.md, heart failure (ESC HFA patient guidance): a gain of more than 2 kg in
# 3 days signals fluid retention and asks for contact.
# clinical.md, "Judged at the time things happened": weighed every morning, so the weight
# three mornings earlier counts, give or take the spread of a morning routine.
WEIGHT_WINDOW = timedelta(hours=72)
WEIGHT_ROUTINE_TOLERANCE = timedelta(hours=2)
WEIGHT_LOOKBACK = WEIGHT_WINDOW + WEIGHT_ROUTINE_TOLERANCE
WEIGHT_GAIN_KG = 2.0

# clinical.md, hypertension (ESH): the mean of a 7-day series, first day discarded, at
# least 12 readings averaged; a home mean >= 135/85 mmHg is high.
BP_SERIES_DAYS = 7
BP_MIN_READINGS = 12
BP_MEAN_LIMIT = (135.0, 85.0)

# Days of a series are calendar days where the patient lives (contract: EGENMON_TIMEZONE).
STOCKHOLM = ZoneInfo(DEFAULT_TIMEZONE)  # the default; the engine passes Settings.tz


def check_trend_weight(
    readings: Iterable[Reading],
    plan: Plan,
    now: datetime,
    *,
    window: timedelta = WEIGHT_WINDOW,
    tolerance: timedelta = WEIGHT_ROUTINE_TOLERANCE,
    gain_kg: float = WEIGHT_GAIN_KG,
) -> list[Finding]:
    """Weight gain in heart failure, as the daily morning routine is practised.

    What opens an alert: the newest weight is more than 2 kg above any weight measured in
    the three days before it. "Three days" is 72 hours plus a routine tolerance of
    2 hours, so the weight taken three mornings earlier counts even when this morning's
    weighing was up to two hours later on the clock (and across a daylight-saving change,
    when the same clock time three days earlier is 71 or 73 real hours back). A weight
    taken more than 74 hours before the newest one does not count.

    The newest weight is the newest measured at or before `now` (the cycle evaluates this
    rule at each new weight's own measurement time, so late uploads are judged where they
    belong); when it is more than 74 hours old there is no current gain to report.
    """
    now, rows = prepare(readings, now)
    weights = of_type(rows, "body_weight")
    if len(weights) < 2:
        return []
    span = window + tolerance
    latest = weights[-1]
    if now - latest.time > span:
        return []
    start = latest.time - span
    earlier = [w for w in weights[:-1] if w.time >= start]
    if not earlier:
        return []
    lowest = min(earlier, key=lambda r: (r.value, r.time))
    # Weights are stored to 2 decimals; rounding keeps 81.4 - 79.4 from exceeding 2.0.
    gain = round(latest.value - lowest.value, 3)
    if gain <= gain_kg:
        return []
    between_h = hours(latest.time - lowest.time)
    return [
        Finding(
            rule="trend_weight",
            severity="medium",
            evidence=(lowest.id, latest.id),
            details={
                "gain_kg": gain,
                "limit_kg": gain_kg,
                "window_hours": hours(window),
                "tolerance_hours": hours(tolerance),
                "hours_between": between_h,
                "measured_at": iso(latest.time),
                "lowest": reading_dict(lowest),
                "newest": reading_dict(latest),
            },
            summary=(
                f"weight up {gain:g} kg in {between_h:g} h "
                f"({lowest.value:g} → {latest.value:g} kg; limit > {gain_kg:g} kg in "
                f"{hours(window):g} h ± {hours(tolerance):g} h)"
            ),
        )
    ]


@dataclass(frozen=True)
class HomeBpMean:
    """An ESH home blood-pressure series: what was averaged and whether it is enough."""

    systolic: float | None
    diastolic: float | None
    used: tuple[Reading, ...]
    discarded: tuple[Reading, ...]
    first_day: date | None
    enough: bool

    @property
    def count(self) -> int:
        return len(self.used)


def home_bp_mean(
    readings: Iterable[Reading],
    now: datetime,
    *,
    tz: tzinfo = STOCKHOLM,
    days: int = BP_SERIES_DAYS,
    min_readings: int = BP_MIN_READINGS,
) -> HomeBpMean:
    """The ESH home BP mean of the last `days` calendar days, the first day discarded.

    The series is the readings of the `days` local calendar days (in `tz`, where the
    patient lives) ending with the day of `now`, measured at or before `now`: a day is a
    calendar day whether it has 23, 24 or 25 hours. The first day of the series (the
    earliest calendar day with a reading) is left out, as ESH asks; in a rolling series
    that is conservative: fewer readings, never more.
    """
    now, rows = prepare(readings, now)
    last_day = now.astimezone(tz).date()
    first_allowed = last_day - timedelta(days=days - 1)
    series = []
    for r in of_type(rows, "blood_pressure"):
        if r.value2 is None or r.time > now:
            continue
        day = r.time.astimezone(tz).date()
        if first_allowed <= day <= last_day:
            series.append((r, day))
    if not series:
        return HomeBpMean(None, None, (), (), None, False)
    first_day = series[0][1]
    discarded = tuple(r for r, day in series if day == first_day)
    used = tuple(r for r, day in series if day != first_day)
    if not used:
        return HomeBpMean(None, None, used, discarded, first_day, False)
    systolic = math.fsum(r.value for r in used) / len(used)
    diastolic = math.fsum(r.value2 for r in used if r.value2 is not None) / len(used)
    return HomeBpMean(systolic, diastolic, used, discarded, first_day, len(used) >= min_readings)


def check_trend_bp_mean(
    readings: Iterable[Reading],
    plan: Plan,
    now: datetime,
    *,
    tz: tzinfo = STOCKHOLM,
    days: int = BP_SERIES_DAYS,
    min_readings: int = BP_MIN_READINGS,
    limit: tuple[float, float] = BP_MEAN_LIMIT,
) -> list[Finding]:
    """High home blood pressure (ESH), on the 7-day home series.

    What opens an alert: the mean of the home readings of the last 7 calendar days where
    the patient lives (the first day of the series left out, at least 12 readings
    averaged) is 135 systolic or more, or 85 diastolic or more. With fewer readings the
    mean is not a valid ESH home measurement and nothing opens (`home_bp_mean` says so for
    a display). The cycle evaluates the series ending at each new reading's measurement
    time, so a week uploaded late is judged as if it had arrived day by day.
    """
    m = home_bp_mean(readings, now, tz=tz, days=days, min_readings=min_readings)
    if not m.enough or m.systolic is None or m.diastolic is None:
        return []
    sys_limit, dia_limit = limit
    if m.systolic < sys_limit and m.diastolic < dia_limit:
        return []
    systolic, diastolic = round(m.systolic, 1), round(m.diastolic, 1)
    return [
        Finding(
            rule="trend_bp_mean",
            severity="low",
            evidence=tuple(r.id for r in m.used),
            details={
                "systolic_mean": systolic,
                "diastolic_mean": diastolic,
                "limit": [sys_limit, dia_limit],
                "readings_averaged": m.count,
                "min_readings": min_readings,
                "first_day_discarded": m.first_day.isoformat() if m.first_day else None,
                "readings_discarded": len(m.discarded),
                "window_days": days,
                "from": iso(m.used[0].time),
                "to": iso(m.used[-1].time),
                "measured_at": iso(m.used[-1].time),
            },
            summary=(
                f"home BP mean {systolic:g}/{diastolic:g} mmHg over {m.count} readings "
                f"(limit {sys_limit:g}/{dia_limit:g})"
            ),
        )
    ]
