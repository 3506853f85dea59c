"""FHIR Subscriptions against a real `egenmon serve` (scheduler and outbox sender on) and
subscribers that are real little HTTP servers: the handshake, an id-only notification
for a new Flag within 2 s of the cycle that opened it, HMAC and bearer headers, missed
notifications replayed with `$events`, heartbeats, `$status`, full-resource Observations,
and care units kept apart. Alerts are opened by an in-process rule cycle, what
`egenmon alerts run-once` runs."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhirtest import TEMPLATE, TEST_SECRET, FhirServer, reading_row, spec_example

from egenmon.alerts import engine
from egenmon.dev.cluster import Cluster, free_port
from egenmon.fhir.subscriptions import BACKPORT, HMAC_EXT, TOPICS
from egenmon.settings import Settings

STOCKHOLM = ZoneInfo("Europe/Stockholm")
SECRET = "hmac-secret-of-the-subscriber"


@dataclass
class Got:
    body: dict
    raw: bytes
    headers: dict[str, str]
    at: float


class Subscriber:
    """A subscriber's endpoint: records every notification, lets a test wait for one."""

    def __init__(self) -> None:
        self.got: list[Got] = []
        self.cond = threading.Condition()
        me = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with me.cond:
                    me.got.append(Got(json.loads(raw), raw, dict(self.headers), time.monotonic()))
                    me.cond.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, kind: str) -> list[Got]:
        with self.cond:
            return [g for g in self.got if status_of(g.body)["type"] == kind]

    def wait(self, kind: str, n: int = 1, timeout: float = 10.0) -> list[Got]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len([g for g in self.got if status_of(g.body)["type"] == kind]) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"no {n} {kind} notification(s) within {timeout} s"
                self.cond.wait(left)
        return self.of(kind)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def status_of(bundle: dict) -> dict:
    """The SubscriptionStatus parameters of a notification, by name (events as a list)."""
    params = bundle["entry"][0]["resource"]["parameter"]
    out: dict = {"events": []}
    for p in params:
        if p["name"] == "notification-event":
            out["events"].append({q["name"]: next(v for k, v in q.items() if k != "name")
                                  for q in p["part"]})  # fmt: skip
        else:
            out[p["name"]] = next(v for k, v in p.items() if k != "name")
    return out


@pytest.fixture(scope="module")
def server(pg_cluster: Cluster) -> Iterator[FhirServer]:
    """`egenmon serve --no-mqtt` (the scheduler and the outbox sender on) on a database of
    this module's own. The scheduler interval is long: retries wait, cycles are the test's."""
    name = f"subs{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
    url = pg_cluster.url(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    env.update(
        EGENMON_DATABASE_URL=url,
        EGENMON_ENVIRONMENT="test",
        EGENMON_AUTH_SECRET=TEST_SECRET,
        EGENMON_LOG_LEVEL="WARNING",
        EGENMON_SCHEDULER_INTERVAL_S="3600",
    )
    settings = Settings(
        database_url=url, mqtt_url=None, environment="test", auth_secret=TEST_SECRET
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "egenmon", "serve", "--no-mqtt", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    root = f"http://127.0.0.1:{port}"
    srv = FhirServer(url, settings, root)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "egenmon serve exited"
            try:
                httpx.get(root + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        yield srv
    finally:
        srv.close()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def hook() -> Iterator[Subscriber]:
    s = Subscriber()
    yield s
    s.close()


def subscription(
    endpoint: str,
    topic: str = "alert-flag",
    filter_: str | None = None,
    content: str = "id-only",
    *,
    heartbeat: int | None = None,
    secret: str | None = None,
    header: list[str] | None = None,
) -> dict:
    channel: dict = {
        "type": "rest-hook",
        "endpoint": endpoint,
        "payload": "application/fhir+json",
        "_payload": {
            "extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]
        },
    }
    ext = []
    if heartbeat is not None:
        ext.append({"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": heartbeat})
    if secret is not None:
        ext.append({"url": HMAC_EXT, "valueString": secret})
    if ext:
        channel["extension"] = ext
    if header:
        channel["header"] = header
    doc: dict = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": TOPICS[topic].url,
        "channel": channel,
    }
    if filter_:
        doc["_criteria"] = {
            "extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": filter_}]
        }
    return doc


def subscribe(server: FhirServer, token: str, hook: Subscriber, doc: dict) -> str:
    """Post, see the handshake arrive and the subscription turn active; its id."""
    with server.client(token) as c:
        r = c.post("/Subscription", json=doc, headers={"Content-Type": "application/fhir+json"})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        assert r.json()["status"] == "requested"
        assert r.headers["Location"].endswith(f"/Subscription/{sid}")
        hook.wait("handshake")
        until(lambda: c.get(f"/Subscription/{sid}").json()["status"] == "active")
    return sid


def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def open_alert(server: FhirServer, patient: uuid.UUID, device: str) -> str:
    """A glucose of 2.5 an hour ago, and the rule cycle that opens its alert; its id."""
    now = datetime.now(UTC)
    row = reading_row(patient, device, "blood_glucose", now - timedelta(hours=1), 2.5)
    server.insert([{**row, "received_at": now}])
    result = engine.run_cycle(server.db_url, tz=STOCKHOLM)
    [opened] = [a for a in result.opened if a["patient_id"] == str(patient)]
    return str(opened["id"])


def test_id_only_flag_notification_within_2s_signed_and_logged(server, hook):
    s = server.setup()
    token = server.token(care_unit=s["unit"], subject="integrator-journal")
    doc = subscription(
        hook.url,
        filter_=f"Flag?patient=Patient/{s['patient']}",
        secret=SECRET,
        header=["Authorization: Bearer subscriber-token"],
    )
    sid = subscribe(server, token, hook, doc)
    alert = open_alert(server, s["patient"], s["device"])
    committed = time.monotonic()
    [got] = hook.wait("event-notification")
    assert got.at - committed < 2.0, f"notified {got.at - committed:.2f} s after the commit"
    Bundle.model_validate(got.body)
    st = status_of(got.body)
    assert st["subscription"]["reference"].endswith(f"/Subscription/{sid}")
    assert st["topic"] == TOPICS["alert-flag"].url
    assert st["events-since-subscription-start"] == "1"
    [event] = st["events"]
    assert event["event-number"] == "1"
    assert event["focus"]["reference"] == f"{server.base}/Flag/{alert}"
    focus = got.body["entry"][1]
    assert focus["fullUrl"] == f"{server.base}/Flag/{alert}" and "resource" not in focus
    # The headers the subscriber asked for: its bearer token and the HMAC of the body.
    expected = "sha256=" + hmac.new(SECRET.encode(), got.raw, hashlib.sha256).hexdigest()
    assert got.headers["X-Egenmon-Signature"] == expected
    assert got.headers["Authorization"] == "Bearer subscriber-token"
    assert got.headers["Content-Type"] == "application/fhir+json"
    # The disclosure is in the access log, for the patient, as the integrator.
    until(lambda: any(r["action"] == "notify" for r in server.access_log("integrator-journal")))
    [line] = [r for r in server.access_log("integrator-journal") if r["action"] == "notify"]
    assert line["patient_ids"] == [s["patient"]] and line["care_unit_id"] == s["unit"]
    assert line["detail"]["event_number"] == 1


def test_missed_while_down_then_replayed_by_number_with_events(server, hook):
    s = server.setup()
    others = [server.patient(s["unit"])[0] for _ in range(2)]
    devices = [s["device"], *(server.device(p) for p in others)]
    token = server.token(care_unit=s["unit"])
    sid = subscribe(
        server, token, hook, subscription(hook.url, "alert-task", f"care-unit={s['unit']}")
    )
    hook.close()  # the subscriber goes down
    alerts = sorted(
        open_alert(server, p, d) for p, d in zip([s["patient"], *others], devices, strict=True)
    )
    # Three notifications are tried and fail (connection refused); retries wait an hour.
    until(
        lambda: (
            server.count(
                "SELECT count(*) FROM webhook_attempts a JOIN webhook_deliveries d"
                " ON d.id = a.delivery_id WHERE d.subscription_id = %s AND d.focus IS NOT NULL",
                (sid,),
            )
            == 3
        )
    )
    with server.client(token) as c:
        r = c.get(f"/Subscription/{sid}/$events", params={"eventsSinceNumber": "1"})
        assert r.status_code == 200, r.text
        Bundle.model_validate(r.json())
        st = status_of(r.json())
        assert st["type"] == "query-event"
        assert [e["event-number"] for e in st["events"]] == ["1", "2", "3"]
        assert sorted(e["focus"]["reference"].rpartition("/")[2] for e in st["events"]) == alerts
        assert all("/Task/" in e["focus"]["reference"] for e in st["events"])
        two = status_of(
            c.get(
                f"/Subscription/{sid}/$events",
                params={"eventsSinceNumber": "2", "eventsUntilNumber": "2"},
            ).json()
        )
        assert [e["event-number"] for e in two["events"]] == ["2"]
        # $status: the subscription is in error, three events, none delivered yet.
        status = c.get(f"/Subscription/{sid}/$status").json()
        Bundle.model_validate(status)
        params = status["entry"][0]["resource"]
        named = {p["name"]: p for p in params["parameter"]}
        assert named["status"]["valueCode"] == "error"
        since = named["events-since-subscription-start"]
        assert since["valueString"] == "3"
        counts = {e["url"]: e["valueUnsignedInt"] for e in since["extension"][0]["extension"]}
        assert counts["events"] == 3 and counts["pending"] == 3 and counts["delivered"] == 0
        # The same at type level, by id or as all of the caller's.
        for params in ({"id": sid}, {}):
            many = c.get("/Subscription/$status", params=params).json()
            assert many["resourceType"] == "Bundle", many
            Bundle.model_validate(many)
            [entry] = many["entry"]
            named = {p["name"]: p for p in entry["resource"]["parameter"]}
            assert named["events-since-subscription-start"]["valueString"] == "3"
        bad = c.get(f"/Subscription/{sid}/$events", params={"eventsSinceNumber": "x"})
        assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"


def test_heartbeat_arrives_on_time(server, hook):
    s = server.setup()
    token = server.token(care_unit=s["unit"])
    doc = subscription(hook.url, filter_=f"patient={s['patient']}", content="empty", heartbeat=1)
    subscribe(server, token, hook, doc)
    [handshake] = hook.of("handshake")
    [first] = hook.wait("heartbeat", 1, timeout=5)[:1]
    # A period of 1 s after the handshake was answered: not before, and on time (the
    # sender wakes when one falls due; 2 s allows for a busy machine).
    assert 0.95 < first.at - handshake.at < 2.0
    Bundle.model_validate(first.body)
    assert len(first.body["entry"]) == 1


def test_another_units_integrator_can_neither_subscribe_nor_receive(server, hook):
    a, b = server.setup(), server.setup()
    token_b = server.token(care_unit=b["unit"], subject="integrator-b")
    with server.client(token_b) as c:
        for filter_ in (f"patient={a['patient']}", f"care-unit={a['unit']}"):
            r = c.post("/Subscription", json=subscription(hook.url, "alert-flag", filter_))
            assert r.status_code == 403, r.text
            assert r.json()["resourceType"] == "OperationOutcome"
    refused = [r for r in server.access_log("integrator-b") if r["action"] == "subscribe-refused"]
    assert [r["patient_ids"] for r in refused] == [[a["patient"]]]
    # B's unfiltered subscription sees only B's unit; A's alert raises nothing for it.
    sid_b = subscribe(server, token_b, hook, subscription(hook.url, "alert-flag"))
    token_a = server.token(care_unit=a["unit"])
    with Subscriber() as hook_a:
        sid_a = subscribe(server, token_a, hook_a, subscription(hook_a.url, "alert-flag"))
        open_alert(server, a["patient"], a["device"])
        hook_a.wait("event-notification")
        with server.client(token_b) as c:
            assert c.get(f"/Subscription/{sid_a}").status_code == 404
            assert c.get(f"/Subscription/{sid_a}/$events").status_code == 404
    queued_b = server.count(
        "SELECT count(*) FROM webhook_deliveries WHERE subscription_id = %s AND focus IS NOT NULL",
        (sid_b,),
    )
    assert queued_b == 0 and hook.of("event-notification") == []


def test_full_resource_observation_for_a_code_and_delete(server, hook):
    s = server.setup()
    token = server.token(care_unit=s["unit"])
    doc = subscription(
        hook.url,
        "observation",
        f"Observation?patient=Patient/{s['patient']}&code=http://loinc.org|8867-4",
        "full-resource",
    )
    sid = subscribe(server, token, hook, doc)
    posted: list[str] = []
    with server.client(token) as c:
        # The writer sees a new subscription within a second (its cached interest): post
        # readings until one is notified, then check that one.
        deadline = time.monotonic() + 5
        while not hook.of("event-notification"):
            assert time.monotonic() < deadline, "no Observation notification"
            when = (datetime.now(STOCKHOLM) - timedelta(minutes=1)).isoformat(
                timespec="milliseconds"
            )
            obs = spec_example("heart-rate", s["patient"], s["device"], when)
            r = c.post("/Observation", json=obs, headers={"Content-Type": "application/fhir+json"})
            assert r.status_code == 201, r.text
            posted.append(r.json()["id"])
            with hook.cond:
                hook.cond.wait(0.3)
        got = hook.of("event-notification")[0]
        Bundle.model_validate(got.body)
        entry = got.body["entry"][1]
        assert entry["resource"]["resourceType"] == "Observation"
        assert entry["resource"]["id"] in posted
        assert entry["resource"]["subject"]["reference"].endswith(str(s["patient"]))
        # A weight is not the code asked for: nothing queued for it.
        weight = spec_example("body-weight", s["patient"], s["device"], when)
        assert c.post("/Observation", json=weight).status_code == 201
        assert c.delete(f"/Subscription/{sid}").status_code == 204
        assert c.get(f"/Subscription/{sid}").json()["status"] == "off"
        listed = c.get("/Subscription", params={"status": "off"}).json()
        assert [e["resource"]["id"] for e in listed["entry"]] == [sid]
    focus = server.conn.execute(
        "SELECT focus FROM webhook_deliveries WHERE subscription_id = %s AND focus IS NOT NULL",
        (sid,),
    ).fetchall()
    assert {f for (f,) in focus} <= {f"Observation/{p}" for p in posted}


def test_bad_subscriptions_are_operation_outcomes(server, hook):
    s = server.setup()
    token = server.token(care_unit=s["unit"])
    patient_token = server.token("patient", patient=s["patient"])
    with server.client(token) as c:
        r = c.post("/Subscription", content=b"{", headers={"Content-Type": "application/fhir+json"})
        assert r.status_code == 400 and "JSON" in r.json()["issue"][0]["diagnostics"]
        doc = subscription(hook.url)
        doc["channel"]["type"] = "email"
        r = c.post("/Subscription", json=doc)
        assert r.status_code == 400 and "rest-hook" in r.json()["issue"][0]["diagnostics"]
        assert c.get("/Subscription", params={"foo": "1"}).status_code == 400
        past = {**subscription(hook.url), "end": "2020-01-01T00:00:00Z"}
        r = c.post("/Subscription", json=past)
        assert r.status_code == 400 and "end" in r.json()["issue"][0]["diagnostics"]
        assert c.get("/Subscription", params={"_format": "json"}).status_code == 200
        assert c.get(f"/Subscription/{uuid.uuid4()}").status_code == 404
        put = c.put(f"/Subscription/{uuid.uuid4()}", json=subscription(hook.url))
        assert put.status_code == 405 and put.headers["Allow"] == "DELETE, GET"
        assert put.json()["resourceType"] == "OperationOutcome"
        topics = c.get("/Basic", params={"code": "SubscriptionTopic"}).json()
        assert {e["resource"]["id"] for e in topics["entry"]} == {f"topic-{t}" for t in TOPICS}
    with server.client(patient_token) as c:
        assert c.post("/Subscription", json=subscription(hook.url)).status_code == 403
    with server.client() as c:
        assert c.get("/Subscription").status_code == 401
