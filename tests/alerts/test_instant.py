"""Instant rules: a critical reading opens its alert as it commits, through a real `egenmon
serve` whose scan runs once an hour (so only the commit path can open it), judged at the
reading's measurement time; the worklist's event stream tells a signed-in clinician.
In-process against the test database: a clinician's dismiss is respected, and evaluating
a patient twice opens nothing twice."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
import uuid

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from egenmon.alerts import instant
from egenmon.auth import issue_token
from tests.alerts.conftest import STOCKHOLM, Store

PASSWORD = "correct-horse-battery-staple"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alerts_of(url: str, patient: str) -> list[dict]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT * FROM alerts WHERE patient_id = %s ORDER BY opened_at, key", (patient,)
        ).fetchall()


def cycles(url: str) -> list[dt.datetime]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT started_at FROM scheduler_runs WHERE job = 'cycle' ORDER BY started_at"
        ).fetchall()
    return [r[0] for r in rows]


def post(base: str, device: dict, readings: list[dict]) -> dict:
    r = httpx.post(
        base + "/api/v1/readings",
        json={"readings": readings},
        headers={"Authorization": "Bearer " + device["secret"]},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()


def sign_in(base: str, cli, care_unit: str) -> httpx.Client:
    name = f"nurse-{uuid.uuid4().hex[:6]}"
    r = cli(
        "user", "add", "--username", name, "--role", "clinician", "--care-unit", care_unit,
        "--json", stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert r.code == 0, r.err
    client = httpx.Client(base_url=base, timeout=10)
    page = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf
    r2 = client.post(
        "/login",
        data={"username": name, "password": PASSWORD, "csrf_token": csrf.group(1), "next": "/ui/"},
    )
    assert r2.status_code == 303, r2.text
    return client


class Stream:
    """A reader of /api/v1/alerts/stream in a thread, collecting its events."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.events: list[tuple[str, dict]] = []
        self.status: int | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            with self.client.stream("GET", "/api/v1/alerts/stream", timeout=None) as r:
                self.status = r.status_code
                event = None
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event:
                        self.events.append((event, json.loads(line[6:])))
        except httpx.HTTPError:
            pass  # the server stopped at the end of the test

    def named(self, name: str) -> list[dict]:
        return [d for e, d in self.events if e == name]


@pytest.fixture
def slow_scan(monkeypatch):
    monkeypatch.setenv("EGENMON_SCHEDULER_INTERVAL_S", "3600")


def test_critical_reading_opens_its_alert_on_commit_judged_when_measured_and_streamed(
    env, slow_scan, serve, database_url, cli, care_unit, device, settings
):
    base, _ = serve("--no-mqtt")
    wait_for(lambda: cycles(database_url), 10, "the start-up scan")
    _stream_refuses_strangers_and_other_care_units(base, care_unit, settings)
    clinician = sign_in(base, cli, care_unit)
    stream = Stream(clinician)
    wait_for(lambda: stream.named("ready"), 10, "the stream to open")
    assert stream.status == 200

    # A late upload: an SpO2 of 85 % measured two days ago (offline device), then today's.
    measured = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).replace(microsecond=0)
    sent = time.monotonic()
    post(base, device, [{"type": "spo2", "time": measured.isoformat(), "value": 85, "unit": "%"}])
    opened = wait_for(
        lambda: [a for a in alerts_of(database_url, device["patient"]) if a["rule"] == "threshold"],
        10,
        "the threshold alert",
    )
    took = time.monotonic() - sent
    [alert] = opened
    assert alert["key"] == "threshold:spo2" and alert["status"] == "open"
    # Judged when it was measured: the alert says when the deviation happened.
    assert alert["evidence_until"] == measured
    assert alert["details"]["measured_at"] == measured.isoformat()
    # NEWS2 at that time too (SpO2 ≤ 91 % scores 3: medium).
    news2 = [a for a in alerts_of(database_url, device["patient"]) if a["rule"] == "news2"]
    assert len(news2) == 1 and news2[0]["severity"] == "medium"
    # Not by a scan: the only cycle ran at start-up, before the reading was sent.
    assert len(cycles(database_url)) == 1
    assert took < 5, took

    # The signed-in clinician's stream heard of it, with the alert's id.
    events = wait_for(
        lambda: [e for e in stream.named("alerts") if str(alert["id"]) in e["ids"]],
        10,
        "the alert event",
    )
    assert events[0]["care_unit"] == care_unit and events[0]["op"] == "insert"

    # Sent again (a retry): stored once, nothing opens twice.
    assert post(
        base, device, [{"type": "spo2", "time": measured.isoformat(), "value": 85, "unit": "%"}]
    ) == {"accepted": 0, "duplicates": 1, "rejected": []}
    clinician.close()


def _stream_refuses_strangers_and_other_care_units(base: str, care_unit: str, settings) -> None:
    assert httpx.get(base + "/api/v1/alerts/stream").status_code == 401
    token = issue_token(settings, role="clinician", care_unit_id=uuid.UUID(care_unit))
    r = httpx.get(
        base + f"/api/v1/alerts/stream?care_unit={uuid.uuid4()}",
        headers={"Authorization": "Bearer " + token},
    )
    assert r.status_code == 403
    patient_token = issue_token(settings, role="patient", patient_id=uuid.uuid4())
    r = httpx.get(
        base + "/api/v1/alerts/stream", headers={"Authorization": "Bearer " + patient_token}
    )
    assert r.status_code == 403
    admin = issue_token(settings, role="admin")
    r = httpx.get(
        base + "/api/v1/alerts/stream?care_unit=nope", headers={"Authorization": "Bearer " + admin}
    )
    assert r.status_code == 400 and "care_unit" in r.json()["error"]


def _evaluate(url: str, patient: str, at: dt.datetime) -> instant.Round:
    with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
        return instant.evaluate(conn, {uuid.UUID(patient): (at, at)}, STOCKHOLM)


def test_evaluating_a_patient_twice_opens_nothing_twice_and_a_dismiss_holds(
    store: Store, patient: str, settings
):
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=30)
    store.add(patient, "dev-1", "spo2", t0, 84)
    first = _evaluate(store.url, patient, t0)
    assert sorted(a["key"] for a in first.opened) == ["news2", "threshold:spo2"]
    again = _evaluate(store.url, patient, t0)
    assert again.opened == [] and again.escalated == []
    assert len(store.alerts(patient)) == 2

    # A clinician dismisses the threshold alert; the deviation goes on (another 84 %).
    threshold = next(a for a in store.alerts(patient) if a["key"] == "threshold:spo2")
    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE alerts SET status = 'dismissed', dismissed_at = now(), dismissed_by = 'dr'"
            " WHERE id = %s",
            (threshold["id"],),
        )
    t1 = t0 + dt.timedelta(minutes=10)
    store.add(patient, "dev-1", "spo2", t1, 84)
    after = _evaluate(store.url, patient, t1)
    assert [a["key"] for a in after.opened] == []  # the same episode: not again
    assert [a["status"] for a in store.alerts(patient) if a["key"] == "threshold:spo2"] == [
        "dismissed"
    ]
    # The instant path never clears: a normal reading leaves the open alert's deviation
    # present until the scan finds it gone.
    t2 = t1 + dt.timedelta(minutes=5)
    store.add(patient, "dev-1", "spo2", t2, 98)
    _evaluate(store.url, patient, t2)
    [news2] = [a for a in store.alerts(patient) if a["key"] == "news2"]
    assert news2["status"] == "open" and news2["cleared_at"] is None
