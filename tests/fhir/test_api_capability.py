"""The CapabilityStatement says exactly what is routed and searchable."""

from __future__ import annotations

import uuid

import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhirtest import FhirServer

from egenmon.export.api import router as export_router
from egenmon.fhir import groups, search, subscription_api
from egenmon.fhir.api import router
from egenmon.fhir.subscriptions import TOPICS

# Parameters every search takes that are not search parameters of a resource.
RESULT_PARAMS = {"_count", "_sort", "_summary", "_cursor"}
SAMPLE_VALUES = {
    "patient": str(uuid.uuid4()),
    "subject": str(uuid.uuid4()),
    "code": "8867-4",
    "date": "ge2026-01-01",
    "category": "vital-signs",
    "device": "omron-1",
    "identifier": "191212121212",
    "status": "active",
    "_lastUpdated": "gt2026-01-01T00:00:00Z",
    "agent": "someone",
    "action": "R",
    "url": TOPICS["alert-flag"].url,
}
PARSER_PARAMS = {
    "Observation": search._OBSERVATION_PARAMS,
    "Patient": search._PATIENT_PARAMS,
    "Device": search._DEVICE_PARAMS,
    "Flag": search._ALERT_PARAMS,
    "Task": search._ALERT_PARAMS,
    "AuditEvent": search._AUDIT_PARAMS,
    "Subscription": {"status", "url", "_count"},
    "Basic": {"code"},
    "Group": groups.GROUP_PARAMS,
}


@pytest.fixture(scope="module")
def statement(fhir: FhirServer) -> dict:
    with fhir.client() as c:  # public: no token needed
        r = c.get("/metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    return r.json()


def routed() -> set[tuple[str, str]]:
    """(resource or "", interaction) for every route of the FHIR router."""
    found = set()
    for route in (*router.routes, *subscription_api.router.routes, *export_router.routes):
        path, methods = route.path, route.methods  # type: ignore[attr-defined]
        parts = path.strip("/").split("/")
        if path in ("/fhir", "/fhir/") and "POST" in methods:
            found |= {("", "batch"), ("", "transaction")}
        elif len(parts) == 2 and parts[1].startswith("$"):
            found.add(("", parts[1]))  # a system operation ($export)
        elif len(parts) == 2 and parts[1] not in ("metadata", "{rest:path}"):
            found.add((parts[1], "search-type" if "GET" in methods else "create"))
        elif len(parts) == 3 and parts[2] == "{id}":
            found.add((parts[1], "delete" if "DELETE" in methods else "read"))
        elif len(parts) == 4 and parts[2] == "{id}" and parts[3].startswith("$"):
            found.add((parts[1], parts[3]))
        elif len(parts) == 3 and parts[2].startswith("$"):
            found.add((parts[1], parts[2]))
    return found


def test_it_validates_as_an_r4_capability_statement(statement: dict) -> None:
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    assert statement["kind"] == "instance"
    assert "application/fhir+json" in statement["format"]


def test_it_lists_exactly_the_routed_interactions(statement: dict) -> None:
    rest = statement["rest"][0]
    listed = {(r["type"], i["code"]) for r in rest["resource"] for i in r["interaction"]}
    listed |= {(r["type"], "$" + op["name"]) for r in rest["resource"]
               for op in r.get("operation", [])}  # fmt: skip
    listed |= {("", i["code"]) for i in rest["interaction"]}
    listed |= {("", "$" + op["name"]) for op in rest.get("operation", [])}
    assert listed == routed()
    assert {r["type"] for r in rest["resource"]} == {
        "Observation", "Patient", "Device", "Flag", "Task", "AuditEvent", "Subscription",
        "Basic", "Group"}  # fmt: skip


def test_search_params_are_those_the_parsers_accept(statement: dict) -> None:
    for resource in statement["rest"][0]["resource"]:
        names = {p["name"] for p in resource.get("searchParam", [])}
        assert names == PARSER_PARAMS[resource["type"]] - RESULT_PARAMS, resource["type"]


def test_every_listed_interaction_answers_and_others_do_not(
    fhir: FhirServer, statement: dict
) -> None:
    # The access log is read only with a scope naming AuditEvent (no wildcard reaches it).
    token = fhir.token(scope="system/*.cruds system/AuditEvent.rs")
    with fhir.client(token) as c:
        for resource in statement["rest"][0]["resource"]:
            kind = resource["type"]
            for param in resource.get("searchParam", []):
                value = SAMPLE_VALUES[param["name"]]
                if (kind, param["name"]) == ("Task", "status"):
                    value = "requested"
                r = c.get(f"/{kind}", params={param["name"]: value})
                assert r.status_code == 200, (kind, param["name"], r.text)
            r = c.get(f"/{kind}", params={"_has": "x"})
            assert r.status_code == 400
            if "read" in {i["code"] for i in resource["interaction"]}:
                r = c.get(f"/{kind}/unknown-id")
                assert r.status_code == 404
                assert "no such FHIR interaction" not in r.text
            # Not offered: update and delete; create only where listed.
            for method in ("PUT", "DELETE"):
                r = c.request(method, f"/{kind}/x")
                assert r.status_code in (404, 405)
                assert r.json()["resourceType"] == "OperationOutcome"
            if "create" not in {i["code"] for i in resource["interaction"]}:
                r = c.post(f"/{kind}", json={"resourceType": kind})
                assert r.status_code in (404, 405)
        for path in ("/Encounter", "", "/"):
            r = c.get(path)
            assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"


def test_conditional_create_and_lastn_are_declared(statement: dict) -> None:
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    assert observation["conditionalCreate"] is True
    assert observation["operation"] == [
        {
            "name": "lastn",
            "definition": "http://hl7.org/fhir/OperationDefinition/Observation-lastn",
            "documentation": observation["operation"][0]["documentation"],
        }
    ]
    assert statement["rest"][0]["security"]["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"


def test_only_json_is_served(fhir: FhirServer) -> None:
    with fhir.client() as c:
        assert c.get("/metadata", params={"_format": "json"}).status_code == 200
        assert c.get("/metadata", headers={"Accept": "application/json"}).status_code == 200
        r = c.get("/metadata", params={"_format": "xml"})
        assert r.status_code == 406 and r.json()["resourceType"] == "OperationOutcome"
        r = c.get("/metadata", headers={"Accept": "application/fhir+xml"})
        assert r.status_code == 406 and r.json()["issue"][0]["code"] == "not-supported"
