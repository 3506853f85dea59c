"""Issue 18 as an outside integrator sees it, against a real `egenmon serve`: strict FHIR
in, what is posted comes back whole, every search page valid FHIR (strict JSON types,
the fhir.resources R4B models, FHIRPath invariants through fhirpathpy), versions and
conditional reads, HEAD, gzip, Prefer, and OperationOutcomes for every error."""

from __future__ import annotations

import copy
import email.utils
import functools
import gzip
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhirpathpy import compile as fhirpath
from fhirpathpy.models import models
from fhirtest import FhirServer, reading_row, spec_example

from egenmon.fhir.strict import primitive_errors

FHIR_JSON = "application/fhir+json"
R4 = models["r4"]
SCHEMA = Path(__file__).parent / "schema" / "fhir.schema.json.gz"  # see schema/README.md
# Invariants of the R4 specification (and the vital-signs profile) as FHIRPath.
INVARIANTS: dict[str, dict[str, str]] = {
    "Bundle": {
        "bdl-1": "total.empty() or (type = 'searchset') or (type = 'history')",
        "bdl-2": "entry.search.empty() or (type = 'searchset')",
        "bdl-7": "(type = 'history') or entry.where(fullUrl.exists()).select(fullUrl"
        "&resource.meta.versionId).isDistinct()",
    },
    "Observation": {
        "obs-6": "dataAbsentReason.empty() or value.empty()",
        "obs-7": "value.empty() or component.code.where(coding.intersect(%resource.code"
        ".coding).exists()).empty()",
        "vs-2": "(component.empty() and hasMember.empty()) implies "
        "(dataAbsentReason.exists() or value.exists())",
        "per-1": "effective.ofType(Period).all(start.empty() or end.empty() or start <= end)",
        "versioned": "meta.versionId.exists() and meta.lastUpdated.exists()",
    },
    "Flag": {"versioned": "meta.versionId.exists() and meta.lastUpdated.exists()"},
    "Task": {"versioned": "meta.versionId.exists() and meta.lastUpdated.exists()"},
    "Patient": {"versioned": "meta.versionId.exists()"},
    "Device": {"versioned": "meta.versionId.exists()"},
}
COMPILED = {
    kind: {name: fhirpath(rule, R4) for name, rule in rules.items()}
    for kind, rules in INVARIANTS.items()
}


@pytest.fixture(scope="module")
def world(fhir: FhirServer) -> dict[str, Any]:
    """One patient with 60 heart rates, some blood pressures and two alerts."""
    s = fhir.setup()
    start = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    fhir.readings(s["patient"], s["device"], "heart_rate",
                  [start + timedelta(minutes=i) for i in range(60)])  # fmt: skip
    fhir.readings(s["patient"], s["device"], "blood_pressure",
                  [start + timedelta(hours=i) for i in range(3)], 135)  # fmt: skip
    alerts = [
        str(
            fhir.conn.execute(
                "INSERT INTO alerts (patient_id, rule, key, category, severity,"
                " current_severity, status, summary, evidence, opened_at, updated_at, due_at,"
                " resolved_at)"
                " VALUES (%s, 'threshold', %s, 'clinical', 'medium', 'medium', %s,"
                " 'Puls över planens gräns', '{}', %s, %s, %s, %s) RETURNING id",
                (
                    s["patient"],
                    f"threshold:{i}",
                    status,
                    start,
                    start + timedelta(hours=1),
                    start + timedelta(hours=4),
                    start + timedelta(hours=1) if status == "resolved" else None,
                ),
            ).fetchone()[0]  # type: ignore[index]
        )
        for i, status in enumerate(("open", "resolved"))
    ]
    return {**s, "alerts": alerts, "token": fhir.token(scope="system/*.cruds")}


def stored(fhir: FhirServer, patient: uuid.UUID) -> int:
    return fhir.count("SELECT count(*) FROM readings WHERE patient_id = %s", [patient])


def is_outcome(r: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(FHIR_JSON)
    body = r.json()
    assert body["resourceType"] == "OperationOutcome"
    assert primitive_errors(body) == []
    if code is not None:
        assert body["issue"][0]["code"] == code
    return body


@functools.cache
def r4_schema() -> Any:
    """A validator of HL7's R4 JSON schema (about 0.4 s to build: once)."""
    return jsonschema_rs.Draft6Validator(orjson.loads(gzip.decompress(SCHEMA.read_bytes())))


def valid(resource: dict[str, Any]) -> None:
    """The official R4 JSON schema, strict FHIR JSON types, the R4B model, and the FHIRPath
    invariants, all the way down."""
    errors = [f"{list(e.instance_path)}: {e}"[:300] for e in r4_schema().iter_errors(resource)]
    assert errors == []
    assert primitive_errors(resource) == [], primitive_errors(resource)
    get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    for name, rule in COMPILED.get(resource["resourceType"], {}).items():
        assert rule(resource, {"resource": resource}) == [True], (name, resource)
    for entry in resource.get("entry", []):
        valid(entry["resource"])


# --- strict in --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "element"),
    [
        ({"valueQuantity": {"value": "72", "unit": "/min", "system": "http://unitsofmeasure.org",
                            "code": "/min"}}, "valueQuantity.value"),
        ({"issued": 12345}, "issued"),
        ({"valueBoolean": "true"}, "valueBoolean"),
        ({"issued": "2026-01-24T07:31+01:00"}, "issued"),
        ({"note": [{"text": "ok", "time": 20260124}]}, "note[0].time"),
    ],
)  # fmt: skip
def test_invalid_primitives_are_refused_naming_the_element(
    fhir: FhirServer, world: dict, change: dict[str, Any], element: str
) -> None:
    before = stored(fhir, world["patient"])
    posted = spec_example("heart-rate", world["patient"], world["device"]) | change
    with fhir.client(world["token"]) as c:
        r = c.post("/Observation", json=posted, headers={"Content-Type": FHIR_JSON})
        issue = is_outcome(r, 400, "invalid")["issue"][0]
        assert f"Observation.{element}" in issue["expression"]
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": posted,
                 "request": {"method": "POST", "url": "Observation"}}
            ],
        }  # fmt: skip
        r = c.post("", json=bundle, headers={"Content-Type": FHIR_JSON})
        issue = is_outcome(r, 400)["issue"][0]
        assert f"Bundle.entry[0].resource.{element}" in issue["expression"]
    assert stored(fhir, world["patient"]) == before


def test_a_valid_observation_round_trips_with_its_period_and_notes(
    fhir: FhirServer, world: dict
) -> None:
    posted = spec_example("heart-rate", world["patient"], world["device"])
    del posted["effectiveDateTime"]
    posted["effectivePeriod"] = {"start": "2026-02-02T07:30:00Z", "end": "2026-02-02T07:35:00Z"}
    posted["note"] = [
        {"text": "Efter promenaden", "time": "2026-02-02T07:40:00Z", "authorString": "Tolvan"},
        {"text": "Kändes oregelbunden", "authorString": "Sköterska Svensson"},
    ]
    posted["issued"] = "2026-02-02T07:36:00Z"
    with fhir.client(world["token"]) as c:
        r = c.post("/Observation", json=posted, headers={"Content-Type": FHIR_JSON})
        assert r.status_code == 201, r.text
        created = r.json()
        back = c.get(r.headers["location"])
        assert back.json() == created
        found = c.get("/Observation", params={"patient": str(world["patient"]),
                                              "date": "2026-02-02"}).json()  # fmt: skip
    valid(created)
    assert created["effectivePeriod"] == posted["effectivePeriod"]
    assert "effectiveDateTime" not in created
    assert created["note"] == posted["note"]
    assert created["issued"] == posted["issued"]
    assert [e["resource"] for e in found["entry"]] == [created]


# --- what is served -------------------------------------------------------------------


def test_every_search_page_is_valid_fhir(fhir: FhirServer, world: dict) -> None:
    pid = str(world["patient"])
    with fhir.client(world["token"]) as c:
        pages = 0
        url: str | None = f"{fhir.base}/Observation?patient={pid}&_count=25"
        while url:
            bundle = c.get(url).json()
            valid(bundle)
            pages += 1
            url = next((lk["url"] for lk in bundle.get("link", []) if lk["relation"] == "next"),
                       None)  # fmt: skip
        assert pages >= 3
        for path, params in [
            ("/Flag", {"patient": pid}),
            ("/Task", {"patient": pid}),
            ("/Device", {"patient": pid}),
            ("/Patient", {"_count": "5"}),
            ("/Observation/$lastn", {"patient": pid, "max": "2"}),
        ]:
            bundle = c.get(path, params=params).json()
            assert bundle["resourceType"] == "Bundle", bundle
            valid(bundle)


# --- versions and conditional reads ---------------------------------------------------


def test_an_observation_read_carries_its_version_and_answers_304(
    fhir: FhirServer, world: dict
) -> None:
    when = datetime(2026, 3, 5, 9, 0, tzinfo=UTC)
    (oid,) = fhir.insert([reading_row(world["patient"], world["device"], "spo2", when, 96)])
    with fhir.client(world["token"]) as c:
        r = c.get(f"/Observation/{oid}")
        assert r.status_code == 200
        meta = r.json()["meta"]
        assert meta["versionId"] == "1" and r.headers["etag"] == 'W/"1"'
        received = when + timedelta(seconds=2)  # reading_row's received_at
        assert r.headers["last-modified"] == email.utils.format_datetime(received, True)
        assert meta["lastUpdated"].startswith("2026-03-05T09:00:02")
        r = c.get(f"/Observation/{oid}", headers={"If-None-Match": 'W/"1"'})
        assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == 'W/"1"'
        r = c.get(f"/Observation/{oid}", headers={"If-Modified-Since": r.headers["last-modified"]})
        assert r.status_code == 304
        earlier = email.utils.format_datetime(received - timedelta(seconds=1), True)
        r = c.get(f"/Observation/{oid}", headers={"If-Modified-Since": earlier})
        assert r.status_code == 200 and r.json()["id"] == oid


def test_a_changed_alert_or_patient_is_a_new_version(fhir: FhirServer, world: dict) -> None:
    flag_id = world["alerts"][0]
    with fhir.client(world["token"]) as c:
        flag = c.get(f"/Flag/{flag_id}")
        task = c.get(f"/Task/{flag_id}")
        assert flag.headers["etag"] == task.headers["etag"]
        assert flag.headers["etag"] == f'W/"{flag.json()["meta"]["versionId"]}"'
        fhir.conn.execute(
            "UPDATE alerts SET status = 'acknowledged', updated_at = updated_at + interval '1 h',"
            " acknowledged_at = updated_at + interval '1 h' WHERE id = %s",
            (flag_id,),
        )
        r = c.get(f"/Flag/{flag_id}", headers={"If-None-Match": flag.headers["etag"]})
        assert r.status_code == 200
        assert r.headers["etag"] != flag.headers["etag"]
        assert int(r.json()["meta"]["versionId"]) > int(flag.json()["meta"]["versionId"])
        assert r.json()["meta"]["lastUpdated"] > flag.json()["meta"]["lastUpdated"]

        patient = c.get(f"/Patient/{world['patient']}")
        etag = patient.headers["etag"]
        assert "last-modified" not in patient.headers  # the store keeps no update time
        assert (
            c.get(f"/Patient/{world['patient']}", headers={"If-None-Match": etag}).status_code
            == 304
        )
        fhir.conn.execute(
            "UPDATE patients SET display_name = 'Tolvan T. Tolvansson' WHERE id = %s",
            (world["patient"],),
        )
        r = c.get(f"/Patient/{world['patient']}", headers={"If-None-Match": etag})
        assert r.status_code == 200 and r.headers["etag"] != etag


def test_last_updated_search(fhir: FhirServer, world: dict) -> None:
    s = fhir.setup()
    t0 = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
    old, new = fhir.insert([
        reading_row(s["patient"], s["device"], "heart_rate", t0, 60,
                    received_at=t0 + timedelta(days=1)),
        reading_row(s["patient"], s["device"], "heart_rate", t0 + timedelta(minutes=1), 61,
                    received_at=t0 + timedelta(days=3)),
    ])  # fmt: skip
    pid = str(s["patient"])
    with fhir.client(world["token"]) as c:

        def ids(value: str) -> list[str]:
            r = c.get("/Observation", params={"patient": pid, "_lastUpdated": value})
            assert r.status_code == 200, r.text
            return [e["resource"]["id"] for e in r.json().get("entry", [])]

        assert ids("gt2026-04-03") == [new]
        assert ids("lt2026-04-03") == [old]
        assert ids("2026-04-02") == [old]
        assert ids("ge2026-04-05") == []
        r = c.get("/Observation", params={"patient": pid, "_lastUpdated": "xx2026"})
        assert "_lastUpdated" in is_outcome(r, 400)["issue"][0]["diagnostics"]


def test_last_updated_search_on_alerts(fhir: FhirServer, world: dict) -> None:
    s = fhir.setup()
    opened = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)
    made = [
        str(
            fhir.conn.execute(
                "INSERT INTO alerts (patient_id, rule, key, category, severity,"
                " current_severity, status, summary, evidence, opened_at, updated_at, due_at)"
                " VALUES (%s, 'threshold', %s, 'clinical', 'low', 'low', 'open', 'x', '{}',"
                " %s, %s, %s) RETURNING id",
                (s["patient"], f"threshold:{i}", opened, opened + timedelta(days=i),
                 opened + timedelta(days=9)),
            ).fetchone()[0]  # type: ignore[index]
        )
        for i in (0, 2)
    ]  # fmt: skip
    with fhir.client(world["token"]) as c:
        for kind in ("Flag", "Task"):
            params = {"patient": str(s["patient"]), "_lastUpdated": "ge2026-05-02"}
            bundle = c.get(f"/{kind}", params=params).json()
            assert [e["resource"]["id"] for e in bundle["entry"]] == [made[1]]
            params["_lastUpdated"] = "lt2026-05-02"
            bundle = c.get(f"/{kind}", params=params).json()
            assert [e["resource"]["id"] for e in bundle["entry"]] == [made[0]]


# --- HEAD, gzip, Prefer ---------------------------------------------------------------


def test_head_gzip_and_vary(fhir: FhirServer, world: dict) -> None:
    pid = str(world["patient"])
    with fhir.client(world["token"]) as c:
        get = c.get("/Observation", params={"patient": pid, "_count": "60"},
                    headers={"Accept-Encoding": "gzip"})  # fmt: skip
        assert get.headers["content-encoding"] == "gzip"
        assert "accept-encoding" in get.headers["vary"].lower()
        assert len(get.json()["entry"]) == 60
        plain = c.get("/Observation", params={"patient": pid, "_count": "60"},
                      headers={"Accept-Encoding": "identity"})  # fmt: skip
        assert "content-encoding" not in plain.headers
        assert int(plain.headers["content-length"]) > int(get.headers["content-length"])
        head = c.head("/Observation", params={"patient": pid, "_count": "60"},
                      headers={"Accept-Encoding": "identity"})  # fmt: skip
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"] == FHIR_JSON
        assert head.headers["content-length"] == plain.headers["content-length"]
        flag = world["alerts"][1]
        read = c.get(f"/Flag/{flag}")
        assert "content-encoding" not in read.headers  # small: not worth compressing
        assert "accept-encoding" in read.headers["vary"].lower()
        head = c.head(f"/Flag/{flag}")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["etag"] == read.headers["etag"]
        assert c.head("/Flag/not-an-alert").status_code == 404


@pytest.mark.parametrize("prefer", ["return=minimal", "return=OperationOutcome",
                                    "return=representation", None])  # fmt: skip
def test_prefer_on_create(fhir: FhirServer, world: dict, prefer: str | None) -> None:
    when = f"2026-02-03T07:{len(prefer or ''):02d}:00+01:00"
    posted = spec_example("body-temperature", world["patient"], world["device"], when)
    headers = {"Content-Type": FHIR_JSON, **({"Prefer": prefer} if prefer else {})}
    with fhir.client(world["token"]) as c:
        r = c.post("/Observation", json=copy.deepcopy(posted), headers=headers)
        assert r.status_code == 201, r.text
        assert r.headers["location"].startswith(f"{fhir.base}/Observation/")
        assert r.headers["etag"] == 'W/"1"' and r.headers["last-modified"]
        if prefer == "return=minimal":
            assert r.content == b""
        elif prefer == "return=OperationOutcome":
            assert is_outcome(r, 201, "informational")["issue"][0]["severity"] == "information"
        else:
            assert r.json()["resourceType"] == "Observation"
            valid(r.json())
        assert c.get(r.headers["location"]).status_code == 200


# --- every error an OperationOutcome --------------------------------------------------


def test_framework_errors_are_operation_outcomes(fhir: FhirServer, world: dict) -> None:
    with fhir.client(world["token"]) as c:
        is_outcome(c.get("/Nothing/1"), 404, "not-found")
        r = c.delete("/Observation/abc")
        is_outcome(r, 405, "not-supported")
        assert "GET" in r.headers["allow"]
        is_outcome(c.options("/Observation"), 405)
        is_outcome(c.get("/Observation", headers={"Accept": "text/html"}), 406, "not-supported")
        r = c.post("/Observation", content=b"{}", headers={"Content-Type": "text/plain"})
        is_outcome(r, 415, "not-supported")
        is_outcome(c.get("/Observation", params={"_count": "many"}), 400)


def test_the_capability_statement_says_so(fhir: FhirServer) -> None:
    with fhir.client() as c:
        statement = c.get("/metadata").json()
    served = {r["type"]: r for r in statement["rest"][0]["resource"]}
    for kind in ("Observation", "Patient", "Device", "Flag", "Task"):
        assert served[kind]["versioning"] == "versioned"
    # If-Modified-Since only where the store knows when a resource last changed.
    assert {k: served[k]["conditionalRead"] for k in ("Observation", "Flag", "Task")} == {
        "Observation": "full-support",
        "Flag": "full-support",
        "Task": "full-support",
    }
    assert (
        served["Patient"]["conditionalRead"] == served["Device"]["conditionalRead"] == "not-match"
    )
    (obs,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "Observation"]
    assert "_lastUpdated" in {p["name"] for p in obs["searchParam"]}


def test_the_r4_schema_refuses_what_strict_in_refuses() -> None:
    """The schema is wired in: what egenmon refuses on the way in, it refuses too."""
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "Puls"}}
    assert r4_schema().is_valid(obs | {"valueQuantity": {"value": 72}})
    for bad in ({"valueQuantity": {"value": "72"}}, {"issued": 12345},
                {"valueBoolean": "true"}, {"unknownElement": 1}):  # fmt: skip
        assert not r4_schema().is_valid(obs | bad), bad
