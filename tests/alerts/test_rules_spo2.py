"""Rule spo2_drop: a fall of 3 points from the 14-day baseline, or below the target range."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from egenmon.alerts.plans import build_plan
from egenmon.alerts.rules import Reading, check_spo2_drop, spo2_baseline

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
D = timedelta(days=1)
COPD = build_plan("copd")
HYPERCAPNIC = build_plan("copd", news2_scale2=True)


def _s(id_, ago, value, now=NOW, on_oxygen=None):
    return Reading(id_, now - ago, "spo2", value, on_oxygen=on_oxygen)


def _baseline(values, now=NOW):
    """One reading a day from 2 days back, oldest last."""
    return [_s(f"b{i}", (i + 2) * D, v, now) for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("current", "reasons"),
    [
        (96, None),  # 2 points under a baseline of 98
        (95, ["drop"]),  # 3 points
        (94, ["drop"]),
        (93, ["drop", "below_target"]),
    ],
)
def test_drop_of_three_points(current, reasons):
    readings = [*_baseline([98] * 5), _s("now", H, current)]
    findings = check_spo2_drop(readings, COPD, NOW)
    if reasons is None:
        assert findings == []
    else:
        (f,) = findings
        assert f.details["reasons"] == reasons
        assert f.details["baseline"] == 98
        assert f.details["drop"] == 98 - current
        assert (f.rule, f.key, f.severity, f.evidence) == (
            "spo2_drop",
            "spo2_drop",
            "medium",
            ("now",),
        )


def test_baseline_is_the_median():
    # One bad reading (85) does not move a median of 97; the mean would be 94.6.
    readings = [*_baseline([97, 97, 85, 97, 97]), _s("now", H, 95)]
    assert check_spo2_drop(readings, COPD, NOW) == []
    assert spo2_baseline(readings, NOW).median == 97


@pytest.mark.parametrize(("current", "found"), [(95, False), (94, True)])
def test_even_count_median_is_the_mean_of_the_middle_two(current, found):
    readings = _baseline([96, 99, 97, 98, 99, 96])
    assert spo2_baseline(readings, NOW).median == 97.5
    # 97.5 - 95 = 2.5 is no drop; 97.5 - 94 = 3.5 is, while 94 is still within 94-98.
    findings = check_spo2_drop([*readings, _s("now", H, current)], COPD, NOW)
    assert [f.details["reasons"] for f in findings] == ([["drop"]] if found else [])


@pytest.mark.parametrize(("n", "has_baseline"), [(4, False), (5, True)])
def test_baseline_needs_five_readings(n, has_baseline):
    readings = [*_baseline([98] * n), _s("now", H, 95)]
    assert bool(check_spo2_drop(readings, COPD, NOW)) is has_baseline
    assert (spo2_baseline(readings, NOW).median is not None) is has_baseline


@pytest.mark.parametrize(
    ("ago", "in_baseline"),
    [
        (timedelta(days=14), True),
        (timedelta(days=14, seconds=1), False),
        (timedelta(hours=24, seconds=1), True),
        (timedelta(hours=24), False),  # the last 24 h are "now", not the baseline
    ],
)
def test_baseline_window_edges(ago, in_baseline):
    readings = [*_baseline([98] * 4), _s("edge", ago, 98)]
    base = spo2_baseline(readings, NOW)
    assert ("edge" in {r.id for r in base.readings}) is in_baseline


@pytest.mark.parametrize(
    ("plan", "value", "found"),
    [
        (COPD, 94, False),
        (COPD, 93, True),
        (HYPERCAPNIC, 88, False),
        (HYPERCAPNIC, 87, True),
        (HYPERCAPNIC, 96, False),  # above target is not a fall
        (build_plan("copd", spo2_target=(90, 95)), 89, True),
    ],
)
def test_below_target_range_without_a_baseline(plan, value, found):
    findings = check_spo2_drop([_s("now", H, value)], plan, NOW)
    assert bool(findings) is found
    if found:
        assert findings[0].details["reasons"] == ["below_target"]
        assert findings[0].details["baseline"] is None
        assert findings[0].details["target"] == list(plan.spo2_range)


def test_current_is_the_newest_of_the_last_24_hours():
    readings = [*_baseline([98] * 5), _s("low", 3 * H, 90), _s("recovered", H, 97)]
    assert check_spo2_drop(readings, COPD, NOW) == []
    # Measured earlier, arrived later: not the current value.
    readings = [*_baseline([98] * 5), _s("recovered", H, 97), _s("late", 5 * H, 90)]
    assert check_spo2_drop(readings, COPD, NOW) == []


@pytest.mark.parametrize(
    ("ago", "found"), [(timedelta(hours=24), True), (timedelta(hours=24, seconds=1), False)]
)
def test_no_current_reading_no_finding(ago, found):
    assert bool(check_spo2_drop([_s("old", ago, 85)], COPD, NOW)) is found


def test_late_baseline_readings_count():
    readings = [_s("now", H, 95), *_baseline([98] * 5)]  # the baseline arrived last
    assert len(check_spo2_drop(readings, COPD, NOW)) == 1


def test_windows_are_real_time_across_dst():
    sthlm = ZoneInfo("Europe/Stockholm")
    now = datetime(2026, 3, 30, 8, 0, tzinfo=sthlm)  # CEST; 24 h back is 03-29 08:00 CEST
    # 2026-03-29 07:30 CEST is 24.5 h back: the baseline. 2026-03-29 08:30 CEST: "now".
    edge_in_baseline = Reading("a", datetime(2026, 3, 29, 7, 30, tzinfo=sthlm), "spo2", 98)
    edge_current = Reading("b", datetime(2026, 3, 29, 8, 30, tzinfo=sthlm), "spo2", 98)
    # 14 days back is 2026-03-16 08:00 CEST = 07:00 CET: 07:30 CET is in, 06:30 CET is out.
    inside = Reading("c", datetime(2026, 3, 16, 7, 30, tzinfo=sthlm), "spo2", 98)
    outside = Reading("d", datetime(2026, 3, 16, 6, 30, tzinfo=sthlm), "spo2", 98)
    base = spo2_baseline([edge_in_baseline, edge_current, inside, outside], now)
    assert {r.id for r in base.readings} == {"a", "c"}
