"""The scheduler inside real `egenmon serve` processes: one leader among several, jobs once
per interval, takeover when the leader is killed, and the end-to-end path from a
deteriorating patient's readings to an alert, its care contact and a signed webhook."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time
import uuid

import httpx
import psycopg
import pytest

from egenmon.alerts.lifecycle import due_at
from egenmon.alerts.rules import news2_severity
from egenmon.auth import issue_token
from tests.alerts.conftest import STOCKHOLM, hmac_hex, store_simulated
from tests.conftest import make_personnummer

INTERVAL = 1.0


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def runs(url: str, job: str = "cycle") -> list[tuple[str, dt.datetime]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT node, started_at FROM scheduler_runs WHERE job = %s ORDER BY started_at", (job,)
        ).fetchall()


def db_now(url: str) -> dt.datetime:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT clock_timestamp()").fetchone()[0]


@pytest.fixture
def fast_scheduler(monkeypatch):
    monkeypatch.setenv("EGENMON_SCHEDULER_INTERVAL_S", str(INTERVAL))
    monkeypatch.setenv("EGENMON_WEBHOOK_SECRET", "settings-secret-for-webhooks")


def test_two_processes_run_jobs_once_per_interval_and_take_over_from_a_killed_leader(
    env, fast_scheduler, serve, database_url
):
    (base_a, a), (base_b, b) = serve("--no-mqtt"), serve("--no-mqtt")
    wait_for(lambda: len(runs(database_url)) >= 5, 30, "five cycles")
    cycles = runs(database_url)
    nodes = {n for n, _ in cycles}
    assert len(nodes) == 1, nodes  # one leader runs every cycle
    leader_pid = int(next(iter(nodes)).rsplit(":", 1)[1])
    assert leader_pid in (a.pid, b.pid)
    # Once per interval, not once per process and interval (a late tick may come closer
    # to the next one, so count over the whole span rather than between neighbours).
    span = (cycles[-1][1] - cycles[0][1]).total_seconds()
    assert len(cycles) <= span / INTERVAL + 1.5, (len(cycles), span)
    leader, follower = (a, b) if leader_pid == a.pid else (b, a)
    follower_base = base_b if leader is a else base_a
    metrics = httpx.get(follower_base + "/metrics").text
    assert "egenmon_scheduler_runs_total 0.0" in metrics  # the follower ran nothing

    os.kill(leader.pid, signal.SIGKILL)
    leader.wait(10)
    killed_at = db_now(database_url)
    wait_for(
        lambda: any(n.endswith(f":{follower.pid}") for n, _ in runs(database_url)),
        15,
        "the follower's first cycle",
    )
    took_over = [t for n, t in runs(database_url, "leader") if n.endswith(f":{follower.pid}")]
    assert len(took_over) == 1
    # The lock is released when the leader's session dies; the follower tries every
    # interval (a little slack for a busy machine).
    assert (took_over[0] - killed_at).total_seconds() <= INTERVAL + 1.5
    later = [n for n, t in runs(database_url) if t > killed_at]
    assert later and all(n.endswith(f":{follower.pid}") for n in later)


def _patient(cli, unit: str, protocol: str) -> tuple[str, str]:
    r = cli("patient", "add", "--personnummer", make_personnummer(), "--care-unit", unit, "--json")
    assert r.code == 0, r.err
    pid = r.json["id"]
    assert cli("plan", "set", "--patient", pid, "--protocol", protocol).code == 0
    r = cli(
        "device",
        "add",
        "--patient",
        pid,
        "--model",
        "Hub",
        "--id",
        f"hub-{uuid.uuid4().hex[:10]}",
        "--since",
        "2020-01-01T00:00:00Z",
        "--json",
    )
    assert r.code == 0, r.err
    return pid, r.json["id"]


def test_deteriorating_patient_to_alert_care_contact_and_signed_webhook(
    env, fast_scheduler, serve, database_url, cli, care_unit, receiver, settings
):
    worse, worse_dev = _patient(cli, care_unit, "heart_failure")
    stable, stable_dev = _patient(cli, care_unit, "heart_failure")
    silent, silent_dev = _patient(cli, care_unit, "heart_failure")  # never sent anything
    with psycopg.connect(database_url, autocommit=True) as conn:  # registered a month ago
        conn.execute(
            "UPDATE devices SET created_at = now() - interval '30 days' WHERE id = %s",
            (silent_dev,),
        )
    r = cli("webhook", "add", "--url", receiver.url, "--json")
    assert r.code == 0 and "secret" not in r.json  # EGENMON_WEBHOOK_SECRET signs
    receiver.script = [500]  # the first delivery fails and must be retried

    store_simulated(database_url, stable_dev, stable, "stable", "heart_failure")
    with psycopg.connect(database_url) as conn:  # the hub has just reported its battery
        conn.execute("UPDATE devices SET last_seen = now() WHERE id = %s", (worse_dev,))
    base, _ = serve("--no-mqtt")
    wait_for(lambda: runs(database_url), 30, "the first cycle")
    store_simulated(database_url, worse_dev, worse, "deteriorating", "heart_failure")
    written_at = db_now(database_url)

    def alerts(pid: str) -> dict[str, dict]:
        with (
            psycopg.connect(database_url) as conn,
            conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
        ):
            rows = cur.execute("SELECT * FROM alerts WHERE patient_id = %s", (pid,)).fetchall()
        return {a["key"]: a for a in rows}

    found = wait_for(
        lambda: (a := alerts(worse)) and "spo2_drop" in a and "news2" in a and a,
        30,
        "the deteriorating patient's alerts",
    )
    # The simulator's decline: SpO2 falls by 3 points or more below its baseline (BTS:
    # medium), and NEWS2 scores the falling SpO2 and rising pulse, breathing and fever.
    drop, news2 = found["spo2_drop"], found["news2"]
    assert (drop["severity"], drop["category"]) == ("medium", "clinical")
    assert "drop" in drop["details"]["reasons"] and drop["details"]["drop"] >= 3
    points = [p["points"] for p in news2["details"]["parameters"].values()]
    assert news2["severity"] == news2_severity(news2["details"]["score"], points)
    assert news2["severity"] in ("medium", "high")
    # Opened by the first or second cycle after the readings were committed.
    after = [t for _, t in runs(database_url) if written_at < t <= drop["opened_at"]]
    assert len(after) <= 2, after
    # The care contact: medium → due the same day; the row is the Task and the Flag.
    assert drop["due_at"] == due_at("medium", drop["opened_at"], STOCKHOLM)
    assert drop["status"] == "open" and drop["evidence"]
    admin = {"Authorization": "Bearer " + issue_token(settings, role="admin")}
    tasks = httpx.get(f"{base}/fhir/Task", params={"patient": worse}, headers=admin)
    assert tasks.status_code == 200, tasks.text
    by_id = {e["resource"]["id"]: e["resource"] for e in tasks.json().get("entry", [])}
    assert by_id[str(drop["id"])]["priority"] == "urgent"
    assert set(by_id) == {str(a["id"]) for a in found.values()}
    flags = httpx.get(
        f"{base}/fhir/Flag", params={"patient": worse, "status": "active"}, headers=admin
    )
    assert flags.status_code == 200, flags.text
    assert str(drop["id"]) in {e["resource"]["id"] for e in flags.json().get("entry", [])}

    # The stable patient raises nothing; the silent device is a technical deviation only.
    assert alerts(stable) == {}
    quiet = alerts(silent)
    assert [(a["rule"], a["category"]) for a in quiet.values()] == [
        ("device_inactive", "technical")
    ]

    # Every opened alert reached the receiver, signed; the first after a 500 and a retry.
    opened = sum(len(alerts(p)) for p in (worse, silent))
    wait_for(
        lambda: sum(1 for r in receiver.requests if r.status == 200) >= opened, 30, "every delivery"
    )
    for req in receiver.requests:
        assert req.headers["X-Egenmon-Signature"] == hmac_hex(
            "settings-secret-for-webhooks", req.body
        )
        payload = json.loads(req.body)
        assert payload["event"] == "alert.opened"
        assert set(payload["alert"]) >= {"id", "patient_id", "rule", "severity", "status"}
        assert "personnummer" not in req.body.decode()
    first = receiver.requests[0]
    retried = [r for r in receiver.requests[1:] if r.body == first.body]
    assert first.status == 500 and [r.status for r in retried] == [200]
    with psycopg.connect(database_url) as conn:
        log = conn.execute(
            "SELECT d.status, d.attempts, array_agg(a.status ORDER BY a.id)"
            " FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id"
            " WHERE d.id = %s GROUP BY d.id",
            (int(first.headers["X-Egenmon-Delivery"]),),
        ).fetchone()
    assert log == ("delivered", 2, [500, 200])


# --- in-process: leadership and retention ----------------------------------------------------


async def _runtime(settings):
    from egenmon.runtime import Runtime
    from egenmon.store.db import make_pool

    pool = make_pool(settings.database_url, 1, 3)
    await pool.open(wait=True)
    return Runtime(settings=settings, pool=pool)


def test_one_leader_at_a_time_and_the_next_takes_over(settings):
    import asyncio

    from egenmon.alerts.scheduler import Scheduler

    async def go() -> None:
        runtime = await _runtime(settings)
        first, second = Scheduler(runtime), Scheduler(runtime)
        try:
            assert await first.lead() is True
            assert await second.lead() is False
            assert await first.lead() is True  # still holds it
            await first.stop()  # its session ends: the lock is freed once the server sees it
            for _ in range(50):  # the next tick (the scheduler retries every interval)
                if await second.lead():
                    break
                await asyncio.sleep(0.1)
            assert second.leader is True
            assert await first.lead() is False
        finally:
            await first.stop()
            await second.stop()
            await runtime.pool.close()

    asyncio.run(go())


def test_retention_drops_chunks_older_than_the_setting(env, monkeypatch, database_url, device):
    import asyncio

    from egenmon.alerts.scheduler import Scheduler
    from egenmon.settings import load_settings
    from tests.alerts.conftest import copy_rows, reading_row

    monkeypatch.setenv("EGENMON_RETENTION_DAYS", "30")
    settings = load_settings()
    now = dt.datetime.now(dt.UTC)
    copy_rows(
        database_url,
        [
            reading_row(
                device["patient"], device["id"], "heart_rate", now - dt.timedelta(days=d), 70
            )
            for d in (1, 2, 90, 91)
        ],
    )

    async def go() -> None:
        runtime = await _runtime(settings)
        scheduler = Scheduler(runtime)
        try:
            await scheduler.retention()
        finally:
            await scheduler.stop()
            await runtime.pool.close()

    asyncio.run(go())
    with psycopg.connect(database_url) as conn:
        kept = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
        run = conn.execute(
            "SELECT ok, result FROM scheduler_runs WHERE job = 'retention'"
        ).fetchone()
    assert kept == 2
    assert run[0] is True and run[1]["retention_days"] == 30
    assert run[1]["method"] in ("drop_chunks", "policy")
    if run[1]["method"] == "drop_chunks":  # the Apache edition here
        assert run[1]["chunks_dropped"] >= 1
