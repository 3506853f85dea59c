"""Rules `trend_weight` (heart failure) and `trend_bp_mean` (hypertension)."""

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
    since,
)
from egenmon.settings import DEFAULT_TIMEZONE

# clinical.md, heart failure (ESC HFA patient guidance): a gain of more than 2 kg in
# 3 days signals fluid retention and asks for contact.
WEIGHT_WINDOW = timedelta(hours=72)
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
    gain_kg: float = WEIGHT_GAIN_KG,
) -> list[Finding]:
    """The newest weight more than `gain_kg` above the lowest weight in the window.

    The window is [now - 72 h, now] in real time, so it holds 72 hours whether or not a
    daylight-saving change falls inside it.
    """
    now, rows = prepare(readings, now)
    weights = since(of_type(rows, "body_weight"), now - window)
    if len(weights) < 2:
        return []
    latest = weights[-1]
    lowest = min(weights, key=lambda r: (r.value, r.time))
    # Weights are stored to 2 decimals; rounding keeps 81.4 - 79.4 from exceeding 2.0.
    gain = round(latest.value - lowest.value, 3)
    if gain <= gain_kg:
        return []
    return [
        Finding(
            rule="trend_weight",
            severity="medium",
            evidence=(lowest.id, latest.id),
            details={
                "gain_kg": gain,
                "limit_kg": gain_kg,
                "window_hours": hours(window),
                "hours_between": hours(latest.time - lowest.time),
                "lowest": reading_dict(lowest),
                "newest": reading_dict(latest),
            },
            summary=(
                f"weight up {gain:g} kg in {hours(latest.time - lowest.time):g} h "
                f"({lowest.value:g} → {latest.value:g} kg; limit > {gain_kg:g} kg in "
                f"{hours(window):g} h)"
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
    """The mean home BP over the last `days` × 24 h, the first calendar day discarded.

    The first day is the local calendar day (in `tz`) of the earliest reading in the
    window; every reading on that day is left out, as ESH asks. In a rolling window the
    discarded day is the oldest one, which is conservative: fewer readings, never more.
    """
    now, rows = prepare(readings, now)
    series = [
        r
        for r in since(of_type(rows, "blood_pressure"), now - timedelta(days=days))
        if r.value2 is not None
    ]
    if not series:
        return HomeBpMean(None, None, (), (), None, False)
    first_day = series[0].time.astimezone(tz).date()
    discarded = tuple(r for r in series if r.time.astimezone(tz).date() == first_day)
    used = tuple(r for r in series if r.time.astimezone(tz).date() != first_day)
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
    """A finding when the 7-day home mean is >= 135 systolic or >= 85 diastolic.

    With fewer than `min_readings` readings averaged there is no finding: the mean is not
    a valid ESH home measurement (`home_bp_mean` says so for a display).
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
            },
            summary=(
                f"home BP mean {systolic:g}/{diastolic:g} mmHg over {m.count} readings "
                f"(limit {sys_limit:g}/{dia_limit:g})"
            ),
        )
    ]
