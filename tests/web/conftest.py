"""Fixtures of the UI tests: logins, an in-process app on the test's database, simulated
patients' readings stored the way ingest stores them, and the alerts engine run on them."""

from __future__ import annotations

import datetime as dt
import json
import random
import re
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import psycopg
import pytest

from egenmon.dev.simulate import SimDevice, generate, messages
from egenmon.domain.readings import COLUMNS, Binding
from egenmon.ingest.message import parse_message
from egenmon.ingest.normalise import normalise

PASSWORD = "correct-horse-battery-staple"
STOCKHOLM = ZoneInfo("Europe/Stockholm")
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    m = _CSRF.search(html)
    assert m, "the page has no CSRF field"
    return m.group(1)


@pytest.fixture
def make_user(cli):
    """make_user(username, care_unit, role="clinician", password=PASSWORD) -> the CLI's JSON."""

    def make(
        username: str,
        care_unit: str | None,
        role: str = "clinician",
        password: str = PASSWORD,
        locale: str = "sv",
        name: str | None = None,
    ) -> dict:
        args = ["user", "add", "--username", username, "--role", role, "--locale", locale, "--json"]
        if care_unit:
            args += ["--care-unit", care_unit]
        if name:
            args += ["--name", name]
        r = cli(*args, stdin=password + "\n")
        assert r.code == 0, r.err
        return r.json

    return make


@pytest.fixture
def client(env: dict) -> Iterator:
    """The ASGI app in-process (HTTP role only) on the test's database; no redirects
    followed, so tests see them."""
    with warnings.catch_warnings():
        # Starlette's test client asks for its httpx fork, which is not installed; the
        # plain httpx it falls back to works the same for these tests.
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from egenmon.app import Roles, create_app
    from egenmon.settings import load_settings

    app = create_app(load_settings(), Roles(mqtt=False, scheduler=False))
    with TestClient(app, follow_redirects=False) as c:
        yield c


def login(client, username: str, password: str = PASSWORD):
    """Log in through the form (with its CSRF token); returns the POST's response."""
    page = client.get("/login")
    assert page.status_code == 200
    return client.post(
        "/login",
        data={
            "username": username,
            "password": password,
            "csrf_token": csrf_of(page.text),
            "next": "/ui/",
        },
    )


def store_readings(
    url: str,
    device_id: str,
    patient_id: str,
    readings: list[dict],
    since: dt.datetime,
    last_seen: dt.datetime | None = None,
) -> int:
    """Normalise simulated readings exactly as ingest does and COPY them into the
    hypertable; the number stored."""
    now = dt.datetime.now(dt.UTC)
    binding = [Binding(uuid.UUID(patient_id), since)]
    rows = []
    device = SimDevice(device_id)
    for message in messages(device, readings, battery=False):
        parsed = parse_message(json.dumps(message))
        # Received when measured, as a device online at the time would have sent it.
        received = max(dt.datetime.fromisoformat(r["time"]) for r in message["readings"])
        good, errors = normalise(parsed, device_id, binding, now, "http", received)
        assert not errors, errors
        rows.extend(good)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY readings ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)
        cur.execute(
            "UPDATE devices SET last_seen = %s, battery = 0.64 WHERE id = %s",
            (last_seen or dt.datetime.now(dt.UTC), device_id),
        )
    return len(rows)


@dataclass
class Ward:
    """A care unit's patients with readings and alerts: one deteriorating, one stable
    without deviations (stable[0]), one whose measurements stopped a day ago (missing
    data, stable[1]) and one whose device went silent (a technical deviation)."""

    unit: str
    deteriorating: str
    stable: list[str]
    silent: str
    devices: dict[str, str]


def simulate_patient(
    url: str,
    device_id: str,
    patient_id: str,
    scenario: str,
    protocol: str,
    days: int = 20,
    onset_days_ago: float = 5.0,
    silent_hours: float = 0.5,
    every: dt.timedelta = dt.timedelta(hours=12),
) -> int:
    """`days` of a simulated patient's readings up to `silent_hours` ago, one session each
    `every`, stored."""
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(days=days)
    end = now - dt.timedelta(hours=silent_hours)
    onset = now - dt.timedelta(days=onset_days_ago)
    device = SimDevice(device_id, scenario=scenario, protocol=protocol)
    rng = random.Random(device_id)
    readings = list(generate(device, scenario, start, end, rng, every=every, onset=onset))
    return store_readings(
        url, device_id, patient_id, readings, dt.datetime(2020, 1, 1, tzinfo=dt.UTC), last_seen=end
    )


@pytest.fixture
def ward(cli, care_unit: str, database_url: str) -> Ward:
    """Four patients of `care_unit` with 20 days of simulated readings (one deteriorating
    for the last 5 days on a heart-failure plan), and one alerts cycle run over them."""
    from tests.conftest import make_personnummer

    patients = []
    devices = {}
    for name, scenario, protocol, silent_hours in (
        ("Astrid Andersson", "deteriorating", "heart_failure", 0.5),
        ("Bertil Berg", "stable", "copd", 0.5),
        ("Cecilia Carlsson", "stable", "hypertension", 22),
        ("David Dahl", "stable", "diabetes", 80),
    ):
        r = cli(
            "patient",
            "add",
            "--personnummer",
            make_personnummer(),
            "--care-unit",
            care_unit,
            "--name",
            name,
            "--json",
        )
        assert r.code == 0, r.err
        pid = r.json["id"]
        r = cli(
            "plan", "set", "--patient", pid, "--protocol", protocol, "--set-by", "test", "--json"
        )
        assert r.code == 0, r.err
        r = cli(
            "device",
            "add",
            "--patient",
            pid,
            "--model",
            "Hub M1",
            "--id",
            f"hub-{uuid.uuid4().hex[:10]}",
            "--since",
            "2020-01-01T00:00:00Z",
            "--json",
        )
        assert r.code == 0, r.err
        devices[pid] = r.json["id"]
        with psycopg.connect(database_url, autocommit=True) as conn:  # in use for a month
            conn.execute(
                "UPDATE devices SET created_at = now() - interval '30 days' WHERE id = %s",
                (r.json["id"],),
            )
        simulate_patient(
            database_url, r.json["id"], pid, scenario, protocol, silent_hours=silent_hours
        )
        patients.append(pid)
    r = cli("alerts", "run-once", "--workers", "1", "--json")
    assert r.code == 0, r.err
    return Ward(
        unit=care_unit,
        deteriorating=patients[0],
        stable=patients[1:3],
        silent=patients[3],
        devices=devices,
    )
