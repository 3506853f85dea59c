"""Parsing a Reading message v1: what is accepted, and what each refusal says."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egenmon.ingest.message import MAX_READINGS, MessageError, ReadingMessage, parse_message

# contract.md, "Reading message v1", verbatim.
CONTRACT_EXAMPLE = b"""{
  "message_id": "7d3c1b2a-5a0e-4c1e-9a55-1f0e0c7b9d10",
  "device_id": "omron-7361t-0042",
  "battery": 0.82,
  "readings": [
    {"type": "blood_pressure", "time": "2026-11-24T07:31:00+01:00", "systolic": 142,
     "diastolic": 91, "unit": "mm[Hg]"},
    {"type": "heart_rate", "time": "2026-11-24T07:31:00+01:00", "value": 72, "unit": "/min"},
    {"type": "spo2", "time": "2026-11-24T07:32:10+01:00", "value": 96, "unit": "%"},
    {"type": "body_temperature", "time": "2026-11-24T07:35:00+01:00", "value": 37.9,
     "unit": "Cel"},
    {"type": "body_weight", "time": "2026-11-24T07:40:00+01:00", "value": 81.4, "unit": "kg"},
    {"type": "respiratory_rate", "time": "2026-11-24T07:41:00+01:00", "value": 18,
     "unit": "/min"},
    {"type": "blood_glucose", "time": "2026-11-24T07:45:00+01:00", "value": 6.1,
     "unit": "mmol/L"}
  ]
}"""
ONE = {"type": "heart_rate", "time": "2026-11-24T07:31:00+01:00", "value": 72, "unit": "/min"}


def body(**fields: object) -> bytes:
    return orjson.dumps({"readings": [ONE], **fields})


def test_the_contract_example_parses_with_every_field() -> None:
    m = parse_message(CONTRACT_EXAMPLE)
    assert m.message_id == "7d3c1b2a-5a0e-4c1e-9a55-1f0e0c7b9d10"
    assert m.device_id == "omron-7361t-0042"
    assert m.battery == 0.82
    assert len(m.readings) == 7
    assert m.readings[0]["systolic"] == 142


def test_only_readings_is_required() -> None:
    m = parse_message(orjson.dumps({"readings": [ONE]}))
    assert (m.message_id, m.device_id, m.battery) == (None, None, None)
    assert m.readings == [ONE]


def test_null_optional_fields_are_the_same_as_absent() -> None:
    m = parse_message(body(message_id=None, device_id=None, battery=None))
    assert (m.message_id, m.device_id, m.battery) == (None, None, None)


@pytest.mark.parametrize("raw", [body(), bytearray(body()), memoryview(body()), body().decode()])
def test_bytes_like_and_str_bodies_are_accepted(raw: bytes | bytearray | memoryview | str) -> None:
    assert parse_message(raw).readings == [ONE]


def test_battery_bounds_are_inclusive_and_an_int_is_a_number() -> None:
    assert parse_message(body(battery=0)).battery == 0.0
    assert parse_message(body(battery=1)).battery == 1.0


def test_bad_readings_stay_raw_so_the_rest_of_the_message_survives() -> None:
    readings = [ONE, {"type": "nonsense"}, 42, None, "text"]
    m = parse_message(orjson.dumps({"readings": readings}))
    assert m.readings == readings


def test_a_full_message_of_readings_is_accepted() -> None:
    assert len(parse_message(orjson.dumps({"readings": [ONE] * MAX_READINGS})).readings) == 1000


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "body is not JSON: "),
        (b"{", "body is not JSON: "),
        (b"\xff\xfe{}", "body is not JSON: "),
        (b'{"readings": [NaN]}', "body is not JSON: "),
        (b"[]", "body must be a JSON object"),
        (b"null", "body must be a JSON object"),
        (b'"readings"', "body must be a JSON object"),
        (b"{}", "readings: required"),
        (orjson.dumps({"readings": []}), "readings: must hold 1 to 1000 readings, not 0"),
        (orjson.dumps({"readings": [ONE] * 1001}), "readings: must hold 1 to 1000 readings"),
        (orjson.dumps({"readings": ONE}), "readings: must be an array"),
        (orjson.dumps({"readings": "x"}), "readings: must be an array"),
        (body(device_id=42), "device_id: must be a string"),
        (body(message_id=7), "message_id: must be a string of at most 200 characters"),
        (body(message_id="m" * 201), "message_id: must be a string of at most 200 characters"),
        (body(message_id="a\x00b"), "holds a NUL character"),
        (body(battery=1.01), "battery: must be a number from 0 to 1"),
        (body(battery=-0.1), "battery: must be a number from 0 to 1"),
        (body(battery=True), "battery: must be a number from 0 to 1"),
        (body(battery="0.5"), "battery: must be a number from 0 to 1"),
        (body(batery=0.5), "batery: unknown field"),
    ],
)
def test_each_bad_body_is_refused_with_its_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(raw)
    assert reason in str(caught.value)


def test_every_wrong_field_is_named_once() -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(orjson.dumps({"device_id": 1, "battery": 2, "readings": []}))
    text = str(caught.value)
    assert text.count("device_id:") == 1
    assert "battery:" in text
    assert "readings:" in text


def test_a_hostile_field_name_is_cut_short_in_the_reason() -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(orjson.dumps({"readings": [ONE], "x" * 10_000: 1}))
    assert len(str(caught.value)) < 300


def test_message_error_is_a_value_error() -> None:
    assert issubclass(MessageError, ValueError)


def test_a_parsed_message_cannot_be_changed() -> None:
    m = parse_message(body(message_id="m1"))
    with pytest.raises(ValueError, match="frozen"):
        m.message_id = "m2"  # type: ignore[misc]


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
ENVELOPE = st.fixed_dictionaries(
    {},
    optional={
        "message_id": JSON | st.text(max_size=250),
        "device_id": JSON,
        "battery": JSON | st.floats(0, 1),
        "readings": JSON | st.lists(JSON, min_size=1, max_size=5),
        "extra": JSON,
    },
)


@settings(database=None, deadline=None, max_examples=300)
@given(data=ENVELOPE | JSON)
def test_any_json_gives_a_message_or_a_message_error(data: object) -> None:
    raw = orjson.dumps(data)
    try:
        m = parse_message(raw)
    except MessageError as e:
        assert str(e)
        return
    assert isinstance(data, dict)
    assert m.readings == data["readings"]
    assert 1 <= len(m.readings) <= MAX_READINGS


@settings(database=None, deadline=None, max_examples=300)
@given(raw=st.binary(max_size=200))
def test_any_bytes_give_a_message_or_a_message_error(raw: bytes) -> None:
    try:
        m = parse_message(raw)
    except MessageError as e:
        assert str(e)
    else:
        assert isinstance(m, ReadingMessage)
