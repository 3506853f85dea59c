"""The patient's own data paths through a real `egenmon serve` (issue 15, backend): hand
entry, staff entry, FHIR without a device from each role, own values and devices, and
pairing a self-bought device. One server per module (the `fhir` fixture)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from fhir.resources.R4B.observation import Observation
from fhirtest import FhirServer

from egenmon.alerts import engine

INSTRUCTION = "Om ditt blodtryck är över 180/110: ring mottagningen samma dag."


def api(server: FhirServer, token: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server.root + "/api/v1", headers=headers, timeout=30)


def bp(time: datetime, systolic: float, diastolic: float, **more: Any) -> dict[str, Any]:
    return {
        "type": "blood_pressure",
        "time": time.isoformat(),
        "systolic": systolic,
        "diastolic": diastolic,
        "unit": "mm[Hg]",
        **more,
    }


def rows(server: FhirServer, patient: uuid.UUID) -> list[dict[str, Any]]:
    with server.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT device_id, source, type, value, value2, extra, dedup_key FROM readings"
            " WHERE patient_id = %s ORDER BY time",
            (patient,),
        ).fetchall()


@pytest.fixture(scope="module")
def world(fhir: FhirServer) -> dict[str, Any]:
    """A unit with two patients (the second has a device), their tokens, a clinician of
    the unit and one of another unit; the first patient's plan has an instruction."""
    unit, other_unit = fhir.care_unit(), fhir.care_unit()
    p1, _ = fhir.patient(unit)
    p2, _ = fhir.patient(unit)
    w = {
        "unit": unit,
        "p1": p1,
        "p2": p2,
        "p2_device": fhir.device(p2),
        "t1": fhir.token("patient", patient=p1),
        "t2": fhir.token("patient", patient=p2),
        "clinician": fhir.token("clinician", care_unit=unit),
        "stranger": fhir.token("clinician", care_unit=other_unit),
        "integrator": fhir.token("integrator"),
    }
    with api(fhir, w["clinician"]) as c:
        r = c.put(
            f"/patients/{p1}/plan",
            json={
                "protocol": "hypertension",
                "thresholds": ["systolic:90:150"],
                "instructions": {"blood_pressure": INSTRUCTION},
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["instructions"] == {"blood_pressure": INSTRUCTION}
    return w


def test_hand_entry_is_stored_once_returns_the_instruction_and_the_alert_says_its_source(
    fhir: FhirServer, world: dict[str, Any]
) -> None:
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    body = {"readings": [bp(when, 182, 112, note="Huvudvärk")]}
    with api(fhir, world["t1"]) as c:
        check = c.post("/me/readings", json={**body, "dry_run": True})
        first = c.post("/me/readings", json=body)
        again = c.post("/me/readings", json=body)
    # The confirmation step: checked, not stored.
    assert check.status_code == 200, check.text
    assert check.json()["dry_run"] is True and check.json()["accepted"] == 0
    assert check.json()["readings"][0]["outside_limits"] is True
    assert first.status_code == 200, first.text
    assert (first.json()["accepted"], again.json()["duplicates"]) == (1, 1)
    answer = first.json()["readings"][0]
    assert answer["outside_limits"] is True
    assert answer["instruction"] == {"type": "blood_pressure", "text": INSTRUCTION}
    assert {c["quantity"] for c in answer["crossed"]} == {"systolic", "diastolic"}
    stored = rows(fhir, world["p1"])
    assert len(stored) == 1
    assert stored[0]["device_id"] is None and stored[0]["source"] == "patient-entered"

    result = engine.run_cycle(fhir.db_url, tz=ZoneInfo("Europe/Stockholm"))
    opened = [r for r in result.opened if r["patient_id"] == str(world["p1"])]
    assert [r["rule"] for r in opened] == ["threshold"]
    with fhir.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        alert = cur.execute(
            "SELECT details, evidence FROM alerts WHERE patient_id = %s", (world["p1"],)
        ).fetchone()
    assert alert is not None
    assert alert["details"]["source"] == "patient-entered"
    assert alert["evidence"] == [answer["id"]]

    # Own values: the entry, told apart from device readings, with the plan's limits.
    with api(fhir, world["t1"]) as c:
        mine = c.get("/me/observations", params={"type": "blood_pressure", "days": 7})
    assert mine.status_code == 200
    [obs] = mine.json()["observations"]
    assert (obs["source"], obs["entered"], obs["note"]) == ("patient-entered", True, "Huvudvärk")
    assert mine.json()["limits"]["systolic"]["high"] == 150
    assert mine.json()["instructions"] == {"blood_pressure": INSTRUCTION}


def test_an_impossible_value_is_refused_with_a_specific_message(
    fhir: FhirServer, world: dict[str, Any]
) -> None:
    before = fhir.count("SELECT count(*) FROM quarantine WHERE source = 'patient-entered'")
    when = datetime.now(UTC).isoformat()
    with api(fhir, world["t1"]) as c:
        r = c.post(
            "/me/readings",
            json={"readings": [{"type": "heart_rate", "time": when, "value": 400, "unit": "/min"}]},
        )
        meal = c.post(
            "/me/readings",
            json={"readings": [bp(datetime.now(UTC), 120, 80, meal="lunch")]},
        )
        bad = c.post("/me/readings", content=b'{"readings": [], "x": 1}')
    assert r.status_code == 422
    [refusal] = r.json()["rejected"]
    assert refusal["key"] == "entry.implausible"
    assert "400" in refusal["error"] and "plausible" in refusal["error"]
    assert refusal["message"]["sv"].startswith("Värdet kan inte stämma")
    assert meal.status_code == 422 and meal.json()["rejected"][0]["key"] == "entry.meal"
    assert bad.status_code == 400 and "unknown field" in bad.json()["error"]
    after = fhir.count("SELECT count(*) FROM quarantine WHERE source = 'patient-entered'")
    assert after == before + 2


def test_staff_entry_keeps_who_and_is_limited_to_the_unit(
    fhir: FhirServer, world: dict[str, Any]
) -> None:
    body = {"readings": [{"type": "body_weight", "time": datetime.now(UTC).isoformat(),
                          "value": 81.4, "unit": "kg"}]}  # fmt: skip
    p2 = world["p2"]
    with api(fhir, world["clinician"]) as c:
        ok = c.post(f"/patients/{p2}/readings", json=body)
    with api(fhir, world["stranger"]) as c:
        other_unit = c.post(f"/patients/{p2}/readings", json=body)
    with api(fhir, world["t1"]) as c:
        as_patient = c.post(f"/patients/{p2}/readings", json=body)
    assert ok.status_code == 200, ok.text
    assert ok.json()["accepted"] == 1
    assert other_unit.status_code == 404
    assert as_patient.status_code == 403
    [stored] = [r for r in rows(fhir, p2) if r["type"] == "body_weight"]
    assert stored["source"] == "staff-entered" and stored["device_id"] is None
    assert stored["extra"]["performer"][0]["identifier"]["value"].startswith("clinician-")


def _obs(patient: uuid.UUID, value: float) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": (datetime.now(UTC) - timedelta(seconds=value)).isoformat(),
        "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org",
                          "code": "/min"},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("who", "patient", "status", "source"),
    [
        ("t1", "p1", 201, "patient-entered"),
        ("t1", "p2", 403, None),
        ("clinician", "p2", 201, "staff-entered"),
        ("stranger", "p2", 403, None),
        ("integrator", "p2", 201, "fhir"),
    ],
)
def test_fhir_observation_without_a_device_from_each_role(
    fhir: FhirServer, world: dict[str, Any], who: str, patient: str, status: int, source: str | None
) -> None:
    value = {"t1": 61, "clinician": 62, "stranger": 63, "integrator": 64}[who]
    with fhir.client(world[who], **{"Content-Type": "application/fhir+json"}) as c:
        r = c.post("/Observation", json=_obs(world[patient], value))
    assert r.status_code == status, r.text
    if source is None:
        return
    resource = r.json()
    assert "device" not in resource
    assert resource["meta"]["source"] == f"urn:egenmon:source:{source}"
    Observation.model_validate(resource)  # a valid R4 Observation
    [row] = [x for x in rows(fhir, world[patient]) if x["type"] == "heart_rate"
             and x["value"] == value]  # fmt: skip
    assert row["source"] == source and row["device_id"] is None
    if source == "patient-entered":
        assert resource["performer"] == [{"reference": f"Patient/{world[patient]}"}]
    else:
        assert resource["performer"][-1]["display"] in ("clinician", "integrator")


def test_today_lists_the_plans_measurements(fhir: FhirServer, world: dict[str, Any]) -> None:
    with api(fhir, world["t1"]) as c:
        r = c.get("/me/today")
    assert r.status_code == 200
    tasks = r.json()["tasks"]
    assert [(t["type"], t["slot"]) for t in tasks] == [
        ("blood_pressure", "morning"),
        ("blood_pressure", "evening"),
    ]
    assert {t["status"] for t in tasks} <= {"done", "overdue", "not_yet_due"}
    assert all(t["text"]["sv"] and t["text"]["en"] for t in tasks)
    with api(fhir, world["clinician"]) as c:
        assert c.get("/me/today").status_code == 403


def test_pairing_a_self_bought_device(fhir: FhirServer, world: dict[str, Any]) -> None:
    p1 = world["p1"]
    with api(fhir, world["t1"]) as c:
        created = c.post("/me/devices/pairing-codes", json={"model": "Omron M7 Intelli IT"})
        expiring = c.post("/me/devices/pairing-codes", json={"model": "Beurer BM 54"})
        no_model = c.post("/me/devices/pairing-codes", json={})
    assert created.status_code == 201, created.text
    assert created.json()["valid_seconds"] == 900
    assert no_model.status_code == 400
    code = created.json()["code"]
    # Only the digest is stored.
    assert fhir.count("SELECT count(*) FROM pairing_codes WHERE code_sha256::text LIKE %s",
                      (f"%{code}%",)) == 0  # fmt: skip
    fhir.conn.execute(
        "UPDATE pairing_codes SET expires_at = now() - interval '1 second'"
        " WHERE model = 'Beurer BM 54' AND patient_id = %s",
        (p1,),
    )
    with api(fhir) as anonymous:
        paired = anonymous.post("/devices/pair", json={"code": code.lower()})
        twice = anonymous.post("/devices/pair", json={"code": code})
        expired = anonymous.post("/devices/pair", json={"code": expiring.json()["code"]})
        unknown = anonymous.post("/devices/pair", json={"code": "0000-0000-0000"})
        junk = anonymous.post("/devices/pair", json={"code": code, "patient": str(p1)})
    assert paired.status_code == 200, paired.text
    device_id, secret = paired.json()["device_id"], paired.json()["secret"]
    assert twice.status_code == 410
    assert expired.status_code == 410
    assert unknown.status_code == 404
    assert junk.status_code == 400

    # The device posts readings that appear among the patient's own values.
    reading = {"type": "spo2", "time": datetime.now(UTC).isoformat(), "value": 95, "unit": "%"}
    with httpx.Client(base_url=fhir.root, timeout=30) as c:
        posted = c.post(
            "/api/v1/readings",
            json={"readings": [reading], "battery": 0.5},
            headers={"Authorization": f"Bearer {secret}"},
        )
    assert posted.status_code == 200 and posted.json()["accepted"] == 1, posted.text
    with api(fhir, world["t1"]) as c:
        mine = c.get("/me/observations", params={"type": "spo2", "days": 7}).json()
        devices = c.get("/me/devices").json()["devices"]
        other = c.delete(f"/me/devices/{world['p2_device']}")
        removed = c.delete(f"/me/devices/{device_id}")
        after = c.get("/me/devices").json()["devices"]
        still = c.get("/me/observations", params={"type": "spo2", "days": 7}).json()
    assert [(o["device_id"], o["source"], o["entered"]) for o in mine["observations"]] == [
        (device_id, "http", False)
    ]
    assert [d["id"] for d in devices] == [device_id]
    assert other.status_code == 404  # another patient's device
    assert removed.status_code == 200
    assert after == []
    assert len(still["observations"]) == 1  # history kept


def test_a_patient_never_touches_another_patients_data(
    fhir: FhirServer, world: dict[str, Any]
) -> None:
    with api(fhir, world["t2"]) as c:
        mine = c.get("/me/observations", params={"days": 90}).json()["observations"]
        devices = c.get("/me/devices").json()["devices"]
        bad_days = c.get("/me/observations", params={"days": 365})
    assert mine and all(o["source"] != "patient-entered" for o in mine)
    assert {d["id"] for d in devices} == {world["p2_device"]}
    assert bad_days.status_code == 400
    with api(fhir) as anonymous:
        assert anonymous.get("/me/observations").status_code == 401
        assert anonymous.post("/me/readings", json={"readings": []}).status_code == 401


def test_guessing_pairing_codes_is_paused_per_address(fhir: FhirServer) -> None:
    """Last in the module: it pauses this address's pairing for 15 minutes."""
    with api(fhir) as anonymous:
        answers = [
            anonymous.post("/devices/pair", json={"code": f"ZZZZ-ZZZZ-ZZ{i:02d}"}).status_code
            for i in range(12)
        ]
    # Ten wrong codes (the pairing test's three included) pause the address.
    assert answers[0] == 404
    assert set(answers) == {404, 429}
    assert answers[-1] == 429 and answers.index(429) <= 10
