"""Rules missing_data and device_inactive, and how evaluate_patient tells them apart."""

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from egenmon.alerts.plans import build_plan
from egenmon.alerts.rules import (
    DeviceStatus,
    Reading,
    check_device_inactive,
    check_missing_data,
    evaluate_patient,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
STHLM = ZoneInfo("Europe/Stockholm")


def _r(id_, ago, type_, value=1.0, now=NOW):
    return Reading(id_, now - ago, type_, value)


def _plan(protocol, started=NOW - 30 * D):
    return build_plan(protocol, set_at=started)


@pytest.mark.parametrize(
    ("ago", "missing"),
    [
        (timedelta(hours=35, minutes=59), False),
        (timedelta(hours=36), False),  # exactly the window is not yet missing
        (timedelta(hours=36, minutes=1), True),
    ],
)
def test_daily_window_is_36_hours(ago, missing):
    findings = check_missing_data([_r("g", ago, "blood_glucose", 6.0)], _plan("diabetes"), NOW)
    assert bool(findings) is missing


@pytest.mark.parametrize(
    ("ago", "missing"),
    [(timedelta(hours=18), False), (timedelta(hours=18, seconds=1), True)],
)
def test_twice_daily_window_is_18_hours(ago, missing):
    findings = check_missing_data(
        [_r("bp", ago, "blood_pressure", 130)], _plan("hypertension"), NOW
    )
    assert bool(findings) is missing


def test_details_list_every_missing_type_and_how_long():
    readings = [_r("w", 40 * H, "body_weight", 80), _r("bp", 2 * H, "blood_pressure", 130)]
    (f,) = check_missing_data(readings, _plan("heart_failure"), NOW)
    assert (f.rule, f.key, f.severity, f.evidence) == (
        "missing_data",
        "missing_data",
        "low",
        ("w",),
    )
    assert f.details == {
        "missing": [
            {
                "type": "body_weight",
                "window_hours": 36.0,
                "last_reading": "w",
                "since": "2026-11-22T20:00:00+00:00",
                "counted_from": "reading",
                "hours_since": 40.0,
            }
        ]
    }
    json.dumps(f.details)


@pytest.mark.parametrize(
    ("started_ago", "missing"),
    [(timedelta(hours=36), False), (timedelta(hours=36, seconds=1), True)],
)
def test_never_received_counts_from_the_plan_start(started_ago, missing):
    findings = check_missing_data([], _plan("diabetes", NOW - started_ago), NOW)
    assert bool(findings) is missing
    if missing:
        assert findings[0].details["missing"][0]["counted_from"] == "plan_start"


def test_started_at_wins_over_set_at():
    plan = build_plan("diabetes", set_at=NOW - 40 * H, started_at=NOW - 10 * H)
    assert check_missing_data([], plan, NOW) == []


def test_no_reading_and_no_start_is_missing_at_once():
    (f,) = check_missing_data([], build_plan("diabetes"), NOW)
    assert f.details["missing"][0]["counted_from"] == "unknown"
    assert f.details["missing"][0]["hours_since"] is None
    assert "never" in f.summary


@pytest.mark.parametrize(("last_ago", "missing"), [(30 * H, False), (40 * H, True)])
def test_latest_known_reading_beyond_the_given_history(last_ago, missing):
    findings = check_missing_data(
        [], _plan("diabetes"), NOW, latest={"blood_glucose": NOW - last_ago}
    )
    assert bool(findings) is missing


def test_late_arrival_measured_in_the_window_counts():
    # It arrived (is appended) last, but it is a recent measurement: nothing is missing.
    readings = [_r("old", 50 * H, "blood_glucose"), _r("late", 20 * H, "blood_glucose")]
    assert check_missing_data(readings, _plan("diabetes"), NOW) == []


def test_other_types_do_not_count():
    readings = [_r("hr", H, "heart_rate"), _r("rr", H, "respiratory_rate")]
    (f,) = check_missing_data(readings, _plan("copd"), NOW)
    assert [m["type"] for m in f.details["missing"]] == ["spo2"]


def test_general_plan_expects_nothing():
    assert check_missing_data([], _plan("general"), NOW) == []


@pytest.mark.parametrize(
    ("last", "now", "missing"),
    [
        # Fall back: 35.5 h on the clock, 36.5 h real.
        (
            datetime(2026, 10, 24, 20, 30, tzinfo=STHLM),
            datetime(2026, 10, 26, 8, 0, tzinfo=STHLM),
            True,
        ),
        # Spring forward: 36.5 h on the clock, 35.5 h real.
        (
            datetime(2026, 3, 28, 20, 30, tzinfo=STHLM),
            datetime(2026, 3, 30, 9, 0, tzinfo=STHLM),
            False,
        ),
    ],
)
def test_window_is_real_time_across_dst(last, now, missing):
    plan = build_plan("diabetes", set_at=now - 30 * D)
    readings = [Reading("g", last, "blood_glucose", 6.0)]
    assert bool(check_missing_data(readings, plan, now)) is missing


# --- device_inactive --------------------------------------------------------------------

WINDOW = timedelta(hours=72)


@pytest.mark.parametrize(
    ("last_seen", "bound_since", "inactive"),
    [
        (NOW - WINDOW, NOW - 30 * D, False),
        (NOW - WINDOW - timedelta(seconds=1), NOW - 30 * D, True),
        (None, NOW - WINDOW, False),  # never sent, bound exactly 72 h ago
        (None, NOW - WINDOW - timedelta(seconds=1), True),
        # Moved from another patient a day ago: its old last_seen does not count here.
        (NOW - 10 * D, NOW - D, False),
    ],
)
def test_device_silence(last_seen, bound_since, inactive):
    f = check_device_inactive("dev-1", last_seen, bound_since, WINDOW, NOW)
    assert (f is not None) is inactive


def test_device_finding_is_technical_and_per_device():
    f = check_device_inactive("dev-7", None, NOW - 5 * D, WINDOW, NOW)
    assert f is not None
    assert (f.rule, f.key, f.severity, f.evidence) == (
        "device_inactive",
        "device_inactive:dev-7",
        "low",
        (),
    )
    assert f.details["audience"] == "technical"
    assert f.details["silent_hours"] == 120.0
    assert f.details["last_seen"] is None
    assert "never reported" in f.summary
    json.dumps(f.details)


def _dev(id_, silent_for):
    return DeviceStatus(id_, NOW - silent_for, NOW - 60 * D)


def test_all_devices_silent_gives_device_inactive_not_missing_data():
    plan = _plan("heart_failure")
    readings = [_r("w", 4 * D, "body_weight", 80), _r("bp", 4 * D, "blood_pressure", 130)]
    findings = evaluate_patient(readings, plan, NOW, [_dev("scale", 4 * D), _dev("cuff", 5 * D)])
    assert [f.key for f in findings] == ["device_inactive:cuff", "device_inactive:scale"]
    withheld = findings[0].details["withheld_missing_data"]
    assert [m["type"] for m in withheld] == ["blood_pressure", "body_weight"]


def test_one_silent_device_of_two_gives_both():
    plan = _plan("heart_failure")
    readings = [_r("w", 4 * D, "body_weight", 80), _r("bp", H, "blood_pressure", 130)]
    findings = evaluate_patient(readings, plan, NOW, [_dev("scale", 4 * D), _dev("cuff", H)])
    assert {f.key for f in findings} == {"device_inactive:scale", "missing_data"}
    missing = next(f for f in findings if f.rule == "missing_data")
    assert [m["type"] for m in missing.details["missing"]] == ["body_weight"]


def test_silent_but_within_device_window_is_missing_data():
    plan = _plan("diabetes")
    readings = [_r("g", 2 * D, "blood_glucose", 6.0)]
    findings = evaluate_patient(readings, plan, NOW, [_dev("meter", 2 * D)])
    assert [f.rule for f in findings] == ["missing_data"]


def test_no_devices_known_is_missing_data():
    findings = evaluate_patient([], _plan("diabetes"), NOW)
    assert [f.rule for f in findings] == ["missing_data"]


def test_a_plan_expecting_nothing_has_no_device_deviation():
    findings = evaluate_patient([], _plan("general"), NOW, [_dev("scale", 30 * D)])
    assert findings == []
