"""The set-based scan against a real database: it finds exactly what the pure rules find
on each patient's full history, whatever windows, trimming, id stand-ins and partitions it
uses to go fast."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest

from egenmon.alerts import engine, monitoring
from egenmon.alerts.rules import (
    DeviceStatus,
    Reading,
    evaluate_at,
    evaluate_patient,
    merge_findings,
)
from egenmon.domain.ids import observation_id
from egenmon.store import devices as devices_store
from egenmon.store import plans
from tests.alerts.conftest import STOCKHOLM, store_simulated
from tests.conftest import make_personnummer

CASES = [
    ("deteriorating", "heart_failure"),
    ("stable", "heart_failure"),
    ("deteriorating", "copd"),
    ("stable", "hypertension"),
    ("deteriorating", "hypertension"),
    ("deteriorating", "diabetes"),
    ("stable", None),  # no plan: the general protocol
]


@pytest.fixture
def population(cli, care_unit, database_url):
    """Simulated patients, one per case, each with a device and 20 days of readings."""
    out = []
    for i, (scenario, protocol) in enumerate(CASES):
        r = cli(
            "patient",
            "add",
            "--personnummer",
            make_personnummer(),
            "--care-unit",
            care_unit,
            "--json",
        )
        pid = r.json["id"]
        if protocol:
            assert cli("plan", "set", "--patient", pid, "--protocol", protocol).code == 0
        dev = f"sim-{i}-{uuid.uuid4().hex[:6]}"
        r = cli(
            "device",
            "add",
            "--patient",
            pid,
            "--model",
            "Hub",
            "--id",
            dev,
            "--since",
            "2020-01-01T00:00:00Z",
        )
        assert r.code == 0, r.err
        store_simulated(database_url, dev, pid, scenario, protocol or "general", onset_days_ago=3.5)
        out.append(pid)
    return out


def oracle(url: str, pid: str, now: dt.datetime) -> set[tuple]:
    """evaluate_patient over every stored reading of the patient, with real ids, and
    evaluate_at the measurement time of every new reading (all of them are: stored just
    now), merged as the engine merges them."""
    with psycopg.connect(url, options="-c TimeZone=UTC") as conn:
        rows = conn.execute(
            "SELECT time, type, value, value2, on_oxygen, dedup_key FROM readings"
            " WHERE patient_id = %s",
            (pid,),
        ).fetchall()
        plan = monitoring.from_row(plans.get_plan(conn, uuid.UUID(pid)))
        devices = [
            DeviceStatus(d, seen, since)
            for _, d, seen, since in devices_store.load_devices(
                conn, now, now, now - dt.timedelta(days=30)
            )
            if _ == pid
        ]
    readings = [Reading(observation_id(t, k), t, ty, v, v2, ox) for t, ty, v, v2, ox, k in rows]
    found = evaluate_patient(readings, plan, now, devices, tz=STOCKHOLM)
    newest: dict[str, dt.datetime] = {}
    for r in readings:
        newest[r.type] = max(r.time, newest.get(r.type, r.time))
    anchors: dict[dt.datetime, set[str]] = {}
    for r in readings:
        if not (r.time == newest[r.type] and now - r.time <= engine.ON_TIME):
            anchors.setdefault(r.time, set()).add(r.type)
    pairs = [(f, now) for f in found]
    for at, types in anchors.items():
        pairs += [(f, at) for f in evaluate_at(readings, plan, at, types, tz=STOCKHOLM)]
    found = merge_findings(pairs)
    return {(f.key, f.severity, f.evidence, repr(f.details)) for f in found}


def test_scan_finds_what_the_rules_find_on_the_full_history(database_url, population):
    now = dt.datetime.now(dt.UTC)
    result = engine.scan(database_url, now, STOCKHOLM)
    assert result.patients == len(CASES) and result.errors == 0
    got: dict[str, set] = {p: set() for p in population}
    for pid, f in result.findings:
        got[str(pid)].add((f.key, f.severity, f.evidence, repr(f.details)))
    for pid in population:
        assert got[pid] == oracle(database_url, pid, now), pid
    # The deteriorating patients raise something, the stable ones nothing.
    for pid, (scenario, _) in zip(population, CASES, strict=True):
        assert bool(got[pid]) == (scenario == "deteriorating"), (pid, scenario, got[pid])


def test_partitions_cover_every_patient_once(database_url, population):
    now = dt.datetime.now(dt.UTC)
    whole = engine.scan(database_url, now, STOCKHOLM)
    parts = [engine.scan(database_url, now, STOCKHOLM, lo, hi) for lo, hi in engine.partitions(3)]
    assert sum(p.patients for p in parts) == whole.patients
    assert sum(p.readings for p in parts) == whole.readings
    key = sorted((str(pid), f.key, f.evidence) for pid, f in whole.findings)
    assert sorted((str(pid), f.key, f.evidence) for p in parts for pid, f in p.findings) == key


def test_worker_processes_give_the_same_cycle(database_url, population):
    now = dt.datetime.now(dt.UTC)
    single = engine.scan_all(database_url, now, STOCKHOLM, 1)
    double = engine.scan_all(database_url, now, STOCKHOLM, 2)
    assert sorted((str(p), f.key) for p, f in double.findings) == sorted(
        (str(p), f.key) for p, f in single.findings
    )


def test_partitions_split_the_id_space():
    parts = engine.partitions(4)
    assert parts[0][0] is None and parts[-1][1] is None
    assert [hi for _, hi in parts[:-1]] == [lo for lo, _ in parts[1:]]
    assert parts[2][0] == uuid.UUID("80000000-0000-0000-0000-000000000000")
    assert engine.partitions(1) == [(None, None)]


def test_run_once_prints_what_it_opened(cli, database_url, population):
    r = cli("alerts", "run-once", "--json")
    assert r.code == 0, r.err
    out = r.json
    assert out["patients"] == len(CASES) and out["errors"] == 0
    assert out["opened"] and {a["rule"] for a in out["opened"]} >= {"spo2_drop"}
    assert all(set(a) >= {"id", "patient_id", "rule", "severity"} for a in out["opened"])
    again = cli("alerts", "run-once", "--json").json
    assert again["opened"] == [] and again["escalated"] == []
    text = cli("alerts", "run-once")
    assert text.code == 0 and "0 opened" in text.out
