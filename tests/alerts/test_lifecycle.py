"""The alert lifecycle against a real database: one open alert per deviation, new evidence,
escalation, closing without re-opening on old readings, clearing, late data."""

from __future__ import annotations

import datetime as dt
import threading

import psycopg
import pytest

from tests.alerts.conftest import act

H = dt.timedelta(hours=1)


@pytest.fixture
def hypertension(cli, device):
    """A patient on the hypertension protocol with a bound device: (patient, device id)."""
    p = device["patient"]
    r = cli("plan", "set", "--patient", p, "--protocol", "hypertension", "--json")
    assert r.code == 0, r.err
    return p, device["id"]


def events(store, alert_id) -> list[str]:
    with psycopg.connect(store.url) as conn:
        rows = conn.execute(
            "SELECT event FROM alert_events WHERE alert_id = %s ORDER BY id", (alert_id,)
        ).fetchall()
    return [r[0] for r in rows]


def test_high_blood_pressure_opens_one_threshold_alert(store, hypertension, now):
    p, dev = hypertension
    oid = store.add(p, dev, "blood_pressure", now - H, 185, 100)
    r = store.cycle(now)
    assert [(a["rule"], a["severity"], a["category"]) for a in r.opened] == [
        ("threshold", "high", "clinical")
    ]
    [a] = store.alerts(p)
    assert (a["key"], a["status"], a["evidence"]) == ("threshold:blood_pressure", "open", [oid])
    assert a["due_at"] == now + H  # high: contact within the hour
    assert a["details"]["crossed"][0]["quantity"] == "systolic"
    assert events(store, a["id"]) == ["opened"]


def test_the_same_readings_again_change_nothing(store, hypertension, now):
    p, dev = hypertension
    store.add(p, dev, "blood_pressure", now - H, 185, 100)
    store.cycle(now)
    again = store.cycle(now + dt.timedelta(minutes=1))
    assert (again.opened, again.updated, again.escalated) == ([], [], [])
    assert len(store.alerts(p)) == 1


def test_new_evidence_updates_the_open_alert(store, hypertension, now):
    p, dev = hypertension
    first = store.add(p, dev, "blood_pressure", now - 2 * H, 182, 100)
    store.cycle(now - H)
    second = store.add(p, dev, "blood_pressure", now - H / 2, 184, 104)
    r = store.cycle(now)
    assert r.opened == [] and len(r.updated) == 1
    [a] = store.alerts(p)
    assert a["evidence"] == [first, second]  # oldest first: ids sort by measurement time
    assert a["details"]["value"] == 184
    assert events(store, a["id"]) == ["opened", "updated"]


def test_a_worse_finding_escalates_and_notifies_again(store, cli, device, now, receiver):
    p, dev = device["patient"], device["id"]
    assert cli("webhook", "add", "--url", receiver.url, "--secret", "s3cret").code == 0
    store.add(p, dev, "body_temperature", now - 2 * H, 38.2)  # fever: low
    opened = store.cycle(now - H).opened
    # NEWS2 scores the fever too (1 point: low).
    assert sorted((a["key"], a["severity"]) for a in opened) == [
        ("news2", "low"),
        ("threshold:body_temperature", "low"),
    ]
    store.add(p, dev, "body_temperature", now - H / 2, 39.4)  # >= 39.1: medium
    r = store.cycle(now)
    assert [(a["key"], a["severity"], a["from"]) for a in r.escalated] == [
        ("threshold:body_temperature", "medium", "low")
    ]
    [a] = [x for x in store.alerts(p) if x["key"] == "threshold:body_temperature"]
    assert a["severity"] == a["current_severity"] == "medium"
    assert a["due_at"] < a["opened_at"] + dt.timedelta(days=3)  # moved earlier
    assert events(store, a["id"]) == ["opened", "escalated"]
    with psycopg.connect(store.url) as conn:
        outbox = conn.execute(
            "SELECT event, payload->'alert'->>'severity' FROM webhook_deliveries"
            " WHERE alert_id = %s ORDER BY id",
            (a["id"],),
        ).fetchall()
    assert outbox == [("opened", "low"), ("escalated", "medium")]


def test_a_milder_finding_does_not_lower_the_severity(store, hypertension, now):
    p, dev = hypertension
    store.add(p, dev, "blood_pressure", now - 2 * H, 185, 100)  # high
    store.cycle(now - H)
    store.add(p, dev, "blood_pressure", now - H / 2, 85, 60)  # systolic < 90: high as well
    store.add(p, dev, "body_temperature", now - H / 2, 38.5)
    store.cycle(now)
    a = {x["key"]: x for x in store.alerts(p)}
    assert a["threshold:blood_pressure"]["severity"] == "high"


def test_condition_that_clears_stays_open_until_a_clinician_resolves_it(store, hypertension, now):
    p, dev = hypertension
    store.add(p, dev, "blood_pressure", now - 2 * H, 185, 100)
    store.cycle(now - H)
    store.add(p, dev, "blood_pressure", now - H / 2, 128, 80)  # re-measured: normal
    r = store.cycle(now)
    assert len(r.cleared) == 1
    [a] = store.alerts(p)
    assert a["status"] == "open" and a["cleared_at"] == now
    store.add(p, dev, "blood_pressure", now + H / 2, 190, 100)  # high again
    r = store.cycle(now + H)
    assert len(r.updated) == 1 and r.opened == []
    [a] = store.alerts(p)
    assert a["cleared_at"] is None
    assert events(store, a["id"]) == ["opened", "cleared", "updated"]


@pytest.mark.parametrize("action", ["resolve", "dismiss"])
def test_closing_does_not_reopen_on_the_same_readings(store, hypertension, now, action):
    p, dev = hypertension
    store.add(p, dev, "blood_pressure", now - 2 * H, 185, 100)
    store.cycle(now - H)
    [a] = store.alerts(p)
    closed = act(store.url, a["id"], action, who="dr-lind", note="called the patient")
    assert closed["status"] == {"resolve": "resolved", "dismiss": "dismissed"}[action]
    assert closed[f"{closed['status']}_by"] == "dr-lind"
    assert closed["notes"][-1]["note"] == "called the patient"
    r = store.cycle(now)
    assert r.opened == []
    assert [x["status"] for x in store.alerts(p)] == [closed["status"]]
    # A newer reading of the same deviation is the same episode, judged: no new alert.
    store.add(p, dev, "blood_pressure", now - H / 2, 186, 101)
    r = store.cycle(now)
    assert r.opened == []
    assert [x["status"] for x in store.alerts(p)] == [closed["status"]]


def test_acknowledge_then_resolve_records_who_and_when(store, hypertension, now):
    p, dev = hypertension
    store.add(p, dev, "blood_pressure", now - H, 185, 100)
    store.cycle(now)
    [a] = store.alerts(p)
    acked = act(store.url, a["id"], "acknowledge", who="nurse-ek", note="will call")
    assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == "nurse-ek"
    # An acknowledged alert is still the one open alert for the deviation.
    store.add(p, dev, "blood_pressure", now - H / 2, 187, 100)
    assert store.cycle(now).opened == []
    done = act(store.url, a["id"], "resolve", who="dr-lind", note="medication changed")
    assert done["status"] == "resolved" and done["acknowledged_by"] == "nurse-ek"
    assert [n["action"] for n in done["notes"]] == ["acknowledge", "resolve"]
    assert events(store, a["id"]) == ["opened", "acknowledged", "updated", "resolved"]


def test_actions_that_do_not_apply_are_refused(store, hypertension, now):
    from egenmon.alerts.lifecycle import TransitionError

    p, dev = hypertension
    store.add(p, dev, "blood_pressure", now - H, 185, 100)
    store.cycle(now)
    [a] = store.alerts(p)
    act(store.url, a["id"], "dismiss")
    for action in ("acknowledge", "resolve", "dismiss"):
        with pytest.raises(TransitionError):
            act(store.url, a["id"], action)


def test_one_open_alert_per_key_even_under_concurrent_cycles(store, hypertension, now):
    p, dev = hypertension
    store.add(p, dev, "blood_pressure", now - H, 185, 100)
    results, errors = [], []

    def run() -> None:
        try:
            results.append(store.cycle(now))
        except Exception as e:  # noqa: BLE001  collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(len(r.opened) for r in results) == 1
    assert len(store.alerts(p)) == 1


def test_the_database_refuses_a_second_open_alert_for_a_key(store, hypertension, now):
    p, dev = hypertension
    store.add(p, dev, "blood_pressure", now - H, 185, 100)
    store.cycle(now)
    with psycopg.connect(store.url) as conn, pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute(
            "INSERT INTO alerts (patient_id, rule, key, category, severity, current_severity,"
            " summary, due_at, status, acknowledged_at) SELECT patient_id, rule, key, category,"
            " severity, severity, summary, due_at, 'acknowledged', now() FROM alerts"
        )


def test_late_reading_is_evaluated_at_its_measurement_time(store, hypertension, now):
    p, dev = hypertension
    store.add(p, dev, "blood_pressure", now - 12 * H, 125, 80)
    assert store.cycle(now).opened == []
    # A device offline for hours sends an older high reading now.
    late = store.add(p, dev, "blood_pressure", now - 10 * H, 190, 112, received_at=now)
    r = store.cycle(now + dt.timedelta(minutes=1))
    assert [x["rule"] for x in r.opened] == ["threshold"]
    [a] = store.alerts(p)
    assert a["evidence"] == [late]
    assert a["details"]["time"] == (now - 10 * H).isoformat()
    assert a["evidence_until"] == now - 10 * H


def test_stable_patient_raises_nothing(store, cli, device, now):
    p, dev = device["patient"], device["id"]
    assert cli("plan", "set", "--patient", p, "--protocol", "heart_failure").code == 0
    for d in range(7):
        t = now - dt.timedelta(days=d, hours=1)
        store.add(p, dev, "blood_pressure", t, 124, 78)
        store.add(p, dev, "heart_rate", t, 68)
        store.add(p, dev, "body_weight", t, 80.2 + (d % 2) * 0.3)
        store.add(p, dev, "spo2", t, 97, on_oxygen=False)
        store.add(p, dev, "body_temperature", t, 36.8)
        store.add(p, dev, "respiratory_rate", t, 14)
    r = store.cycle(now)
    assert r.patients == 1 and r.readings_in_window > 10
    assert (r.opened, r.findings, store.alerts(p)) == ([], 0, [])


def test_patient_without_a_plan_is_watched_with_the_general_protocol(store, device, now):
    p, dev = device["patient"], device["id"]
    store.add(p, dev, "blood_glucose", now - H, 2.6)  # < 3.0: level 2 hypoglycaemia
    r = store.cycle(now)
    assert [(a["rule"], a["severity"]) for a in r.opened] == [("threshold", "high")]


def test_silent_device_is_a_technical_deviation_not_a_clinical_one(store, cli, device, now, conn):
    p, dev = device["patient"], device["id"]
    assert cli("plan", "set", "--patient", p, "--protocol", "heart_failure").code == 0
    conn.execute("UPDATE devices SET created_at = %s WHERE id = %s", (now - 30 * 24 * H, dev))
    # The plan expects weight and blood pressure daily; the device's last readings came
    # four days ago.
    old = now - 96 * H
    store.add(p, dev, "body_weight", old, 80.0, received_at=old)
    store.add(p, dev, "blood_pressure", old, 125, 80, received_at=old)
    r = store.cycle(now)
    assert [(a["rule"], a["category"]) for a in r.opened] == [("device_inactive", "technical")]
    [a] = store.alerts(p)
    assert a["key"] == f"device_inactive:{device['id']}"
    assert a["details"]["audience"] == "technical"
    assert {m["type"] for m in a["details"]["withheld_missing_data"]} == {
        "body_weight",
        "blood_pressure",
    }
    # Still silent: no second alert, even after it is resolved.
    act(store.url, a["id"], "resolve")
    assert store.cycle(now + H).opened == []


def test_a_device_registered_just_now_is_not_inactive_for_its_backdated_binding(
    store, cli, device, now
):
    # Bound since 2020 (to take in stored history) but registered a moment ago: it has not
    # been silent for 72 hours of anyone's observation.
    p = device["patient"]
    assert cli("plan", "set", "--patient", p, "--protocol", "heart_failure").code == 0
    r = store.cycle(now)
    assert r.opened == []  # neither inactive nor (with a plan set just now) missing data


def test_missing_measurement_with_a_working_device_is_clinical(store, cli, device, now):
    p, dev = device["patient"], device["id"]
    assert cli("plan", "set", "--patient", p, "--protocol", "heart_failure").code == 0
    old_weight = store.add(p, dev, "body_weight", now - 80 * H, 80.0)
    store.add(p, dev, "blood_pressure", now - 2 * H, 126, 80)  # the device works
    r = store.cycle(now)
    assert [(a["rule"], a["category"], a["severity"]) for a in r.opened] == [
        ("missing_data", "clinical", "low")
    ]
    [a] = store.alerts(p)
    [m] = a["details"]["missing"]
    assert (m["type"], m["since"]) == ("body_weight", (now - 80 * H).isoformat())
    assert f"missing:body_weight:{m['since']}" in a["basis"]
    assert old_weight  # older than the weight window: found by the newest-reading lookup
