"""NEWS2 (Royal College of Physicians, 2017): scoring, and rule `news2`.

NEWS2 was validated for acutely ill adults in hospital, not for home self-measurement
(clinical.md): the score is decision support shown beside the raw values. At home
consciousness is not measured, so it is always listed as missing; other parameters are
missing when they have no reading at all. A parameter whose newest reading is older than
the freshness window (24 hours unless the plan sets another) is listed as stale, with its
value and age, and is not scored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from egenmon.alerts.plans import NEWS2_FRESHNESS, Plan
from egenmon.alerts.rules.findings import (
    Finding,
    Reading,
    age_minutes,
    hours,
    newest,
    of_type,
    prepare,
)
from egenmon.domain.severity import Severity

# NEWS2 parameters in the chart's order.
PARAMETERS = (
    "respiratory_rate",
    "spo2",
    "air_or_oxygen",
    "systolic_bp",
    "pulse",
    "consciousness",
    "temperature",
)
# Measurement-type names accepted by news2_points for the parameter they feed.
PARAMETER_ALIASES = {
    "heart_rate": "pulse",
    "body_temperature": "temperature",
    "blood_pressure": "systolic_bp",
    "systolic": "systolic_bp",
}

# (highest value in the band, points), bands in ascending order; clinical.md NEWS2 table.
_INF = math.inf
_BANDS: dict[str, tuple[tuple[float, int], ...]] = {
    "respiratory_rate": ((8, 3), (11, 1), (20, 0), (24, 2), (_INF, 3)),
    "spo2_scale1": ((91, 3), (93, 2), (95, 1), (_INF, 0)),
    "spo2_scale2_air": ((83, 3), (85, 2), (87, 1), (_INF, 0)),
    "spo2_scale2_oxygen": ((83, 3), (85, 2), (87, 1), (92, 0), (94, 1), (96, 2), (_INF, 3)),
    "systolic_bp": ((90, 3), (100, 2), (110, 1), (219, 0), (_INF, 3)),
    "pulse": ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2), (_INF, 3)),
    "temperature": ((35.0, 3), (36.0, 1), (38.0, 0), (39.0, 1), (_INF, 2)),
}
# The chart records temperature to one decimal and the rest as whole numbers; a value is
# rounded (half up) to that precision first, so 36.05 scores as 36.1 and the table has no
# gaps between its bands.
_DECIMALS = {"temperature": 1}

_ALERT = {"a", "alert"}
_NOT_ALERT = {"c", "confusion", "new_confusion", "v", "voice", "p", "pain", "u", "unresponsive"}

FRESHNESS = NEWS2_FRESHNESS  # unless the plan sets a shorter window

# Which reading type feeds which parameter (consciousness has none at home).
SOURCES = _SOURCES = {
    "respiratory_rate": "respiratory_rate",
    "spo2": "spo2",
    "systolic_bp": "blood_pressure",
    "pulse": "heart_rate",
    "temperature": "body_temperature",
}


def _canonical(parameter: str) -> str:
    name = PARAMETER_ALIASES.get(parameter, parameter)
    if name not in PARAMETERS:
        raise ValueError(
            f"unknown NEWS2 parameter {parameter!r}; use one of {', '.join(PARAMETERS)}"
        )
    return name


def _chart_value(parameter: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"NEWS2 {parameter} needs a finite number, not {value!r}")
    step = Decimal(1).scaleb(-_DECIMALS.get(parameter, 0))
    return float(Decimal(repr(float(value))).quantize(step, rounding=ROUND_HALF_UP))


def news2_points(
    parameter: str,
    value: float | str | bool,
    scale2: bool = False,
    on_oxygen: bool = False,
) -> int:
    """Points (0–3) one NEWS2 parameter scores.

    parameter: one of PARAMETERS (or a measurement-type alias such as ``heart_rate``).
    spo2 uses scale 2 when `scale2` (a clinician marked hypercapnic respiratory failure);
    on scale 2, 93% and above scores 0 on air and 1–3 on oxygen. air_or_oxygen takes
    True/``"oxygen"`` or False/``"air"``; consciousness takes ``"alert"`` or one of
    ``"confusion"``, ``"V"``, ``"P"``, ``"U"``.
    """
    name = _canonical(parameter)
    if name == "air_or_oxygen":
        if value is True or value == "oxygen":
            return 2
        if value is False or value == "air":
            return 0
        raise ValueError(f"NEWS2 air_or_oxygen is 'air' or 'oxygen', not {value!r}")
    if name == "consciousness":
        text = str(value).strip().lower()
        if text in _ALERT:
            return 0
        if text in _NOT_ALERT:
            return 3
        raise ValueError(f"NEWS2 consciousness is alert, confusion, V, P or U, not {value!r}")
    if isinstance(value, str):
        raise ValueError(f"NEWS2 {name} needs a number, not {value!r}")
    v = _chart_value(name, value)
    if name == "spo2":
        bands = _BANDS["spo2_scale1"]
        if scale2:
            bands = _BANDS["spo2_scale2_oxygen" if on_oxygen else "spo2_scale2_air"]
    else:
        bands = _BANDS[name]
    for upper, points in bands:
        if v <= upper:
            return points
    raise AssertionError("unreachable: the last band is unbounded")


def news2_severity(score: int, points: Iterable[int] = ()) -> Severity | None:
    """Contract mapping: >= 7 high; 5–6 or any single 3 medium; 1–4 low; 0 none."""
    if score >= 7:
        return "high"
    if score >= 5 or any(p >= 3 for p in points):
        return "medium"
    if score >= 1:
        return "low"
    return None


def news2_assess(
    readings: Iterable[Reading],
    now: datetime,
    *,
    scale2: bool = False,
    freshness: timedelta = FRESHNESS,
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The NEWS2 details (contract shape) and the ids of the readings scored.

    details: ``{"score", "parameters": {name: {"value", "points", "age_minutes"}},
    "missing": [names], "scale": 1|2, "stale": {name: {"value", "age_minutes"}}}``:
    a stale parameter (newest reading older than `freshness`) is shown with its value and
    age but not scored, and is not listed as missing. The oxygen parameter
    comes from the freshest SpO2 reading's on_oxygen; where that is unknown it is missing
    and SpO2 on scale 2 is scored as on air.
    """
    now, rows = prepare(readings, now)
    parameters: dict[str, dict[str, Any]] = {}
    stale: dict[str, dict[str, Any]] = {}
    evidence: list[str] = []

    def fresh(parameter: str) -> Reading | None:
        r = newest(of_type(rows, _SOURCES[parameter]))
        if r is None:
            return None
        if now - r.time > freshness:
            stale[parameter] = {"value": r.value, "age_minutes": age_minutes(r.time, now)}
            return None
        return r

    for parameter in PARAMETERS:
        if parameter not in _SOURCES:
            continue  # air_or_oxygen comes with spo2; consciousness is not measured at home
        r = fresh(parameter)
        if r is None:
            continue
        age = age_minutes(r.time, now)
        on_oxygen = bool(r.on_oxygen)
        parameters[parameter] = {
            "value": r.value,
            "points": news2_points(parameter, r.value, scale2=scale2, on_oxygen=on_oxygen),
            "age_minutes": age,
        }
        if r.id not in evidence:
            evidence.append(r.id)
        if parameter == "spo2" and r.on_oxygen is not None:
            parameters["air_or_oxygen"] = {
                "value": "oxygen" if r.on_oxygen else "air",
                "points": news2_points("air_or_oxygen", r.on_oxygen),
                "age_minutes": age,
            }
    ordered = {p: parameters[p] for p in PARAMETERS if p in parameters}
    details: dict[str, Any] = {
        "score": sum(p["points"] for p in ordered.values()),
        "parameters": ordered,
        "missing": [p for p in PARAMETERS if p not in ordered and p not in stale],
        "scale": 2 if scale2 else 1,
        "stale": {p: stale[p] for p in PARAMETERS if p in stale},
        "freshness_hours": hours(freshness),
    }
    return details, tuple(evidence)


def check_news2(
    readings: Iterable[Reading],
    plan: Plan,
    now: datetime,
    *,
    freshness: timedelta | None = None,
) -> list[Finding]:
    """NEWS2 as decision support beside the raw values.

    What opens an alert: the NEWS2 score of the values measured within the freshness
    window before `now` (24 hours unless the plan sets another) is 1 or more: 7 or more
    is high, 5–6 or any single parameter scoring 3 is medium, 1–4 is low. Older values
    are shown as stale with their age and not scored; parameters never measured (and
    consciousness, not measured at home) are listed as missing. The cycle evaluates the
    score at each new reading's measurement time as well, so late readings are scored
    with the values around their own time.
    """
    if freshness is None:
        freshness = plan.news2_freshness or FRESHNESS
    details, evidence = news2_assess(readings, now, scale2=plan.news2_scale2, freshness=freshness)
    points = [p["points"] for p in details["parameters"].values()]
    severity = news2_severity(details["score"], points)
    if severity is None:
        return []
    return [
        Finding(
            rule="news2",
            severity=severity,
            evidence=evidence,
            details=details,
            summary=news2_summary(details),
        )
    ]


def news2_summary(details: dict[str, Any]) -> str:
    """One line for the worklist: the score, parameters scoring 3, stale and missing ones."""
    threes = [name for name, p in details["parameters"].items() if p["points"] == 3]
    extra = f"; 3 points: {', '.join(threes)}" if threes else ""
    if details["stale"]:
        aged = (f"{p} {s['age_minutes'] // 60} h old" for p, s in details["stale"].items())
        extra += f"; stale, not scored: {', '.join(aged)}"
    return (
        f"NEWS2 {details['score']} (scale {details['scale']}{extra}; "
        f"missing: {', '.join(details['missing'])})"
    )


def with_stale(
    details: dict[str, Any], older: dict[str, tuple[datetime, float]], now: datetime
) -> dict[str, Any]:
    """Details with parameters listed as missing moved to stale where `older` (parameter →
    (time, value) of a reading older than what was looked at) has one. Not scored."""
    stale = dict(details["stale"])
    for parameter, (t, value) in older.items():
        if parameter in details["missing"] and parameter not in stale:
            stale[parameter] = {"value": value, "age_minutes": age_minutes(t, now)}
    if len(stale) == len(details["stale"]):
        return details
    return {
        **details,
        "stale": {p: stale[p] for p in PARAMETERS if p in stale},
        "missing": [p for p in details["missing"] if p not in stale],
    }
