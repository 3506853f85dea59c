"""Open mHealth data points to readings (pure): one per schema, units, time frames, refusals.

The data points follow the shapes of Open mHealth's own sample data (openmhealth/schemas,
test-data/omh/<schema>/<version>/shouldPass), written out here.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egenmon.ingest.normalise import parse_time
from egenmon.ingest.omh import EXTENSION_URL, translate_body, translate_item
from egenmon.ingest.translated import FormatError

AT = {"date_time": "2026-11-24T07:25:00+01:00"}


def point(name: str, body: dict[str, Any], version: str = "4.0", **header: Any) -> dict:
    h: dict[str, Any] = {
        "uuid": str(uuid.uuid4()),
        "schema_id": {"namespace": "omh", "name": name, "version": version},
        "creation_date_time": "2026-11-24T07:26:00Z",
        "acquisition_provenance": {"source_name": "Omron Connect", "modality": "sensed"},
    }
    h.update(header)
    return {"header": h, "body": {"effective_time_frame": AT, **body}}


def one(data_point: Any):
    return translate_item(data_point, parse_time=parse_time)


def ctx(extra: dict) -> dict[str, Any]:
    [ext] = [e for e in extra["extension"] if e["url"] == EXTENSION_URL]
    return {
        s["url"]: next(v for k, v in s.items() if k.startswith("value")) for s in ext["extension"]
    }


# (schema, body, expected reading fields beside type/time/id)
SAMPLES = [
    ("blood-pressure",
     {"systolic_blood_pressure": {"value": 140, "unit": "mmHg"},
      "diastolic_blood_pressure": {"value": 60, "unit": "mmHg"},
      "body_posture": "sitting", "measurement_location": "left upper arm"},
     {"type": "blood_pressure", "systolic": 140, "diastolic": 60, "unit": "mm[Hg]"}),
    ("heart-rate", {"heart_rate": {"value": 50.0, "unit": "beats/min"}},
     {"type": "heart_rate", "value": 50.0, "unit": "/min"}),
    ("body-weight", {"body_weight": {"value": 179.5, "unit": "lb"}},
     {"type": "body_weight", "value": 179.5, "unit": "[lb_av]"}),
    ("oxygen-saturation",
     {"oxygen_saturation": {"value": 95, "unit": "%"},
      "supplemental_oxygen_flow_rate": {"value": 2.5, "unit": "L/min"},
      "oxygen_therapy_mode_of_administration": "nasal cannula",
      "system": "peripheral capillary", "measurement_method": "pulse oximetry"},
     {"type": "spo2", "value": 95, "unit": "%", "on_oxygen": True}),
    ("body-temperature",
     {"body_temperature": {"value": 99.5, "unit": "F"}, "measurement_location": "oral"},
     {"type": "body_temperature", "value": 99.5, "unit": "[degF]"}),
    ("blood-glucose",
     {"blood_glucose": {"value": 95, "unit": "mg/dL"}, "specimen_source": "capillary blood",
      "temporal_relationship_to_meal": "fasting"},
     {"type": "blood_glucose", "value": 95, "unit": "mg/dL"}),
    ("respiratory-rate", {"respiratory_rate": {"value": 12, "unit": "breaths/min"}},
     {"type": "respiratory_rate", "value": 12, "unit": "/min"}),
]  # fmt: skip


@pytest.mark.parametrize(("schema", "body", "expected"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_each_schema_becomes_a_reading(schema: str, body: dict, expected: dict) -> None:
    dp = point(schema, body)
    t = one(dp)
    assert t.errors == ()
    [reading] = t.readings
    assert reading == {
        **expected,
        "time": "2026-11-24T07:25:00+01:00",
        "id": f"omh:{dp['header']['uuid']}",
    }
    [extra] = t.extras
    assert extra["identifier"] == [
        {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{dp['header']['uuid']}"}
    ]
    c = ctx(extra)
    assert c["schema"] == f"omh:{schema}:4.0"
    assert c["source-name"] == "Omron Connect" and c["modality"] == "sensed"
    assert "effectivePeriod" not in extra


def test_descriptive_fields_are_kept_and_a_location_is_the_body_site() -> None:
    t = one(point("blood-pressure", SAMPLES[0][1]))
    c = ctx(t.extras[0])
    assert c["body-posture"] == "sitting" and c["measurement-location"] == "left upper arm"
    assert t.extras[0]["bodySite"] == {"text": "left upper arm"}
    t = one(point("blood-glucose", SAMPLES[5][1]))
    assert ctx(t.extras[0])["temporal-relationship-to-meal"] == "fasting"


def test_kelvin_and_ounces_are_converted_here() -> None:
    t = one(point("body-temperature", {"body_temperature": {"value": 310.15, "unit": "K"}}))
    assert t.readings[0]["unit"] == "Cel"
    assert t.readings[0]["value"] == pytest.approx(37.0)
    t = one(point("body-weight", {"body_weight": {"value": 2880, "unit": "oz"}}))
    assert t.readings[0]["unit"] == "kg"
    assert t.readings[0]["value"] == pytest.approx(81.647, abs=0.001)


def test_an_interval_gives_its_end_as_the_time_and_keeps_the_period() -> None:
    frame = {
        "time_interval": {
            "start_date_time": "2026-11-24T07:25:00+01:00",
            "end_date_time": "2026-11-24T07:26:30+01:00",
        }
    }
    t = one(point("heart-rate", {"heart_rate": {"value": 64, "unit": "beats/min"},
                                 "effective_time_frame": frame}))  # fmt: skip
    assert t.readings[0]["time"] == "2026-11-24T06:26:30+00:00"
    assert t.extras[0]["effectivePeriod"] == {
        "start": "2026-11-24T06:25:00Z",
        "end": "2026-11-24T06:26:30Z",
    }
    duration = {"time_interval": {"duration": {"value": 90, "unit": "sec"},
                                  "end_date_time": "2026-11-24T07:26:30+01:00"}}  # fmt: skip
    t = one(point("heart-rate", {"heart_rate": {"value": 64, "unit": "beats/min"},
                                 "effective_time_frame": duration}))  # fmt: skip
    assert t.extras[0]["effectivePeriod"]["start"] == "2026-11-24T06:25:00Z"


def test_header_id_of_open_mhealth_1x_is_taken_like_uuid() -> None:
    dp = point("heart-rate", {"heart_rate": {"value": 64, "unit": "beats/min"}})
    dp["header"]["id"] = "fitbit-2342"
    del dp["header"]["uuid"]
    t = one(dp)
    assert t.readings[0]["id"] == "omh:fitbit-2342"
    assert t.extras[0]["identifier"][0]["value"] == "fitbit-2342"


HR = {"heart_rate": {"value": 64, "unit": "beats/min"}}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["body"].update(descriptive_statistic="maximum"), "descriptive_statistic"),
        (lambda d: d["body"].pop("effective_time_frame"), "effective_time_frame"),
        (lambda d: d["body"].update(effective_time_frame={"time_interval": {
            "start_date_time": "2023-02-05T06:00:00-08:00",
            "end_date_time": "2020-03-06T06:00:00-08:00"}}), "end_date_time is before"),
        (lambda d: d["body"].update(effective_time_frame={"time_interval": {
            "date": "2013-02-05", "part_of_day": "morning"}}), "part of the day"),
        (lambda d: d["body"].update(effective_time_frame={"time_interval": {
            "duration": {"value": 2, "unit": "d"},
            "end_date_time": "2026-11-24T07:26:30+01:00"}}), "longer than 24 hours"),
        (lambda d: d["body"].update(effective_time_frame={"date_time": 1700000000}),
         "effective_time_frame.date_time: must be an RFC 3339"),
        (lambda d: d["body"].update(heart_rate={"value": 64, "unit": "bpm"}),
         "body.heart_rate.unit: 'bpm' is not taken; taken: beats/min"),
        (lambda d: d["body"].update(heart_rate={"value": "64", "unit": "beats/min"}),
         "body.heart_rate.value"),
        (lambda d: d["body"].pop("heart_rate"), "body.heart_rate"),
        (lambda d: d["header"].pop("uuid"), "header.uuid"),
        (lambda d: d["header"].update(schema_id={"namespace": "omh", "name": "step-count",
                                                 "version": "2.0"}), "header.schema_id"),
        (lambda d: d["header"].update(schema_id={"namespace": "omh", "name": "heart-rate"}),
         "header.schema_id.version"),
        (lambda d: d.pop("body"), "body: required"),
    ],
)  # fmt: skip
def test_invalid_data_points_are_refused_naming_the_field(change, field: str) -> None:
    dp = point("heart-rate", HR)
    change(dp)
    t = one(dp)
    assert t.readings == ()
    assert field in t.errors[0]


def test_skin_temperature_and_non_blood_glucose_are_refused() -> None:
    t = one(point("body-temperature", {"body_temperature": {"value": 33, "unit": "C"},
                                       "measurement_location": "wrist"}))  # fmt: skip
    assert "skin temperature" in t.errors[0]
    t = one(point("blood-glucose", {"blood_glucose": {"value": 5.5, "unit": "mmol/L"},
                                    "specimen_source": "interstitial fluid"}))  # fmt: skip
    assert "not a blood glucose" in t.errors[0]


def test_blood_pressure_in_two_units_is_refused() -> None:
    body = {
        "systolic_blood_pressure": {"value": 18, "unit": "kPa"},
        "diastolic_blood_pressure": {"value": 80, "unit": "mmHg"},
    }
    t = one(point("blood-pressure", body))
    assert "different units" in t.errors[0]


def test_unknown_body_fields_are_named_not_fatal() -> None:
    t = one(point("heart-rate", {**HR, "vendor_confidence": 0.9}))
    assert t.errors == () and ctx(t.extras[0])["ignored-fields"] == "'vendor_confidence'"


def test_bodies() -> None:
    assert len(translate_body(b'{"header": {}, "body": {}}', parse_time=parse_time)) == 1
    assert len(translate_body(b"[{}, {}, 3]", parse_time=parse_time)) == 3
    for bad, text in [(b"[]", "1 to 1000"), (b"7", "data point"), (b"{", "JSON")]:
        with pytest.raises(FormatError, match=text):
            translate_body(bad, parse_time=parse_time)


_JSON = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=10),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)
_SCHEMA_ID = st.fixed_dictionaries(
    {
        "namespace": st.just("omh"),
        "name": st.sampled_from(["heart-rate", "blood-pressure", "body-weight", "x"]),
        "version": st.sampled_from(["1.0", "4.0", "x"]),
    }
)
_UNIT_VALUE = st.fixed_dictionaries(
    {
        "value": st.integers() | st.floats(allow_nan=False),
        "unit": st.sampled_from(["kg", "beats/min", "mmHg", "oz"]),
    }
)


@settings(max_examples=60, deadline=None)
@given(
    header=st.fixed_dictionaries(
        {},
        optional={
            "uuid": st.text(max_size=5) | st.integers(),
            "schema_id": _SCHEMA_ID | _JSON,
            "acquisition_provenance": _JSON,
        },
    ),
    body=st.dictionaries(
        st.sampled_from(
            [
                "heart_rate",
                "body_weight",
                "effective_time_frame",
                "systolic_blood_pressure",
                "descriptive_statistic",
                "x",
            ]
        ),  # fmt: skip
        _JSON | _UNIT_VALUE | st.fixed_dictionaries({"date_time": st.text(max_size=30)}),
        max_size=5,
    ),
)
def test_hostile_data_points_never_raise(header: dict, body: dict) -> None:
    t = one({"header": header, "body": body})
    assert bool(t.readings) != bool(t.errors)
