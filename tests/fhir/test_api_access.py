"""Who may see what through the FHIR API, and the access log of every permitted read."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhirtest import FhirServer

T0 = datetime(2026, 2, 3, 8, 0, tzinfo=UTC)


@pytest.fixture
def world(fhir: FhirServer) -> dict[str, Any]:
    """Two care units with a patient each (one with two patients), with readings."""
    a, b = fhir.setup(), fhir.setup()
    a2, a2_pnr = fhir.patient(a["unit"])
    a2_device = fhir.device(a2)
    return {
        "a": a,
        "b": b,
        "a2": a2,
        "a2_pnr": a2_pnr,
        "a_obs": fhir.readings(a["patient"], a["device"], "heart_rate",
                               [T0 + timedelta(minutes=i) for i in range(3)]),
        "a2_obs": fhir.readings(a2, a2_device, "heart_rate", [T0 + timedelta(minutes=30)]),
        "b_obs": fhir.readings(b["patient"], b["device"], "heart_rate",
                               [T0 + timedelta(minutes=i) for i in range(4)]),
    }  # fmt: skip


def outcome(r: Any, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    return body


def obs_ids(bundle: dict) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])
            if e["search"]["mode"] == "match"]  # fmt: skip


# --- refused ---------------------------------------------------------------------------


def test_no_token_or_a_bad_one_is_401_with_an_operation_outcome(
    fhir: FhirServer, world: dict
) -> None:
    a = world["a"]
    forged = fhir.token()[:-4] + "AAAA"
    with fhir.client() as c:
        for path in ("/Observation", f"/Observation/{world['a_obs'][0]}",
                     f"/Patient/{a['patient']}", "/Device", "/Flag", "/Task",
                     "/Observation/$lastn"):  # fmt: skip
            r = c.get(path, params={"patient": str(a["patient"])})
            body = outcome(r, 401)
            assert body["issue"][0]["code"] == "login"
            assert r.headers["www-authenticate"].startswith("Bearer")
        outcome(c.post("/Observation", json={}), 401)
        outcome(c.post("", json={"resourceType": "Bundle", "type": "batch"}), 401)
    with fhir.client(forged) as c:
        outcome(c.get("/Observation", params={"patient": str(a["patient"])}), 401)
    # The CapabilityStatement is public, as FHIR clients expect.
    with fhir.client() as c:
        assert c.get("/metadata").status_code == 200


def test_scopes_that_do_not_cover_the_request_are_403(fhir: FhirServer, world: dict) -> None:
    a = world["a"]
    patients_only = fhir.token(scope="system/Patient.rs")
    read_not_search = fhir.token(scope="system/Observation.r")
    with fhir.client(patients_only) as c:
        body = outcome(c.get("/Observation", params={"patient": str(a["patient"])}), 403)
        assert body["issue"][0]["code"] == "forbidden"
        outcome(c.get(f"/Observation/{world['a_obs'][0]}"), 403)
        assert c.get(f"/Patient/{a['patient']}").status_code == 200
    with fhir.client(read_not_search) as c:
        assert c.get(f"/Observation/{world['a_obs'][0]}").status_code == 200
        outcome(c.get("/Observation", params={"patient": str(a["patient"])}), 403)
        outcome(c.get("/Observation/$lastn", params={"patient": str(a["patient"])}), 403)


def test_a_clinician_sees_only_the_patients_of_their_care_unit(
    fhir: FhirServer, world: dict
) -> None:
    a, b = world["a"], world["b"]
    token = fhir.token("clinician", care_unit=a["unit"])
    with fhir.client(token) as c:
        # Searching another unit's patient is refused.
        for path in ("/Observation", "/Observation/$lastn", "/Device", "/Flag", "/Task"):
            body = outcome(c.get(path, params={"patient": str(b["patient"])}), 403)
            assert body["issue"][0]["code"] == "forbidden"
        # Reading another unit's resources looks exactly like reading nothing: 404.
        outcome(c.get(f"/Observation/{world['b_obs'][0]}"), 404)
        outcome(c.get(f"/Patient/{b['patient']}"), 404)
        outcome(c.get(f"/Device/{b['device']}"), 404)
        # Without a patient, a search finds the unit's patients only (limited in SQL).
        r = c.get("/Observation", params={"code": "8867-4", "_count": "2"})
        assert r.status_code == 200
        seen = obs_ids(r.json())
        nxt = [x["url"] for x in r.json()["link"] if x["relation"] == "next"]
        while nxt:
            page = c.get(nxt[0]).json()
            seen += obs_ids(page)
            nxt = [x["url"] for x in page["link"] if x["relation"] == "next"]
        assert sorted(seen) == sorted(world["a_obs"] + world["a2_obs"])
        counted = c.get("/Observation", params={"_summary": "count"}).json()
        assert counted["total"] == 4
        # A personnummer of another unit finds nobody.
        r = c.post("/Patient/_search", data={"identifier": b["pnr"]})
        assert r.status_code == 200 and r.json()["total"] == 0
        r = c.post("/Patient/_search", data={"identifier": world["a2_pnr"]})
        assert [e["resource"]["id"] for e in r.json()["entry"]] == [str(world["a2"])]
        # Their own patients are there.
        r = c.get("/Observation", params={"patient": str(a["patient"])})
        assert sorted(obs_ids(r.json())) == sorted(world["a_obs"])
        assert c.get(f"/Observation/{world['a_obs'][0]}").status_code == 200


def test_a_patient_token_sees_that_patient_only(fhir: FhirServer, world: dict) -> None:
    a, b = world["a"], world["b"]
    token = fhir.token("patient", patient=a["patient"])
    with fhir.client(token) as c:
        r = c.get("/Observation")
        assert r.status_code == 200
        assert sorted(obs_ids(r.json())) == sorted(world["a_obs"])
        assert c.get(f"/Patient/{a['patient']}").status_code == 200
        outcome(c.get(f"/Patient/{world['a2']}"), 404)
        outcome(c.get("/Observation", params={"patient": str(world["a2"])}), 403)
        outcome(c.get(f"/Observation/{world['a2_obs'][0]}"), 404)
        outcome(c.get(f"/Observation/{world['b_obs'][0]}"), 404)
        r = c.get("/Patient")
        assert [e["resource"]["id"] for e in r.json()["entry"]] == [str(a["patient"])]
        # A patient enters readings for themself only (issue 15), never for another.
        obs = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{world['a2']}"},
            "effectiveDateTime": "2026-01-01T08:00:00Z",
            "valueQuantity": {"value": 70, "system": "http://unitsofmeasure.org", "code": "/min"},
        }
        outcome(c.post("/Observation", json=obs), 403)
    with fhir.client(fhir.token("clinician", care_unit=b["unit"])) as c:
        outcome(c.get(f"/Observation/{world['a_obs'][0]}"), 404)


def test_a_clinician_without_a_care_unit_sees_nothing(fhir: FhirServer, world: dict) -> None:
    token = fhir.token("clinician", care_unit=uuid.uuid4())
    with fhir.client(token) as c:
        assert c.get("/Observation", params={"_summary": "count"}).json()["total"] == 0
        outcome(c.get("/Observation", params={"patient": str(world["a"]["patient"])}), 403)


# --- the access log --------------------------------------------------------------------


def test_each_read_and_search_is_logged_refused_ones_with_their_outcome(
    fhir: FhirServer, world: dict
) -> None:
    a, b = world["a"], world["b"]
    subject = f"dr-{uuid.uuid4().hex[:8]}"
    token = fhir.token("clinician", care_unit=a["unit"], subject=subject)
    with fhir.client(token) as c:
        assert c.get(f"/Observation/{world['a_obs'][1]}").status_code == 200
        assert c.get("/Observation", params={"patient": str(a["patient"])}).status_code == 200
        assert c.get("/Observation", params={"code": "8867-4"}).status_code == 200
        assert c.get(f"/Patient/{a['patient']}").status_code == 200
        assert c.post("/Patient/_search", data={"identifier": a["pnr"]}).status_code == 200
        assert c.get(f"/Device/{a['device']}").status_code == 200
        assert (
            c.get("/Observation/$lastn", params={"patient": str(a["patient"])}).status_code == 200
        )
        # Refused: logged as refused, with the outcome (a bad request is not a read).
        assert c.get("/Observation", params={"patient": str(b["patient"])}).status_code == 403
        assert c.get(f"/Observation/{world['b_obs'][0]}").status_code == 404
        assert c.get(f"/Patient/{b['patient']}").status_code == 404
        assert c.get(f"/Patient/{a['pnr']}").status_code == 404
        assert c.get("/Observation", params={"bogus": "1"}).status_code == 400
    everything = fhir.access_log(subject)
    refused = [e for e in everything if e["action"].endswith("-refused")]
    assert [(e["action"], e["resource"], e["detail"]["status"]) for e in refused] == [
        ("search-refused", "Observation", 403),
        ("read-refused", "Observation", 404),
        ("read-refused", "Patient", 404),
        ("read-refused", "Patient", 404),
    ]
    assert refused[0]["patient_ids"] == [b["patient"]]
    assert refused[0]["detail"]["params"] == ["patient"]
    assert refused[1]["detail"]["id"] == world["b_obs"][0]
    assert refused[2]["detail"]["id"] == str(b["patient"])
    # A personnummer put where an id goes is not kept.
    assert refused[3]["detail"]["id"] == "(other)"
    assert all(e["detail"]["outcome"] == "refused" for e in refused)
    for e in everything:
        assert a["pnr"] not in str(e)
    log = [e for e in everything if e not in refused]
    assert [(e["action"], e["resource"]) for e in log] == [
        ("read", "Observation"),
        ("search", "Observation"),
        ("search", "Observation"),
        ("read", "Patient"),
        ("search", "Patient"),
        ("read", "Device"),
        ("search", "Observation"),
    ]
    for e in log:
        assert e["role"] == "clinician"
        assert e["care_unit_id"] == a["unit"]
        assert e["at"] is not None
    assert log[0]["patient_ids"] == [a["patient"]]
    assert log[0]["detail"] == {"id": world["a_obs"][1]}
    assert log[1]["patient_ids"] == [a["patient"]]
    # A search without a patient logs the distinct patients it returned.
    assert sorted(log[2]["patient_ids"]) == sorted([a["patient"], world["a2"]])
    assert log[2]["detail"] == {"params": ["code"], "returned": 4}
    assert log[4]["patient_ids"] == [a["patient"]]
    assert log[6]["detail"]["operation"] == "lastn"
    # The personnummer is never written to the log.
    for e in log:
        assert a["pnr"] not in str(e)


def test_an_integrator_search_that_finds_nothing_still_logs_the_patient_asked_about(
    fhir: FhirServer, world: dict
) -> None:
    subject = f"journal-{uuid.uuid4().hex[:8]}"
    token = fhir.token(subject=subject)
    a = world["a"]
    with fhir.client(token) as c:
        r = c.get("/Observation", params={"patient": str(a["patient"]), "code": "2708-6"})
        assert r.json()["total"] == 0
        r = c.get("/Observation", params={"code": "2708-6", "date": "2001"})
        assert r.json()["total"] == 0
    log = fhir.access_log(subject)
    assert [e["patient_ids"] for e in log] == [[a["patient"]], []]
    assert all(e["role"] == "integrator" and e["care_unit_id"] is None for e in log)


def test_the_access_log_cannot_be_changed(fhir: FhirServer, world: dict) -> None:
    import psycopg

    subject = f"audit-{uuid.uuid4().hex[:8]}"
    with fhir.client(fhir.token(subject=subject)) as c:
        c.get(f"/Patient/{world['a']['patient']}")
    assert len(fhir.access_log(subject)) == 1
    with pytest.raises(psycopg.errors.RaiseException):
        fhir.conn.execute("DELETE FROM access_log WHERE actor = %s", (subject,))
    with pytest.raises(psycopg.errors.RaiseException):
        fhir.conn.execute("UPDATE access_log SET actor = 'x' WHERE actor = %s", (subject,))
    assert len(fhir.access_log(subject)) == 1
