"""PHD gateways post the IG's transaction Bundles; transactions resolve their urn:uuid links."""

from __future__ import annotations

import copy
import json
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhirtest import FhirServer, spec_example
from phd_examples import BUNDLE_EXAMPLE_1

from egenmon.cli import main
from egenmon.devices.credentials import new_secret, secret_digest
from egenmon.fhir.phd import EUI64_SYSTEM, GATEWAY_EXTENSION, PHD_IDENTIFIER_SYSTEM
from egenmon.fhir.phd_registry import PhdRegistryError, map_system_id
from egenmon.store import devices

SENSOR = "phd-001c050400007825"  # the IG example's Nonin oximeter, 00-1C-05-04-00-00-78-25
PNR = "http://electronichealth.se/identifier/personnummer"


def gateway(fhir: FhirServer, patient: uuid.UUID) -> tuple[str, str]:
    """A gateway device bound to the patient since 2019 (the example's data is of 2019)."""
    device_id, secret = f"phg-{uuid.uuid4().hex[:10]}", new_secret()
    devices.add_device(
        fhir.conn,
        device_id,
        "PHG app",
        secret_digest(secret),
        patient_id=patient,
        since=datetime(2019, 1, 1, tzinfo=UTC),
    )
    return device_id, secret


def post(fhir: FhirServer, secret: str, bundle: dict) -> Any:
    with fhir.client(secret) as c:
        return c.post("", json=bundle, headers={"Content-Type": "application/fhir+json"})


def rows(fhir: FhirServer, patient: uuid.UUID) -> list[tuple]:
    return fhir.conn.execute(
        "SELECT device_id, type, value, source FROM readings WHERE patient_id = %s ORDER BY type",
        (patient,),
    ).fetchall()


def with_sensor(bundle: dict, system_id: str, gateway_id: str | None = None) -> dict:
    """The example with another oximeter and gateway (each test registers its own)."""
    b = copy.deepcopy(bundle)
    new = {"00-1C-05-04-00-00-78-25": system_id}
    new["4C-4E-49-12-34-56-FF-FF"] = gateway_id or "4C-4E-49-00-00-" + system_id[-8:]
    for e in b["entry"]:
        if e["resource"]["resourceType"] == "Device":
            for ident in e["resource"]["identifier"]:
                ident["value"] = new.get(ident["value"], ident["value"])
    return b


def by_url(answer: dict, bundle: dict) -> dict[str, dict]:
    return {
        e["fullUrl"]: a["response"] for e, a in zip(bundle["entry"], answer["entry"], strict=True)
    }


@pytest.fixture(scope="module")
def first_upload(fhir: FhirServer) -> dict[str, Any]:
    """The IG's example Bundle, posted once by a gateway of a fresh patient."""
    unit = fhir.care_unit()
    patient, number = fhir.patient(unit)
    gw, secret = gateway(fhir, patient)
    r = post(fhir, secret, BUNDLE_EXAMPLE_1)
    assert r.status_code == 200, r.text
    return {"patient": patient, "pnr": number, "gateway": gw, "secret": secret, "answer": r.json()}


def test_the_ig_example_bundle_creates_its_device_and_stores_its_measurements(
    fhir: FhirServer, first_upload: dict
) -> None:
    answer, patient, gw = first_upload["answer"], first_upload["patient"], first_upload["gateway"]
    Bundle.model_validate(answer)
    assert answer["type"] == "transaction-response"
    status = by_url(answer, BUNDLE_EXAMPLE_1)
    urls = [e["fullUrl"] for e in BUNDLE_EXAMPLE_1["entry"]]
    patient_url, gw_url, sensor_url, cts_url, spo2_url, pulse_url = urls
    # The Patient is the gateway's, matched not created; the gateway is itself.
    assert status[patient_url] == {"status": "200 OK", "location": f"Patient/{patient}"}
    assert status[gw_url] == {"status": "200 OK", "location": f"Device/{gw}"}
    assert status[sensor_url] == {"status": "201 Created", "location": f"Device/{SENSOR}"}
    assert status[cts_url]["status"] == "202 Accepted"
    assert "coincident time stamp" in status[cts_url]["outcome"]["issue"][0]["diagnostics"]
    assert status[spo2_url]["status"] == status[pulse_url]["status"] == "201 Created"
    assert rows(fhir, patient) == [
        (SENSOR, "heart_rate", 47.0, "phd"),
        (SENSOR, "spo2", 98.0, "phd"),
    ]
    # The oximeter is registered under the gateway's authority, for the gateway's patient.
    registered = fhir.conn.execute(
        "SELECT d.model, d.manufacturer, b.patient_id, lower(b.during), i.registered_by"
        " FROM devices d JOIN device_bindings b ON b.device_id = d.id"
        " JOIN device_identifiers i ON i.device_id = d.id WHERE d.id = %s",
        (SENSOR,),
    ).fetchall()
    assert registered == [
        ("Model 3150", "Nonin Medical, Inc.", patient, datetime(2019, 1, 1, tzinfo=UTC), gw)
    ]
    gateway_ids = fhir.conn.execute(
        "SELECT value FROM device_identifiers WHERE device_id = %s AND system = %s",
        (gw, EUI64_SYSTEM),
    ).fetchall()
    assert gateway_ids == [("4C-4E-49-12-34-56-FF-FF",)]
    # The stored SpO2 keeps the PHD content, its links resolved to egenmon's ids.
    with fhir.client(fhir.token()) as c:
        spo2 = c.get(status[spo2_url]["location"]).json()
    Observation.model_validate(spo2)
    assert spo2["subject"] == {"reference": f"Patient/{patient}"}
    assert spo2["device"] == {"reference": f"Device/{SENSOR}"}
    gateway_ext = [e for e in spo2["extension"] if e["url"] == GATEWAY_EXTENSION]
    assert gateway_ext == [
        {"url": GATEWAY_EXTENSION, "valueReference": {"reference": f"Device/{gw}"}}
    ]
    categories = {c["code"] for cat in spo2["category"] for c in cat["coding"]}
    assert {"phd", "vital-signs"} <= categories


def test_the_same_bundle_again_stores_nothing_new(fhir: FhirServer, first_upload: dict) -> None:
    patient = first_upload["patient"]
    before_rows = rows(fhir, patient)
    before_devices = fhir.count("SELECT count(*) FROM devices")
    r = post(fhir, first_upload["secret"], BUNDLE_EXAMPLE_1)
    assert r.status_code == 200, r.text
    again = [a["response"]["status"] for a in r.json()["entry"]]
    assert again == ["200 OK", "200 OK", "200 OK", "202 Accepted", "200 OK", "200 OK"]
    first = [a["response"].get("location") for a in first_upload["answer"]["entry"]]
    assert [a["response"].get("location") for a in r.json()["entry"]] == first
    assert rows(fhir, patient) == before_rows
    assert fhir.count("SELECT count(*) FROM devices") == before_devices


def test_the_phd_identifier_is_the_dedup_key(fhir: FhirServer) -> None:
    unit = fhir.care_unit()
    patient, _ = fhir.patient(unit)
    _, secret = gateway(fhir, patient)
    bundle = with_sensor(BUNDLE_EXAMPLE_1, "00-1C-05-04-00-00-00-01")
    spo2 = bundle["entry"][4]["resource"]
    spo2["identifier"] = [
        {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:" + str(uuid.uuid4())},
        {"system": PHD_IDENTIFIER_SYSTEM, "value": "001C050400000001-x-150456-20190920124016"},
    ]
    assert post(fhir, secret, bundle).status_code == 200
    # The gateway's clock moved: another time, but the same measurement by its identifier.
    spo2["effectiveDateTime"] = "2019-09-20T12:40:17.936-04:00"
    spo2["identifier"][0]["value"] = "urn:uuid:" + str(uuid.uuid4())
    r = post(fhir, secret, bundle)
    assert r.status_code == 200, r.text
    assert r.json()["entry"][4]["response"]["status"] == "200 OK"
    assert [t for _, t, _, _ in rows(fhir, patient)] == ["heart_rate", "spo2"]


def test_a_gateway_writes_for_its_own_patient_only(fhir: FhirServer) -> None:
    unit = fhir.care_unit()
    patient, number = fhir.patient(unit)
    other, other_number = fhir.patient(unit)
    gw, secret = gateway(fhir, patient)
    # An Observation about another patient: the whole transaction is refused.
    bundle = with_sensor(BUNDLE_EXAMPLE_1, "00-1C-05-04-00-00-00-02")
    bundle["entry"][5]["resource"]["subject"] = {"reference": f"Patient/{other}"}
    r = post(fhir, secret, bundle)
    assert r.status_code == 403, r.text
    assert "Bundle.entry[5]" in r.json()["issue"][0]["diagnostics"]
    # A Patient entry naming someone else's personnummer.
    bundle = with_sensor(BUNDLE_EXAMPLE_1, "00-1C-05-04-00-00-00-02")
    bundle["entry"][0]["resource"]["identifier"].append({"system": PNR, "value": other_number})
    r = post(fhir, secret, bundle)
    assert r.status_code == 403, r.text
    assert "Bundle.entry[0].resource.identifier" in r.json()["issue"][0]["diagnostics"]
    # Nothing was stored or registered; with the gateway's own personnummer it goes in.
    assert rows(fhir, patient) == [] and rows(fhir, other) == []
    assert fhir.count("SELECT count(*) FROM devices WHERE id = 'phd-001c050400000002'") == 0
    bundle["entry"][0]["resource"]["identifier"][-1]["value"] = number
    assert post(fhir, secret, bundle).status_code == 200
    # Another patient's gateway cannot claim that oximeter, nor this gateway's system id.
    _, other_secret = gateway(fhir, other)
    bundle["entry"][0]["resource"]["identifier"].pop()
    r = post(fhir, other_secret, bundle)
    assert r.status_code == 403, r.text
    diagnostics = " ".join(i["diagnostics"] for i in r.json()["issue"])
    assert "another device's" in diagnostics and "another patient" in diagnostics
    assert rows(fhir, other) == []
    assert gw  # the first gateway keeps its system id
    assert fhir.count("SELECT count(*) FROM device_identifiers WHERE device_id = %s", [gw]) == 1


def test_a_gateway_needs_valid_device_credentials(fhir: FhirServer) -> None:
    r = post(fhir, "not-a-device-secret", BUNDLE_EXAMPLE_1)
    assert r.status_code == 401
    # An integrator's token may not send Patient or Device entries.
    with fhir.client(fhir.token()) as c:
        r = c.post("", json=BUNDLE_EXAMPLE_1)
    assert r.status_code == 400
    assert "only POST Observation is supported" in r.json()["issue"][0]["diagnostics"]


def test_a_transaction_resolves_urn_uuid_references_to_the_ids_it_creates(
    fhir: FhirServer,
) -> None:
    pat = fhir.setup()
    p, d = pat["patient"], pat["device"]
    hr = spec_example("heart-rate", p, d)
    temp = spec_example("body-temperature", p, d)
    hr_url = f"urn:uuid:{uuid.uuid4()}"
    temp["derivedFrom"] = [{"reference": hr_url}]
    temp["hasMember"] = [{"reference": hr_url}]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": temp,
             "request": {"method": "POST", "url": "Observation"}},
            {"fullUrl": hr_url, "resource": hr,
             "request": {"method": "POST", "url": "Observation"}},
        ],
    }  # fmt: skip
    with fhir.client(fhir.token()) as c:
        r = c.post("", json=bundle)
        assert r.status_code == 200, r.text
        temp_out, hr_out = (e["response"]["location"] for e in r.json()["entry"])
        stored = c.get(temp_out).json()
        assert stored["derivedFrom"] == [{"reference": hr_out}]
        assert stored["hasMember"] == [{"reference": hr_out}]
        assert c.get(stored["derivedFrom"][0]["reference"]).status_code == 200


def test_a_mapped_system_id_stores_under_the_registered_device(fhir: FhirServer) -> None:
    pat = fhir.setup()
    patient, cuff = pat["patient"], pat["device"]  # registered by an admin, bound since 2020
    _, secret = gateway(fhir, patient)
    with pytest.raises(PhdRegistryError, match="not an EUI-64"):
        map_system_id(fhir.conn, cuff, "00-1C-05")
    assert map_system_id(fhir.conn, cuff, "00:1c:05:04:00:00:00:03")["system_id"] == (
        "00-1C-05-04-00-00-00-03"
    )
    with pytest.raises(PhdRegistryError, match="another device"):
        map_system_id(fhir.conn, fhir.device(patient), "00-1C-05-04-00-00-00-03")
    bundle = with_sensor(BUNDLE_EXAMPLE_1, "00-1C-05-04-00-00-00-03")
    for e in bundle["entry"]:  # measured after the cuff's binding began
        if "effectiveDateTime" in e["resource"]:
            e["resource"]["effectiveDateTime"] = "2021-09-20T12:40:16.936-04:00"
    r = post(fhir, secret, bundle)
    assert r.status_code == 200, r.text
    assert r.json()["entry"][2]["response"] == {"status": "200 OK", "location": f"Device/{cuff}"}
    assert [(d, t) for d, t, _, _ in rows(fhir, patient)] == [
        (cuff, "heart_rate"),
        (cuff, "spo2"),
    ]


def test_a_refused_measurement_is_kept_and_does_not_block_the_rest(fhir: FhirServer) -> None:
    unit = fhir.care_unit()
    patient, _ = fhir.patient(unit)
    gw, secret = gateway(fhir, patient)
    bundle = with_sensor(BUNDLE_EXAMPLE_1, "00-1C-05-04-00-00-00-04")
    bundle["entry"][4]["resource"]["valueQuantity"]["value"] = 30  # no living patient's SpO2
    for _ in range(2):  # the gateway sends its memory again: same answer, nothing new
        r = post(fhir, secret, bundle)
        assert r.status_code == 200, r.text
        spo2 = r.json()["entry"][4]["response"]
        assert spo2["status"] == "202 Accepted"
        issue = spo2["outcome"]["issue"][0]
        assert issue["severity"] == "warning" and "kept in quarantine" in issue["diagnostics"]
        assert [t for _, t, _, _ in rows(fhir, patient)] == ["heart_rate"]
    kept = fhir.conn.execute(
        "SELECT reason FROM quarantine WHERE source = 'phd' AND device_id = %s",
        ("phd-001c050400000004",),
    ).fetchall()
    assert len(kept) == 2 and all("Bundle.entry[4]" in k[0] for k in kept)
    assert gw


def test_a_bundle_of_a_gateway_bound_to_no_one_is_kept_and_replayed_once_bound(
    fhir: FhirServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    unit = fhir.care_unit()
    patient, _ = fhir.patient(unit)
    gw, secret = gateway(fhir, patient)
    devices.end_binding(fhir.conn, gw, datetime.now(UTC))
    bundle = with_sensor(BUNDLE_EXAMPLE_1, "00-1C-05-04-00-00-00-05")
    soon = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()  # after the new binding
    for e in bundle["entry"][3:]:
        e["resource"]["effectiveDateTime"] = soon
    r = post(fhir, secret, bundle)
    assert r.status_code == 403, r.text
    assert "bound to no patient now" in r.json()["issue"][0]["diagnostics"]
    [(entry_id,)] = fhir.conn.execute(
        "SELECT id FROM quarantine WHERE source = 'phd' AND device_id = %s", (gw,)
    ).fetchall()
    # Bound again; the admin replays the kept Bundle, as the gateway.
    devices.bind_device(fhir.conn, gw, patient, datetime.now(UTC))
    for key in [k for k in os.environ if k.startswith("EGENMON_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("EGENMON_DATABASE_URL", fhir.db_url)
    monkeypatch.setenv("EGENMON_ENVIRONMENT", "test")
    assert main(["quarantine", "replay", str(entry_id), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["replayed"][0]["resolved"] is True
    assert [t for _, t, _, _ in rows(fhir, patient)] == ["heart_rate", "spo2"]


def test_devices_are_found_and_served_with_their_system_ids(
    fhir: FhirServer, first_upload: dict
) -> None:
    with fhir.client(fhir.token()) as c:
        found = c.get("/Device", params={"identifier": f"{EUI64_SYSTEM}|00-1C-05-04-00-00-78-25"})
        assert found.status_code == 200, found.text
        assert [e["resource"]["id"] for e in found.json()["entry"]] == [SENSOR]
        gw = c.get(f"/Device/{first_upload['gateway']}").json()
        none = c.get("/Device", params={"identifier": f"{EUI64_SYSTEM}|00-00-00-00-00-00-00-00"})
    assert {"system": EUI64_SYSTEM, "value": "4C-4E-49-12-34-56-FF-FF"} in gw["identifier"]
    assert none.json().get("entry", []) == []
