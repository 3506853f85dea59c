"""Rules trend_weight (more than 2 kg in 3 days) and trend_bp_mean (ESH 7-day home mean)."""

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from egenmon.alerts.plans import build_plan
from egenmon.alerts.rules import Reading, check_trend_bp_mean, check_trend_weight, home_bp_mean

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
STHLM = ZoneInfo("Europe/Stockholm")
HF = build_plan("heart_failure")
HT = build_plan("hypertension")


def _w(id_, ago, kg, now=NOW):
    return Reading(id_, now - ago, "body_weight", kg)


# --- trend_weight -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lowest", "newest", "found"),
    [
        (80.0, 82.0, False),  # exactly 2.0 kg is not "more than 2 kg"
        (80.0, 82.01, True),
        (79.4, 81.4, False),  # 81.4 - 79.4 is 2.0000000000000142 in floating point
        (79.39, 81.4, True),
        (80.0, 79.0, False),  # a loss
    ],
)
def test_gain_limit(lowest, newest, found):
    findings = check_trend_weight([_w("a", 48 * H, lowest), _w("b", H, newest)], HF, NOW)
    assert bool(findings) is found


@pytest.mark.parametrize(
    ("ago", "found"),
    [
        (timedelta(hours=72), True),
        # The routine tolerance: three mornings earlier, up to two hours earlier on the clock.
        (timedelta(hours=74), True),
        (timedelta(hours=74, seconds=1), False),
    ],
)
def test_three_days_and_the_routine_tolerance_edges(ago, found):
    findings = check_trend_weight([_w("a", ago, 80.0), _w("b", timedelta(0), 82.5)], HF, NOW)
    assert bool(findings) is found


def test_the_daily_morning_routine_of_the_issue():
    # 80.0, 80.5, 81.2, 82.3 kg, each morning at about the same clock time; this morning's
    # weighing is 75 minutes later on the clock than three mornings ago.
    day = timedelta(days=1)
    first = NOW - 3 * day
    readings = [
        Reading("d0", first, "body_weight", 80.0),
        Reading("d1", first + day - timedelta(minutes=20), "body_weight", 80.5),
        Reading("d2", first + 2 * day + timedelta(minutes=30), "body_weight", 81.2),
        Reading("d3", first + 3 * day + timedelta(minutes=75), "body_weight", 82.3),
    ]
    (f,) = check_trend_weight(readings, HF, first + 3 * day + timedelta(hours=2))
    assert f.evidence == ("d0", "d3")
    assert f.details["gain_kg"] == 2.3
    assert f.details["tolerance_hours"] == 2.0


def test_the_newest_weight_is_compared_not_the_scan_time():
    # Judged at the newest weight, not at now: the 3-day span ends at the weighing.
    readings = [_w("a", 80 * H, 80.0), _w("b", 8 * H, 82.5)]
    assert [f.evidence for f in check_trend_weight(readings, HF, NOW)] == [("a", "b")]


def test_no_weight_in_the_last_three_days_is_no_current_gain():
    readings = [_w("a", 100 * H, 80.0), _w("b", 75 * H, 82.5)]
    assert check_trend_weight(readings, HF, NOW) == []
    # ...but judged at that weighing's own time (a late upload), the gain is there.
    assert len(check_trend_weight(readings, HF, NOW - 75 * H)) == 1


def test_compares_with_the_lowest_not_the_first():
    readings = [_w("first", 70 * H, 81.0), _w("low", 40 * H, 79.5), _w("new", H, 81.6)]
    (f,) = check_trend_weight(readings, HF, NOW)
    assert f.evidence == ("low", "new")
    assert f.details["gain_kg"] == 2.1
    assert f.details["lowest"]["id"] == "low"
    assert f.details["newest"]["id"] == "new"
    assert f.severity == "medium"
    assert f.key == "trend_weight"


def test_newest_is_by_measurement_time_not_arrival():
    # In arrival order the 83 kg reading comes last, but it was measured first.
    readings = [_w("low", 30 * H, 80.0), _w("new", H, 80.5), _w("late", 50 * H, 83.0)]
    assert check_trend_weight(readings, HF, NOW) == []


def test_late_arrival_in_the_window_counts():
    readings = [_w("new", H, 82.5), _w("late", 60 * H, 80.0)]
    assert [f.evidence for f in check_trend_weight(readings, HF, NOW)] == [("late", "new")]


def test_one_reading_is_no_trend():
    assert check_trend_weight([_w("a", H, 120.0)], HF, NOW) == []


@pytest.mark.parametrize(
    ("lowest_at", "newest_at", "found"),
    [
        # Fall back on 2026-10-25: the same clock time three days earlier is 73 real hours.
        (
            datetime(2026, 10, 23, 8, 0, tzinfo=STHLM),
            datetime(2026, 10, 26, 8, 0, tzinfo=STHLM),
            True,
        ),
        (
            datetime(2026, 10, 23, 7, 0, tzinfo=STHLM),  # 74 h
            datetime(2026, 10, 26, 8, 0, tzinfo=STHLM),
            True,
        ),
        (
            datetime(2026, 10, 23, 6, 59, 59, tzinfo=STHLM),
            datetime(2026, 10, 26, 8, 0, tzinfo=STHLM),
            False,
        ),
        # Spring forward on 2026-03-29: the same clock time three days earlier is 71 hours.
        (
            datetime(2026, 3, 27, 8, 0, tzinfo=STHLM),
            datetime(2026, 3, 30, 8, 0, tzinfo=STHLM),
            True,
        ),
        (
            datetime(2026, 3, 27, 5, 0, tzinfo=STHLM),  # 74 h
            datetime(2026, 3, 30, 8, 0, tzinfo=STHLM),
            True,
        ),
        (
            datetime(2026, 3, 27, 4, 59, 59, tzinfo=STHLM),
            datetime(2026, 3, 30, 8, 0, tzinfo=STHLM),
            False,
        ),
    ],
)
def test_the_span_is_real_hours_across_dst(lowest_at, newest_at, found):
    readings = [
        Reading("low", lowest_at, "body_weight", 80.0),
        Reading("new", newest_at, "body_weight", 82.5),
    ]
    now = newest_at + timedelta(minutes=10)
    assert bool(check_trend_weight(readings, HF, now)) is found


# --- trend_bp_mean ----------------------------------------------------------------------

# Monday 2026-11-23 21:00 in Stockholm; the 7 calendar days are 2026-11-17 to 2026-11-23.
BP_NOW = datetime(2026, 11, 23, 21, 0, tzinfo=STHLM)


def _bp_series(n, sys, dia, first_day=(200, 120)):
    """A first-day reading, then n readings, four a day (07:00, 07:05, 19:00, 19:05)."""
    readings = [
        Reading("first", datetime(2026, 11, 17, 21, 30, tzinfo=STHLM), "blood_pressure", *first_day)
    ]
    slots = [(d, hh, mm) for d in range(18, 25) for hh, mm in ((7, 0), (7, 5), (19, 0), (19, 5))]
    for i, (d, hh, mm) in enumerate(slots[:n]):
        s = sys[i] if isinstance(sys, list) else sys
        di = dia[i] if isinstance(dia, list) else dia
        readings.append(
            Reading(f"bp{i}", datetime(2026, 11, d, hh, mm, tzinfo=STHLM), "blood_pressure", s, di)
        )
    return readings


@pytest.mark.parametrize(("n", "found"), [(11, False), (12, True)])
def test_needs_twelve_readings_averaged(n, found):
    readings = _bp_series(n, 150, 95)
    assert bool(check_trend_bp_mean(readings, HT, BP_NOW)) is found
    m = home_bp_mean(readings, BP_NOW)
    assert (m.count, m.enough) == (n, found)


@pytest.mark.parametrize(
    ("sys", "dia", "found"),
    [
        (135, 80, True),  # exactly 135 systolic
        (130, 85, True),  # exactly 85 diastolic
        ([135] * 11 + [134], 84, False),  # 134.92/84
        (134, [85] * 11 + [84], False),  # 134/84.92
        (129, 79, False),
    ],
)
def test_mean_limit_135_85(sys, dia, found):
    assert bool(check_trend_bp_mean(_bp_series(12, sys, dia), HT, BP_NOW)) is found


def test_first_day_is_discarded():
    # The first day's 200/120 would lift a 12-reading mean of 130/80 over 135/85.
    readings = _bp_series(12, 130, 80, first_day=(200, 120))
    assert check_trend_bp_mean(readings, HT, BP_NOW) == []
    m = home_bp_mean(readings, BP_NOW)
    assert m.first_day == date(2026, 11, 17)
    assert [r.id for r in m.discarded] == ["first"]
    assert "first" not in {r.id for r in m.used}


def test_finding_details():
    (f,) = check_trend_bp_mean(_bp_series(14, 140, 88), HT, BP_NOW)
    assert f.rule == f.key == "trend_bp_mean"
    assert f.severity == "low"
    assert f.details["systolic_mean"] == 140.0
    assert f.details["diastolic_mean"] == 88.0
    assert f.details["readings_averaged"] == 14
    assert f.details["readings_discarded"] == 1
    assert f.details["first_day_discarded"] == "2026-11-17"
    assert len(f.evidence) == 14 and "first" not in f.evidence


def test_late_arrivals_join_the_series_by_measurement_time():
    readings = _bp_series(11, 150, 95)
    assert check_trend_bp_mean(readings, HT, BP_NOW) == []
    late = Reading("late", datetime(2026, 11, 20, 12, 0, tzinfo=STHLM), "blood_pressure", 150, 95)
    assert len(check_trend_bp_mean([*readings, late], HT, BP_NOW)) == 1


def test_first_day_is_a_local_calendar_day():
    # 23:30 and 00:30 Stockholm time fall on one UTC date but two local days.
    readings = [
        Reading("d1", datetime(2026, 11, 17, 23, 30, tzinfo=STHLM), "blood_pressure", 150, 95),
        Reading("d2", datetime(2026, 11, 18, 0, 30, tzinfo=STHLM), "blood_pressure", 150, 95),
    ]
    m = home_bp_mean(readings, BP_NOW)
    assert [r.id for r in m.discarded] == ["d1"]
    assert [r.id for r in m.used] == ["d2"]


@pytest.mark.parametrize(
    ("edge", "first_day"),
    [
        # now 2026-10-26 00:30 CET: the 7 calendar days are 10-20 to 10-26, whatever their
        # hours (10-25 has 25).
        (datetime(2026, 10, 20, 0, 0, tzinfo=STHLM), date(2026, 10, 20)),
        (datetime(2026, 10, 19, 23, 59, 59, tzinfo=STHLM), date(2026, 10, 21)),
    ],
)
def test_seven_days_are_local_calendar_days_across_dst(edge, first_day):
    now = datetime(2026, 10, 26, 0, 30, tzinfo=STHLM)
    readings = [Reading("edge", edge, "blood_pressure", 150, 95)]
    readings += [
        Reading(f"r{d}", datetime(2026, 10, d, 8, 0, tzinfo=STHLM), "blood_pressure", 150, 95)
        for d in range(21, 26)
    ]
    assert home_bp_mean(readings, now).first_day == first_day


def test_judged_at_a_reading_the_series_ends_at_that_reading():
    readings = _bp_series(12, 150, 95)
    at = readings[8].time  # the eighth of the series (2026-11-20 07:00)
    m = home_bp_mean(readings, at)
    assert m.count == 8 and all(r.time <= at for r in m.used)


def test_no_readings_no_mean():
    m = home_bp_mean([], BP_NOW)
    assert (m.systolic, m.enough, m.count) == (None, False, 0)
    assert check_trend_bp_mean([], HT, BP_NOW) == []
