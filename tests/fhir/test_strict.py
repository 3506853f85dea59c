"""Strict FHIR JSON in (egenmon.fhir.strict, through observation_to_reading) and the
HTTP conventions' pure parts (egenmon.fhir.http): no server."""

from __future__ import annotations

import asyncio
import copy
import email.utils
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Query
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.datastructures import Headers

from egenmon.domain.measurements import LOINC, UCUM
from egenmon.fhir.http import FhirHttp, not_modified, validator_headers, validators
from egenmon.fhir.observation_in import observation_to_reading
from egenmon.fhir.outcome import FhirError
from egenmon.fhir.render import render_observation
from egenmon.fhir.strict import primitive_errors

PID = "6f1c7a52-3c4e-4f7e-9d1a-2b3c4d5e6f70"
HEART_RATE: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
    "subject": {"reference": f"Patient/{PID}"},
    "device": {"reference": "Device/omron-1"},
    "effectiveDateTime": "2026-11-24T07:31:00+01:00",
    "valueQuantity": {"value": 72, "unit": "beats/minute", "system": UCUM, "code": "/min"},
}


def refused(resource: Any) -> FhirError:
    with pytest.raises(FhirError) as exc:
        observation_to_reading(resource)
    return exc.value


def changed(path: str, value: Any) -> dict[str, Any]:
    """HEART_RATE with the element at a dotted path (``note.0.text``) set to `value`."""
    obs = copy.deepcopy(HEART_RATE)
    node: Any = obs
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[parts[-1]] = value
    return obs


# --- wrong primitive types are refused, never coerced ---------------------------------


@pytest.mark.parametrize(
    ("change", "element"),
    [
        ({"valueQuantity": {"value": "72", "code": "/min"}}, "Observation.valueQuantity.value"),
        ({"issued": 12345}, "Observation.issued"),
        ({"valueBoolean": "true"}, "Observation.valueBoolean"),
        ({"valueInteger": 72.5}, "Observation.valueInteger"),
        ({"valueInteger": True}, "Observation.valueInteger"),
        ({"status": ["final"]}, "Observation.status"),
        ({"note": [{"text": 5}]}, "Observation.note[0].text"),
        ({"note": {"text": "a"}}, "Observation.note"),
        ({"note": []}, "Observation.note"),
        ({"identifier": [{"value": ""}]}, "Observation.identifier[0].value"),
        ({"subject": {"reference": None}}, "Observation.subject.reference"),
        ({"_status": {"extension": [{"url": "x:y", "valueBoolean": 1}]}},
         "Observation._status.extension[0].valueBoolean"),
        ({"contained": [{"resourceType": "Patient", "active": "yes"}]},
         "Observation.contained[0].active"),
    ],
)  # fmt: skip
def test_a_wrong_json_type_is_a_400_naming_the_element(
    change: dict[str, Any], element: str
) -> None:
    err = refused(HEART_RATE | change)
    assert err.status == 400
    assert err.expression == [element]
    assert err.diagnostics.startswith(element)


@pytest.mark.parametrize(
    ("change", "element"),
    [
        ({"effectiveDateTime": None, "effectiveInstant": "2026-11-24T07:31+01:00"},
         "Observation.effectiveInstant"),
        ({"effectiveDateTime": "2026-11-24T07:31+01:00"}, "Observation.effectiveDateTime"),
        ({"issued": "2026-11-24"}, "Observation.issued"),
        ({"effectiveDateTime": None,
          "effectivePeriod": {"start": "2026-11-24T07:31:00+01:00",
                              "end": "2026-11-24T07:01:00+01:00"}},
         "Observation.effectivePeriod.end"),
    ],
)  # fmt: skip
def test_a_time_of_the_wrong_form_is_a_400_naming_the_element(
    change: dict[str, Any], element: str
) -> None:
    obs = {k: v for k, v in (HEART_RATE | change).items() if v is not None}
    err = refused(obs)
    assert err.status == 400
    assert element in (err.expression or [])


def test_several_wrong_elements_are_all_named() -> None:
    err = refused(HEART_RATE | {"issued": 1, "valueQuantity": {"value": "72"}, "status": 3})
    assert set(err.expression or []) == {
        "Observation.issued",
        "Observation.valueQuantity.value",
        "Observation.status",
    }


# --- what cannot be held in columns is kept and served back ---------------------------


def _round_trip(posted: dict[str, Any]) -> dict[str, Any]:
    """What egenmon would serve for `posted`, the columns filled as ingest fills them."""
    p = observation_to_reading(posted)
    when = datetime.fromisoformat(p.reading["time"]).astimezone(UTC)
    row = {
        "time": when, "patient_id": p.patient_id, "device_id": p.device_id,
        "type": p.reading["type"], "mdc": p.mdc, "value": p.reading.get("value"),
        "value2": None, "value3": None, "unit": p.reading["unit"], "on_oxygen": None,
        "note": p.reading.get("note"), "dedup_key": "omron-1|x", "extra": p.extra,
        "received_at": when + timedelta(seconds=3),
    }  # fmt: skip
    return render_observation(row)


def test_a_period_notes_with_time_and_author_and_issued_come_back_whole() -> None:
    period = {"start": "2026-11-24T07:31:00Z", "end": "2026-11-24T07:36:00Z"}
    notes = [
        {"text": "Efter promenad", "time": "2026-11-24T07:40:00Z", "authorString": "Tolvan"},
        {"text": "Andra mätningen", "authorString": "Sköterska"},
    ]
    posted = {k: v for k, v in HEART_RATE.items() if k != "effectiveDateTime"} | {
        "effectivePeriod": period,
        "note": notes,
        "issued": "2026-11-24T07:37:00.000+01:00",
        "subject": {"reference": f"Patient/{PID}", "display": "Tolvan Tolvansson"},
    }
    served = _round_trip(posted)
    assert served["effectivePeriod"] == period
    assert "effectiveDateTime" not in served
    assert served["note"] == notes
    assert served["issued"] == posted["issued"]
    assert served["subject"] == posted["subject"]
    assert primitive_errors(served) == []


def test_an_instant_is_served_as_an_instant() -> None:
    posted = {k: v for k, v in HEART_RATE.items() if k != "effectiveDateTime"}
    served = _round_trip(posted | {"effectiveInstant": "2026-11-24T07:31:00.000+01:00"})
    assert served["effectiveInstant"] == "2026-11-24T06:31:00Z"
    assert "effectiveDateTime" not in served


def test_a_category_other_than_the_types_own_is_kept() -> None:
    cat = "http://terminology.hl7.org/CodeSystem/observation-category"
    lab = {"coding": [{"system": cat, "code": "laboratory"}]}
    served = _round_trip(HEART_RATE | {"category": [lab]})
    codes = {c["code"] for category in served["category"] for c in category["coding"]}
    assert codes == {"vital-signs", "laboratory"}


# --- hypothesis: any JSON value anywhere is taken with its exact type or refused -------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
PRIMITIVE_PATHS = {
    "valueQuantity.value": "decimal",
    "issued": "string",
    "status": "string",
    "effectiveDateTime": "string",
    "valueQuantity.code": "string",
    "subject.reference": "string",
}
PURE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _right_type(kind: str, value: Any) -> bool:
    if kind == "decimal":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


@PURE
@given(path=st.sampled_from(sorted(PRIMITIVE_PATHS)), value=json_values)
def test_a_primitive_of_the_wrong_json_type_is_never_taken(path: str, value: Any) -> None:
    obs = changed(path, value)
    try:
        posted = observation_to_reading(obs)
    except FhirError as exc:
        assert exc.status in (400, 422)
        assert exc.expression, exc.diagnostics
        if not _right_type(PRIMITIVE_PATHS[path], value):
            assert exc.status == 400
            element = "Observation." + path
            assert element in exc.expression or any(e.startswith(element) for e in exc.expression)
        return
    assert _right_type(PRIMITIVE_PATHS[path], value)
    if path == "valueQuantity.value":
        assert posted.reading["value"] == pytest.approx(value)


@PURE
@given(st.dictionaries(st.sampled_from(["note", "component", "valueQuantity", "_status",
                                        "contained", "category", "extension", "meta"]),
                       json_values, max_size=4))  # fmt: skip
def test_the_strict_check_answers_for_any_json(extra: dict[str, Any]) -> None:
    errors = primitive_errors(HEART_RATE | extra)
    for where, reason in errors:
        assert where.startswith("Observation") and reason


# --- versions and conditional reads ---------------------------------------------------


def test_validators_come_from_meta() -> None:
    resource = {"meta": {"versionId": "1", "lastUpdated": "2026-11-24T07:31:02.5Z"}}
    etag, modified = validators(resource)
    assert etag == 'W/"1"'
    assert modified == datetime(2026, 11, 24, 7, 31, 2, 500000, tzinfo=UTC)
    headers = validator_headers(etag, modified)
    assert headers["Last-Modified"] == "Tue, 24 Nov 2026 07:31:02 GMT"
    assert validators({}) == (None, None)


def test_not_modified_by_etag_or_date() -> None:
    modified = datetime(2026, 11, 24, 7, 31, 2, 500000, tzinfo=UTC)
    same = email.utils.format_datetime(modified, True)
    earlier = email.utils.format_datetime(modified - timedelta(seconds=1), True)
    assert not_modified(Headers({"if-none-match": 'W/"1"'}), 'W/"1"', modified)
    assert not_modified(Headers({"if-none-match": '"1", W/"2"'}), 'W/"2"', None)
    assert not_modified(Headers({"if-none-match": "*"}), 'W/"2"', None)
    assert not not_modified(Headers({"if-none-match": 'W/"2"'}), 'W/"1"', modified)
    assert not_modified(Headers({"if-modified-since": same}), None, modified)
    assert not not_modified(Headers({"if-modified-since": earlier}), None, modified)
    assert not not_modified(Headers({"if-modified-since": "yesterday"}), None, modified)
    # If-None-Match decides when both are sent.
    both = {"if-none-match": 'W/"2"', "if-modified-since": same}
    assert not not_modified(Headers(both), 'W/"1"', modified)


# --- the middleware: framework errors become OperationOutcomes ------------------------


def test_framework_errors_under_fhir_become_operation_outcomes() -> None:
    app = FastAPI()

    @app.get("/fhir/typed")
    async def typed(n: int = Query()) -> dict[str, int]:
        return {"n": n}

    @app.get("/other/typed")
    async def other(n: int = Query()) -> dict[str, int]:
        return {"n": n}

    async def run() -> None:
        transport = httpx.ASGITransport(app=FhirHttp(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            r = await c.get("/fhir/typed", params={"n": "x"})
            assert r.status_code == 422
            assert r.headers["content-type"] == "application/fhir+json"
            issue = r.json()["issue"][0]
            assert issue["code"] == "processing" and "query n" in issue["diagnostics"]
            r = await c.delete("/fhir/typed")
            assert r.status_code == 405 and r.json()["issue"][0]["code"] == "not-supported"
            assert "GET" in r.headers["allow"]
            r = await c.get("/fhir/nothing")
            assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
            r = await c.head("/fhir/typed", params={"n": "3"})
            assert r.status_code == 200 and r.content == b""
            assert r.headers["content-length"] == str(len(b'{"n":3}'))
            # Outside /fhir the framework's own answers stay.
            r = await c.get("/other/typed", params={"n": "x"})
            assert r.status_code == 422 and "detail" in r.json()

    asyncio.run(run())


def test_a_codings_version_a_second_mdc_code_and_the_code_text_come_back() -> None:
    mdc = "urn:iso:std:iso:11073:10101"
    posted = HEART_RATE | {
        "code": {
            "coding": [
                {"system": LOINC, "code": "8867-4", "version": "2.77", "userSelected": True},
                {"system": mdc, "code": "149530"},
                {"system": mdc, "code": "147842"},
            ],
            "text": "Puls i vila",
        }
    }
    served = _round_trip(posted)
    assert served["code"]["text"] == "Puls i vila"
    by_code = {(c["system"], c["code"]): c for c in served["code"]["coding"]}
    assert by_code[(LOINC, "8867-4")]["version"] == "2.77"
    assert by_code[(LOINC, "8867-4")]["userSelected"] is True
    assert {(mdc, "149530"), (mdc, "147842")} <= set(by_code)
