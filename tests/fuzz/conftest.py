"""A real `egenmon serve` for the fuzz tests: its own database with a care unit, a
patient, a device, and the tokens each part of the API takes.

The process is the one `make run` starts, less the scheduler (its jobs would only add
load): HTTP and MQTT roles, on the session's broker.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
import pytest

from egenmon.auth import issue_token
from egenmon.dev.cluster import Cluster, free_port
from egenmon.dev.mosquitto import Mosquitto
from egenmon.devices.credentials import new_secret, secret_digest
from egenmon.domain.identifiers import luhn_digit
from egenmon.settings import Settings
from egenmon.store import care_units, devices, patients
from tests.conftest import TEST_SECRET, create_database, drop_database, stop_process, wait_http


@dataclass
class FuzzServer:
    root: str
    db_url: str
    headers: dict[str, dict[str, str]]  # by the part of the API: readings, fhir, admin, ...
    conn: psycopg.Connection
    # Per operation: requests, statuses and other checks' findings (shown in the summary).
    report: dict[str, collections.Counter] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )

    def auth_for(self, path: str) -> dict[str, str]:
        """The credentials the route at `path` takes (a valid, permitted principal)."""
        if path == "/api/v1/readings":
            return self.headers["device"]
        if path.startswith("/fhir"):
            return self.headers["integrator"]
        if path.startswith(("/api/v1/alerts", "/api/v1/patients")):
            return self.headers["clinician"]
        return self.headers["admin"]


@pytest.fixture(scope="session")
def fuzz_server(
    pg_cluster: Cluster, broker: Mosquitto, request: pytest.FixtureRequest
) -> Iterator[FuzzServer]:
    name = create_database(pg_cluster)
    url = pg_cluster.url(name)
    conn = psycopg.connect(url, autocommit=True)
    unit = care_units.add_care_unit(
        conn, "Vårdcentralen Fuzz", f"SE2321000016-{uuid.uuid4().hex[:6]}"
    )
    birth, serial = "19650704", "123"
    number = birth + serial + str(luhn_digit(birth[2:] + serial))
    patient = patients.add_patient(conn, number, "personnummer", unit, "Tolvan Tolvansson")
    secret = new_secret()
    device = f"fuzz-{uuid.uuid4().hex[:8]}"
    devices.add_device(
        conn,
        device,
        "Omron M7",
        secret_digest(secret),
        patient_id=patient,
        since=datetime(2020, 1, 1, tzinfo=UTC),
    )
    settings = Settings(database_url=url, environment="test", auth_secret=TEST_SECRET)

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    headers = {
        "device": bearer(secret),
        "integrator": bearer(issue_token(settings, role="integrator", subject="fuzz-int")),
        "admin": bearer(issue_token(settings, role="admin", subject="fuzz-admin")),
        "clinician": bearer(
            issue_token(settings, role="clinician", subject="fuzz-nurse", care_unit_id=unit)
        ),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    env.update(
        EGENMON_DATABASE_URL=url,
        EGENMON_MQTT_URL=broker.mqtt_url,
        EGENMON_ENVIRONMENT="test",
        EGENMON_AUTH_SECRET=TEST_SECRET,
        EGENMON_LOG_LEVEL="WARNING",
        EGENMON_EXPORT_DIR=tempfile.mkdtemp(prefix="egenmon-fuzz-exports-"),
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "egenmon", "serve", "--no-scheduler", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        wait_http(root + "/healthz", proc, timeout=60)
        server = FuzzServer(root, url, headers, conn)
        request.config.egenmon_fuzz_report = server.report  # type: ignore[attr-defined]
        yield server
    finally:
        stop_process(proc)
        conn.close()
        drop_database(pg_cluster, name)


def pytest_terminal_summary(terminalreporter) -> None:
    """The fuzz run in numbers: operations, requests, statuses and other checks' findings."""
    report = getattr(terminalreporter.config, "egenmon_fuzz_report", None)
    if not report:
        return
    w = terminalreporter
    w.section("schemathesis run")
    total = sum(c["examples"] for c in report.values())
    w.line(f"{len(report)} operations, {total} requests")
    for key in sorted(report):
        counts = report[key]
        rest = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if k != "examples")
        w.line(f"{key}: {counts['examples']} requests; {rest}")
