"""`egenmon plan set|show`: the contract's form, stored with who and when, and the limits
in force taking effect in the next cycle."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg

H = dt.timedelta(hours=1)


def test_plan_set_as_in_the_contract(cli, patient, database_url):
    r = cli(
        "plan",
        "set",
        "--patient",
        patient,
        "--protocol",
        "heart_failure",
        "--threshold",
        "blood_pressure:90:150",
        "--threshold",
        "body_weight::95",
        "--set-by",
        "dr-lind",
        "--json",
    )
    assert r.code == 0, r.err
    plan = r.json
    assert (plan["protocol"], plan["version"], plan["set_by"]) == ("heart_failure", 1, "dr-lind")
    assert plan["thresholds"] == {
        "body_weight": {"low": None, "high": 95.0, "severity": "medium"},
        "systolic": {"low": 90.0, "high": 150.0, "severity": "medium"},
    }
    assert plan["expected"] == {"blood_pressure": 36.0, "body_weight": 36.0}
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT set_by, set_at, version FROM monitoring_plan_history WHERE patient_id = %s",
            (patient,),
        ).fetchone()
    assert row[0] == "dr-lind" and row[2] == 1
    assert abs(row[1] - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_every_change_is_a_new_version_kept_in_history(cli, patient, database_url):
    for protocol in ("general", "copd", "copd"):
        assert cli("plan", "set", "--patient", patient, "--protocol", protocol).code == 0
    r = cli("plan", "set", "--patient", patient, "--protocol", "copd", "--scale2", "--json")
    assert r.json["version"] == 4 and r.json["news2_scale2"] is True
    assert r.json["spo2_target"] == [88.0, 92.0]
    assert r.json["set_by"].startswith("cli:")
    with psycopg.connect(database_url) as conn:
        history = conn.execute(
            "SELECT version, protocol FROM monitoring_plan_history"
            " WHERE patient_id = %s ORDER BY version",
            (patient,),
        ).fetchall()
        assert history == [(1, "general"), (2, "copd"), (3, "copd"), (4, "copd")]
        try:
            conn.execute("DELETE FROM monitoring_plan_history")
        except psycopg.errors.RaiseException as e:
            assert "append-only" in str(e)
        else:
            raise AssertionError("the plan history accepted a delete")
    shown = cli("plan", "show", "--patient", patient, "--json").json
    assert shown["version"] == 4 and shown["default"] is False


def test_plan_show_of_a_patient_without_a_plan_is_general(cli, patient):
    shown = cli("plan", "show", "--patient", patient, "--json").json
    assert (shown["protocol"], shown["default"], shown["expected"]) == ("general", True, {})
    assert shown["effective_thresholds"]["systolic"]["alarms"][0]["limit"] == 180


def test_plan_errors_name_what_is_wrong(cli, patient):
    r = cli("plan", "set", "--patient", patient, "--protocol", "asthma")
    assert r.code == 2 and "asthma" in r.err
    r = cli(
        "plan",
        "set",
        "--patient",
        patient,
        "--protocol",
        "general",
        "--threshold",
        "systolic:150:90",
    )
    assert r.code == 2 and "below" in r.err
    r = cli(
        "plan", "set", "--patient", patient, "--protocol", "general", "--threshold", "systolic:90"
    )
    assert r.code == 2 and "TYPE:LOW:HIGH" in r.err
    r = cli("plan", "set", "--patient", str(uuid.uuid4()), "--protocol", "general")
    assert r.code == 2 and "unknown patient" in r.err
    r = cli("plan", "set", "--patient", patient, "--protocol", "copd", "--spo2-target", "92")
    assert r.code == 2 and "LOW:HIGH" in r.err
    r = cli("plan", "set", "--patient", "not-an-id", "--protocol", "copd")
    assert r.code == 2


def test_individual_limits_take_effect_in_the_next_cycle(cli, store, device, now):
    p, dev = device["patient"], device["id"]
    store.add(p, dev, "blood_pressure", now - H, 158, 84)
    assert store.cycle(now).opened == []  # below the 180/110 default
    r = cli(
        "plan",
        "set",
        "--patient",
        p,
        "--protocol",
        "hypertension",
        "--threshold",
        "systolic:90:150",
    )
    assert r.code == 0
    opened = store.cycle(now + dt.timedelta(minutes=1)).opened
    assert [(a["rule"], a["severity"]) for a in opened] == [("threshold", "medium")]
    [a] = store.alerts(p)
    assert a["details"]["crossed"][0]["limit"] == 150
