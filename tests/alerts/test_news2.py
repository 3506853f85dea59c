"""NEWS2: every band edge of every parameter, aggregation, severity, and the rule."""

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from egenmon.alerts.plans import build_plan
from egenmon.alerts.rules import Reading, check_news2, news2_assess, news2_points, news2_severity

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
STHLM = ZoneInfo("Europe/Stockholm")


# Both sides of every boundary in the RCP chart (clinical.md NEWS2 table).
@pytest.mark.parametrize(
    ("value", "points"),
    [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (3, 3), (40, 3)],
)
def test_respiratory_rate_bands(value, points):
    assert news2_points("respiratory_rate", value) == points


@pytest.mark.parametrize(
    ("value", "points"),
    [(91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0), (70, 3)],
)
@pytest.mark.parametrize("on_oxygen", [False, True])
def test_spo2_scale1_bands_ignore_oxygen(value, points, on_oxygen):
    assert news2_points("spo2", value, scale2=False, on_oxygen=on_oxygen) == points


@pytest.mark.parametrize(
    ("value", "points"),
    [(83, 3), (84, 2), (85, 2), (86, 1), (87, 1), (88, 0), (92, 0), (93, 0), (97, 0), (100, 0)],
)
def test_spo2_scale2_on_air_bands(value, points):
    assert news2_points("spo2", value, scale2=True, on_oxygen=False) == points


@pytest.mark.parametrize(
    ("value", "points"),
    [
        (83, 3),
        (84, 2),
        (85, 2),
        (86, 1),
        (87, 1),
        (88, 0),
        (92, 0),
        (93, 1),
        (94, 1),
        (95, 2),
        (96, 2),
        (97, 3),
        (100, 3),
    ],
)
def test_spo2_scale2_on_oxygen_bands(value, points):
    assert news2_points("spo2", value, scale2=True, on_oxygen=True) == points


@pytest.mark.parametrize(("value", "points"), [("oxygen", 2), ("air", 0), (True, 2), (False, 0)])
def test_air_or_oxygen(value, points):
    assert news2_points("air_or_oxygen", value) == points


@pytest.mark.parametrize(
    ("value", "points"),
    [(90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3), (60, 3)],
)
def test_systolic_bands(value, points):
    assert news2_points("systolic_bp", value) == points


@pytest.mark.parametrize(
    ("value", "points"),
    [
        (40, 3),
        (41, 1),
        (50, 1),
        (51, 0),
        (90, 0),
        (91, 1),
        (110, 1),
        (111, 2),
        (130, 2),
        (131, 3),
    ],
)
def test_pulse_bands(value, points):
    assert news2_points("pulse", value) == points


@pytest.mark.parametrize(
    ("value", "points"),
    [("alert", 0), ("A", 0), ("confusion", 3), ("V", 3), ("P", 3), ("U", 3), ("u", 3)],
)
def test_consciousness(value, points):
    assert news2_points("consciousness", value) == points


@pytest.mark.parametrize(
    ("value", "points"),
    [
        (35.0, 3),
        (35.1, 1),
        (36.0, 1),
        (36.1, 0),
        (38.0, 0),
        (38.1, 1),
        (39.0, 1),
        (39.1, 2),
        (41.0, 2),
        (33.0, 3),
    ],
)
def test_temperature_bands(value, points):
    assert news2_points("temperature", value) == points


@pytest.mark.parametrize(
    ("parameter", "value", "points"),
    [
        # Values between the chart's steps are rounded half up to the chart's precision.
        ("temperature", 36.05, 0),
        ("temperature", 36.04, 1),
        ("temperature", 39.05, 2),
        ("temperature", 35.04, 3),
        ("respiratory_rate", 20.5, 2),
        ("respiratory_rate", 20.4, 0),
        ("pulse", 90.5, 1),
        ("spo2", 95.5, 0),
    ],
)
def test_values_between_chart_steps_round_half_up(parameter, value, points):
    assert news2_points(parameter, value) == points


@pytest.mark.parametrize(
    ("alias", "value", "points"),
    [("heart_rate", 131, 3), ("body_temperature", 39.1, 2), ("blood_pressure", 90, 3)],
)
def test_measurement_type_aliases(alias, value, points):
    assert news2_points(alias, value) == points


@pytest.mark.parametrize(
    ("parameter", "value", "message"),
    [
        ("blood_glucose", 5.0, "unknown NEWS2 parameter"),
        ("pulse", float("nan"), "finite number"),
        ("pulse", "fast", "needs a number"),
        ("consciousness", "sleepy", "consciousness"),
        ("air_or_oxygen", "maybe", "air_or_oxygen"),
    ],
)
def test_bad_input_is_refused(parameter, value, message):
    with pytest.raises(ValueError, match=message):
        news2_points(parameter, value)


@pytest.mark.parametrize(
    ("score", "points", "severity"),
    [
        (0, [0, 0], None),
        (1, [1], "low"),
        (4, [2, 2], "low"),
        (3, [3], "medium"),  # a single 3 raises 1-4 to medium
        (4, [3, 1], "medium"),
        (5, [2, 2, 1], "medium"),
        (6, [2, 2, 2], "medium"),
        (7, [2, 2, 2, 1], "high"),
        (9, [3, 3, 3], "high"),
    ],
)
def test_severity_mapping(score, points, severity):
    assert news2_severity(score, points) == severity


def _r(id_, ago, type_, value, value2=None, on_oxygen=None, now=NOW):
    return Reading(id_, now - ago, type_, value, value2, on_oxygen)


def full_set(rr=16, spo2=97, on_oxygen=False, sys=130, pulse=70, temp=37.0, ago=None):
    ago = ago or timedelta(minutes=30)
    return [
        _r("rr", ago, "respiratory_rate", rr),
        _r("sat", ago, "spo2", spo2, on_oxygen=on_oxygen),
        _r("bp", ago, "blood_pressure", sys, 80),
        _r("hr", ago, "heart_rate", pulse),
        _r("temp", ago, "body_temperature", temp),
    ]


def test_details_have_the_contract_shape():
    details, evidence = news2_assess(full_set(rr=22, pulse=95), NOW)
    assert details == {
        "score": 3,
        "parameters": {
            "respiratory_rate": {"value": 22, "points": 2, "age_minutes": 30},
            "spo2": {"value": 97, "points": 0, "age_minutes": 30},
            "air_or_oxygen": {"value": "air", "points": 0, "age_minutes": 30},
            "systolic_bp": {"value": 130, "points": 0, "age_minutes": 30},
            "pulse": {"value": 95, "points": 1, "age_minutes": 30},
            "temperature": {"value": 37.0, "points": 0, "age_minutes": 30},
        },
        "missing": ["consciousness"],
        "scale": 1,
        "stale": {},
        "freshness_hours": 24.0,
    }
    assert evidence == ("rr", "sat", "bp", "hr", "temp")
    json.dumps(details)  # must be serialisable as it is


def test_aggregate_sums_every_parameter_including_oxygen():
    # rr 25 (3) + spo2 92 (2) + oxygen (2) + sys 100 (2) + pulse 111 (2) + temp 39.1 (2)
    details, _ = news2_assess(
        full_set(rr=25, spo2=92, on_oxygen=True, sys=100, pulse=111, temp=39.1), NOW
    )
    assert details["score"] == 13
    assert details["parameters"]["air_or_oxygen"] == {
        "value": "oxygen",
        "points": 2,
        "age_minutes": 30,
    }


@pytest.mark.parametrize(
    ("age", "fresh"),
    [(timedelta(hours=24), True), (timedelta(hours=24, seconds=1), False)],
)
def test_a_parameter_older_than_the_freshness_window_is_stale_with_its_age(age, fresh):
    readings = [*full_set(), _r("rr-old", timedelta(hours=48), "respiratory_rate", 30)]
    readings = [r for r in readings if r.id != "rr"] + [_r("rr", age, "respiratory_rate", 25)]
    details, evidence = news2_assess(readings, NOW)
    assert ("respiratory_rate" in details["parameters"]) is fresh
    # Stale is not missing: it is shown with its value and age, and not scored.
    assert "respiratory_rate" not in details["missing"]
    assert ("rr" in evidence) is fresh
    assert details["score"] == (3 if fresh else 0)
    if not fresh:
        assert details["stale"] == {"respiratory_rate": {"value": 25, "age_minutes": 24 * 60}}


def test_a_parameter_never_measured_is_missing_not_stale():
    readings = [r for r in full_set() if r.id != "rr"]
    details, _ = news2_assess(readings, NOW)
    assert "respiratory_rate" in details["missing"]
    assert details["stale"] == {}


def test_the_finding_names_stale_values_with_their_age():
    plan = build_plan("copd")
    readings = [r for r in full_set(rr=25) if r.id != "temp"]
    readings.append(_r("temp", timedelta(hours=30), "body_temperature", 39.5))
    [f] = check_news2(readings, plan, NOW)
    assert f.details["stale"] == {"temperature": {"value": 39.5, "age_minutes": 30 * 60}}
    assert "temperature" not in f.details["parameters"]
    assert "stale, not scored: temperature 30 h old" in f.summary


def test_freshest_reading_wins_whatever_order_readings_arrive_in():
    # The late arrival (appended last) was measured earlier; it must not be "the newest".
    readings = [_r("new", timedelta(hours=1), "heart_rate", 70)]
    readings.append(_r("late", timedelta(hours=5), "heart_rate", 140))
    details, evidence = news2_assess(readings, NOW)
    assert details["parameters"]["pulse"]["value"] == 70
    assert evidence == ("new",)


def test_late_reading_measured_in_the_window_counts():
    details, _ = news2_assess([_r("late", timedelta(hours=20), "heart_rate", 140)], NOW)
    assert details["parameters"]["pulse"] == {"value": 140, "points": 3, "age_minutes": 1200}


def test_consciousness_is_always_missing_at_home():
    details, _ = news2_assess(full_set(), NOW)
    assert "consciousness" in details["missing"]
    assert "consciousness" not in details["parameters"]


def test_unknown_oxygen_leaves_air_or_oxygen_missing():
    details, _ = news2_assess(full_set(on_oxygen=None), NOW)
    assert "air_or_oxygen" in details["missing"]
    assert details["parameters"]["spo2"]["points"] == 0


@pytest.mark.parametrize(
    ("scale2", "on_oxygen", "spo2", "spo2_points", "scale"),
    [
        (False, False, 89, 3, 1),
        (True, False, 89, 0, 2),
        (True, True, 97, 3, 2),
        (True, False, 97, 0, 2),
        (True, None, 97, 0, 2),  # unknown oxygen is scored as on air
    ],
)
def test_scale2_only_when_the_plan_says_so(scale2, on_oxygen, spo2, spo2_points, scale):
    plan = build_plan("copd", news2_scale2=scale2)
    readings = [_r("sat", timedelta(minutes=5), "spo2", spo2, on_oxygen=on_oxygen)]
    findings = check_news2(readings, plan, NOW)
    details = findings[0].details if findings else news2_assess(readings, NOW, scale2=scale2)[0]
    assert details["parameters"]["spo2"]["points"] == spo2_points
    assert details["scale"] == scale


@pytest.mark.parametrize(
    ("readings", "severity", "score"),
    [
        (full_set(), None, 0),
        (full_set(pulse=95), "low", 1),
        (full_set(rr=22, pulse=111), "low", 4),
        (full_set(pulse=131), "medium", 3),  # single 3
        (full_set(rr=22, pulse=111, temp=38.1), "medium", 5),
        (full_set(rr=22, pulse=111, temp=39.1), "medium", 6),
        (full_set(rr=22, pulse=111, temp=39.1, sys=110), "high", 7),
    ],
)
def test_rule_severity_follows_the_contract(readings, severity, score):
    findings = check_news2(readings, build_plan("general"), NOW)
    if severity is None:
        assert findings == []
        assert news2_assess(readings, NOW)[0]["score"] == 0
    else:
        (f,) = findings
        assert (f.rule, f.key, f.severity, f.details["score"]) == (
            "news2",
            "news2",
            severity,
            score,
        )


def test_no_readings_no_finding():
    assert check_news2([], build_plan("general"), NOW) == []


@pytest.mark.parametrize(
    ("reading_time", "now", "minutes"),
    [
        # Spring forward 2026-03-29 02:00 CET -> 03:00 CEST: one real hour, two on the clock.
        (
            datetime(2026, 3, 29, 1, 30, tzinfo=STHLM),
            datetime(2026, 3, 29, 3, 30, tzinfo=STHLM),
            60,
        ),
        # Fall back 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice, an hour apart.
        (
            datetime(2026, 10, 25, 2, 30, tzinfo=STHLM),
            datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=STHLM),
            60,
        ),
        (
            datetime(2026, 10, 25, 1, 30, tzinfo=STHLM),
            datetime(2026, 10, 25, 3, 30, tzinfo=STHLM),
            180,
        ),
    ],
)
def test_age_is_real_elapsed_time_across_dst(reading_time, now, minutes):
    readings = [Reading("hr", reading_time, "heart_rate", 70)]
    details, _ = news2_assess(readings, now)
    assert details["parameters"]["pulse"]["age_minutes"] == minutes


def test_freshness_window_is_real_time_across_dst():
    # 2026-10-24 03:30 CEST to 2026-10-25 03:00 CET is 24.5 h of real time (23.5 on the clock).
    readings = [Reading("hr", datetime(2026, 10, 24, 3, 30, tzinfo=STHLM), "heart_rate", 70)]
    details, _ = news2_assess(readings, datetime(2026, 10, 25, 3, 0, tzinfo=STHLM))
    assert details["stale"] == {"pulse": {"value": 70, "age_minutes": 24 * 60 + 30}}
