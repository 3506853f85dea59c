import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.device import Device
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.task import Task

from egenmon.domain.ids import observation_id, parse_observation_id
from egenmon.domain.measurements import CATEGORY_SYSTEM, LOINC, MDC, TYPES, UCUM
from egenmon.fhir.outcome import operation_outcome
from egenmon.fhir.render import (
    DEDUP_SYSTEM,
    ON_OXYGEN_URL,
    PERSONNUMMER_SYSTEM,
    SAMORDNINGSNUMMER_SYSTEM,
    fhir_instant,
    render_bundle_searchset,
    render_device,
    render_flag,
    render_observation,
    render_patient,
    render_task,
)

PATIENT = uuid.UUID("6f1c7a52-3c4e-4f7e-9d1a-2b3c4d5e6f70")
TIME = datetime(2026, 11, 24, 6, 31, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 24, 6, 31, 2, 500000, tzinfo=UTC)

# type -> (stored value, canonical unit, value as served)
SINGLE = {
    "heart_rate": (72.0, "/min", 72),
    "spo2": (96.0, "%", 96),
    "body_temperature": (37.9, "Cel", 37.9),
    "body_weight": (81.4, "kg", 81.4),
    "respiratory_rate": (18.0, "/min", 18),
    "blood_glucose": (6.1, "mmol/L", 6.1),
}
PROFILE = {
    "heart_rate": "http://hl7.org/fhir/StructureDefinition/heartrate",
    "spo2": "http://hl7.org/fhir/StructureDefinition/oxygensat",
    "body_temperature": "http://hl7.org/fhir/StructureDefinition/bodytemp",
    "body_weight": "http://hl7.org/fhir/StructureDefinition/bodyweight",
    "respiratory_rate": "http://hl7.org/fhir/StructureDefinition/resprate",
    "blood_pressure": "http://hl7.org/fhir/StructureDefinition/bp",
}


def reading_row(type_: str, **over: Any) -> dict[str, Any]:
    t = TYPES[type_]
    row: dict[str, Any] = {
        "time": TIME,
        "patient_id": PATIENT,
        "device_id": "omron-7361t-0042",
        "type": type_,
        "code": t.loinc,
        "mdc": t.mdc,
        "value": None,
        "value2": None,
        "value3": None,
        "unit": t.unit,
        "on_oxygen": None,
        "note": None,
        "source": "mqtt",
        "dedup_key": f"omron-7361t-0042|{type_}|2026-11-24T06:31:00Z",
        "received_at": RECEIVED,
        "message_id": None,
        "extra": None,
    }
    if type_ == "blood_pressure":
        row.update(value=142.0, value2=91.0)
    else:
        row["value"] = SINGLE[type_][0]
    row.update(over)
    return row


def valid(resource: dict[str, Any], model: type) -> Any:
    """Validate as FHIR R4B, and through the JSON wire form, as a client would see it."""
    model.model_validate(resource)
    return model.model_validate(orjson.loads(orjson.dumps(resource)))


def codings(concept: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept["coding"]}


# --- Observation ----------------------------------------------------------------------


@pytest.mark.parametrize("type_", sorted(SINGLE))
def test_single_value_observation_is_valid_and_follows_the_vital_signs_profile(
    type_: str,
) -> None:
    t = TYPES[type_]
    obs = render_observation(reading_row(type_))
    valid(obs, Observation)
    value, unit, served = SINGLE[type_]
    assert obs["resourceType"] == "Observation"
    assert obs["status"] == "final"
    assert (LOINC, t.loinc) in codings(obs["code"])
    assert (MDC, t.mdc) in codings(obs["code"])
    assert obs["valueQuantity"]["value"] == served
    assert type(obs["valueQuantity"]["value"]) is type(served)
    assert obs["valueQuantity"]["system"] == UCUM
    assert obs["valueQuantity"]["code"] == unit
    assert obs["subject"] == {"reference": f"Patient/{PATIENT}"}
    assert obs["performer"] == [{"reference": f"Patient/{PATIENT}"}]
    assert obs["device"] == {"reference": "Device/omron-7361t-0042"}
    assert obs["effectiveDateTime"] == "2026-11-24T06:31:00Z"
    assert obs["issued"] == obs["meta"]["lastUpdated"] == "2026-11-24T06:31:02.500000Z"
    assert "component" not in obs
    category = obs["category"][0]["coding"][0]
    assert category["system"] == CATEGORY_SYSTEM
    if type_ == "blood_glucose":
        assert category["code"] == "laboratory"
        assert "profile" not in obs["meta"]
    else:
        assert category["code"] == "vital-signs"
        assert obs["meta"]["profile"] == [PROFILE[type_]]


def test_integer_precision_values_are_served_as_integers() -> None:
    obs = render_observation(reading_row("heart_rate", value=71.6))
    assert obs["valueQuantity"]["value"] == 72
    assert orjson.dumps(obs["valueQuantity"]["value"]) == b"72"
    temp = render_observation(reading_row("body_temperature", value=37.0))
    assert orjson.dumps(temp["valueQuantity"]["value"]) == b"37.0"


def test_spo2_carries_both_loinc_codes_the_profile_allows() -> None:
    obs = render_observation(reading_row("spo2"))
    assert {(LOINC, "2708-6"), (LOINC, "59408-5"), (MDC, "150456")} == codings(obs["code"])


def test_heart_rate_keeps_the_oximeter_mdc_code_it_was_stored_with() -> None:
    obs = render_observation(reading_row("heart_rate", mdc="149530"))
    valid(obs, Observation)
    assert (MDC, "149530") in codings(obs["code"])
    assert (MDC, "149546") not in codings(obs["code"])


@pytest.mark.parametrize("mean", [None, 108.0])
def test_blood_pressure_is_the_panel_with_components(mean: float | None) -> None:
    obs = render_observation(reading_row("blood_pressure", value3=mean))
    valid(obs, Observation)
    assert (LOINC, "85354-9") in codings(obs["code"])
    assert (MDC, "150020") in codings(obs["code"])
    assert obs["meta"]["profile"] == [PROFILE["blood_pressure"]]
    assert "valueQuantity" not in obs
    by_code = {c["code"]["coding"][0]["code"]: c for c in obs["component"]}
    expected = {"8480-6": 142, "8462-4": 91} | ({"8478-0": 108} if mean else {})
    assert {k: v["valueQuantity"]["value"] for k, v in by_code.items()} == expected
    for comp in obs["component"]:
        assert comp["valueQuantity"]["code"] == "mm[Hg]"
        assert comp["valueQuantity"]["system"] == UCUM
        assert {s for s, _ in codings(comp["code"])} == {LOINC, MDC}
    assert codings(by_code["8480-6"]["code"]) == {(LOINC, "8480-6"), (MDC, "150021")}


def test_id_and_identifier_come_from_time_and_dedup_key() -> None:
    row = reading_row("heart_rate")
    obs = render_observation(row)
    assert obs["id"] == observation_id(TIME, row["dedup_key"])
    assert parse_observation_id(obs["id"])[0] == TIME
    assert obs["identifier"] == [{"system": DEDUP_SYSTEM, "value": row["dedup_key"]}]


@pytest.mark.parametrize("on_oxygen", [True, False])
def test_on_oxygen_is_an_extension_with_a_boolean(on_oxygen: bool) -> None:
    obs = render_observation(reading_row("spo2", on_oxygen=on_oxygen))
    valid(obs, Observation)
    assert obs["extension"] == [{"url": ON_OXYGEN_URL, "valueBoolean": on_oxygen}]


def test_unknown_oxygen_status_is_left_out() -> None:
    assert "extension" not in render_observation(reading_row("spo2"))


def test_patient_note_is_an_annotation() -> None:
    obs = render_observation(reading_row("heart_rate", note="Efter promenad"))
    valid(obs, Observation)
    assert obs["note"] == [{"text": "Efter promenad"}]


def test_base_makes_references_absolute() -> None:
    obs = render_observation(reading_row("heart_rate"), base="https://x.example/fhir/")
    valid(obs, Observation)
    assert obs["subject"]["reference"] == f"https://x.example/fhir/Patient/{PATIENT}"
    assert obs["device"]["reference"] == "https://x.example/fhir/Device/omron-7361t-0042"


def test_times_in_other_offsets_are_served_in_utc() -> None:
    local = TIME.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Stockholm"))
    obs = render_observation(reading_row("heart_rate", time=local))
    assert obs["effectiveDateTime"] == "2026-11-24T06:31:00Z"
    with pytest.raises(ValueError):
        fhir_instant(datetime(2026, 11, 24))


EXTRA = {
    "interpretation": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                    "code": "H",
                }
            ]
        }
    ],
    "bodySite": {"coding": [{"system": "http://snomed.info/sct", "code": "368209003"}]},
    "method": {"text": "sitting"},
    "referenceRange": [{"low": {"value": 90, "unit": "mmHg"}, "text": "normal"}],
    "extension": [{"url": "https://vendor.example/ext/cuff-size", "valueString": "L"}],
    "note": [{"text": "second note"}],
    "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:1b4e28ba-2fa1-11d2"}],
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "75367002"}]},
    "category": [{"coding": [{"system": "https://region.example/cat", "code": "home"}]}],
    "component": [
        {
            "code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
            "interpretation": [{"text": "high"}],
        },
        {
            "code": {"coding": [{"system": LOINC, "code": "8867-4"}]},
            "valueQuantity": {"value": 70, "unit": "/min", "system": UCUM, "code": "/min"},
        },
    ],
    "status": "preliminary",
    # A conflicting value: the columns win.
    "subject": {"reference": "Patient/someone-else"},
}


def test_extra_content_is_merged_back_and_stays_valid() -> None:
    row = reading_row("blood_pressure", on_oxygen=False, note="first note", extra=EXTRA)
    obs = render_observation(row)
    valid(obs, Observation)
    assert obs["interpretation"] == EXTRA["interpretation"]
    assert obs["bodySite"] == EXTRA["bodySite"]
    assert obs["method"] == {"text": "sitting"}
    assert obs["referenceRange"] == EXTRA["referenceRange"]
    assert obs["status"] == "preliminary"
    assert obs["subject"] == {"reference": f"Patient/{PATIENT}"}
    assert [e["url"] for e in obs["extension"]] == [
        ON_OXYGEN_URL,
        "https://vendor.example/ext/cuff-size",
    ]
    assert obs["note"] == [{"text": "first note"}, {"text": "second note"}]
    assert [i["system"] for i in obs["identifier"]] == [DEDUP_SYSTEM, "urn:ietf:rfc:3986"]
    assert ("http://snomed.info/sct", "75367002") in codings(obs["code"])
    assert (LOINC, "85354-9") in codings(obs["code"])
    assert [c["coding"][0]["code"] for c in obs["category"]] == ["vital-signs", "home"]
    # The systolic component gains its interpretation without a duplicate coding; the
    # posted heart-rate component is appended whole.
    systolic = obs["component"][0]
    assert systolic["interpretation"] == [{"text": "high"}]
    assert len(systolic["code"]["coding"]) == 2
    assert [c["code"]["coding"][0]["code"] for c in obs["component"]] == [
        "8480-6",
        "8462-4",
        "8867-4",
    ]


def test_extra_as_json_text_is_merged_too() -> None:
    obs = render_observation(reading_row("heart_rate", extra=orjson.dumps(EXTRA).decode()))
    assert obs["method"] == {"text": "sitting"}


def test_merging_extra_does_not_alter_the_row() -> None:
    extra = orjson.loads(orjson.dumps(EXTRA))
    row = reading_row("blood_pressure", extra=extra)
    first = render_observation(row)
    first["note"].append({"text": "mutated"})
    first["component"][0]["interpretation"].append({"text": "mutated"})
    assert extra == EXTRA
    assert render_observation(row)["component"][0]["interpretation"] == [{"text": "high"}]


# --- Bundle ---------------------------------------------------------------------------


def test_searchset_bundle_is_valid_with_links_total_and_full_urls() -> None:
    entries = [render_observation(reading_row(t)) for t in ("heart_rate", "blood_pressure")]
    bundle = render_bundle_searchset(
        entries,
        total=2,
        links={"self": "https://x.example/fhir/Observation?patient=a", "next": "https://n"},
        base="https://x.example/fhir",
        outcome=operation_outcome("warning", "not-supported", "foo: ignored"),
    )
    parsed = valid(bundle, Bundle)
    assert parsed.type == "searchset"
    assert bundle["total"] == 2
    assert [link["relation"] for link in bundle["link"]] == ["self", "next"]
    assert bundle["entry"][0]["fullUrl"] == f"https://x.example/fhir/Observation/{entries[0]['id']}"
    assert [e["search"]["mode"] for e in bundle["entry"]] == ["match", "match", "outcome"]


def test_empty_searchset_bundle_is_valid() -> None:
    bundle = render_bundle_searchset([], total=0, links=[("self", "https://x.example/fhir/x")])
    valid(bundle, Bundle)
    assert bundle["total"] == 0
    assert "entry" not in bundle


def test_bundle_without_base_has_no_full_urls() -> None:
    bundle = render_bundle_searchset([render_observation(reading_row("spo2"))])
    valid(bundle, Bundle)
    assert "fullUrl" not in bundle["entry"][0]
    assert "total" not in bundle


# --- Patient and Device ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "number", "system"),
    [
        ("personnummer", "191212121212", PERSONNUMMER_SYSTEM),
        ("samordningsnummer", "199001722389", SAMORDNINGSNUMMER_SYSTEM),
    ],
)
def test_patient_is_valid_with_the_swedish_identifier_system(
    kind: str, number: str, system: str
) -> None:
    row = {
        "id": PATIENT,
        "personnummer": number,
        "identifier_kind": kind,
        "display_name": "Tolvan Tolvansson",
        "care_unit_name": "Vårdcentralen Centrum",
        "care_unit_hsa_id": "SE2321000016-1234",
    }
    patient = render_patient(row)
    valid(patient, Patient)
    assert patient["id"] == str(PATIENT)
    assert patient["identifier"] == [{"use": "official", "system": system, "value": number}]
    assert patient["name"] == [{"text": "Tolvan Tolvansson"}]
    assert patient["managingOrganization"]["display"] == "Vårdcentralen Centrum"
    assert patient["managingOrganization"]["identifier"]["value"] == "SE2321000016-1234"


def test_patient_without_name_or_care_unit_is_valid() -> None:
    patient = render_patient(
        {"id": PATIENT, "personnummer": "191212121212", "identifier_kind": "personnummer"}
    )
    valid(patient, Patient)
    assert "name" not in patient
    assert "managingOrganization" not in patient


@pytest.mark.parametrize(
    ("status", "patient_id", "served"),
    [("active", PATIENT, "active"), ("revoked", None, "inactive")],
)
def test_device_is_valid(status: str, patient_id: uuid.UUID | None, served: str) -> None:
    row = {
        "id": "omron-7361t-0042",
        "model": "HEM-7361T",
        "manufacturer": "Omron",
        "status": status,
        "patient_id": patient_id,
    }
    device = render_device(row)
    valid(device, Device)
    assert device["status"] == served
    assert device["manufacturer"] == "Omron"
    assert device["modelNumber"] == "HEM-7361T"
    assert device["deviceName"] == [{"name": "HEM-7361T", "type": "model-name"}]
    assert device["identifier"][0]["value"] == "omron-7361t-0042"
    if patient_id:
        assert device["patient"] == {"reference": f"Patient/{PATIENT}"}
    else:
        assert "patient" not in device


# --- alerts: Flag and Task ------------------------------------------------------------

ALERT = {
    "id": "0b9a4a4e-8a43-4a8e-9a55-1f0e0c7b9d10",
    "patient_id": PATIENT,
    "rule": "news2",
    "severity": "high",
    "status": "open",
    "opened_at": TIME,
    "updated_at": TIME + timedelta(minutes=5),
    "due_at": TIME + timedelta(hours=1),
    "summary": "NEWS2 7: emergency response",
    "evidence": [observation_id(TIME, "d|spo2|t"), observation_id(TIME, "d|heart_rate|t")],
}


@pytest.mark.parametrize(
    ("status", "flag_status", "ends"),
    [
        ("open", "active", False),
        ("acknowledged", "active", False),
        ("resolved", "inactive", True),
        ("dismissed", "inactive", True),
    ],
)
def test_flag_is_valid_and_active_while_the_alert_is_open(
    status: str, flag_status: str, ends: bool
) -> None:
    flag = render_flag(ALERT | {"status": status})
    valid(flag, Flag)
    assert flag["status"] == flag_status
    assert flag["subject"] == {"reference": f"Patient/{PATIENT}"}
    assert flag["code"]["text"] == "NEWS2 7: emergency response"
    assert flag["code"]["coding"][0]["code"] == "news2"
    assert flag["period"]["start"] == "2026-11-24T06:31:00Z"
    assert ("end" in flag["period"]) is ends
    assert flag["category"][0]["coding"][0]["code"] == "clinical"


@pytest.mark.parametrize(("severity", "code"), [("low", "PL"), ("medium", "PM"), ("high", "PH")])
def test_flag_priority_follows_severity(severity: str, code: str) -> None:
    flag = render_flag(ALERT | {"severity": severity})
    priority = flag["extension"][0]
    assert priority["url"] == "http://hl7.org/fhir/StructureDefinition/flag-priority"
    assert priority["valueCodeableConcept"]["coding"][0]["code"] == code


@pytest.mark.parametrize(
    ("status", "task_status"),
    [
        ("open", "requested"),
        ("acknowledged", "accepted"),
        ("resolved", "completed"),
        ("dismissed", "cancelled"),
    ],
)
def test_task_is_valid_with_status_for_each_alert_status(status: str, task_status: str) -> None:
    task = render_task(ALERT | {"status": status})
    valid(task, Task)
    assert task["status"] == task_status
    assert task["intent"] == "order"
    assert task["for"] == {"reference": f"Patient/{PATIENT}"}
    assert task["focus"] == {"reference": f"Flag/{ALERT['id']}"}
    assert task["restriction"]["period"]["end"] == "2026-11-24T07:31:00Z"
    assert task["reasonCode"]["text"] == "NEWS2 7: emergency response"
    assert task["authoredOn"] == "2026-11-24T06:31:00Z"
    assert task["lastModified"] == "2026-11-24T06:36:00Z"
    assert [i["valueReference"]["reference"] for i in task["input"]] == [
        f"Observation/{e}" for e in ALERT["evidence"]
    ]


@pytest.mark.parametrize(
    ("severity", "priority"), [("low", "routine"), ("medium", "urgent"), ("high", "asap")]
)
def test_task_priority_follows_severity(severity: str, priority: str) -> None:
    task = render_task(ALERT | {"severity": severity})
    assert task["priority"] == priority


def test_task_without_due_time_summary_or_evidence_is_valid() -> None:
    alert = {k: v for k, v in ALERT.items() if k not in ("due_at", "summary", "evidence")}
    task = render_task(alert | {"rule": "missing_data"})
    valid(task, Task)
    assert "restriction" not in task
    assert "input" not in task
    assert task["reasonCode"]["text"] == "Expected measurement missing"


def test_unknown_alert_status_or_severity_is_an_error() -> None:
    with pytest.raises(KeyError):
        render_flag(ALERT | {"status": "snoozed"})
    with pytest.raises(KeyError):
        render_task(ALERT | {"severity": "critical"})
