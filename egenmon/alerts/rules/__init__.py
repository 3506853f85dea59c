"""The pure alert core: one patient's readings and plan in, findings out. No I/O.

Each rule is ``check_<rule>(readings, plan, now, ...) -> list[Finding]``; `evaluate_patient`
runs those that apply to the plan. Readings may come in any order and include late
arrivals: rules go by measurement time, and every window is real time anchored on `now`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, tzinfo

from egenmon.alerts.plans import Plan
from egenmon.alerts.rules.findings import RULES, Finding, Reading, as_utc, prepare
from egenmon.alerts.rules.missing import (
    DEVICE_WINDOW,
    DeviceStatus,
    check_device_inactive,
    check_missing_data,
)
from egenmon.alerts.rules.news2 import (
    PARAMETERS as NEWS2_PARAMETERS,
)
from egenmon.alerts.rules.news2 import (
    check_news2,
    news2_assess,
    news2_points,
    news2_severity,
)
from egenmon.alerts.rules.spo2 import check_spo2_drop, spo2_baseline
from egenmon.alerts.rules.threshold import check_threshold
from egenmon.alerts.rules.trend import (
    STOCKHOLM,
    HomeBpMean,
    check_trend_bp_mean,
    check_trend_weight,
    home_bp_mean,
)
from egenmon.domain.severity import SEVERITY_RANK, Severity, worse, worst

__all__ = [
    "DEVICE_WINDOW",
    "NEWS2_PARAMETERS",
    "RULES",
    "DeviceStatus",
    "Finding",
    "HomeBpMean",
    "Reading",
    "Severity",
    "check_device_inactive",
    "check_missing_data",
    "check_news2",
    "check_spo2_drop",
    "check_threshold",
    "check_trend_bp_mean",
    "check_trend_weight",
    "evaluate_at",
    "evaluate_patient",
    "merge_findings",
    "home_bp_mean",
    "news2_assess",
    "news2_points",
    "news2_severity",
    "spo2_baseline",
    "worse",
    "worst",
]


def evaluate_patient(
    readings: Iterable[Reading],
    plan: Plan,
    now: datetime,
    devices: Iterable[DeviceStatus] = (),
    *,
    tz: tzinfo = STOCKHOLM,
    latest: Mapping[str, datetime] | None = None,
    device_window: timedelta = DEVICE_WINDOW,
) -> list[Finding]:
    """Every finding for one patient now, most severe first.

    Applies threshold, news2 and spo2_drop to everyone (spo2_drop finds nothing without
    SpO2 readings), trend_weight to heart_failure, trend_bp_mean to hypertension, and
    missing_data to the plan's expected measurements.

    Devices are judged only when the plan expects measurements (otherwise silence is no
    deviation): each device silent for more than `device_window` gives device_inactive.
    When every bound device is silent the cause is technical, so missing_data is withheld
    and what it would have said is kept in each device finding's details
    (``withheld_missing_data``). readings should cover the last 14 days (the SpO2
    baseline); `latest` may give older newest-reading times per type for missing_data.
    """
    now, rows = prepare(readings, now)
    findings = check_threshold(rows, plan, now)
    findings += check_news2(rows, plan, now)
    findings += check_spo2_drop(rows, plan, now)
    if plan.protocol == "heart_failure":
        findings += check_trend_weight(rows, plan, now)
    if plan.protocol == "hypertension":
        findings += check_trend_bp_mean(rows, plan, now, tz=tz)

    missing = check_missing_data(rows, plan, now, latest=latest)
    bound = list(devices)
    silent: list[Finding] = []
    if plan.expected:
        for d in bound:
            f = check_device_inactive(d.device_id, d.last_seen, d.bound_since, device_window, now)
            if f is not None:
                silent.append(f)
    if bound and len(silent) == len(bound):
        withheld = missing[0].details["missing"] if missing else []
        findings += [
            dataclasses.replace(f, details={**f.details, "withheld_missing_data": withheld})
            for f in silent
        ]
    else:
        findings += silent + missing
    return sorted(findings, key=_order)


# Which windowed rules a new reading of a type is an anchor for (threshold: its own type).
_NEWS2_TYPES = frozenset(
    {"respiratory_rate", "spo2", "blood_pressure", "heart_rate", "body_temperature"}
)


def evaluate_at(
    readings: Iterable[Reading],
    plan: Plan,
    at: datetime,
    types: Iterable[str],
    *,
    tz: tzinfo = STOCKHOLM,
) -> list[Finding]:
    """The findings of the windowed rules at measurement time `at`, for new readings of
    `types` measured then: each rule's window ends at `at`, as if the cycle had run the
    moment the reading was taken.

    threshold judges the new reading's type; news2 runs for its parameters' types,
    spo2_drop for SpO2, trend_weight (heart failure) for weight, trend_bp_mean
    (hypertension) for blood pressure. Missing data and device silence are judged only
    at the scan time (`evaluate_patient`).
    """
    at, rows = prepare(readings, at)
    kinds = set(types)
    findings = [f for f in check_threshold(rows, plan, at) if f.details.get("type") in kinds]
    if kinds & _NEWS2_TYPES:
        findings += check_news2(rows, plan, at)
    if "spo2" in kinds:
        findings += check_spo2_drop(rows, plan, at)
    if plan.protocol == "heart_failure" and "body_weight" in kinds:
        findings += check_trend_weight(rows, plan, at)
    if plan.protocol == "hypertension" and "blood_pressure" in kinds:
        findings += check_trend_bp_mean(rows, plan, at, tz=tz)
    return findings


def merge_findings(found: Iterable[tuple[Finding, datetime]]) -> list[Finding]:
    """One finding per key from findings at several evaluation times (finding, time).

    The worst wins (severity, then the NEWS2 score); of equals, the one evaluated latest,
    which describes the patient now.
    """
    best: dict[str, tuple[tuple[int, float, datetime], Finding]] = {}
    for f, at in found:
        score = f.details.get("score") if f.rule == "news2" else None
        w = (SEVERITY_RANK[f.severity], float(score or 0), as_utc(at))
        cur = best.get(f.key)
        if cur is None or w > cur[0]:
            best[f.key] = (w, f)
    return sorted((f for _, f in best.values()), key=_order)


def _order(f: Finding) -> tuple[int, int, str]:
    return (-SEVERITY_RANK[f.severity], RULES.index(f.rule), f.key)
