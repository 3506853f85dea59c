"""Rule threshold: the newest reading of each type against the plan's limits."""

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from egenmon.alerts.plans import build_plan
from egenmon.alerts.rules import Reading, check_threshold

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
GENERAL = build_plan("general")


def _r(id_, ago, type_, value, value2=None):
    return Reading(id_, NOW - ago, type_, value, value2)


@pytest.mark.parametrize(
    ("reading", "severity"),
    [
        (_r("a", H, "blood_pressure", 179, 109), None),
        (_r("a", H, "blood_pressure", 180, 80), "high"),
        (_r("a", H, "blood_pressure", 140, 110), "high"),
        (_r("a", H, "blood_pressure", 89, 60), "high"),
        (_r("a", H, "blood_glucose", 3.9), None),
        (_r("a", H, "blood_glucose", 3.8), "medium"),
        (_r("a", H, "blood_glucose", 2.9), "high"),
        (_r("a", H, "blood_glucose", 14.0), "medium"),
        (_r("a", H, "body_temperature", 38.0), "low"),
        (_r("a", H, "body_temperature", 39.1), "medium"),
        (_r("a", H, "spo2", 92), "high"),
        (_r("a", H, "spo2", 93), None),
        (_r("a", H, "heart_rate", 150), None),  # no default: NEWS2 scores pulse
        (_r("a", H, "body_weight", 140), None),
    ],
)
def test_default_limits(reading, severity):
    findings = check_threshold([reading], GENERAL, NOW)
    assert [f.severity for f in findings] == ([severity] if severity else [])


def test_finding_names_the_reading_and_the_limits():
    (f,) = check_threshold([_r("obs-1", H, "blood_pressure", 185, 112)], GENERAL, NOW)
    assert f.rule == "threshold"
    assert f.key == "threshold:blood_pressure"
    assert f.evidence == ("obs-1",)
    assert f.details["reading"] == "obs-1"
    assert f.details["time"] == "2026-11-24T11:00:00+00:00"
    assert [(c["quantity"], c["op"], c["limit"]) for c in f.details["crossed"]] == [
        ("systolic", ">=", 180),
        ("diastolic", ">=", 110),
    ]
    assert "systolic 185 >= 180" in f.summary
    json.dumps(f.details)


def test_each_type_is_its_own_alert():
    readings = [_r("bp", H, "blood_pressure", 190, 90), _r("g", H, "blood_glucose", 2.5)]
    findings = check_threshold(readings, GENERAL, NOW)
    assert sorted(f.key for f in findings) == [
        "threshold:blood_glucose",
        "threshold:blood_pressure",
    ]


def test_only_the_newest_reading_counts():
    # A re-measurement after a high value closes the deviation.
    readings = [
        _r("high", 2 * H, "blood_pressure", 190, 90),
        _r("ok", H, "blood_pressure", 140, 85),
    ]
    assert check_threshold(readings, GENERAL, NOW) == []
    readings = [
        _r("ok", 2 * H, "blood_pressure", 140, 85),
        _r("high", H, "blood_pressure", 190, 90),
    ]
    assert [f.evidence for f in check_threshold(readings, GENERAL, NOW)] == [("high",)]


def test_late_arrival_measured_earlier_is_not_the_newest():
    # The list is in arrival order; the late reading comes last but was measured first.
    readings = [_r("ok", H, "blood_glucose", 6.0), _r("late", 10 * H, "blood_glucose", 2.5)]
    assert check_threshold(readings, GENERAL, NOW) == []


def test_late_arrival_measured_in_the_window_counts():
    readings = [_r("late", 30 * H, "blood_glucose", 2.5)]
    assert [f.evidence for f in check_threshold(readings, GENERAL, NOW)] == [("late",)]


@pytest.mark.parametrize(
    ("ago", "found"),
    [(timedelta(hours=36), True), (timedelta(hours=36, seconds=1), False)],
)
def test_window_edge(ago, found):
    findings = check_threshold([_r("g", ago, "blood_glucose", 2.5)], GENERAL, NOW)
    assert bool(findings) is found


@pytest.mark.parametrize(
    ("ahead", "found"),
    [(timedelta(minutes=5), True), (timedelta(minutes=5, seconds=1), False)],
)
def test_readings_beyond_clock_skew_in_the_future_are_ignored(ahead, found):
    findings = check_threshold([_r("g", -ahead, "blood_glucose", 2.5)], GENERAL, NOW)
    assert bool(findings) is found


def test_individual_limits_from_the_plan():
    plan = build_plan("heart_failure", ["body_weight::95", "diastolic::90"])
    readings = [_r("w", H, "body_weight", 95.5), _r("bp", H, "blood_pressure", 130, 91)]
    findings = {f.key: f for f in check_threshold(readings, plan, NOW)}
    assert findings["threshold:body_weight"].severity == "medium"
    assert findings["threshold:blood_pressure"].details["crossed"][0]["quantity"] == "diastolic"


def test_window_is_real_time_across_dst():
    sthlm = ZoneInfo("Europe/Stockholm")
    # 2026-10-24 20:30 CEST to 2026-10-26 08:00 CET: 35.5 h on the clock, 36.5 h real.
    reading = Reading("g", datetime(2026, 10, 24, 20, 30, tzinfo=sthlm), "blood_glucose", 2.5)
    assert check_threshold([reading], GENERAL, datetime(2026, 10, 26, 8, 0, tzinfo=sthlm)) == []
    # 2026-03-28 20:30 CET to 2026-03-30 09:00 CEST: 36.5 h on the clock, 35.5 h real.
    reading = Reading("g", datetime(2026, 3, 28, 20, 30, tzinfo=sthlm), "blood_glucose", 2.5)
    now = datetime(2026, 3, 30, 9, 0, tzinfo=sthlm)
    assert len(check_threshold([reading], GENERAL, now)) == 1


def test_naive_times_are_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        check_threshold([Reading("x", datetime(2026, 1, 1), "spo2", 90)], GENERAL, NOW)
    with pytest.raises(ValueError, match="now must be timezone-aware"):
        check_threshold([], GENERAL, datetime(2026, 1, 1))
