"""The FHIR way in: POST Observation, batch and transaction Bundles, If-None-Exist."""

from __future__ import annotations

import concurrent.futures
import copy
import uuid
from datetime import datetime
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhirtest import SPEC_EXAMPLES, FhirServer, spec_example

from egenmon.domain.measurements import LOINC, MDC


@pytest.fixture
def pat(fhir: FhirServer) -> dict[str, Any]:
    return fhir.setup()


@pytest.fixture
def token(fhir: FhirServer) -> str:
    return fhir.token()


def stored(fhir: FhirServer, patient: uuid.UUID) -> int:
    return fhir.count("SELECT count(*) FROM readings WHERE patient_id = %s", [patient])


def quarantined(fhir: FhirServer, device: str | None = None) -> list[tuple]:
    return fhir.conn.execute(
        "SELECT source, reason, raw FROM quarantine WHERE source = 'fhir'"
        " AND (%s::text IS NULL OR device_id = %s) ORDER BY id",
        (device, device),
    ).fetchall()


def codings(concept: dict) -> set[tuple[str, str]]:
    return {(c.get("system"), c["code"]) for c in concept.get("coding", [])}


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def entry(resource: dict, if_none_exist: str | None = None) -> dict:
    request: dict[str, Any] = {"method": "POST", "url": "Observation"}
    if if_none_exist:
        request["ifNoneExist"] = if_none_exist
    return {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource, "request": request}


# --- the specification's vital-sign examples --------------------------------------------


@pytest.mark.parametrize("name", sorted(SPEC_EXAMPLES))
def test_spec_examples_post_and_read_back_unchanged_in_meaning(
    fhir: FhirServer, pat: dict, token: str, name: str
) -> None:
    posted = spec_example(name, pat["patient"], pat["device"])
    with fhir.client(token) as c:
        r = c.post("/Observation", json=posted,
                   headers={"Content-Type": "application/fhir+json"})  # fmt: skip
        assert r.status_code == 201, r.text
        created = r.json()
        assert r.headers["location"] == f"{fhir.base}/Observation/{created['id']}"
        back = c.get(r.headers["location"]).json()
    assert back == created
    Observation.model_validate(back)
    # Same measurement, same patient, same device, same time.
    assert back["subject"] == posted["subject"] and back["device"] == posted["device"]
    assert instant(back["effectiveDateTime"]) == instant(posted["effectiveDateTime"])
    assert back["status"] == "final"
    assert codings(posted["code"]) <= codings(back["code"])
    if "valueQuantity" in posted:
        pq, bq = posted["valueQuantity"], back["valueQuantity"]
        if pq["code"] == "[lb_av]":  # stored in kg, the canonical unit
            assert bq["code"] == "kg"
            assert bq["value"] == pytest.approx(pq["value"] * 0.45359237, abs=0.01)
        else:
            assert (bq["value"], bq["code"], bq["system"]) == (
                pq["value"], pq["code"], pq["system"])  # fmt: skip
    for comp in posted.get("component", []):
        match = [b for b in back["component"] if codings(comp["code"]) & codings(b["code"])]
        assert len(match) == 1
        assert codings(comp["code"]) <= codings(match[0]["code"])
        assert match[0]["valueQuantity"]["value"] == comp["valueQuantity"]["value"]
        for key in comp.keys() - {"code", "valueQuantity"}:
            assert match[0][key] == comp[key]
    # What the columns cannot hold is kept and served back as posted.
    for key in ("interpretation", "bodySite", "referenceRange", "basedOn"):
        if key in posted:
            assert back[key] == posted[key]
    for ident in posted.get("identifier", []):
        assert ident in back["identifier"]
    for performer in posted.get("performer", []):
        assert performer in back["performer"]


def test_fhirpy_creates_and_reads_back(fhir: FhirServer, pat: dict, token: str) -> None:
    client = fhir.fhirpy(token)
    resource = client.resource(
        "Observation", **spec_example("heart-rate", pat["patient"], pat["device"])
    )
    resource.save()
    assert resource.id
    again = client.reference("Observation", resource.id).to_resource()
    assert again["valueQuantity"]["value"] == 44
    found = (
        client.resources("Observation")
        .search(patient=str(pat["patient"]), code=f"{MDC}|149546")
        .fetch_all()
    )
    assert [o.id for o in found] == [resource.id]
    assert stored(fhir, pat["patient"]) == 1
    assert fhir.count(
        "SELECT count(*) FROM readings WHERE patient_id = %s AND source = 'fhir'",
        [pat["patient"]],
    ) == 1  # fmt: skip


def test_a_posted_observation_is_found_by_search_and_lastn(
    fhir: FhirServer, pat: dict, token: str
) -> None:
    obs = spec_example("satO2", pat["patient"], pat["device"])
    obs["extension"] = [{"url": "https://egenmon.example.org/fhir/StructureDefinition/on-oxygen",
                         "valueBoolean": True}]  # fmt: skip
    with fhir.client(token) as c:
        created = c.post("/Observation", json=obs).json()
        for params in ({"code": "59408-5"}, {"code": f"{LOINC}|2708-6"}, {"code": "150456"},
                       {"category": "vital-signs"}):  # fmt: skip
            r = c.get("/Observation", params={"patient": str(pat["patient"]), **params})
            assert [e["resource"]["id"] for e in r.json()["entry"]] == [created["id"]]
        r = c.get("/Observation/$lastn", params={"patient": str(pat["patient"])})
        assert [e["resource"]["id"] for e in r.json()["entry"]] == [created["id"]]
    assert created["extension"] == obs["extension"]


# --- refused, and kept in quarantine ----------------------------------------------------


def test_a_subject_not_bound_to_the_device_is_422_and_quarantined(
    fhir: FhirServer, pat: dict, token: str
) -> None:
    other, _ = fhir.patient(pat["unit"])
    obs = spec_example("heart-rate", other, pat["device"])
    with fhir.client(token) as c:
        r = c.post("/Observation", json=obs)
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["expression"] == ["Observation.subject"]
    assert "Observation.subject" in issue["diagnostics"]
    assert stored(fhir, other) == 0
    q = quarantined(fhir, pat["device"])
    assert len(q) == 1 and "subject" in q[0][1]
    assert str(other).encode() in q[0][2]  # kept whole


@pytest.mark.parametrize(
    ("change", "status", "element"),
    [
        ({"effectiveDateTime": "2019-06-01T10:00:00+02:00"}, 422, "Observation.device"),
        ({"effectiveDateTime": "2099-01-01T10:00:00Z"}, 422, "Observation.effective[x]"),
        ({"valueQuantity": {"value": 44, "system": "http://unitsofmeasure.org",
                            "code": "kg"}}, 422, "Observation.valueQuantity.code"),
        ({"valueQuantity": {"value": 900, "system": "http://unitsofmeasure.org",
                            "code": "/min"}}, 422, "Observation.valueQuantity"),
        ({"status": "done"}, 400, "Observation.status"),
        ({"code": {"coding": [{"system": LOINC, "code": "1234-5"}]}}, 422, "Observation.code"),
        ({"device": {"reference": "Device/nobody-has-this"}}, 422, "Observation.device"),
    ],
)  # fmt: skip
def test_what_egenmon_cannot_take_is_refused_naming_the_element(
    fhir: FhirServer, pat: dict, token: str, change: dict, status: int, element: str
) -> None:
    obs = {**spec_example("heart-rate", pat["patient"], pat["device"]), **change}
    before = len(quarantined(fhir))
    with fhir.client(token) as c:
        r = c.post("/Observation", json=obs)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["expression"][0] == element
    assert stored(fhir, pat["patient"]) == 0
    assert len(quarantined(fhir)) == before + 1


def test_bodies_that_are_not_observations(fhir: FhirServer, pat: dict, token: str) -> None:
    with fhir.client(token) as c:
        r = c.post("/Observation", content=b"{not json",
                   headers={"Content-Type": "application/fhir+json"})  # fmt: skip
        assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
        r = c.post("/Observation", content=b"<Observation/>",
                   headers={"Content-Type": "application/fhir+xml"})  # fmt: skip
        assert r.status_code == 415
        r = c.post("/Observation", json={"resourceType": "Patient"})
        assert r.status_code == 400
        assert "resourceType" in r.json()["issue"][0]["diagnostics"]
    with fhir.client(fhir.token("clinician", care_unit=pat["unit"])) as c:
        # A clinician enters readings by hand (without a device); a device's are not theirs.
        obs = spec_example("heart-rate", pat["patient"], pat["device"])
        assert c.post("/Observation", json=obs).status_code == 403


# --- duplicates and If-None-Exist -------------------------------------------------------


def test_the_same_observation_twice_is_stored_once(fhir: FhirServer, pat: dict, token: str) -> None:
    obs = spec_example("body-temperature", pat["patient"], pat["device"])
    with fhir.client(token) as c:
        first = c.post("/Observation", json=obs)
        second = c.post("/Observation", json=obs)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["location"] == first.headers["location"]
    assert stored(fhir, pat["patient"]) == 1


def test_if_none_exist_returns_the_stored_observation(
    fhir: FhirServer, pat: dict, token: str
) -> None:
    obs = spec_example("blood-pressure", pat["patient"], pat["device"])
    ident = obs["identifier"][0]
    header = f"identifier={ident['system']}|{ident['value']}"
    later = copy.deepcopy(obs)
    later["effectiveDateTime"] = "2026-01-24T09:00:00+01:00"
    later["component"][0]["valueQuantity"]["value"] = 150
    with fhir.client(token) as c:
        r1 = c.post("/Observation", json=obs, headers={"If-None-Exist": header})
        assert r1.status_code == 201
        # The same identifier at another time: it exists, so nothing new is made.
        r2 = c.post("/Observation", json=later, headers={"If-None-Exist": header})
        assert r2.status_code == 200
        assert r2.json()["id"] == r1.json()["id"]
        assert r2.json()["component"][0]["valueQuantity"]["value"] == 107
        assert stored(fhir, pat["patient"]) == 1
        # Without the header it is another measurement.
        r3 = c.post("/Observation", json=later)
        assert r3.status_code == 201 and r3.json()["id"] != r1.json()["id"]
        # The header must name the identifier the Observation carries first.
        r4 = c.post("/Observation", json=later,
                    headers={"If-None-Exist": "identifier=urn:other|1"})  # fmt: skip
        assert r4.status_code == 400
        assert r4.json()["issue"][0]["expression"] == ["If-None-Exist"]
        r5 = c.post("/Observation", json=later, headers={"If-None-Exist": "code=8867-4"})
        assert r5.status_code == 400
    assert stored(fhir, pat["patient"]) == 2


def test_racing_posts_with_if_none_exist_create_one(
    fhir: FhirServer, pat: dict, token: str
) -> None:
    obs = spec_example("satO2", pat["patient"], pat["device"])
    ident = obs["identifier"][0]
    header = {"If-None-Exist": f"identifier={ident['system']}|{ident['value']}"}

    def post() -> tuple[int, str]:
        with fhir.client(token) as c:
            r = c.post("/Observation", json=obs, headers=header)
            return r.status_code, r.json()["id"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: post(), range(8)))
    assert sorted(s for s, _ in results) == [200] * 7 + [201]
    assert len({i for _, i in results}) == 1
    assert stored(fhir, pat["patient"]) == 1


# --- Bundles ---------------------------------------------------------------------------


def test_a_transaction_is_all_or_nothing(fhir: FhirServer, pat: dict, token: str) -> None:
    p, d = pat["patient"], pat["device"]
    good = [spec_example(n, p, d) for n in ("heart-rate", "body-temperature", "respiratory-rate")]
    bad = spec_example("body-weight", p, d, when="2026-01-24")  # no time of day
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [entry(good[0]), entry(good[1]), entry(bad), entry(good[2])]}  # fmt: skip
    with fhir.client(token) as c:
        r = c.post("", json=bundle)
        assert r.status_code in (400, 422), r.text
        body = r.json()
        assert body["resourceType"] == "OperationOutcome"
        assert len(body["issue"]) == 1
        assert body["issue"][0]["diagnostics"].startswith("Bundle.entry[2].resource")
        assert stored(fhir, p) == 0
        assert "transaction refused" in quarantined(fhir)[-1][1]
        bundle["entry"][2] = entry(spec_example("body-weight", p, d))
        r = c.post("/", json=bundle)
        assert r.status_code == 200, r.text
        answer = r.json()
    Bundle.model_validate(answer)
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * 4
    assert stored(fhir, p) == 4
    with fhir.client(token) as c:
        for e in answer["entry"]:
            back = c.get(e["response"]["location"])
            assert back.status_code == 200 and back.json() == e["resource"]
        # Again: every entry exists already, and the transaction says so.
        again = c.post("", json=bundle).json()
    assert [e["response"]["status"] for e in again["entry"]] == ["200 OK"] * 4
    assert stored(fhir, p) == 4


def test_a_batch_answers_each_entry(fhir: FhirServer, pat: dict, token: str) -> None:
    p, d = pat["patient"], pat["device"]
    other, _ = fhir.patient(pat["unit"])
    hr = spec_example("heart-rate", p, d)
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            entry(hr),
            entry(spec_example("heart-rate", other, d, when="2026-01-24T08:00:00+01:00")),
            entry(spec_example("body-temperature", p, d)),
            {"request": {"method": "GET", "url": "Patient"}},
            entry(hr),  # the same measurement again, in the same batch
            entry(spec_example("satO2", p, d)),
        ],
    }
    before = len(quarantined(fhir))
    with fhir.client(token) as c:
        r = c.post("", json=bundle)
        assert r.status_code == 200, r.text
        answer = r.json()
        Bundle.model_validate(answer)
        assert answer["type"] == "batch-response"
        statuses = [e["response"]["status"] for e in answer["entry"]]
        assert statuses == ["201 Created", "422 Unprocessable Entity", "201 Created",
                            "400 Bad Request", "200 OK", "201 Created"]  # fmt: skip
        failed = answer["entry"][1]["response"]["outcome"]
        assert failed["issue"][0]["expression"] == ["Bundle.entry[1].resource.subject"]
        assert answer["entry"][4]["response"]["location"] == (
            answer["entry"][0]["response"]["location"])  # fmt: skip
        for i in (0, 2, 5):
            loc = answer["entry"][i]["response"]["location"]
            assert c.get(loc).json() == answer["entry"][i]["resource"]
    assert stored(fhir, p) == 3
    assert len(quarantined(fhir)) == before + 2


def test_bundles_of_another_kind_are_refused(fhir: FhirServer, pat: dict, token: str) -> None:
    with fhir.client(token) as c:
        for body in ({"resourceType": "Bundle", "type": "collection"},
                     {"resourceType": "Observation"},
                     {"resourceType": "Bundle", "type": "batch", "entry": {"a": 1}}):  # fmt: skip
            r = c.post("", json=body)
            assert r.status_code == 400
            assert r.json()["issue"][0]["expression"][0].startswith("Bundle")
        r = c.post("", json={"resourceType": "Bundle", "type": "batch", "entry": []})
        assert r.status_code == 200 and r.json()["type"] == "batch-response"


def test_if_none_exist_in_a_batch_entry(fhir: FhirServer, pat: dict, token: str) -> None:
    p, d = pat["patient"], pat["device"]
    first = spec_example("satO2", p, d)
    ident = first["identifier"][0]
    criteria = f"identifier={ident['system']}|{ident['value']}"
    later = spec_example("satO2", p, d, when="2026-01-24T12:00:00+01:00")
    with fhir.client(token) as c:
        created = c.post("/Observation", json=first).json()
        bundle = {"resourceType": "Bundle", "type": "batch",
                  "entry": [entry(later, criteria), entry(later),
                            entry(later, "identifier=urn:x|y")]}  # fmt: skip
        answer = c.post("", json=bundle).json()
    statuses = [e["response"]["status"] for e in answer["entry"]]
    assert statuses == ["200 OK", "201 Created", "400 Bad Request"]
    assert answer["entry"][0]["resource"]["id"] == created["id"]
    assert answer["entry"][1]["resource"]["id"] != created["id"]
    assert stored(fhir, p) == 2
