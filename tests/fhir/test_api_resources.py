"""Patient, Device, Flag and Task through the FHIR API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.task import Task
from fhirtest import PNR_OID, PNR_SYSTEM, SNR_OID, SNR_SYSTEM, FhirServer

from egenmon.store import devices


@pytest.fixture
def token(fhir: FhirServer) -> str:
    return fhir.token()


def entries(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


def links(bundle: dict) -> str:
    return " ".join(unquote(item["url"]) for item in bundle.get("link", []))


# --- Patient ---------------------------------------------------------------------------


def test_patient_read(fhir: FhirServer, token: str) -> None:
    unit = fhir.care_unit()
    pid, pnr = fhir.patient(unit)
    with fhir.client(token) as c:
        r = c.get(f"/Patient/{pid}")
        assert r.status_code == 200
        patient = r.json()
        for missing in (str(uuid.uuid4()), "not-a-uuid"):
            r = c.get(f"/Patient/{missing}")
            assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
    Patient.model_validate(patient)
    assert patient["id"] == str(pid)
    assert patient["identifier"] == [{"use": "official", "system": PNR_SYSTEM, "value": pnr}]
    assert patient["managingOrganization"]["display"] == "Vårdcentralen Test"


@pytest.mark.parametrize(
    ("samordning", "system"),
    [
        (False, PNR_SYSTEM),
        (False, PNR_OID),
        (False, None),
        (True, SNR_SYSTEM),
        (True, SNR_OID),
        (True, None),
    ],
)
def test_patient_search_by_identifier_in_both_systems_never_echoes_the_number(
    fhir: FhirServer, token: str, samordning: bool, system: str | None
) -> None:
    unit = fhir.care_unit()
    pid, number = fhir.patient(unit, samordning=samordning)
    fhir.patient(unit)  # someone else
    value = number if system is None else f"{system}|{number}"
    with fhir.client(token) as c:
        get = c.get("/Patient", params={"identifier": value})
        posted = c.post("/Patient/_search", data={"identifier": value})
        hyphen = c.post("/Patient/_search", data={"identifier": f"{number[:8]}-{number[8:]}"})
    for r in (get, posted, hyphen):
        assert r.status_code == 200, r.text
        bundle = r.json()
        Bundle.model_validate(bundle)
        assert [p["id"] for p in entries(bundle)] == [str(pid)]
        assert bundle["total"] == 1
        expected = SNR_SYSTEM if samordning else PNR_SYSTEM
        assert entries(bundle)[0]["identifier"][0]["system"] == expected
        # The number is in the resource, never in a link.
        assert number not in links(bundle) and number[8:] not in links(bundle)
        assert "identifier" not in links(bundle)


def test_patient_search_edges(fhir: FhirServer, token: str) -> None:
    unit = fhir.care_unit()
    pid, number = fhir.patient(unit)
    with fhir.client(token) as c:
        # The other kind's system does not match; a foreign system matches nothing.
        wrong_kind = c.post("/Patient/_search", data={"identifier": f"{SNR_SYSTEM}|{number}"})
        assert wrong_kind.json()["total"] == 0
        foreign = c.post("/Patient/_search", data={"identifier": f"urn:other|{number}"})
        assert foreign.json()["total"] == 0
        r = c.post("/Patient/_search", data={"identifier": "12345"})
        assert r.status_code == 400
        assert r.json()["issue"][0]["diagnostics"].startswith("identifier")
        assert "12345" not in r.text  # an identity number is never echoed
        r = c.post("/Patient/_search", data={"identifier": number, "name": "Tolvan"})
        assert r.status_code == 400 and "name" in r.json()["issue"][0]["diagnostics"]
        counted = c.post("/Patient/_search", data={"identifier": number, "_summary": "count"})
        assert counted.json()["total"] == 1 and "entry" not in counted.json()


def test_patient_list_pages_without_identifiers_in_links(fhir: FhirServer) -> None:
    unit = fhir.care_unit()
    made = [str(fhir.patient(unit)[0]) for _ in range(5)]
    token = fhir.token("clinician", care_unit=unit)
    seen: list[str] = []
    with fhir.client(token) as c:
        page = c.get("/Patient", params={"_count": "2"}).json()
        while True:
            seen += [p["id"] for p in entries(page)]
            nxt = [x["url"] for x in page["link"] if x["relation"] == "next"]
            if not nxt:
                break
            page = c.get(nxt[0]).json()
    assert sorted(seen) == sorted(made)


# --- Device ----------------------------------------------------------------------------


def test_device_read_and_search(fhir: FhirServer, token: str) -> None:
    unit = fhir.care_unit()
    pid, _ = fhir.patient(unit)
    other, _ = fhir.patient(unit)
    d1, d2 = fhir.device(pid), fhir.device(pid, model="Nonin 3230")
    d3 = fhir.device(other)
    moved = fhir.device(pid, since=datetime(2020, 1, 1, tzinfo=UTC))
    devices.end_binding(fhir.conn, moved, datetime.now(UTC) - timedelta(days=1))
    with fhir.client(token) as c:
        r = c.get(f"/Device/{d1}")
        assert r.status_code == 200
        device = r.json()
        Device.model_validate(device)
        assert device["patient"] == {"reference": f"Patient/{pid}"}
        assert device["identifier"] == [{"system": "urn:egenmon:device", "value": d1}]
        assert c.get("/Device/nothing-here").status_code == 404
        # A device no longer bound has no patient, and is not found by its old one.
        unbound = c.get(f"/Device/{moved}").json()
        assert "patient" not in unbound
        by_patient = c.get("/Device", params={"patient": f"Patient/{pid}"}).json()
        Bundle.model_validate(by_patient)
        assert sorted(d["id"] for d in entries(by_patient)) == sorted([d1, d2])
        by_ident = c.get("/Device", params={"identifier": f"urn:egenmon:device|{d3}"}).json()
        assert [d["id"] for d in entries(by_ident)] == [d3]
        bare = c.get("/Device", params={"identifier": d2}).json()
        assert [d["id"] for d in entries(bare)] == [d2]
        both = c.get("/Device", params={"identifier": d3, "patient": str(pid)}).json()
        assert both["total"] == 0
        foreign = c.get("/Device", params={"identifier": f"urn:other|{d1}"}).json()
        assert foreign["total"] == 0
        r = c.get("/Device", params={"model": "Omron"})
        assert r.status_code == 400 and r.json()["issue"][0]["diagnostics"].startswith("model")


def test_a_clinician_sees_the_devices_of_their_unit_only(fhir: FhirServer) -> None:
    a, b = fhir.setup(), fhir.setup()
    token = fhir.token("clinician", care_unit=a["unit"])
    with fhir.client(token) as c:
        listed = c.get("/Device").json()
        assert [d["id"] for d in entries(listed)] == [a["device"]]
        assert c.get(f"/Device/{b['device']}").status_code == 404
        assert c.get("/Device", params={"identifier": b["device"]}).json()["total"] == 0


# --- Flag and Task ---------------------------------------------------------------------

OPENED = datetime(2026, 2, 1, 7, 0, tzinfo=UTC)


def add_alert(fhir: FhirServer, patient: uuid.UUID, status: str, rule: str = "threshold",
              severity: str = "medium", minutes: int = 0) -> str:  # fmt: skip
    opened = OPENED + timedelta(minutes=minutes)
    updated = opened + timedelta(hours=1)
    row = fhir.conn.execute(
        "INSERT INTO alerts (patient_id, rule, key, category, severity, current_severity,"
        " status, summary, evidence, opened_at, updated_at, due_at, acknowledged_at,"
        " resolved_at, dismissed_at)"
        " VALUES (%s, %s, %s, 'clinical', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING id",
        (patient, rule, f"{rule}:{uuid.uuid4().hex[:6]}", severity, severity, status,
         "Systolic 185 mmHg over the plan's 180", ["064867c5f0fc00-2f723469c83e5dd5"],
         opened, updated, opened + timedelta(hours=4),
         updated if status == "acknowledged" else None,
         updated if status == "resolved" else None,
         updated if status == "dismissed" else None),
    ).fetchone()  # fmt: skip
    assert row is not None
    return str(row[0])


@pytest.fixture
def alerts(fhir: FhirServer) -> dict[str, Any]:
    s = fhir.setup()
    other = fhir.setup()
    made = {
        status: add_alert(fhir, s["patient"], status, minutes=i)
        for i, status in enumerate(("open", "acknowledged", "resolved", "dismissed"))
    }
    made["other"] = add_alert(fhir, other["patient"], "open", rule="news2", severity="high")
    return {**s, "other_patient": other["patient"], "other_unit": other["unit"], "ids": made}


def test_flag_and_task_read_validate_and_carry_the_alert(
    fhir: FhirServer, alerts: dict, token: str
) -> None:
    ident = alerts["ids"]["acknowledged"]
    with fhir.client(token) as c:
        flag = c.get(f"/Flag/{ident}").json()
        task = c.get(f"/Task/{ident}").json()
        assert c.get(f"/Flag/{uuid.uuid4()}").status_code == 404
        assert c.get("/Task/not-an-id").status_code == 404
    Flag.model_validate(flag)
    Task.model_validate(task)
    assert flag["id"] == task["id"] == ident
    assert flag["status"] == "active"
    assert flag["subject"] == {"reference": f"Patient/{alerts['patient']}"}
    assert task["status"] == "accepted" and task["priority"] == "urgent"
    assert task["for"] == {"reference": f"Patient/{alerts['patient']}"}
    assert task["focus"] == {"reference": f"Flag/{ident}"}
    assert task["description"] == "Systolic 185 mmHg over the plan's 180"
    assert task["input"][0]["valueReference"]["reference"].startswith("Observation/")
    assert task["restriction"]["period"]["end"] == "2026-02-01T11:01:00Z"


@pytest.mark.parametrize(
    ("resource", "status", "expected"),
    [
        ("Flag", "active", ["open", "acknowledged"]),
        ("Flag", "inactive", ["resolved", "dismissed"]),
        ("Flag", "active,inactive", ["open", "acknowledged", "resolved", "dismissed"]),
        ("Task", "requested", ["open"]),
        ("Task", "accepted", ["acknowledged"]),
        ("Task", "completed", ["resolved"]),
        ("Task", "http://hl7.org/fhir/task-status|cancelled", ["dismissed"]),
        ("Task", "draft", []),
        ("Task", None, ["open", "acknowledged", "resolved", "dismissed"]),
    ],
)
def test_flag_and_task_search_by_patient_and_status(
    fhir: FhirServer, alerts: dict, token: str, resource: str, status: str | None,
    expected: list[str],
) -> None:  # fmt: skip
    params = {"patient": str(alerts["patient"])}
    if status is not None:
        params["status"] = status
    with fhir.client(token) as c:
        r = c.get(f"/{resource}", params=params)
    assert r.status_code == 200, r.text
    bundle = r.json()
    Bundle.model_validate(bundle)
    got = [x["id"] for x in entries(bundle)]
    # Newest first.
    assert got == [alerts["ids"][s] for s in reversed(expected)]


def test_flag_status_that_is_not_one_is_an_error(
    fhir: FhirServer, alerts: dict, token: str
) -> None:
    with fhir.client(token) as c:
        r = c.get("/Flag", params={"patient": str(alerts["patient"]), "status": "requested"})
        assert r.status_code == 400
        assert r.json()["issue"][0]["diagnostics"].startswith("status")


def test_alerts_of_another_unit_are_not_seen_and_reads_are_logged(
    fhir: FhirServer, alerts: dict
) -> None:
    subject = f"dr-{uuid.uuid4().hex[:6]}"
    token = fhir.token("clinician", care_unit=alerts["unit"], subject=subject)
    with fhir.client(token) as c:
        flags = c.get("/Flag", params={"status": "active"}).json()
        assert sorted(x["id"] for x in entries(flags)) == sorted(
            [alerts["ids"]["open"], alerts["ids"]["acknowledged"]])  # fmt: skip
        assert c.get(f"/Task/{alerts['ids']['other']}").status_code == 404
        assert c.get("/Task", params={"patient": str(alerts["other_patient"])}).status_code == 403
        assert c.get(f"/Task/{alerts['ids']['open']}").status_code == 200
    log = fhir.access_log(subject)
    # Refusals are logged as such (issue 12); the permitted reads are these two.
    refused = [(e["action"], e["resource"]) for e in log if e["action"].endswith("-refused")]
    assert refused == [("read-refused", "Task"), ("search-refused", "Task")]
    log = [e for e in log if not e["action"].endswith("-refused")]
    assert [(e["action"], e["resource"]) for e in log] == [("search", "Flag"), ("read", "Task")]
    assert log[0]["patient_ids"] == [alerts["patient"]]
    assert log[1]["patient_ids"] == [alerts["patient"]]


def test_alert_pages_follow_next(fhir: FhirServer, token: str) -> None:
    s = fhir.setup()
    made = [add_alert(fhir, s["patient"], "resolved", minutes=i) for i in range(7)]
    seen: list[str] = []
    with fhir.client(token) as c:
        page = c.get("/Task", params={"patient": str(s["patient"]), "_count": "3"}).json()
        while True:
            seen += [t["id"] for t in entries(page)]
            nxt = [x["url"] for x in page["link"] if x["relation"] == "next"]
            if not nxt:
                break
            page = c.get(nxt[0]).json()
    assert seen == made[::-1]
