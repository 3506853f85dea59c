"""The IoMT FHIR connector's template format: checked at add time, a payload to readings."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from template_sets import CONTENT, FHIR, PAYLOAD, with_connector_bp

from egenmon.ingest.jsonpath import PathError, compile_path
from egenmon.ingest.templates import (
    TemplateError,
    TemplateSet,
    evaluate,
    parse_template_set,
    show_sample,
    split_files,
)


@pytest.fixture(scope="module")
def vendor() -> TemplateSet:
    return parse_template_set(CONTENT, FHIR)


def test_a_connector_template_set_maps_a_vendor_payload_to_readings(vendor: TemplateSet) -> None:
    assert vendor.describe() == {
        "types": {
            "bloodpressure": "blood_pressure",
            "heartrate": "heart_rate",
            "weight": "body_weight",
        },
        "ignored": ["steps"],
        "content_templates": 3,
    }
    found = evaluate(vendor, PAYLOAD)
    assert [m.reading for m in found] == [
        {"type": "blood_pressure", "systolic": 142, "diastolic": 91,
         "time": "2026-11-24T07:31:00+01:00", "unit": "mm[Hg]"},
        {"type": "heart_rate", "value": 72, "time": "2026-11-24T07:31:00+01:00", "unit": "/min"},
        {"type": "body_weight", "value": 179.5, "time": "2026-11-24T07:40:00+01:00",
         "unit": "[lb_av]"},
    ]  # fmt: skip
    # The vendor's device id is read (for template test), never used to pick a patient.
    assert found[0].device_id == "AX-2291"


def test_the_connector_sample_coding_diastolic_as_heart_rate_is_refused() -> None:
    files = with_connector_bp()
    with pytest.raises(TemplateError) as err:
        parse_template_set(*split_files(files))
    text = str(err.value)
    assert "bloodpressure" in text and "http://loinc.org|8867-4" in text
    assert "heart_rate" in text and "diastolic 8462-4" in text


def _fhir_with(path: list[Any], value: Any) -> dict[str, Any]:
    fhir = copy.deepcopy(FHIR)
    node: Any = fhir
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return fhir


@pytest.mark.parametrize(
    ("path", "value", "says"),
    [
        (["template", 1, "template", "value", "unit"], None, "no unit"),
        (["template", 1, "template", "value", "unit"], "%", "not one egenmon accepts"),
        (["template", 1, "template", "value", "valueType"], "CodeableConcept", "valueType"),
        (["template", 1, "template", "codes"], [{"code": "8310-5", "system": "http://loinc.org"},
                                                {"code": "8867-4", "system": "http://loinc.org"}],
         "different measurements"),
        (["template", 0, "template", "components", 1], None, "needs components diastolic"),
        (["templateType"], "CollectionContent", "CollectionFhir"),
    ],
)  # fmt: skip
def test_a_wrong_mapping_is_refused_saying_why(path: list[Any], value: Any, says: str) -> None:
    with pytest.raises(TemplateError, match=says):
        parse_template_set(CONTENT, _fhir_with(path, value))


def test_a_content_template_without_a_time_or_with_a_bad_expression_is_refused() -> None:
    content = copy.deepcopy(CONTENT)
    del content["template"][1]["template"]["timestampExpression"]
    with pytest.raises(TemplateError, match="timestampExpression is required"):
        parse_template_set(content, FHIR)
    content = copy.deepcopy(CONTENT)
    content["template"][2]["template"]["typeMatchExpression"] = "$..[?(@weightLb"
    with pytest.raises(TemplateError, match=r"content template\[2\] \('weight'\)"):
        parse_template_set(content, FHIR)


def test_missing_or_non_numeric_values_are_reasons_not_readings(vendor: TemplateSet) -> None:
    payload = {"measurements": [
        {"takenAt": "2026-11-24T07:31:00+01:00", "systolic": 142, "diastolic": ""},
        {"pulse": "fast", "takenAt": 5},
        {"pulse": 10**400, "takenAt": "2026-11-24T07:31:00+01:00"},
    ]}  # fmt: skip
    found = evaluate(vendor, payload)
    assert [m.reading for m in found] == [None, None, None]
    assert found[2].error == "hr: not a number"
    assert found[0].error == "dia: required, not in the payload"
    assert found[1].error == "hr: not a number; timestamp: not in the payload, or not a string"


def test_template_test_shows_what_a_sample_becomes(vendor: TemplateSet) -> None:
    shown = show_sample(vendor, PAYLOAD)
    assert len(shown["readings"]) == 3 and shown["ignored"] == ["steps"]
    assert shown["measurements"][1]["values"] == {"hr": 72}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("$..[?(@systolic && @diastolic)]", [{"systolic": 1, "diastolic": 2, "u": "in"}]),
        ("$.Body.list[*].systolic", [1, 3]),
        ("$.Body.list[-1]", [{"systolic": 3}]),
        ("$..[?(@.u == 'in' || @systolic > 2)]", [{"systolic": 1, "diastolic": 2, "u": "in"},
                                                  {"systolic": 3}]),
        ("$..[?(!@u && @systolic)]", [{"systolic": 3}]),
        ("$['Body'][\"list\"][0].u", ["in"]),
        ("$.Body.missing", []),
    ],
)  # fmt: skip
def test_jsonpath_takes_the_connectors_dialect(expression: str, expected: list[Any]) -> None:
    doc = {"Body": {"list": [{"systolic": 1, "diastolic": 2, "u": "in"}, {"systolic": 3}]}}
    assert compile_path(expression).find(doc) == expected


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["systolic", "diastolic", "pulse", "weightLb", "takenAt", "x", "Body"])
            | st.text(max_size=4),
            inner,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_json)
def test_any_payload_gives_measurements_never_an_exception(
    vendor: TemplateSet, payload: Any
) -> None:
    for m in evaluate(vendor, payload):
        assert (m.reading is None) != (m.error is None)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="$.[]?()@!=<>&|'*0123456789abc -", max_size=30))
def test_any_expression_compiles_or_is_refused_by_name(text: str) -> None:
    try:
        compile_path(text).find({"a": [1, {"b": "c"}]})
    except PathError as e:
        assert "JSONPath" in str(e) or "expression" in str(e)


@settings(max_examples=80, deadline=None)
@given(content=_json, fhir=_json)
def test_any_template_set_is_taken_or_refused_with_a_template_error(
    content: Any, fhir: Any
) -> None:
    try:
        parse_template_set(content, fhir)
    except TemplateError:
        pass
