"""POST /fhir/Observation takes the codes gateways really send (issue 17's code list)."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from fhir.resources.R4B.observation import Observation
from fhirtest import FhirServer

from egenmon.domain.measurements import LOINC, MDC

_MINUTES = itertools.count()


@pytest.fixture(scope="module")
def ctx(fhir: FhirServer) -> dict[str, Any]:
    return {**fhir.setup(), "token": fhir.token()}


def observation(ctx: dict, system: str, code: str, value: float, unit: str, when: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{ctx['patient']}"},
        "device": {"reference": f"Device/{ctx['device']}"},
        "effectiveDateTime": when,
        "identifier": [{"system": "urn:test", "value": uuid.uuid4().hex}],
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": unit},
    }


def post(fhir: FhirServer, ctx: dict, body: dict):
    with fhir.client(ctx["token"]) as c:
        return c.post("/Observation", json=body, headers={"Content-Type": "application/fhir+json"})


def codes(served: dict) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in served["code"]["coding"]]


@pytest.mark.parametrize(
    ("system", "code", "value", "unit", "type_", "canonical", "stored", "served_back"),
    [
        (LOINC, "15074-8", 6.1, "mmol/L", "blood_glucose", "14743-9", 6.1, True),
        (LOINC, "2339-0", 110, "mg/dL", "blood_glucose", "14743-9", 6.11, False),
        (LOINC, "41653-7", 90, "mg/dL", "blood_glucose", "14743-9", 5.0, False),
        (LOINC, "8331-1", 37.2, "Cel", "body_temperature", "8310-5", 37.2, True),
        (MDC, "188424", 99.5, "[degF]", "body_temperature", "8310-5", 37.5, True),
        (MDC, "160368", 5.4, "mmol/L", "blood_glucose", "14743-9", 5.4, True),
    ],
)
def test_variant_codes_are_accepted_and_served_with_the_canonical_code(
    fhir: FhirServer, ctx: dict, system, code, value, unit, type_, canonical, stored, served_back
) -> None:
    when = f"2026-11-21T08:{next(_MINUTES):02}:00+01:00"  # a time of its own per case
    r = post(fhir, ctx, observation(ctx, system, code, value, unit, when))
    assert r.status_code == 201, r.text
    served = r.json()
    Observation.model_validate(served)
    assert codes(served)[0] == (LOINC, canonical)
    assert ((system, code) in codes(served)) is served_back
    assert served["valueQuantity"]["value"] == pytest.approx(stored, abs=0.01)
    row = fhir.conn.execute(
        "SELECT type, code, unit FROM readings WHERE device_id = %s AND dedup_key LIKE %s",
        (ctx["device"], f"%{served['identifier'][1]['value']}"),
    ).fetchone()
    assert row is not None and row[0] == type_ and row[1] == canonical


def test_a_mass_glucose_code_with_a_molar_unit_is_refused_naming_both(
    fhir: FhirServer, ctx: dict
) -> None:
    r = post(fhir, ctx, observation(ctx, LOINC, "2339-0", 6.1, "mmol/L", "2026-11-20T08:00:00Z"))
    assert r.status_code == 422, r.text
    text = r.json()["issue"][0]["diagnostics"]
    assert "2339-0" in text and "mg/dL" in text and "mmol/L" in text


def test_an_unknown_code_is_refused_listing_the_accepted_codes(fhir: FhirServer, ctx) -> None:
    r = post(fhir, ctx, observation(ctx, LOINC, "0000-0", 6.1, "mmol/L", "2026-11-20T08:00:00Z"))
    assert r.status_code == 422
    text = r.json()["issue"][0]["diagnostics"]
    assert "15074-8" in text and "8331-1" in text and "188424" in text


def test_a_control_solution_is_refused_with_its_reason(fhir: FhirServer, ctx) -> None:
    r = post(fhir, ctx, observation(ctx, MDC, "160208", 5.5, "mmol/L", "2026-11-20T08:05:00Z"))
    assert r.status_code == 422
    assert "control-solution" in r.json()["issue"][0]["diagnostics"]
