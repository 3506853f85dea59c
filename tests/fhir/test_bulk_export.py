"""FHIR Bulk Data $export against a real `egenmon serve`: kick-off, status, files, delete;
_since, _typeFilter and _type; who may export which Group; hostile kick-offs."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.group import Group
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.task import Task
from fhirtest import TEMPLATE, TEST_SECRET, FhirServer, reading_row

from egenmon.dev.cluster import Cluster, free_port
from egenmon.settings import Settings

MODELS = {
    "Patient": Patient,
    "Observation": Observation,
    "Device": Device,
    "Flag": Flag,
    "Task": Task,
}
ASYNC = {"Prefer": "respond-async"}


@pytest.fixture(scope="module")
def bulk(pg_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FhirServer]:
    """`egenmon serve` with an export directory of this module's own."""
    name = f"bulk{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
    url = pg_cluster.url(name)
    export_dir = tmp_path_factory.mktemp("exports") / "files"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    env.update(
        EGENMON_DATABASE_URL=url,
        EGENMON_ENVIRONMENT="test",
        EGENMON_AUTH_SECRET=TEST_SECRET,
        EGENMON_LOG_LEVEL="WARNING",
        EGENMON_EXPORT_DIR=str(export_dir),
    )
    settings = Settings(
        database_url=url, mqtt_url=None, environment="test", auth_secret=TEST_SECRET
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "egenmon", "serve", "--no-mqtt", "--no-scheduler",
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    root = f"http://127.0.0.1:{port}"
    server = FhirServer(url, settings, root)
    server.export_dir = export_dir  # type: ignore[attr-defined]
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            try:
                httpx.get(root + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        yield server
    finally:
        server.close()
        proc.terminate()
        proc.wait(15)
        if proc.stderr:
            proc.stderr.close()
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def unit_with_data(fx: FhirServer, patients: int = 2) -> dict[str, Any]:
    """A care unit whose patients each have a device, heart-rate and SpO2 readings and
    an open alert."""
    unit = fx.care_unit()
    out: dict[str, Any] = {"unit": unit, "patients": [], "devices": [], "pnrs": []}
    start = datetime(2026, 11, 1, 8, tzinfo=UTC)
    for _ in range(patients):
        patient, number = fx.patient(unit)
        device = fx.device(patient)
        fx.readings(patient, device, "heart_rate", [start + timedelta(hours=h) for h in range(3)])
        fx.readings(patient, device, "spo2", [start + timedelta(hours=h) for h in range(2)], 96)
        fx.conn.execute(
            "INSERT INTO alerts (patient_id, rule, key, category, severity, current_severity,"
            " summary, due_at) VALUES (%s, 'threshold', 'threshold:heart_rate', 'clinical',"
            " 'high', 'high', 'Pulse high', now())",
            (patient,),
        )
        out["patients"].append(patient)
        out["devices"].append(device)
        out["pnrs"].append(number)
    return out


def kick_off(client: httpx.Client, path: str, **params: str) -> str:
    r = client.get(path, params=params, headers=ASYNC)
    assert r.status_code == 202, r.text
    return r.headers["Content-Location"]


def wait_done(client: httpx.Client, status_url: str) -> dict[str, Any]:
    """Poll as a client does (honouring X-Progress / Retry-After loosely) until done."""
    deadline = time.monotonic() + 30
    while True:
        r = client.get(status_url, headers={"Accept": "application/json"})
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 202, r.text
        assert r.headers["X-Progress"] and int(r.headers["Retry-After"]) > 0
        assert time.monotonic() < deadline, "the export did not complete in 30 s"
        time.sleep(0.05)


def lines(client: httpx.Client, manifest: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every file of the manifest, each line parsed and validated with fhir.resources."""
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in manifest["output"]:
        r = client.get(entry["url"], headers={"Accept": "application/fhir+ndjson"})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/fhir+ndjson")
        rows = [orjson.loads(line) for line in r.content.splitlines()]
        assert len(rows) == entry["count"]
        for row in rows:
            assert row["resourceType"] == entry["type"]
            MODELS[entry["type"]].model_validate(row)
        out.setdefault(entry["type"], []).extend(rows)
    return out


def test_group_export_kick_off_status_files_and_delete(bulk: FhirServer) -> None:
    data = unit_with_data(bulk)
    other = unit_with_data(bulk, patients=1)
    subject = f"integrator-{uuid.uuid4().hex[:8]}"
    token = bulk.token(subject=subject)
    with bulk.client(token) as c:
        group = c.get(f"/Group/{data['unit']}")
        assert group.status_code == 200
        Group.model_validate(group.json())
        assert group.json()["quantity"] == 2
        status_url = kick_off(c, f"/Group/{data['unit']}/$export")
        assert status_url.startswith(bulk.base + "/$export-status/")
        manifest = wait_done(c, status_url)
        assert manifest["requiresAccessToken"] is True
        assert manifest["request"].endswith(f"/Group/{data['unit']}/$export")
        assert datetime.fromisoformat(manifest["transactionTime"]).tzinfo is not None
        assert manifest["error"] == []
        counts = {o["type"]: o["count"] for o in manifest["output"]}
        assert counts == {"Patient": 2, "Device": 2, "Observation": 10, "Flag": 2, "Task": 2}
        files = lines(c, manifest)
        patients = {p["id"] for p in files["Patient"]}
        assert patients == {str(p) for p in data["patients"]}
        subjects = {o["subject"]["reference"] for o in files["Observation"]}
        assert subjects == {f"Patient/{p}" for p in data["patients"]}
        assert str(other["patients"][0]) not in str(files)

        # The files are private, and every exported patient has a log line of their own.
        job_id = status_url.rsplit("/", 1)[1]
        folder = bulk.export_dir / job_id  # type: ignore[attr-defined]
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        assert {stat.S_IMODE(f.stat().st_mode) for f in folder.iterdir()} == {0o600}
        logged = [e for e in bulk.access_log(subject) if e["action"] == "export"]
        assert sorted(p for e in logged for p in e["patient_ids"]) == sorted(data["patients"])
        assert all(len(e["patient_ids"]) == 1 for e in logged)

        # Another client sees none of it.
        with bulk.client(bulk.token()) as stranger:
            assert stranger.get(status_url).status_code == 404
            assert stranger.get(manifest["output"][0]["url"]).status_code == 404
            assert stranger.delete(status_url).status_code == 404

        # Delete: the job and its files are gone.
        assert c.delete(status_url).status_code == 202
        assert c.get(status_url).status_code == 404
        assert c.get(manifest["output"][0]["url"]).status_code == 404
        assert not folder.exists()


def test_since_returns_only_newer_data(bulk: FhirServer) -> None:
    data = unit_with_data(bulk, patients=1)
    patient, device = data["patients"][0], data["devices"][0]
    cut = datetime.now(UTC) - timedelta(seconds=10)
    late = reading_row(patient, device, "body_weight", cut - timedelta(days=3), 80.0)
    late["received_at"] = cut + timedelta(seconds=5)  # measured days ago, stored after `cut`
    bulk.insert([late])
    bulk.conn.execute(
        "UPDATE alerts SET opened_at = %s, updated_at = %s WHERE patient_id = %s",
        (cut - timedelta(days=1), cut - timedelta(days=1), patient),
    )
    with bulk.client(bulk.token()) as c:
        url = kick_off(
            c,
            f"/Group/{data['unit']}/$export",
            _type="Observation,Flag",
            _since=cut.isoformat(),
        )
        files = lines(c, wait_done(c, url))
    assert set(files) == {"Observation"}  # the alert and older readings are not newer
    [obs] = files["Observation"]
    assert obs["code"]["coding"][0]["code"] == "29463-7"


def test_type_filter_by_code(bulk: FhirServer) -> None:
    data = unit_with_data(bulk)
    with bulk.client(bulk.token()) as c:
        url = kick_off(
            c,
            f"/Group/{data['unit']}/$export",
            _type="Observation",
            _typeFilter="Observation?code=http://loinc.org|8867-4",
        )
        files = lines(c, wait_done(c, url))
    assert len(files["Observation"]) == 6
    assert {o["code"]["coding"][0]["code"] for o in files["Observation"]} == {"8867-4"}


def test_a_clinician_exports_only_their_own_unit(bulk: FhirServer) -> None:
    mine = unit_with_data(bulk, patients=1)
    theirs = unit_with_data(bulk, patients=1)
    token = bulk.token("clinician", care_unit=mine["unit"])
    with bulk.client(token) as c:
        r = c.get(f"/Group/{theirs['unit']}/$export", headers=ASYNC)
        assert r.status_code == 404
        assert r.json()["resourceType"] == "OperationOutcome"
        assert c.get(f"/Group/{theirs['unit']}").status_code == 404
        # Their system-level export holds their own unit's patients only.
        files = lines(c, wait_done(c, kick_off(c, "/$export", _type="Patient,Observation")))
    assert {p["id"] for p in files["Patient"]} == {str(mine["patients"][0])}
    assert len(files["Observation"]) == 5
    with bulk.client(bulk.token("patient", patient=mine["patients"][0])) as c:
        assert c.get("/Patient/$export", headers=ASYNC).status_code == 403
    with bulk.client(bulk.token(scope="system/Observation.rs")) as c:
        r = c.get("/$export", params={"_type": "Patient"}, headers=ASYNC)
        assert r.status_code == 403 and "Patient" in r.text


@pytest.mark.parametrize(
    ("params", "headers", "named"),
    [
        ({}, {}, "respond-async"),
        ({"_type": "Encounter"}, ASYNC, "_type"),
        ({"_since": "yesterday"}, ASYNC, "_since"),
        ({"_since": "2026-01-01"}, ASYNC, "_since"),
        ({"_since": "0001-01-01T00:30:00+01:00"}, ASYNC, "_since"),
        ({"_typeFilter": "Patient?name=x"}, ASYNC, "_typeFilter"),
        ({"_typeFilter": "Observation?patient=x"}, ASYNC, "_typeFilter"),
        ({"_typeFilter": "Observation?code=x", "_type": "Patient"}, ASYNC, "_typeFilter"),
        ({"_outputFormat": "text/csv"}, ASYNC, "_outputFormat"),
        ({"_elements": "id"}, ASYNC, "_elements"),
    ],
)
def test_a_bad_kick_off_is_a_400_naming_what_is_wrong(
    bulk: FhirServer, params: dict[str, str], headers: dict[str, str], named: str
) -> None:
    with bulk.client(bulk.token()) as c:
        r = c.get("/Patient/$export", params=params, headers=headers)
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"
    assert named in r.json()["issue"][0]["diagnostics"]


def test_one_export_at_a_time_per_client(bulk: FhirServer) -> None:
    subject = f"integrator-{uuid.uuid4().hex[:8]}"
    bulk.conn.execute(
        "INSERT INTO export_jobs (client, role, level, types, request, status)"
        " VALUES (%s, 'integrator', 'system', '{Patient}', 'x', 'running')",
        (subject,),
    )
    with bulk.client(bulk.token(subject=subject)) as c:
        r = c.get("/$export", headers=ASYNC)
    assert r.status_code == 429
    assert "in progress" in r.json()["issue"][0]["diagnostics"]
    with bulk.client(bulk.token()) as c:
        unknown = c.get(f"/$export-status/{uuid.uuid4()}")
        assert unknown.status_code == 404
        assert c.get("/$export-status/not-a-job").status_code == 404


def test_the_capability_statement_declares_bulk_export(bulk: FhirServer) -> None:
    with bulk.client() as c:
        statement = c.get("/metadata").json()
    assert (
        "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
        in (statement["instantiates"])
    )
    rest = statement["rest"][0]
    assert [o["name"] for o in rest["operation"]] == ["export"]
    ops = {r["type"]: [o["name"] for o in r.get("operation", [])] for r in rest["resource"]}
    assert "export" in ops["Patient"] and "export" in ops["Group"]


def test_the_admin_api_writes_a_research_extract(bulk: FhirServer) -> None:
    data = unit_with_data(bulk)
    hsa = bulk.conn.execute("SELECT hsa_id FROM care_units WHERE id = %s", (data["unit"],))
    body = {
        "care_unit": hsa.fetchone()[0],  # type: ignore[index]
        "from": "2026-10-01T00:00:00+02:00",
        "to": "2027-01-01T00:00:00+01:00",
        "format": "parquet",
    }
    api = bulk.root + "/api/v1/research-extracts"
    admin = {"Authorization": f"Bearer {bulk.token('admin', subject='admin-research')}"}
    integrator = {"Authorization": f"Bearer {bulk.token()}"}
    assert httpx.post(api, json=body, headers=integrator).status_code == 403
    for bad in ({**body, "from": "2026-10-01T00:00:00"}, {**body, "dates": "fuzz"}, {}):
        r = httpx.post(api, json=bad, headers=admin)
        assert r.status_code in (400, 422), r.text
    r = httpx.post(api, json=body, headers=admin, timeout=30)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["manifest"]["status"].startswith("pseudonymised, not anonymous")
    assert {f["rows"] for f in made["manifest"]["files"]} == {10, 2}
    for url in made["files"]:
        got = httpx.get(bulk.root + url, headers=admin)
        assert got.status_code == 200
        for secret in [*data["pnrs"], *map(str, data["patients"]), *data["devices"]]:
            assert secret.encode() not in got.content
        other = {"Authorization": f"Bearer {bulk.token('admin')}"}
        assert httpx.get(bulk.root + url, headers=other).status_code == 404
