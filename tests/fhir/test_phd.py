"""The PHD translation (pure): device entries, system ids, identifiers, reference resolution."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phd_examples import BUNDLE_EXAMPLE_1

from egenmon.fhir import phd
from egenmon.fhir.ingest import resolve_references
from egenmon.fhir.outcome import FhirError


def test_the_examples_devices_are_a_gateway_and_an_oximeter() -> None:
    gateway, oximeter = (
        phd.device_entry(e["resource"], f"Bundle.entry[{i}].resource")
        for i, e in enumerate(BUNDLE_EXAMPLE_1["entry"])
        if e["resource"]["resourceType"] == "Device"
    )
    assert gateway == phd.PhdDevice(True, "4C-4E-49-12-34-56-FF-FF", "PHD gateway", None)
    assert oximeter == phd.PhdDevice(
        False, "00-1C-05-04-00-00-78-25", "Model 3150", "Nonin Medical, Inc."
    )
    assert phd.sensor_device_id(oximeter.system_id) == "phd-001c050400007825"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4c-4e-49-12-34-56-ff-ff", "4C-4E-49-12-34-56-FF-FF"),
        ("74E8FFFEFF051C00", "74-E8-FF-FE-FF-05-1C-00"),
        ("74:E8:FF:FE:FF:05:1C:00", "74-E8-FF-FE-FF-05-1C-00"),
        ("4C-4E-49-12-34-56-FF", None),
        ("4C-4E-49-12-34-56-FF-GG", None),
        (12, None),
    ],
)
def test_system_ids_are_eui64(text: Any, expected: str | None) -> None:
    assert phd.normalise_eui64(text) == expected


def test_a_device_without_a_system_id_is_refused_naming_the_element() -> None:
    with pytest.raises(FhirError) as err:
        phd.device_entry({"resourceType": "Device", "identifier": []}, "Bundle.entry[1].resource")
    assert err.value.status == 422
    assert err.value.diagnostics.startswith("Bundle.entry[1].resource.identifier")


def test_the_phd_identifier_is_found_wherever_it_stands() -> None:
    ident = {"system": phd.PHD_IDENTIFIER_SYSTEM, "value": "dev-pat-150456-t"}
    obs = {"identifier": [{"system": "urn:x", "value": "1"}, ident]}
    assert phd.phd_identifier(obs) == f"{phd.PHD_IDENTIFIER_SYSTEM}|dev-pat-150456-t"
    assert phd.phd_identifier({"identifier": [{"system": "urn:x", "value": "1"}]}) is None


def test_references_to_entries_resolve_and_nothing_else_changes() -> None:
    value = {"subject": {"reference": "urn:uuid:a"}, "x": [{"reference": "urn:uuid:b"}],
             "note": "urn:uuid:a", "derivedFrom": [{"reference": "Observation/1"}]}  # fmt: skip
    out = resolve_references(value, {"urn:uuid:a": "Patient/p", "urn:uuid:b": "Device/d"})
    assert out == {
        "subject": {"reference": "Patient/p"},
        "x": [{"reference": "Device/d"}],
        "note": "urn:uuid:a",
        "derivedFrom": [{"reference": "Observation/1"}],
    }
    assert value["subject"] == {"reference": "urn:uuid:a"}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(
        st.sampled_from(
            ["resourceType", "identifier", "system", "value", "type", "coding", "code",
             "modelNumber", "deviceName", "name", "manufacturer"]
        ),
        inner,
        max_size=5,
    ),
    max_leaves=25,
)  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(resource=_json)
def test_any_device_entry_is_taken_or_refused_with_a_fhir_error(resource: Any) -> None:
    for candidate in (resource, {"resourceType": "Device", "identifier": resource}):
        try:
            dev = phd.device_entry(candidate, "Bundle.entry[0].resource")
        except FhirError as e:
            assert e.status in (400, 422)
        else:
            assert phd.normalise_eui64(dev.system_id) == dev.system_id
        phd.phd_identifier(candidate)
        phd.holds_measurement(candidate)
        if isinstance(candidate, dict) and candidate.get("resourceType") == "Patient":
            phd.patient_identities(candidate, "x")
