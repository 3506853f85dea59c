"""The clinical test table: each rule as clinicians practise it, through the real rule
cycle (engine.run_cycle, what `egenmon alerts run-once` and the scheduler run) against the
database. Routines (daily morning weights, ESH twice-daily blood pressure, COPD oximetry
three times a day), late uploads, offline days, dismiss-then-normal, dismiss-then-worse,
resolve-then-new-episode, and daylight-saving days.

Readings are stored as ingest stores them, each with the time it arrived; cycles run at
the simulated time a scheduler would have run them.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from egenmon import metrics
from tests.alerts.conftest import STOCKHOLM, act

H = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)
MIN = dt.timedelta(minutes=1)


def local(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=STOCKHOLM)


def morning(days_ago: int, now: dt.datetime, hh: int = 7, mm: int = 0) -> dt.datetime:
    """hh:mm Stockholm time `days_ago` calendar days before now's day."""
    day = now.astimezone(STOCKHOLM).date() - dt.timedelta(days=days_ago)
    return dt.datetime(day.year, day.month, day.day, hh, mm, tzinfo=STOCKHOLM)


@pytest.fixture
def on_plan(cli, device):
    """Set the device's patient on a protocol: on_plan(protocol, *thresholds) → (p, dev)."""

    def on(protocol: str, *thresholds: str) -> tuple[str, str]:
        args = ["plan", "set", "--patient", device["patient"], "--protocol", protocol]
        for t in thresholds:
            args += ["--threshold", t]
        r = cli(*args, "--json")
        assert r.code == 0, r.err
        return device["patient"], device["id"]

    return on


def arrive(store, p, dev, type_, at, value, value2=None, *, received=None, **kw):
    """A reading measured at `at`, received a minute later unless `received` says when."""
    return store.add(p, dev, type_, at, value, value2, received_at=received or at + MIN, **kw)


def by_key(store, p, key):
    return [a for a in store.alerts(p) if a["key"] == key]


def history(store, alert_id) -> list[dict]:
    with psycopg.connect(store.url) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT event, detail FROM alert_events WHERE alert_id = %s ORDER BY id", (alert_id,)
        ).fetchall()


# --- heart failure: daily morning weights (trend_weight) --------------------------------------


def test_daily_morning_weights_open_weight_gain_on_the_third_morning(store, on_plan, now):
    """The issue's case: 80.0, 80.5, 81.2, 82.3 kg at about the same clock time."""
    p, dev = on_plan("heart_failure")
    times = [morning(3, now, 7, 10), morning(2, now, 7, 0), morning(1, now, 7, 25)]
    times.append(morning(0, now, 8, 40))  # 90 minutes later on the clock than day 0
    ids = []
    for t, kg in zip(times, (80.0, 80.5, 81.2, 82.3), strict=True):
        ids.append(arrive(store, p, dev, "body_weight", t, kg))
        r = store.cycle(t + 2 * MIN)
        opened = [a for a in r.opened if a["rule"] == "trend_weight"]
        assert bool(opened) is (t == times[-1]), (t, r.opened)
    [a] = by_key(store, p, "trend_weight")
    assert a["evidence"] == sorted([ids[0], ids[3]])
    assert a["details"]["gain_kg"] == 2.3
    assert a["details"]["measured_at"] == times[-1].astimezone(dt.UTC).isoformat()


@pytest.mark.parametrize(("later", "opens"), [(2 * H, True), (2 * H + MIN, False)])
def test_weight_routine_tolerance_edges_through_the_cycle(store, on_plan, now, later, opens):
    p, dev = on_plan("heart_failure")
    first = morning(3, now, 7, 0)
    arrive(store, p, dev, "body_weight", first, 80.0)
    store.cycle(first + 2 * MIN)
    last = first.astimezone(dt.UTC) + 72 * H + later
    arrive(store, p, dev, "body_weight", last, 82.1)
    r = store.cycle(last + 2 * MIN)
    assert bool([a for a in r.opened if a["rule"] == "trend_weight"]) is opens


def test_ten_days_of_weights_uploaded_at_once_are_judged_when_measured(store, on_plan, now):
    """A scale offline for ten days: a gain of 2.5 kg over days 5 to 8, then stable."""
    p, dev = on_plan("heart_failure")
    kg = [80.0, 80.1, 79.9, 80.0, 80.0, 80.8, 81.6, 82.5, 82.5, 82.4]
    ids = []
    for i, w in enumerate(kg):
        t = morning(9 - i, now, 7, 5 * i)
        ids.append(arrive(store, p, dev, "body_weight", t, w, received=now - 2 * MIN))
    r = store.cycle(now)
    opened = [a for a in r.opened if a["rule"] == "trend_weight"]
    assert len(opened) == 1
    [a] = by_key(store, p, "trend_weight")
    # The deviation is dated when it happened (day 8's weighing against day 5's), not now.
    assert a["details"]["newest"]["id"] == ids[7]
    assert a["details"]["lowest"]["id"] == ids[4]
    assert a["details"]["measured_at"] == morning(2, now, 7, 35).astimezone(dt.UTC).isoformat()
    assert a["evidence_until"] == morning(2, now, 7, 35)
    [opened_event] = [e for e in history(store, a["id"]) if e["event"] == "opened"]
    assert opened_event["detail"]["reason"] == "first"
    # At the scan time the weight is stable: the alert stays open for a clinician, marked
    # as no longer found.
    r = store.cycle(now + MIN)
    [a] = by_key(store, p, "trend_weight")
    assert a["status"] == "open" and a["cleared_at"] is not None


def test_weights_across_the_autumn_daylight_saving_change(store, on_plan):
    p, dev = on_plan("heart_failure")
    # 07:00 each morning, 2026-10-23 (CEST) to 2026-10-26 (CET): 73 real hours.
    days = [(23, 80.0), (24, 80.6), (25, 81.3), (26, 82.2)]
    for d, kg in days:
        t = local(2026, 10, d, 7, 0)
        arrive(store, p, dev, "body_weight", t, kg)
        r = store.cycle(t + 2 * MIN)
    assert [a["rule"] for a in r.opened] == ["trend_weight"]


def test_weights_across_the_spring_daylight_saving_change(store, on_plan):
    p, dev = on_plan("heart_failure")
    # 07:00 each morning, 2026-03-27 (CET) to 2026-03-30 (CEST): 71 real hours, and a
    # weighing 2 clock hours later on the last morning (73 h) still counts.
    for d, kg, hh in [(27, 80.0, 7), (28, 80.6, 7), (29, 81.3, 7), (30, 82.2, 9)]:
        t = local(2026, 3, d, hh, 0)
        arrive(store, p, dev, "body_weight", t, kg)
        r = store.cycle(t + 2 * MIN)
    assert [a["rule"] for a in r.opened] == ["trend_weight"]


# --- hypertension: ESH twice-daily home blood pressure (trend_bp_mean) ------------------------


def _esh_week(store, p, dev, now, sys, dia, *, received=None, skip_days=()):
    """Seven days ending today, two readings in the morning and two in the evening."""
    out = []
    for days_ago in range(6, -1, -1):
        if days_ago in skip_days:
            continue
        for hh, mm in ((7, 0), (7, 2), (20, 0), (20, 2)):
            t = morning(days_ago, now, hh, mm)
            if t > now:
                continue
            out.append(arrive(store, p, dev, "blood_pressure", t, sys, dia, received=received))
    return out


def test_esh_home_series_opens_high_home_mean(store, on_plan, now):
    p, dev = on_plan("hypertension")
    _esh_week(store, p, dev, now, 142, 88, received=now - MIN)
    r = store.cycle(now)
    assert "trend_bp_mean" in [a["rule"] for a in r.opened]
    [a] = by_key(store, p, "trend_bp_mean")
    assert a["details"]["readings_averaged"] >= 12
    assert a["details"]["systolic_mean"] == 142.0


def test_esh_normal_home_series_opens_nothing(store, on_plan, now):
    p, dev = on_plan("hypertension")
    _esh_week(store, p, dev, now, 126, 78, received=now - MIN)
    r = store.cycle(now)
    assert r.opened == []


def test_offline_days_uploaded_late_join_the_series_by_measurement_time(store, on_plan, now):
    """The cuff was offline on days 4 and 3 before today; its readings arrive today."""
    p, dev = on_plan("hypertension")
    at = morning(0, now, 21, 0) if morning(0, now, 21, 0) <= now else now
    # The days the cuff was online arrived on time; the cycles then saw too few readings.
    for days_ago in (6, 2, 1):
        for hh, mm in ((7, 0), (7, 2), (20, 0), (20, 2)):
            t = morning(days_ago, now, hh, mm)
            arrive(store, p, dev, "blood_pressure", t, 141, 87)
    r = store.cycle(morning(1, now, 20, 10))
    assert by_key(store, p, "trend_bp_mean") == []
    assert r.readings_in_window == 12
    for days_ago in (4, 3):
        for hh, mm in ((7, 0), (7, 2), (20, 0), (20, 2)):
            t = morning(days_ago, now, hh, mm)
            arrive(store, p, dev, "blood_pressure", t, 141, 87, received=at - MIN)
    r = store.cycle(at)
    assert "trend_bp_mean" in [a["rule"] for a in r.opened]


# --- COPD: oximetry three times a day (spo2_drop) ---------------------------------------------


def _oximetry(store, p, dev, now, days, value, *, received=None, start_days_ago):
    ids = []
    for d in range(days):
        for hh in (8, 14, 20):
            t = morning(start_days_ago - d, now, hh, 0)
            if t > now:
                continue
            ids.append(arrive(store, p, dev, "spo2", t, value, received=received, on_oxygen=False))
    return ids


def test_copd_oximetry_drop_from_the_patients_baseline(store, on_plan, now):
    p, dev = on_plan("copd", "spo2:90:")
    _oximetry(store, p, dev, now, 7, 96, start_days_ago=8)
    t = morning(1, now, 8, 0)
    arrive(store, p, dev, "spo2", t, 93, on_oxygen=False)
    r = store.cycle(t + 2 * MIN)
    assert "spo2_drop" in [a["rule"] for a in r.opened]
    [a] = by_key(store, p, "spo2_drop")
    assert a["details"]["baseline"] == 96.0 and a["details"]["drop"] == 3.0


def test_copd_drop_uploaded_late_is_judged_against_the_baseline_before_it(store, on_plan, now):
    """The oximeter was offline: a drop five days ago, recovered since, arrives today."""
    p, dev = on_plan("copd", "spo2:90:")
    _oximetry(store, p, dev, now, 7, 96, start_days_ago=12)
    store.cycle(morning(5, now, 7, 0))
    dropped = arrive(store, p, dev, "spo2", morning(5, now, 8, 0), 92, received=now - MIN)
    _oximetry(store, p, dev, now, 5, 96, start_days_ago=4, received=now - MIN)
    r = store.cycle(now)
    assert "spo2_drop" in [a["rule"] for a in r.opened]
    [a] = by_key(store, p, "spo2_drop")
    assert a["evidence"] == [dropped]
    assert a["details"]["measured_at"] == morning(5, now, 8, 0).astimezone(dt.UTC).isoformat()


# --- episodes: dismiss-then-normal, dismiss-then-worse, resolve-then-new-episode -------------


def _news2_set(store, p, dev, t, *, rr=16, spo2=96, pulse=70, temp=37.0, sys=130):
    arrive(store, p, dev, "respiratory_rate", t, rr)
    arrive(store, p, dev, "spo2", t, spo2, on_oxygen=False)
    arrive(store, p, dev, "heart_rate", t, pulse)
    arrive(store, p, dev, "body_temperature", t, temp)
    arrive(store, p, dev, "blood_pressure", t, sys, 80)


def test_dismissed_news2_stays_dismissed_when_a_normal_reading_arrives(store, on_plan, now):
    p, dev = on_plan("copd", "spo2:85:")
    t0 = now - 6 * H
    _news2_set(store, p, dev, t0, rr=22, pulse=95)  # 2 + 1 = NEWS2 3
    r = store.cycle(t0 + 2 * MIN)
    [a] = by_key(store, p, "news2")
    assert a["details"]["score"] == 3
    act(store.url, a["id"], "dismiss", note="known, stable")
    for k in range(1, 4):  # normal readings, the score unchanged: the same episode
        t = t0 + k * H
        arrive(store, p, dev, "body_temperature", t, 36.9)
        r = store.cycle(t + 2 * MIN)
        assert [x for x in r.opened if x["rule"] == "news2"] == []
    assert [x["status"] for x in by_key(store, p, "news2")] == ["dismissed"]


def test_dismissed_news2_opens_again_when_the_score_worsens(store, on_plan, now):
    p, dev = on_plan("copd", "spo2:85:")
    t0 = now - 6 * H
    _news2_set(store, p, dev, t0, rr=22, pulse=95)  # NEWS2 3, low
    store.cycle(t0 + 2 * MIN)
    [a] = by_key(store, p, "news2")
    act(store.url, a["id"], "dismiss")
    t1 = t0 + H
    arrive(store, p, dev, "heart_rate", t1, 112)  # pulse 2 points: NEWS2 4, still low
    r = store.cycle(t1 + 2 * MIN)
    [new] = [x for x in r.opened if x["rule"] == "news2"]
    assert new["reason"] == "worse" and new["previous"] == str(a["id"])
    alerts = by_key(store, p, "news2")
    assert [x["status"] for x in alerts] == ["dismissed", "open"]
    assert alerts[1]["previous_id"] == a["id"] and alerts[1]["open_reason"] == "worse"
    [opened] = [e for e in history(store, alerts[1]["id"]) if e["event"] == "opened"]
    assert opened["detail"]["reason"] == "worse"
    assert opened["detail"]["score"] == {"from": 3.0, "to": 4.0}
    assert opened["detail"]["previous"]["id"] == str(a["id"])
    assert opened["detail"]["previous"]["status"] == "dismissed"


def test_dismissed_threshold_stays_dismissed_on_the_same_value(store, on_plan, now):
    """SpO2 91 % under a limit of 92 %, dismissed; the next reading is 91 % again."""
    p, dev = on_plan("copd", "spo2:92:")
    t0 = now - 5 * H
    arrive(store, p, dev, "spo2", t0, 91, on_oxygen=False)
    store.cycle(t0 + 2 * MIN)
    [a] = by_key(store, p, "threshold:spo2")
    act(store.url, a["id"], "dismiss", note="her usual value")
    for k in (1, 2):
        t = t0 + k * H
        arrive(store, p, dev, "spo2", t, 91, on_oxygen=False)
        r = store.cycle(t + 2 * MIN)
        assert [x for x in r.opened if x["key"] == "threshold:spo2"] == []
    assert [x["status"] for x in by_key(store, p, "threshold:spo2")] == ["dismissed"]


def test_resolved_threshold_opens_a_new_episode_after_a_day_within_limits(store, on_plan, now):
    p, dev = on_plan("diabetes")
    t0 = now - 4 * DAY
    arrive(store, p, dev, "blood_glucose", t0, 3.5)
    store.cycle(t0 + 2 * MIN)
    [a] = by_key(store, p, "threshold:blood_glucose")
    assert a["severity"] == "medium"
    act(store.url, a["id"], "resolve", note="ate, re-measured")
    # Back within limits for six hours, then low again: the same episode.
    arrive(store, p, dev, "blood_glucose", t0 + H, 6.0)
    store.cycle(t0 + H + 2 * MIN)
    arrive(store, p, dev, "blood_glucose", t0 + 7 * H, 3.6)
    r = store.cycle(t0 + 7 * H + 2 * MIN)
    assert [x for x in r.opened if x["key"] == "threshold:blood_glucose"] == []
    # Back within limits for more than a day (cycles saw no deviation), then low: new.
    arrive(store, p, dev, "blood_glucose", t0 + 8 * H, 6.2)
    store.cycle(t0 + 8 * H + 2 * MIN)
    for k in range(12, 40, 6):
        t = t0 + k * H
        arrive(store, p, dev, "blood_glucose", t, 6.5)
        store.cycle(t + 2 * MIN)
    t = t0 + 40 * H
    arrive(store, p, dev, "blood_glucose", t, 3.5)
    r = store.cycle(t + 2 * MIN)
    [new] = [x for x in r.opened if x["key"] == "threshold:blood_glucose"]
    assert new["reason"] == "new_episode" and new["previous"] == str(a["id"])
    [opened] = [e for e in history(store, uuid.UUID(new["id"])) if e["event"] == "opened"]
    assert opened["detail"]["reason"] == "new_episode"
    assert opened["detail"]["within_limits_hours"] >= 24
    assert opened["detail"]["previous"]["status"] == "resolved"


def test_the_database_keeps_one_open_alert_per_problem_across_episodes(store, on_plan, now):
    p, dev = on_plan("diabetes")
    arrive(store, p, dev, "blood_glucose", now - H, 3.5)
    store.cycle(now - H + 2 * MIN)
    [a] = by_key(store, p, "threshold:blood_glucose")
    with psycopg.connect(store.url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO alerts (patient_id, key, rule, category, severity, current_severity,"
            " summary, due_at, open_reason, previous_id) SELECT patient_id, key, rule,"
            " category, severity, severity, summary, due_at, 'new_episode', id FROM alerts"
            " WHERE id = %s",
            (a["id"],),
        )


# --- late single readings, and what is logged and counted ------------------------------------


def test_a_late_out_of_range_reading_opens_an_alert_dated_when_measured(store, on_plan, now):
    p, dev = on_plan("diabetes")
    arrive(store, p, dev, "blood_glucose", now - 3 * H, 6.0)
    store.cycle(now - 3 * H + 2 * MIN)
    # Measured two days ago on a meter that synced only now; a normal value since.
    low = arrive(store, p, dev, "blood_glucose", now - 2 * DAY, 2.8, received=now - MIN)
    r = store.cycle(now)
    [new] = [x for x in r.opened if x["key"] == "threshold:blood_glucose"]
    assert new["severity"] == "high"
    [a] = by_key(store, p, "threshold:blood_glucose")
    assert a["evidence"] == [low]
    assert a["details"]["measured_at"] == (now - 2 * DAY).isoformat()


def test_opened_alerts_are_logged_without_health_data_and_counted(
    store, on_plan, now, caplog, conn
):
    p, dev = on_plan("diabetes")
    pnr = conn.execute("SELECT personnummer FROM patients WHERE id = %s", (p,)).fetchone()[0]
    counter = metrics.ALERT_CHANGES.labels(rule="threshold", event="opened")
    before = counter._value.get()
    arrive(store, p, dev, "blood_glucose", now - H, 2.7)
    with caplog.at_level(logging.INFO, logger="egenmon.alerts.engine"):
        r = store.cycle(now)
    [a] = r.opened
    assert counter._value.get() == before + 1
    lines = [m for m in caplog.messages if a["id"] in m]
    assert lines and "rule=threshold" in lines[0] and f"patient={p}" in lines[0]
    assert "severity=high" in lines[0]
    text = "\n".join(caplog.messages)
    assert pnr not in text and "2.7" not in text


# --- NEWS2: stale values with their age -----------------------------------------------------


def test_news2_shows_a_value_older_than_the_window_as_stale_with_its_age(store, on_plan, now):
    p, dev = on_plan("copd", "spo2:85:")
    old = now - 3 * DAY
    arrive(store, p, dev, "body_temperature", old, 39.5)  # would score 2 if it were fresh
    t = now - H
    arrive(store, p, dev, "respiratory_rate", t, 22)
    arrive(store, p, dev, "heart_rate", t, 95)
    arrive(store, p, dev, "spo2", t, 96, on_oxygen=False)
    store.cycle(now)
    [a] = by_key(store, p, "news2")
    assert a["details"]["score"] == 3  # 2 (rr) + 1 (pulse); the old temperature not scored
    assert a["details"]["stale"] == {"temperature": {"value": 39.5, "age_minutes": 3 * 24 * 60}}
    assert "temperature" not in a["details"]["missing"]
    assert "systolic_bp" in a["details"]["missing"]  # never measured
    assert "temperature 72 h old" in a["summary"]


def test_news2_scores_only_within_the_freshness_window_the_plan_sets(store, on_plan, now, cli):
    p, dev = on_plan("copd", "spo2:85:")
    r = cli("plan", "set", "--patient", p, "--protocol", "copd", "--threshold", "spo2:85:",
            "--news2-freshness-hours", "6", "--json")  # fmt: skip
    assert r.code == 0, r.err
    arrive(store, p, dev, "respiratory_rate", now - 8 * H, 26)  # 3 points, but 8 hours old
    arrive(store, p, dev, "heart_rate", now - H, 95)
    store.cycle(now)
    [a] = by_key(store, p, "news2")
    assert a["details"]["score"] == 1 and a["details"]["freshness_hours"] == 6.0
    assert a["details"]["stale"]["respiratory_rate"] == {"value": 26.0, "age_minutes": 8 * 60}


def test_a_plan_cannot_widen_the_news2_freshness_window(cli, device):
    r = cli("plan", "set", "--patient", device["patient"], "--protocol", "copd",
            "--news2-freshness-hours", "48")  # fmt: skip
    assert r.code != 0 and "freshness" in r.err


def test_run_once_judges_a_late_upload_and_says_when_it_happened(store, on_plan, now, cli):
    """`egenmon alerts run-once`, as an operator runs it, on a scale's late upload."""
    p, dev = on_plan("heart_failure")
    real_now = dt.datetime.now(dt.UTC)
    for i, kg in enumerate([80.0, 80.0, 80.9, 81.7, 82.4, 82.4]):
        t = morning(8 - i, real_now, 7, 0)
        arrive(store, p, dev, "body_weight", t, kg, received=real_now - MIN)
    r = cli("alerts", "run-once", "--json")
    assert r.code == 0, r.err
    # (and missing data: no weight for three days)
    assert sorted(a["rule"] for a in r.json["opened"]) == ["missing_data", "trend_weight"]
    assert r.json["anchors"] >= 5
    [a] = by_key(store, p, "trend_weight")
    assert a["details"]["measured_at"] == morning(4, real_now, 7, 0).astimezone(dt.UTC).isoformat()
