"""Fixtures of the alerts tests: readings written straight into the hypertable (the way the
batch writer stores them), cycles run in-process, a real little webhook receiver."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import psycopg
import pytest

from egenmon.alerts import engine
from egenmon.domain.ids import observation_id
from egenmon.domain.measurements import TYPES
from egenmon.domain.readings import COLUMNS

STOCKHOLM = ZoneInfo("Europe/Stockholm")
UTC = dt.UTC


def reading_row(
    patient: str | uuid.UUID,
    device: str,
    type_: str,
    time: dt.datetime,
    value: float,
    value2: float | None = None,
    *,
    on_oxygen: bool | None = None,
    received_at: dt.datetime | None = None,
) -> tuple:
    """A readings row as ingest normalises it (canonical units, dedup key by time)."""
    t = TYPES[type_]
    time = time.astimezone(UTC)
    key = f"{device}|{type_}|{time.isoformat(timespec='microseconds')}"
    values = {
        "time": time,
        "patient_id": uuid.UUID(str(patient)),
        "device_id": device,
        "type": type_,
        "code": t.loinc,
        "mdc": t.mdc,
        "value": float(value),
        "value2": None if value2 is None else float(value2),
        "value3": None,
        "unit": t.unit,
        "on_oxygen": on_oxygen,
        "note": None,
        "source": "http",
        "dedup_key": key,
        "received_at": received_at or dt.datetime.now(UTC),
        "message_id": None,
        "extra": None,
    }
    return tuple(values[c] for c in COLUMNS)


def obs_id(row: tuple) -> str:
    return observation_id(row[COLUMNS.index("time")], row[COLUMNS.index("dedup_key")])


def copy_rows(url: str, rows: list[tuple]) -> None:
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY readings ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for r in rows:
                copy.write_row(r)


@dataclass
class Store:
    """Writes readings for one test database and runs cycles against it."""

    url: str
    written: list[tuple] = field(default_factory=list)

    def add(
        self,
        patient: str,
        device: str,
        type_: str,
        time: dt.datetime,
        value: float,
        value2: float | None = None,
        **kw: object,
    ) -> str:
        row = reading_row(patient, device, type_, time, value, value2, **kw)  # type: ignore[arg-type]
        copy_rows(self.url, [row])
        self.written.append(row)
        return obs_id(row)

    def cycle(self, now: dt.datetime | None = None, workers: int = 1) -> engine.CycleResult:
        return engine.run_cycle(self.url, tz=STOCKHOLM, now=now, workers=workers)

    def alerts(self, patient: str | None = None) -> list[dict]:
        with (
            psycopg.connect(self.url) as conn,
            conn.cursor(row_factory=psycopg.rows.dict_row) as cur,
        ):
            if patient is None:
                return cur.execute("SELECT * FROM alerts ORDER BY opened_at, key").fetchall()
            return cur.execute(
                "SELECT * FROM alerts WHERE patient_id = %s ORDER BY opened_at, key", (patient,)
            ).fetchall()


@pytest.fixture
def store(database_url: str, env: dict) -> Store:
    return Store(database_url)


@pytest.fixture
def now() -> dt.datetime:
    """The wall clock, whole seconds: the time cycles of the test run at."""
    return dt.datetime.now(UTC).replace(microsecond=0)


# --- a real webhook receiver -----------------------------------------------------------------


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    status: int


class Receiver:
    """An HTTP server on a free port that records requests and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.script: list[int] = []  # statuses to answer, then 200
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else 200
                    receiver.requests.append(Received(body, dict(self.headers), status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def payloads(self) -> list[dict]:
        with self._lock:
            return [json.loads(r.body) for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def hmac_hex(secret: str, body: bytes) -> str:
    import hmac

    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# --- clinicians' actions, through the lifecycle functions the API calls ------------------------


def act(
    url: str, alert_id: object, action: str, *, who: str = "dr-test", note: str | None = "checked"
) -> dict:
    """Acknowledge, resolve or dismiss an alert as an admin principal."""
    import asyncio

    from egenmon.alerts import lifecycle
    from egenmon.domain.principals import DEFAULT_SCOPES, Principal, parse_scopes
    from egenmon.store.db import make_pool

    principal = Principal(subject=who, role="admin", scopes=parse_scopes(DEFAULT_SCOPES["admin"]))

    async def go() -> dict:
        pool = make_pool(url, 1, 2)
        await pool.open(wait=True)
        try:
            res = await lifecycle.act(pool, principal, uuid.UUID(str(alert_id)), action, note)
            return res.alert
        finally:
            await pool.close()

    return asyncio.run(go())


# --- simulated patients (egenmon.dev.simulate), stored the way ingest stores them ----------


def store_simulated(
    url: str,
    device_id: str,
    patient_id: str,
    scenario: str,
    protocol: str,
    *,
    days: float = 20,
    onset_days_ago: float = 4.0,
) -> int:
    """`days` of the simulator's readings up to now, normalised exactly as ingest does and
    copied into the hypertable (the device's last_seen updated as ingest does); the number
    stored."""
    import json
    import random

    from egenmon.dev.simulate import SimDevice, generate, messages
    from egenmon.domain.readings import Binding
    from egenmon.ingest.message import parse_message
    from egenmon.ingest.normalise import normalise

    now = dt.datetime.now(UTC)
    device = SimDevice(device_id, scenario=scenario, protocol=protocol)
    rng = random.Random(device_id)
    readings = list(
        generate(
            device,
            scenario,
            now - dt.timedelta(days=days),
            now - dt.timedelta(minutes=5),
            rng,
            onset=now - dt.timedelta(days=onset_days_ago),
        )
    )
    binding = [Binding(uuid.UUID(patient_id), dt.datetime(2020, 1, 1, tzinfo=UTC))]
    rows: list[tuple] = []
    for message in messages(device, readings, battery=False):
        good, errors = normalise(
            parse_message(json.dumps(message)), device_id, binding, now, "http", now
        )
        assert not errors, errors
        rows.extend(good)
    copy_rows(url, rows)
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE devices SET last_seen = now() WHERE id = %s", (device_id,))
    return len(rows)
