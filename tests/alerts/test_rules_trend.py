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
    [(timedelta(hours=72), True), (timedelta(hours=72, seconds=1), False)],
)
def test_window_edge(ago, found):
    findings = check_trend_weight([_w("a", ago, 80.0), _w("b", timedelta(0), 82.5)], HF, NOW)
    assert bool(findings) is found


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
    ("lowest_at", "now", "found"),
    [
        # Fall back on 2026-10-25: three calendar days hold 73 real hours.
        (
            datetime(2026, 10, 23, 8, 0, tzinfo=STHLM),
            datetime(2026, 10, 26, 8, 0, tzinfo=STHLM),
            False,
        ),
        (
            datetime(2026, 10, 23, 9, 0, tzinfo=STHLM),
            datetime(2026, 10, 26, 8, 0, tzinfo=STHLM),
            True,
        ),
        # Spring forward on 2026-03-29: three calendar days hold 71 real hours.
        (
            datetime(2026, 3, 27, 8, 0, tzinfo=STHLM),
            datetime(2026, 3, 30, 8, 0, tzinfo=STHLM),
            True,
        ),
        (
            datetime(2026, 3, 27, 7, 0, tzinfo=STHLM),
            datetime(2026, 3, 30, 8, 0, tzinfo=STHLM),
            True,
        ),
        (
            datetime(2026, 3, 27, 6, 59, 59, tzinfo=STHLM),
            datetime(2026, 3, 30, 8, 0, tzinfo=STHLM),
            False,
        ),
    ],
)
def test_window_is_72_real_hours_across_dst(lowest_at, now, found):
    readings = [
        Reading("low", lowest_at, "body_weight", 80.0),
        Reading("new", now - timedelta(minutes=10), "body_weight", 82.5),
    ]
    assert bool(check_trend_weight(readings, HF, now)) is found


# --- trend_bp_mean ----------------------------------------------------------------------

# Tuesday 2026-11-24 21:00 in Stockholm; the 7-day window starts Tuesday 2026-11-17 21:00.
BP_NOW = datetime(2026, 11, 24, 21, 0, tzinfo=STHLM)


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
        # now 2026-10-26 00:00 CET; 168 real hours back is 2026-10-19 01:00 CEST.
        (datetime(2026, 10, 19, 1, 0, tzinfo=STHLM), date(2026, 10, 19)),
        (datetime(2026, 10, 19, 0, 59, 59, tzinfo=STHLM), date(2026, 10, 20)),
    ],
)
def test_seven_days_are_168_real_hours_across_dst(edge, first_day):
    now = datetime(2026, 10, 26, 0, 0, tzinfo=STHLM)
    readings = [Reading("edge", edge, "blood_pressure", 150, 95)]
    readings += [
        Reading(f"r{d}", datetime(2026, 10, d, 8, 0, tzinfo=STHLM), "blood_pressure", 150, 95)
        for d in range(20, 26)
    ]
    assert home_bp_mean(readings, now).first_day == first_day


def test_no_readings_no_mean():
    m = home_bp_mean([], BP_NOW)
    assert (m.systolic, m.enough, m.count) == (None, False, 0)
    assert check_trend_bp_mean([], HT, BP_NOW) == []
