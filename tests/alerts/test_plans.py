"""Monitoring plans: protocol defaults, individual limits, the CLI form, and which rules a
plan runs."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from egenmon.alerts.plans import (
    DAILY,
    PROTOCOLS,
    Alarm,
    Plan,
    Threshold,
    build_plan,
    check_limits,
    parse_threshold,
    parse_thresholds,
)
from egenmon.alerts.rules import Reading, evaluate_patient
from egenmon.domain.severity import worse, worst

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("protocol", "expected"),
    [
        ("hypertension", {"blood_pressure": timedelta(hours=18)}),
        ("heart_failure", {"body_weight": timedelta(hours=36), "blood_pressure": DAILY}),
        ("copd", {"spo2": DAILY, "heart_rate": DAILY, "respiratory_rate": DAILY}),
        ("diabetes", {"blood_glucose": timedelta(hours=36)}),
        ("general", {}),
    ],
)
def test_protocol_expectations(protocol, expected):
    assert build_plan(protocol).expected == expected


def test_every_protocol_builds():
    assert {build_plan(p).protocol for p in PROTOCOLS} == set(PROTOCOLS)


def test_unknown_protocol_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown protocol 'asthma'; choose one of hypert"):
        build_plan("asthma")


def test_expected_windows_can_be_changed_and_removed():
    plan = build_plan("copd", expected={"respiratory_rate": None, "body_weight": DAILY})
    assert plan.expected == {"spo2": DAILY, "heart_rate": DAILY, "body_weight": DAILY}


@pytest.mark.parametrize(
    ("text", "quantity", "low", "high"),
    [
        ("body_weight::95", "body_weight", None, 95.0),
        ("blood_pressure:90:150", "systolic", 90.0, 150.0),
        ("systolic:90:", "systolic", 90.0, None),
        ("diastolic::95", "diastolic", None, 95.0),
        (" spo2 : 90 : ", "spo2", 90.0, None),
        ("blood_glucose:4.5:12", "blood_glucose", 4.5, 12.0),
    ],
)
def test_parse_threshold(text, quantity, low, high):
    assert parse_threshold(text) == (quantity, Threshold(low=low, high=high))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("body_weight:95", "is not TYPE:LOW:HIGH"),
        ("body_weight:1:2:3", "is not TYPE:LOW:HIGH"),
        ("pressure:90:150", "unknown threshold type 'pressure'; use one of systolic"),
        ("body_weight:abc:", "LOW 'abc' is not a number"),
        ("body_weight::x9", "HIGH 'x9' is not a number"),
        ("body_weight::inf", "not a finite number"),
        ("body_weight:nan:", "not a finite number"),
        ("body_weight::", "give a low limit, a high limit or both"),
        ("systolic:150:90", "low limit 150 must be below high limit 90"),
        ("systolic:90:90", "low limit 90 must be below high limit 90"),
        ("spo2::150", r"spo2: high limit 150 is outside the plausible range 50-100 %"),
        ("diastolic:5:", r"diastolic: low limit 5 is outside the plausible range 20-200 mm\[Hg\]"),
    ],
)
def test_parse_threshold_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_threshold(text)


@pytest.mark.parametrize(
    ("quantity", "low", "high", "message"),
    [
        ("spo2", -5, 400, "spo2: low limit -5 is outside the plausible range 50-100 %"),
        ("body_weight", None, 900, "body_weight: high limit 900 is outside the plausible range"),
        ("heart_rate", 120, 60, "low limit 120 must be below high limit 60"),
        ("heart_rate", None, None, "give a low limit, a high limit or both"),
        ("heart_rate", float("nan"), None, "not a finite number"),
        ("heart_rate", "60", None, "'60' is not a number"),
        ("heart_rate", True, None, "True is not a number"),
        ("pulse", 40, None, "unknown threshold type 'pulse'"),
    ],
)
def test_check_limits_is_the_one_check_of_every_way_in(quantity, low, high, message):
    with pytest.raises(ValueError, match=message):
        check_limits(quantity, low, high)
    # The CLI form goes through the same check.
    if isinstance(low, int | float | None) and isinstance(high, int | float | None):
        text = f"{quantity}:{'' if low is None else low}:{'' if high is None else high}"
        with pytest.raises(ValueError):
            parse_threshold(text)


def test_check_limits_accepts_a_plausible_range():
    assert check_limits("blood_pressure", 90, 150) == Threshold(low=90.0, high=150.0)


def test_a_quantity_given_twice_is_an_error():
    with pytest.raises(ValueError, match="threshold for systolic given twice"):
        parse_thresholds(["blood_pressure:90:150", "systolic::160"])


def test_build_plan_takes_cli_strings():
    plan = build_plan("heart_failure", ["body_weight::95", "diastolic::95"])
    assert plan.thresholds == {
        "body_weight": Threshold(high=95.0),
        "diastolic": Threshold(high=95.0),
    }


def _severity(plan, quantity, value):
    crossings = plan.effective_thresholds()[quantity].check(value)
    return worst(c.severity for c in crossings)


# Protocol defaults at both sides of each level (clinical.md, home-monitoring rules).
@pytest.mark.parametrize(
    ("quantity", "value", "severity"),
    [
        ("systolic", 179, None),
        ("systolic", 180, "high"),
        ("systolic", 90, None),
        ("systolic", 89.9, "high"),
        ("diastolic", 109, None),
        ("diastolic", 110, "high"),
        ("blood_glucose", 3.9, None),
        ("blood_glucose", 3.89, "medium"),
        ("blood_glucose", 3.0, "medium"),
        ("blood_glucose", 2.99, "high"),
        ("blood_glucose", 13.9, None),
        ("blood_glucose", 13.91, "medium"),
        ("body_temperature", 37.99, None),
        ("body_temperature", 38.0, "low"),
        ("body_temperature", 39.09, "low"),
        ("body_temperature", 39.1, "medium"),
        ("spo2", 93, None),
        ("spo2", 92, "high"),
    ],
)
def test_default_levels(quantity, value, severity):
    assert _severity(build_plan("general"), quantity, value) == severity


def test_no_default_limits_where_clinical_md_gives_none():
    assert set(build_plan("general").effective_thresholds()) == {
        "systolic",
        "diastolic",
        "blood_glucose",
        "body_temperature",
        "spo2",
    }


@pytest.mark.parametrize(
    ("plan", "value", "severity"),
    [
        (build_plan("copd", news2_scale2=True), 87, None),
        (build_plan("copd", news2_scale2=True), 86, "high"),
        (build_plan("copd", spo2_target=(90, 96)), 89, None),
        (build_plan("copd", spo2_target=(90, 96)), 88, "high"),
    ],
)
def test_spo2_urgent_level_follows_the_target_range(plan, value, severity):
    assert _severity(plan, "spo2", value) == severity


@pytest.mark.parametrize(
    ("plan", "target"),
    [
        (build_plan("copd"), (94, 98)),
        (build_plan("copd", news2_scale2=True), (88, 92)),
        (build_plan("copd", news2_scale2=True, spo2_target=(86, 90)), (86, 90)),
    ],
)
def test_spo2_target_range(plan, target):
    assert plan.spo2_range == target


@pytest.mark.parametrize(
    ("threshold", "quantity", "value", "severity"),
    [
        # The individual range wins on its side: 88 is this patient's normal.
        ("systolic:85:", "systolic", 88, None),
        ("systolic:85:", "systolic", 85, None),
        ("systolic:85:", "systolic", 84.9, "high"),  # outside it, the worst level counts
        ("systolic:85:", "systolic", 185, "high"),  # the other side keeps its default
        ("blood_pressure::150", "systolic", 150, None),
        ("blood_pressure::150", "systolic", 151, "medium"),
        ("blood_pressure::150", "systolic", 180, "high"),
        ("blood_pressure::190", "systolic", 185, None),
        ("body_weight::95", "body_weight", 95, None),
        ("body_weight::95", "body_weight", 95.01, "medium"),
        ("blood_glucose:3.5:", "blood_glucose", 3.7, None),
        ("blood_glucose:3.5:", "blood_glucose", 14.0, "medium"),
        ("blood_glucose:3.5:", "blood_glucose", 2.9, "high"),
        ("spo2:90:", "spo2", 91, None),
        ("spo2:90:", "spo2", 89, "high"),
        ("heart_rate:50:100", "heart_rate", 49, "medium"),
        ("heart_rate:50:100", "heart_rate", 101, "medium"),
        ("heart_rate:50:100", "heart_rate", 100, None),
    ],
)
def test_individual_limits_win_over_defaults(threshold, quantity, value, severity):
    assert _severity(build_plan("general", [threshold]), quantity, value) == severity


def test_crossings_say_which_level_and_why():
    plan = build_plan("general", ["systolic::150"])
    crossings = plan.effective_thresholds()["systolic"].check(185)
    assert [(c.op, c.limit, c.severity) for c in crossings] == [
        (">", 150.0, "medium"),
        (">=", 180, "high"),
    ]
    assert "individual" in crossings[0].source
    assert "ESH" in crossings[1].source


def test_plan_round_trips_through_json():
    plan = build_plan(
        "copd",
        ["spo2:90:", "heart_rate::110"],
        news2_scale2=True,
        spo2_target=(87, 91),
        set_by="dr-x",
        set_at=NOW,
        started_at=NOW - timedelta(days=3),
    )
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_plan_does_not_change_through_the_callers_dict():
    expected = {"spo2": DAILY}
    plan = Plan(protocol="copd", expected=expected)
    expected["body_weight"] = DAILY
    assert plan.expected == {"spo2": DAILY}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expected": {"weight": DAILY}}, "unknown measurement type 'weight'"),
        ({"expected": {"spo2": timedelta(0)}}, "must be positive"),
        ({"expected": {}, "thresholds": {"bmi": Threshold(high=30)}}, "unknown threshold type"),
        ({"expected": {}, "spo2_target": (98, 94)}, "SpO2 target 98-94"),
        ({"expected": {}, "set_at": datetime(2026, 1, 1)}, "set_at must be timezone-aware"),
    ],
)
def test_plan_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Plan(protocol="copd", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"low": 10, "high": 5}, "low limit 10 must be below high limit 5"),
        ({"high": float("nan")}, "finite"),
        ({"severity": "urgent"}, "unknown severity"),
    ],
)
def test_threshold_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Threshold(**kwargs)


def test_alarm_validation():
    with pytest.raises(ValueError, match="unknown operator"):
        Alarm("=", 1, "low")


def test_plan_start_is_started_at_else_set_at():
    assert build_plan("general", set_at=NOW).start == NOW
    earlier = NOW - timedelta(days=9)
    assert build_plan("general", set_at=NOW, started_at=earlier).start == earlier


@pytest.mark.parametrize(
    ("a", "b", "result"),
    [
        ("low", "high", "high"),
        ("high", "medium", "high"),
        ("medium", "low", "medium"),
        ("low", "low", "low"),
        (None, "low", "low"),
        ("medium", None, "medium"),
        (None, None, None),
    ],
)
def test_worse(a, b, result):
    assert worse(a, b) == result


def test_worst():
    assert worst(["low", None, "high", "medium"]) == "high"
    assert worst([]) is None


# Which rules a plan runs (evaluate_patient), each fed a deviation every rule would see.
def _everything():
    h = timedelta(hours=1)
    weights = [
        Reading("w0", NOW - 60 * h, "body_weight", 80),
        Reading("w1", NOW - h, "body_weight", 83),
    ]
    bps = []
    for day in range(1, 8):
        for hour in (7, 8, 19, 20):
            t = datetime(2026, 11, 17 + day - 1, hour, tzinfo=UTC)
            if NOW - timedelta(days=7) <= t <= NOW:
                bps.append(Reading(f"bp{day}-{hour}", t, "blood_pressure", 150, 95))
    return [*weights, *bps]


@pytest.mark.parametrize(
    ("protocol", "rules"),
    [
        ("heart_failure", {"trend_weight"}),
        ("hypertension", {"trend_bp_mean"}),
        ("copd", set()),
        ("general", set()),
    ],
)
def test_trend_rules_run_only_for_their_protocol(protocol, rules):
    plan = build_plan(protocol, set_at=NOW - timedelta(days=30))
    found = {f.rule for f in evaluate_patient(_everything(), plan, NOW)}
    assert found & {"trend_weight", "trend_bp_mean"} == rules


def test_evaluate_patient_lists_most_severe_first():
    plan = build_plan("copd", set_at=NOW - timedelta(days=30))
    readings = [
        Reading("bp", NOW - timedelta(hours=1), "blood_pressure", 190, 100),
        Reading("t", NOW - timedelta(hours=1), "body_temperature", 38.2),
    ]
    findings = evaluate_patient(readings, plan, NOW)
    assert [f.severity for f in findings] == sorted(
        (f.severity for f in findings), key={"high": 0, "medium": 1, "low": 2}.get
    )
    assert findings[0].key == "threshold:blood_pressure"
    assert {f.rule for f in findings} == {"threshold", "news2", "missing_data"}
