"""Posted Observations, modelled on the FHIR R4 specification's vital-signs examples
(observation-example-heart-rate, -bloodpressure, -body-weight, -body-temperature,
-satO2), with a full measurement time, a patient UUID and a device added as egenmon
needs them."""

import copy
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.observation import Observation

from egenmon.domain.measurements import LOINC, MDC, TYPES, UCUM
from egenmon.fhir.observation_in import PostedObservation, observation_to_reading
from egenmon.fhir.outcome import FhirError
from egenmon.fhir.render import ON_OXYGEN_URL, render_observation

PID = "6f1c7a52-3c4e-4f7e-9d1a-2b3c4d5e6f70"
CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
SCT = "http://snomed.info/sct"
VITAL = [{"coding": [{"system": CAT, "code": "vital-signs", "display": "Vital Signs"}],
          "text": "Vital Signs"}]  # fmt: skip


def base(**fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]},
        "status": "final",
        "category": copy.deepcopy(VITAL),
        "subject": {"reference": f"Patient/{PID}"},
        "effectiveDateTime": "2026-11-24T07:31:00+01:00",
        "device": {"reference": "Device/omron-7361t-0042"},
        **fields,
    }


HEART_RATE = base(
    id="heart-rate",
    code={"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}],
          "text": "Heart rate"},
    valueQuantity={"value": 44, "unit": "beats/minute", "system": UCUM, "code": "/min"},
)  # fmt: skip

BLOOD_PRESSURE = base(
    id="blood-pressure",
    identifier=[{"system": "urn:ietf:rfc:3986",
                 "value": "urn:uuid:187e0c12-8dd2-67e2-99b2-bf273c878281"}],
    basedOn=[{"identifier": {"system": "https://acme.org/identifiers", "value": "1234"}}],
    code={"coding": [{"system": LOINC, "code": "85354-9",
                      "display": "Blood pressure panel with all children optional"}],
          "text": "Blood pressure systolic & diastolic"},
    performer=[{"reference": "Practitioner/example"}],
    interpretation=[{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
        "code": "L", "display": "low"}], "text": "Below low normal"}],
    bodySite={"coding": [{"system": SCT, "code": "368209003", "display": "Right arm"}]},
    component=[
        {"code": {"coding": [{"system": LOINC, "code": "8480-6",
                              "display": "Systolic blood pressure"},
                             {"system": SCT, "code": "271649006",
                              "display": "Systolic blood pressure"}]},
         "valueQuantity": {"value": 107, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
         "interpretation": [{"coding": [{
             "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
             "code": "N", "display": "normal"}], "text": "Normal"}]},
        {"code": {"coding": [{"system": LOINC, "code": "8462-4",
                              "display": "Diastolic blood pressure"}]},
         "valueQuantity": {"value": 60, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
    ],
)  # fmt: skip

BODY_WEIGHT = base(
    id="example",
    code={"coding": [{"system": LOINC, "code": "29463-7", "display": "Body Weight"},
                     {"system": LOINC, "code": "3141-9", "display": "Body weight Measured"},
                     {"system": SCT, "code": "27113001", "display": "Body weight"}]},
    valueQuantity={"value": 185, "unit": "lbs", "system": UCUM, "code": "[lb_av]"},
)  # fmt: skip

BODY_TEMPERATURE = base(
    id="body-temperature",
    code={"coding": [{"system": LOINC, "code": "8310-5", "display": "Body temperature"}],
          "text": "Body temperature"},
    valueQuantity={"value": 36.5, "unit": "C", "system": UCUM, "code": "Cel"},
)  # fmt: skip

SPO2 = base(
    id="satO2",
    identifier=[{"system": "http://goodcare.org/observation/id", "value": "o1223435-10"}],
    code={"coding": [
        {"system": LOINC, "code": "2708-6", "display": "Oxygen saturation in Arterial blood"},
        {"system": LOINC, "code": "59408-5",
         "display": "Oxygen saturation in Arterial blood by Pulse oximetry"},
        {"system": MDC, "code": "150456", "display": "MDC_PULS_OXIM_SAT_O2"}]},
    valueQuantity={"value": 95, "unit": "%", "system": UCUM, "code": "%"},
    interpretation=[{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
        "code": "N", "display": "Normal (applies to non-numeric results)"}]}],
    referenceRange=[{"low": {"value": 90, "unit": "%", "system": UCUM, "code": "%"},
                     "high": {"value": 99, "unit": "%", "system": UCUM, "code": "%"}}],
    extension=[{"url": ON_OXYGEN_URL, "valueBoolean": True}],
)  # fmt: skip


def post(resource: dict[str, Any]) -> PostedObservation:
    before = copy.deepcopy(resource)
    posted = observation_to_reading(resource)
    assert resource == before  # the input is not changed
    return posted


def refused(resource: Any) -> FhirError:
    with pytest.raises(FhirError) as exc:
        observation_to_reading(resource)
    return exc.value


# --- the specification's examples -----------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "reading"),
    [
        (HEART_RATE, {"type": "heart_rate", "value": 44, "unit": "/min"}),
        (BODY_WEIGHT, {"type": "body_weight", "value": 185, "unit": "[lb_av]"}),
        (BODY_TEMPERATURE, {"type": "body_temperature", "value": 36.5, "unit": "Cel"}),
        (SPO2, {"type": "spo2", "value": 95, "unit": "%", "on_oxygen": True,
                "id": "http://goodcare.org/observation/id|o1223435-10"}),
        (BLOOD_PRESSURE, {"type": "blood_pressure", "systolic": 107, "diastolic": 60,
                          "unit": "mm[Hg]",
                          "id": "urn:ietf:rfc:3986|urn:uuid:187e0c12-8dd2-67e2-99b2-bf273c878281"}),
    ],
)  # fmt: skip
def test_spec_examples_map_to_readings(resource: dict[str, Any], reading: dict[str, Any]) -> None:
    posted = post(resource)
    assert posted.reading == reading | {"time": "2026-11-24T07:31:00+01:00"}
    assert posted.patient_id == uuid.UUID(PID)
    assert posted.device_id == "omron-7361t-0042"


def test_heart_rate_example_holds_nothing_beyond_the_columns() -> None:
    assert post(HEART_RATE).extra is None


def test_blood_pressure_example_keeps_what_the_columns_cannot_hold() -> None:
    extra = post(BLOOD_PRESSURE).extra
    assert extra is not None
    assert extra["interpretation"] == BLOOD_PRESSURE["interpretation"]
    assert extra["bodySite"] == BLOOD_PRESSURE["bodySite"]
    assert extra["basedOn"] == BLOOD_PRESSURE["basedOn"]
    assert extra["performer"] == [{"reference": "Practitioner/example"}]
    assert extra["identifier"] == BLOOD_PRESSURE["identifier"]
    # The systolic component's own interpretation and SNOMED coding, keyed by its LOINC.
    assert extra["component"] == [
        {
            "interpretation": BLOOD_PRESSURE["component"][0]["interpretation"],
            "code": {"coding": [{"system": LOINC, "code": "8480-6"},
                                BLOOD_PRESSURE["component"][0]["code"]["coding"][1]]},
        }
    ]  # fmt: skip
    # The code's codings are all rendered; the poster's text is kept and served.
    assert extra["code"] == {"text": BLOOD_PRESSURE["code"]["text"]}
    for taken in ("id", "meta", "status", "category", "subject", "device",
                  "effectiveDateTime"):  # fmt: skip
        assert taken not in extra


def test_spo2_example_keeps_interpretation_and_reference_range_not_our_extension() -> None:
    extra = post(SPO2).extra
    assert extra is not None
    assert extra["interpretation"] == SPO2["interpretation"]
    assert extra["referenceRange"] == SPO2["referenceRange"]
    assert "extension" not in extra
    assert "code" not in extra  # all three codings are rendered from the columns


def test_body_weight_example_keeps_the_codings_egenmon_does_not_render() -> None:
    extra = post(BODY_WEIGHT).extra
    assert extra == {
        "code": {"coding": BODY_WEIGHT["code"]["coding"][1:]},
    }


@pytest.mark.parametrize(
    ("resource", "stored"),
    [(BLOOD_PRESSURE, (107.0, 60.0, None, "mm[Hg]")), (SPO2, (95.0, None, None, "%")),
     (BODY_WEIGHT, (83.91, None, None, "kg"))],
)  # fmt: skip
def test_posted_content_is_served_back_after_a_round_trip(
    resource: dict[str, Any], stored: tuple[Any, ...]
) -> None:
    posted = post(resource)
    t = TYPES[posted.reading["type"]]
    value, value2, value3, unit = stored  # as the normaliser would store them
    row = {
        "time": datetime(2026, 11, 24, 6, 31, tzinfo=UTC),
        "patient_id": posted.patient_id,
        "device_id": posted.device_id,
        "type": t.name,
        "code": t.loinc,
        "mdc": posted.mdc or t.mdc,
        "value": value,
        "value2": value2,
        "value3": value3,
        "unit": unit,
        "on_oxygen": posted.reading.get("on_oxygen"),
        "note": posted.reading.get("note"),
        "dedup_key": f"{posted.device_id}|{posted.reading.get('id', 'x')}",
        "received_at": datetime(2026, 11, 24, 6, 32, tzinfo=UTC),
        "extra": posted.extra,
    }
    served = render_observation(row)
    Observation.model_validate(served)
    for key in ("interpretation", "bodySite", "referenceRange", "basedOn"):
        if key in resource:
            assert served[key] == resource[key]
    served_codes = {(c["system"], c["code"]) for c in served["code"]["coding"]}
    assert {(c["system"], c["code"]) for c in resource["code"]["coding"]} <= served_codes
    for ident in resource.get("identifier", []):
        assert ident in served["identifier"]
    if t.is_panel:
        systolic = served["component"][0]
        assert systolic["interpretation"] == resource["component"][0]["interpretation"]
        assert (SCT, "271649006") in {(c["system"], c["code"]) for c in systolic["code"]["coding"]}
        assert len(served["component"]) == 2
        assert {"reference": "Practitioner/example"} in served["performer"]


# --- times ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "time"),
    [
        ({"effectiveDateTime": "2026-11-24T06:31:00Z"}, "2026-11-24T06:31:00+00:00"),
        ({"effectiveDateTime": "2026-11-24T07:31:00.25+01:00"},
         "2026-11-24T07:31:00.250000+01:00"),
        ({"effectiveInstant": "2026-11-24T07:31:00+01:00"}, "2026-11-24T07:31:00+01:00"),
        ({"effectivePeriod": {"start": "2026-11-24T07:31:00+01:00",
                              "end": "2026-11-24T07:32:00+01:00"}}, "2026-11-24T07:31:00+01:00"),
    ],
)  # fmt: skip
def test_time_comes_from_any_effective_form(fields: dict[str, Any], time: str) -> None:
    resource = {k: v for k, v in HEART_RATE.items() if k != "effectiveDateTime"} | fields
    posted = post(resource)
    assert posted.reading["time"] == time
    assert datetime.fromisoformat(time).tzinfo is not None


@pytest.mark.parametrize("partial", ["1999-07-02", "2026-11", "2026"])
def test_a_partial_date_as_in_the_spec_examples_is_refused(partial: str) -> None:
    err = refused(HEART_RATE | {"effectiveDateTime": partial})
    assert err.status == 422
    assert "Observation.effectiveDateTime" in err.diagnostics


def test_no_effective_time_is_refused() -> None:
    resource = {k: v for k, v in HEART_RATE.items() if k != "effectiveDateTime"}
    err = refused(resource)
    assert err.status == 422
    assert err.expression == ["Observation.effective[x]"]
    err = refused(resource | {"effectivePeriod": {"end": "2026-11-24T07:31:00+01:00"}})
    assert err.expression == ["Observation.effective[x]"]


def test_a_time_without_offset_fails_fhir_validation() -> None:
    err = refused(HEART_RATE | {"effectiveDateTime": "2026-11-24T07:31:00"})
    assert err.status == 400
    assert err.expression == ["Observation.effectiveDateTime"]


# --- codes, values, units -------------------------------------------------------------


def test_mdc_coding_alone_recognises_the_type() -> None:
    resource = HEART_RATE | {"code": {"coding": [{"system": MDC, "code": "149530"}]}}
    posted = post(resource)
    assert posted.reading["type"] == "heart_rate"
    assert posted.mdc == "149530"
    assert post(HEART_RATE).mdc is None


def test_blood_pressure_by_mdc_codes_with_a_mean() -> None:
    def comp(code: str, value: float) -> dict[str, Any]:
        quantity = {"value": value, "unit": "kPa", "system": UCUM, "code": "kPa"}
        return {"code": {"coding": [{"system": MDC, "code": code}]}, "valueQuantity": quantity}

    resource = base(
        code={"coding": [{"system": MDC, "code": "150020"}]},
        component=[comp("150022", 8.0), comp("150021", 16.0), comp("150023", 10.7)],
    )
    reading = post(resource).reading
    assert reading["systolic"] == 16 and reading["diastolic"] == 8 and reading["mean"] == 10.7
    assert reading["unit"] == "kPa"


@pytest.mark.parametrize(
    "code",
    [
        {"coding": [{"system": LOINC, "code": "8480-6"}]},  # a component code alone
        {"coding": [{"system": SCT, "code": "364075005"}]},
        {"coding": [{"system": "http://acme.org", "code": "8867-4"}]},
        {"text": "pulse"},
    ],
)
def test_unknown_code_is_refused_naming_code(code: dict[str, Any]) -> None:
    err = refused(HEART_RATE | {"code": code})
    assert err.status == 422
    assert err.expression == ["Observation.code"]


def test_codings_of_different_measurements_are_refused() -> None:
    code = {"coding": [{"system": LOINC, "code": "8867-4"}, {"system": MDC, "code": "150456"}]}
    err = refused(HEART_RATE | {"code": code})
    assert err.expression == ["Observation.code"]
    assert "heart_rate" in err.diagnostics and "spo2" in err.diagnostics


def test_no_value_is_refused_naming_value() -> None:
    resource = {k: v for k, v in HEART_RATE.items() if k != "valueQuantity"}
    err = refused(resource | {"dataAbsentReason": {"text": "device error"}})
    assert err.status == 422
    assert err.expression == ["Observation.valueQuantity"]
    err = refused(resource | {"valueString": "44"})
    assert err.expression == ["Observation.valueQuantity"]
    err = refused(HEART_RATE | {"valueQuantity": {"unit": "/min", "code": "/min"}})
    assert err.expression == ["Observation.valueQuantity.value"]


def test_a_value_with_a_reason_for_its_absence_is_refused() -> None:
    err = refused(HEART_RATE | {"dataAbsentReason": {"text": "error"}})
    assert err.status == 400
    assert err.expression == ["Observation.dataAbsentReason"]
    resource = copy.deepcopy(BLOOD_PRESSURE)
    resource["component"][1]["dataAbsentReason"] = {"text": "error"}
    assert refused(resource).expression == ["Observation.component[1].dataAbsentReason"]


def test_value_with_a_comparator_is_refused() -> None:
    q = {"value": 20, "comparator": "<", "system": UCUM, "code": "/min"}
    err = refused(HEART_RATE | {"valueQuantity": q})
    assert err.expression == ["Observation.valueQuantity.comparator"]


@pytest.mark.parametrize(
    ("quantity", "unit"),
    [
        ({"value": 44, "code": "/min"}, "/min"),
        ({"value": 44, "unit": "bpm"}, "bpm"),
        ({"value": 44, "unit": "beats", "system": "http://acme.org/units", "code": "b"}, "beats"),
    ],
)
def test_unit_is_the_ucum_code_or_else_the_unit(quantity: dict[str, Any], unit: str) -> None:
    assert post(HEART_RATE | {"valueQuantity": quantity}).reading["unit"] == unit


def test_no_unit_is_refused() -> None:
    err = refused(HEART_RATE | {"valueQuantity": {"value": 44}})
    assert err.expression == ["Observation.valueQuantity.code"]


def test_blood_pressure_needs_systolic_and_diastolic_components() -> None:
    resource = copy.deepcopy(BLOOD_PRESSURE)
    del resource["component"][1]
    err = refused(resource)
    assert err.status == 422
    assert err.expression == ["Observation.component:diastolic"]


def test_blood_pressure_components_must_share_a_unit() -> None:
    resource = copy.deepcopy(BLOOD_PRESSURE)
    resource["component"][1]["valueQuantity"] = {"value": 8, "system": UCUM, "code": "kPa"}
    err = refused(resource)
    assert err.expression == ["Observation.component"]


def test_blood_pressure_as_one_value_is_refused() -> None:
    resource = BLOOD_PRESSURE | {"valueQuantity": {"value": 107, "code": "mm[Hg]"}}
    err = refused(resource)
    assert err.expression == ["Observation.valueQuantity"]


def test_blood_pressure_component_without_value_names_the_component() -> None:
    resource = copy.deepcopy(BLOOD_PRESSURE)
    del resource["component"][0]["valueQuantity"]
    resource["component"][0]["dataAbsentReason"] = {"text": "cuff error"}
    err = refused(resource)
    assert err.expression == ["Observation.component[0].valueQuantity"]


# --- subject, device, status, modifiers -----------------------------------------------


@pytest.mark.parametrize(
    "subject",
    [None, {"reference": "Patient/example"}, {"reference": f"Group/{PID}"}, {"display": "Tolvan"},
     {"reference": f"https://other.example/fhir/Patient/{PID}"}],
)  # fmt: skip
def test_subject_must_be_a_patient_uuid(subject: dict[str, Any] | None) -> None:
    resource = {k: v for k, v in HEART_RATE.items() if k != "subject"}
    if subject is not None:
        resource["subject"] = subject
    err = refused(resource)
    assert err.status == 422
    assert err.expression == ["Observation.subject"]


@pytest.mark.parametrize(
    "device", [{"reference": "DeviceMetric/example"}, {"reference": "Device/bad id"}]
)
def test_device_must_be_a_device_reference(device: dict[str, Any]) -> None:
    resource = {k: v for k, v in HEART_RATE.items() if k != "device"}
    resource["device"] = device
    err = refused(resource)
    assert err.expression == ["Observation.device"]


def test_without_a_device_the_reading_has_none() -> None:
    """Issue 15: a reading entered without a device (its source follows the poster)."""
    posted = observation_to_reading({k: v for k, v in HEART_RATE.items() if k != "device"})
    assert posted.device_id is None
    assert posted.reading["type"] == "heart_rate"


@pytest.mark.parametrize("status", ["registered", "cancelled", "entered-in-error", "unknown"])
def test_statuses_that_are_not_results_are_refused(status: str) -> None:
    err = refused(HEART_RATE | {"status": status})
    assert err.status == 422
    assert err.expression == ["Observation.status"]


def test_a_status_outside_the_value_set_is_invalid() -> None:
    err = refused(HEART_RATE | {"status": "done"})
    assert err.status == 400
    assert err.expression == ["Observation.status"]


@pytest.mark.parametrize("status", ["amended", "corrected", "preliminary"])
def test_other_result_statuses_are_kept(status: str) -> None:
    posted = post(HEART_RATE | {"status": status})
    assert posted.extra == {"status": status}


def test_modifier_extension_and_implicit_rules_are_refused() -> None:
    ext = [{"url": "https://acme.org/not-measured", "valueBoolean": True}]
    err = refused(HEART_RATE | {"modifierExtension": ext})
    assert err.expression == ["Observation.modifierExtension"]
    err = refused(HEART_RATE | {"implicitRules": "https://acme.org/rules"})
    assert err.expression == ["Observation.implicitRules"]


# --- identifiers, notes, extensions ---------------------------------------------------


def test_identifier_without_system_gives_the_bare_value() -> None:
    posted = post(HEART_RATE | {"identifier": [{"value": "r-1"}, {"system": "x:y", "value": "2"}]})
    assert posted.reading["id"] == "r-1"
    assert posted.extra == {"identifier": [{"value": "r-1"}, {"system": "x:y", "value": "2"}]}


def test_first_note_is_the_patient_note_and_all_notes_are_kept_whole() -> None:
    notes = [{"text": "Efter promenad"}, {"text": "Andra", "authorString": "Tolvan"}]
    posted = post(HEART_RATE | {"note": notes})
    assert posted.reading["note"] == "Efter promenad"
    assert posted.extra == {"note": notes}  # all of them whole, served in the column's place


def test_on_oxygen_false_means_on_air_and_other_extensions_are_kept() -> None:
    ext = [{"url": ON_OXYGEN_URL, "valueBoolean": False},
           {"url": "https://acme.org/ext/finger", "valueString": "index"}]  # fmt: skip
    posted = post(SPO2 | {"extension": ext})
    assert posted.reading["on_oxygen"] is False
    assert posted.extra is not None and posted.extra["extension"] == [ext[1]]


def test_on_oxygen_extension_needs_a_boolean() -> None:
    err = refused(SPO2 | {"extension": [{"url": ON_OXYGEN_URL, "valueString": "yes"}]})
    assert err.expression == ["Observation.extension"]


def test_meta_labels_and_local_categories_are_kept_profiles_are_not() -> None:
    tag = [{"system": "https://region.example/tags", "code": "home"}]
    local = {"coding": [{"system": "https://region.example/cat", "code": "egen"}]}
    posted = post(HEART_RATE | {"meta": {"profile": ["x:y"], "tag": tag},
                                "category": [*VITAL, local]})  # fmt: skip
    assert posted.extra == {"meta": {"tag": tag}, "category": [local]}


def test_performer_naming_the_subject_is_taken_others_kept() -> None:
    performers = [{"reference": f"Patient/{PID}"}, {"reference": "RelatedPerson/r1"}]
    posted = post(HEART_RATE | {"performer": performers})
    assert posted.extra == {"performer": [performers[1]]}


# --- invalid FHIR ---------------------------------------------------------------------


@pytest.mark.parametrize("resource", [[], "Observation", None, 42])
def test_not_a_json_object_is_a_bad_request(resource: Any) -> None:
    err = refused(resource)
    assert err.status == 400
    assert err.code == "invalid"


def test_another_resource_type_is_a_bad_request() -> None:
    err = refused(HEART_RATE | {"resourceType": "Patient"})
    assert err.status == 400
    assert err.expression == ["Observation.resourceType"]
    resource = {k: v for k, v in HEART_RATE.items() if k != "resourceType"}
    assert refused(resource).expression == ["Observation.resourceType"]


@pytest.mark.parametrize(
    ("change", "element"),
    [
        (
            {"valueQuantity": {"value": "forty-four", "code": "/min"}},
            "Observation.valueQuantity.value",
        ),
        ({"unknownElement": 1}, "Observation.unknownElement"),
        ({"id": "not_valid!"}, "Observation.id"),
        ({"status": None}, "Observation.status"),
    ],
)
def test_fhir_validation_errors_name_the_element(change: dict[str, Any], element: str) -> None:
    err = refused({k: v for k, v in HEART_RATE.items() if k != "status"} | change)
    assert err.status == 400
    assert element in err.expression
    assert err.diagnostics.startswith(element)
    outcome = err.outcome()
    assert outcome["issue"][0]["code"] == "invalid"
    assert outcome["issue"][0]["expression"] == err.expression
