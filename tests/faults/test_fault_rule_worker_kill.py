"""Sharded instant rules across real `egenmon serve` processes: two workers split the
shards, a reading sent to one for a patient of the other's shard opens its alert through
NOTIFY, and when one is killed with -9 the other takes its shards over within 15 s and
judges what arrived meanwhile (the scan runs once an hour here, so only the instant path
can open these alerts), opening nothing twice."""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
import uuid
from collections import Counter

import httpx
import psycopg
import pytest

from egenmon.store import shards

KILL_TAKEOVER_S = 15.0


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def owners(url: str) -> Counter:
    with psycopg.connect(url) as conn:
        return Counter(
            owner
            for owner, expires in shards.owners(conn).values()
            if owner is not None and expires is not None and expires > dt.datetime.now(dt.UTC)
        )


def threshold_alerts(url: str, patient: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id, opened_at FROM alerts WHERE patient_id = %s AND key = 'threshold:spo2'",
            (patient,),
        ).fetchall()


def add_device(cli, care_unit: str) -> dict:
    from tests.conftest import make_personnummer

    r = cli("patient", "add", "--personnummer", make_personnummer(), "--care-unit", care_unit,
            "--json")  # fmt: skip
    assert r.code == 0, r.err
    pid = r.json["id"]
    r = cli("device", "add", "--patient", pid, "--model", "Oximeter", "--id",
            f"ox-{uuid.uuid4().hex[:10]}", "--since", "2020-01-01T00:00:00Z", "--json")  # fmt: skip
    assert r.code == 0, r.err
    return {**r.json, "patient": pid}


def critical(base: str, device: dict) -> None:
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    r = httpx.post(
        base + "/api/v1/readings",
        json={"readings": [{"type": "spo2", "time": now.isoformat(), "value": 84, "unit": "%"}]},
        headers={"Authorization": "Bearer " + device["secret"]},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text


@pytest.fixture
def slow_scan(monkeypatch):
    monkeypatch.setenv("EGENMON_SCHEDULER_INTERVAL_S", "3600")


def test_two_workers_split_the_shards_and_one_takes_over_from_a_killed_one(
    env, slow_scan, serve, database_url, cli, care_unit
):
    devices = [add_device(cli, care_unit) for _ in range(8)]
    base_a, a = serve("--no-mqtt")
    assert owners(database_url) == {f"{os.uname().nodename}:{a.pid}": shards.SHARDS}
    _, b = serve("--no-mqtt")
    node_b = f"{os.uname().nodename}:{b.pid}"
    wait_for(
        lambda: sorted(owners(database_url).values()) == [32, 32], 15, "the shards to be split"
    )
    with psycopg.connect(database_url) as conn:
        of_b = {s for s, (owner, _) in shards.owners(conn).items() if owner == node_b}
    in_b = [d for d in devices if shards.shard_of(uuid.UUID(d["patient"])) in of_b]
    assert len(in_b) >= 2, "eight patients, all in one half of the shards: try again"
    first, second = in_b[:2]

    # Sent to A, judged by B (NOTIFY): B owns the patient's shard.
    critical(base_a, first)
    wait_for(lambda: threshold_alerts(database_url, first["patient"]), 10, "B's alert")

    os.kill(b.pid, signal.SIGKILL)
    b.wait(10)
    killed = time.monotonic()
    # Sent while nobody owns the shard: A takes it over and catches up.
    critical(base_a, second)
    wait_for(
        lambda: threshold_alerts(database_url, second["patient"]),
        KILL_TAKEOVER_S,
        "the alert after the takeover",
    )
    assert time.monotonic() - killed <= KILL_TAKEOVER_S
    wait_for(
        lambda: owners(database_url) == {f"{os.uname().nodename}:{a.pid}": shards.SHARDS},
        5,
        "A to own every shard",
    )
    # The catch-up judged the first patient again: still one alert.
    assert len(threshold_alerts(database_url, first["patient"])) == 1
    assert len(threshold_alerts(database_url, second["patient"])) == 1
