"""Normalising readings into rows: codes, units, checks, bindings and dedup keys."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egenmon.domain.measurements import TYPES
from egenmon.domain.readings import COLUMNS, Binding
from egenmon.ingest.message import ReadingMessage
from egenmon.ingest.normalise import (
    dedup_key,
    from_canonical,
    normalise,
    parse_time,
    to_canonical,
)

DEVICE = "omron-7361t-0042"
PATIENT = UUID("11111111-1111-4111-8111-111111111111")
OTHER = UUID("22222222-2222-4222-8222-222222222222")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 24, 12, 0, 1, tzinfo=UTC)
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
BOUND = [Binding(PATIENT, SINCE, None)]
T = "2026-11-24T07:31:00+01:00"
T_UTC = datetime(2026, 11, 24, 6, 31, tzinfo=UTC)
MIGRATION = Path(__file__).parents[2] / "egenmon/store/migrations/0001_spine.sql"
TIME = COLUMNS.index("time")
PATIENT_COL = COLUMNS.index("patient_id")
KEY = COLUMNS.index("dedup_key")


def run(
    *readings: Any,
    bindings: list[Binding] | None = None,
    now: datetime = NOW,
    message_id: str | None = "m-1",
    source: str = "http",
) -> tuple[list[tuple[Any, ...]], list[tuple[int, str]]]:
    message = ReadingMessage(message_id=message_id, readings=list(readings))
    return normalise(
        message, DEVICE, BOUND if bindings is None else bindings, now, source, RECEIVED
    )


def one(reading: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """The single row a good reading becomes, as a column → value dict."""
    rows, errors = run(reading, **kw)
    assert errors == []
    assert len(rows) == 1
    return dict(zip(COLUMNS, rows[0], strict=True))


def reason(reading: Any, **kw: Any) -> str:
    """The reason the single bad reading was refused."""
    rows, errors = run(reading, **kw)
    assert rows == []
    assert [i for i, _ in errors] == [0]
    return errors[0][1]


def hr(**kw: Any) -> dict[str, Any]:
    return {"type": "heart_rate", "time": T, "value": 72, "unit": "/min", **kw}


def bp(**kw: Any) -> dict[str, Any]:
    return {
        "type": "blood_pressure",
        "time": T,
        "systolic": 142,
        "diastolic": 91,
        "unit": "mm[Hg]",
        **kw,
    }


def single(type_name: str, value: Any, unit: str, **kw: Any) -> dict[str, Any]:
    return {"type": type_name, "time": T, "value": value, "unit": unit, **kw}


# --- the table and its columns ---------------------------------------------------------


def test_columns_are_the_readings_table_in_order() -> None:
    sql = MIGRATION.read_text()
    body = re.search(r"CREATE TABLE readings \((.*?)\n\);", sql, re.S)
    assert body is not None
    names = [line.split()[0] for line in body.group(1).strip().splitlines()]
    assert tuple(names) == COLUMNS


def test_a_row_holds_every_column_with_the_given_context() -> None:
    row = one(hr(on_oxygen=True, note="after a walk"))
    assert row == {
        "time": T_UTC,
        "patient_id": PATIENT,
        "device_id": DEVICE,
        "type": "heart_rate",
        "code": "8867-4",
        "mdc": "149546",
        "value": 72.0,
        "value2": None,
        "value3": None,
        "unit": "/min",
        "on_oxygen": True,
        "note": "after a walk",
        "source": "http",
        "dedup_key": f"{DEVICE}|heart_rate|2026-11-24T06:31:00.000000+00:00",
        "received_at": RECEIVED,
        "message_id": "m-1",
        "extra": None,
    }
    assert row["time"].utcoffset() == timedelta(0)


@pytest.mark.parametrize("source", ["http", "mqtt", "fhir", "replay"])
def test_the_source_is_stored(source: str) -> None:
    assert one(hr(), source=source)["source"] == source


def test_optional_fields_absent_or_null_are_stored_as_null() -> None:
    for reading in (hr(), hr(on_oxygen=None, note=None, id=None)):
        row = one(reading, message_id=None)
        assert (row["on_oxygen"], row["note"], row["message_id"]) == (None, None, None)
        assert "|heart_rate|" in row["dedup_key"]


def test_on_oxygen_false_is_kept_apart_from_unknown() -> None:
    assert one(hr(on_oxygen=False))["on_oxygen"] is False


# --- every type, from its canonical unit and every alias --------------------------------

# (type, unit, values in that unit, stored (value, value2, value3), LOINC, MDC, canonical)
# Expected values worked out by hand from clinical.md's factors, then rounded to the type's
# precision (0 decimals for pressures and rates, 2 for temperature, weight and glucose).
STORED = [
    ("blood_pressure", "mm[Hg]", {"systolic": 142, "diastolic": 91}, (142, 91, None)),
    ("blood_pressure", "mm[Hg]", {"systolic": 142, "diastolic": 91, "mean": 108}, (142, 91, 108)),
    ("blood_pressure", "mmHg", {"systolic": 128, "diastolic": 82}, (128, 82, None)),
    ("blood_pressure", "kPa", {"systolic": 18.9, "diastolic": 12.1, "mean": 14.4}, (142, 91, 108)),
    ("heart_rate", "/min", {"value": 72}, (72, None, None)),
    ("heart_rate", "bpm", {"value": 72}, (72, None, None)),
    ("heart_rate", "{beats}/min", {"value": 58}, (58, None, None)),
    ("spo2", "%", {"value": 96}, (96, None, None)),
    ("body_temperature", "Cel", {"value": 37.9}, (37.9, None, None)),
    ("body_temperature", "°C", {"value": 38.25}, (38.25, None, None)),
    ("body_temperature", "C", {"value": 36.6}, (36.6, None, None)),
    ("body_temperature", "[degF]", {"value": 100.4}, (38.0, None, None)),
    ("body_temperature", "°F", {"value": 98.6}, (37.0, None, None)),
    ("body_weight", "kg", {"value": 81.4}, (81.4, None, None)),
    ("body_weight", "g", {"value": 81400}, (81.4, None, None)),
    ("body_weight", "lb", {"value": 180}, (81.65, None, None)),  # 81.6466...
    ("body_weight", "[lb_av]", {"value": 150}, (68.04, None, None)),  # 68.0388...
    ("respiratory_rate", "/min", {"value": 18}, (18, None, None)),
    ("respiratory_rate", "bpm", {"value": 18}, (18, None, None)),
    ("respiratory_rate", "{breaths}/min", {"value": 16}, (16, None, None)),
    ("blood_glucose", "mmol/L", {"value": 6.1}, (6.1, None, None)),
    ("blood_glucose", "mg/dL", {"value": 110}, (6.11, None, None)),  # 6.1057...
    ("blood_glucose", "mg/dL", {"value": 72}, (4.0, None, None)),  # 3.9964...
]
CODES = {  # clinical.md: LOINC, MDC, canonical UCUM unit
    "blood_pressure": ("85354-9", "150020", "mm[Hg]"),
    "heart_rate": ("8867-4", "149546", "/min"),
    "spo2": ("2708-6", "150456", "%"),
    "body_temperature": ("8310-5", "150364", "Cel"),
    "body_weight": ("29463-7", "188736", "kg"),
    "respiratory_rate": ("9279-1", "151562", "/min"),
    "blood_glucose": ("14743-9", "160184", "mmol/L"),
}


def test_the_table_covers_every_type_and_every_accepted_unit() -> None:
    covered = {(t, u) for t, u, _, _ in STORED}
    assert covered == {(name, unit) for name, t in TYPES.items() for unit in t.units}
    assert set(CODES) == set(TYPES)


@pytest.mark.parametrize(("type_name", "unit", "values", "stored"), STORED)
def test_each_type_stores_its_codes_canonical_unit_and_converted_value(
    type_name: str, unit: str, values: dict[str, float], stored: tuple[float | None, ...]
) -> None:
    row = one({"type": type_name, "time": T, "unit": unit, **values})
    assert (row["code"], row["mdc"], row["unit"]) == CODES[type_name]
    assert (row["value"], row["value2"], row["value3"]) == stored
    assert row["type"] == type_name


def test_the_contract_example_message_stores_all_seven_readings() -> None:
    readings = [
        bp(),
        hr(),
        single("spo2", 96, "%", time="2026-11-24T07:32:10+01:00"),
        single("body_temperature", 37.9, "Cel", time="2026-11-24T07:35:00+01:00"),
        single("body_weight", 81.4, "kg", time="2026-11-24T07:40:00+01:00"),
        single("respiratory_rate", 18, "/min", time="2026-11-24T07:41:00+01:00"),
        single("blood_glucose", 6.1, "mmol/L", time="2026-11-24T07:45:00+01:00"),
    ]
    rows, errors = run(*readings)
    assert errors == []
    assert [r[3] for r in rows] == [r["type"] for r in readings]
    assert len({r[KEY] for r in rows}) == 7


def test_values_are_rounded_to_the_type_precision() -> None:
    assert one(single("body_temperature", 37.456, "Cel"))["value"] == 37.46
    assert one(hr(value=71.6))["value"] == 72.0
    assert one(single("body_weight", 81.4049, "kg"))["value"] == 81.4


# --- each bad input, with its reason ----------------------------------------------------

BAD = [
    ("not an object", 42, "a reading must be a JSON object, not a number"),
    ("array", [hr()], "a reading must be a JSON object, not an array"),
    ("no type", {"time": T, "value": 72, "unit": "/min"}, "type: required; known types: "),
    ("unknown type", hr(type="pulse"), "unknown type 'pulse'; known types: blood_glucose, "),
    ("type not text", hr(type=["heart_rate"]), "unknown type ['heart_rate']"),
    ("unknown unit", hr(unit="beats"), "unknown unit 'beats' for heart_rate; accepted: /min, "),
    ("unit of another type", hr(unit="%"), "unknown unit '%' for heart_rate"),
    ("unit case", bp(unit="MMHG"), "accepted: mm[Hg], mmHg, kPa"),
    ("unit not text", hr(unit=1), "unknown unit 1 for heart_rate"),
    ("no unit", {"type": "spo2", "time": T, "value": 96}, "unit: required for spo2"),
    ("no time", {"type": "spo2", "value": 96, "unit": "%"}, "time: required"),
    ("time not text", hr(time=1764000000), "time: must be an RFC 3339 string, not a number"),
    ("no offset", hr(time="2026-11-24T07:31:00"), "has no offset"),
    ("no offset, fraction", hr(time="2026-11-24T07:31:00.5"), "has no offset"),
    ("date only", hr(time="2026-11-24"), "is not an RFC 3339 date-time"),
    ("no seconds", hr(time="2026-11-24T07:31+01:00"), "is not an RFC 3339 date-time"),
    ("week date", hr(time="2026-W47-2T07:31:00+01:00"), "is not an RFC 3339 date-time"),
    ("basic format", hr(time="20261124T073100+0100"), "is not an RFC 3339 date-time"),
    ("short offset", hr(time="2026-11-24T07:31:00+01"), "is not an RFC 3339 date-time"),
    ("comma fraction", hr(time="2026-11-24T07:31:00,5Z"), "is not an RFC 3339 date-time"),
    ("no such day", hr(time="2026-02-30T07:31:00Z"), "is not a valid date-time"),
    ("leap second", hr(time="2026-12-31T23:59:60Z"), "is not a valid date-time"),
    ("offset too big", hr(time="2026-11-24T07:31:00+24:00"), "is not a valid date-time"),
    ("year 1 east", hr(time="0001-01-01T00:00:00+01:00"), "is not a valid date-time"),
    ("future", hr(time="2026-11-24T12:05:01Z"), "time is in the future"),
    ("pulse 0", hr(value=0), "heart_rate 0 /min is outside the plausible range 20–300"),
    ("pulse 400", hr(value=400), "heart_rate 400 /min is outside the plausible range 20–300"),
    ("spo2 over 100", single("spo2", 101, "%"), "spo2 101 % is outside the plausible range"),
    ("spo2 100.5", single("spo2", 100.6, "%"), "spo2 101 % is outside"),  # checked rounded
    (
        "temperature 60",
        single("body_temperature", 60, "Cel"),
        "body_temperature 60 Cel is outside the plausible range 25–45",
    ),
    (
        "140 °F is 60 Cel",
        single("body_temperature", 140, "[degF]"),
        "body_temperature 60 Cel (140 [degF]) is outside the plausible range 25–45",
    ),
    ("glucose 0", single("blood_glucose", 0, "mmol/L"), "outside the plausible range 0.5–60"),
    ("weight 0", single("body_weight", 0, "kg"), "body_weight 0 kg is outside"),
    ("breaths 0", single("respiratory_rate", 0, "/min"), "respiratory_rate 0 /min is outside"),
    ("negative", hr(value=-72), "heart_rate -72 /min is outside"),
    ("bool value", hr(value=True), "value: must be a number, not a boolean"),
    ("false value", hr(value=False), "value: must be a number, not a boolean"),
    ("text value", hr(value="72"), "value: must be a number, not a string"),
    ("object value", hr(value={"v": 72}), "value: must be a number, not an object"),
    ("null value", hr(value=None), "value: required for heart_rate"),
    ("no value", {"type": "spo2", "time": T, "unit": "%"}, "value: required for spo2"),
    ("huge value", hr(value=10**400), "value: number too large"),
    ("nan", hr(value=math.nan), "outside the plausible range"),
    ("infinity", hr(value=math.inf), "outside the plausible range"),
    ("bool systolic", bp(systolic=True), "systolic: must be a number, not a boolean"),
    (
        "no diastolic",
        {"type": "blood_pressure", "time": T, "systolic": 142, "unit": "mmHg"},
        "blood_pressure needs systolic and diastolic: diastolic missing",
    ),
    (
        "neither",
        {"type": "blood_pressure", "time": T, "mean": 100, "unit": "mmHg"},
        "systolic and diastolic missing",
    ),
    ("equal pressures", bp(systolic=90, diastolic=90), "systolic 90 must exceed diastolic 90"),
    ("swapped pressures", bp(systolic=80, diastolic=120), "systolic 80 must exceed diastolic"),
    (
        "systolic 350",
        bp(systolic=350),
        "blood_pressure systolic 350 mm[Hg] is outside the plausible range 40–300",
    ),
    ("mean 300", bp(mean=300), "blood_pressure mean 300 mm[Hg] is outside"),
    ("typo key", hr(valeu=72), "unknown key 'valeu' for heart_rate; allowed: type, time, value"),
    ("value on a panel", bp(value=142), "unknown key 'value' for blood_pressure"),
    ("systolic on a value", hr(systolic=142), "unknown key 'systolic' for heart_rate"),
    ("message field", hr(device_id=DEVICE), "unknown key 'device_id'"),
    ("empty id", hr(id=""), "id: must be a non-empty string of at most 200 characters"),
    ("long id", hr(id="x" * 201), "id: must be a non-empty string"),
    ("number id", hr(id=7), "id: must be a non-empty string"),
    ("nul in id", hr(id="a\x00b"), "id: must be a non-empty string"),
    ("on_oxygen text", hr(on_oxygen="yes"), "on_oxygen: must be true or false, not a string"),
    ("on_oxygen number", hr(on_oxygen=1), "on_oxygen: must be true or false, not a number"),
    ("long note", hr(note="n" * 1001), "note: must be a string of at most 1000 characters"),
    ("number note", hr(note=5), "note: must be a string"),
    ("nul in note", hr(note="a\x00b"), "note: must be a string"),
    ("before binding", hr(time="2025-12-31T23:59:59Z"), "no patient bound to device at 2025-12"),
]


@pytest.mark.parametrize(("reading", "expected"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_each_bad_reading_is_refused_with_its_reason(reading: Any, expected: str) -> None:
    assert expected in reason(reading)


def test_an_unknown_type_lists_every_known_type() -> None:
    text = reason(hr(type="pulse"))
    assert all(name in text for name in TYPES)


def test_a_hostile_value_is_cut_short_in_the_reason() -> None:
    assert len(reason(hr(type="x" * 100_000))) < 400
    assert len(reason(hr(**{"k" * 100_000: 1}))) < 400


def test_boundaries_of_plausibility_are_inclusive() -> None:
    assert one(hr(value=20))["value"] == 20.0
    assert one(hr(value=300))["value"] == 300.0
    assert one(single("spo2", 100, "%"))["value"] == 100.0
    assert one(bp(systolic=41, diastolic=40))["value2"] == 40.0


def test_five_minutes_of_clock_skew_are_accepted_and_no_more() -> None:
    assert one(hr(time="2026-11-24T12:05:00Z"))["time"] == NOW + timedelta(minutes=5)
    assert one(hr(time="2026-11-24T13:05:00+01:00"))["time"] == NOW + timedelta(minutes=5)
    assert "time is in the future" in reason(hr(time="2026-11-24T12:05:00.000001Z"))
    assert "time is in the future" in reason(hr(time="2026-11-24T13:05:01+01:00"))


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-24T06:31:00Z",
        "2026-11-24T06:31:00z",
        "2026-11-24t06:31:00Z",
        "2026-11-24 06:31:00Z",
        "2026-11-24T06:31:00+00:00",
        "2026-11-24T06:31:00-00:00",
        "2026-11-24T07:31:00+01:00",
        "2026-11-24T01:01:00-05:30",
        "2026-11-24T06:31:00.000Z",
    ],
)
def test_rfc3339_spellings_of_one_instant_are_accepted(text: str) -> None:
    assert parse_time(text) == T_UTC
    assert parse_time(text).tzinfo is UTC


# --- partial acceptance ------------------------------------------------------------------


def test_good_readings_are_kept_and_bad_ones_listed_by_index() -> None:
    rows, errors = run(hr(), hr(value=400), bp(), "junk", single("spo2", 96, "%"))
    assert [r[3] for r in rows] == ["heart_rate", "blood_pressure", "spo2"]
    assert [i for i, _ in errors] == [1, 3]
    assert "400" in errors[0][1]
    assert "JSON object" in errors[1][1]


def test_a_message_with_only_bad_readings_gives_no_rows() -> None:
    rows, errors = run(hr(value=0), hr(type="x"))
    assert rows == []
    assert [i for i, _ in errors] == [0, 1]


# --- bindings ----------------------------------------------------------------------------

MOVED = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
HISTORY = [Binding(PATIENT, SINCE, MOVED), Binding(OTHER, MOVED, None)]


def test_a_binding_includes_its_start() -> None:
    assert one(hr(time="2026-01-01T00:00:00Z"))["patient_id"] == PATIENT
    assert "no patient bound" in reason(hr(time="2025-12-31T23:59:59.999999Z"))


def test_a_binding_excludes_its_end() -> None:
    bindings = [Binding(PATIENT, SINCE, MOVED)]
    assert one(hr(time="2026-06-01T07:59:59.999999Z"), bindings=bindings)["patient_id"] == PATIENT
    assert "no patient bound to device at 2026-06-01T08:00:00" in reason(
        hr(time="2026-06-01T08:00:00Z"), bindings=bindings
    )


def test_a_device_moved_between_patients_keeps_history_straight() -> None:
    rows, errors = run(
        hr(time="2026-05-31T10:00:00+02:00"),
        hr(time="2026-06-01T09:59:59+02:00"),  # 07:59:59Z: still the first patient
        hr(time="2026-06-01T10:00:00+02:00"),  # 08:00:00Z: the second from here on
        hr(time="2026-11-24T07:00:00+01:00"),
        bindings=HISTORY,
    )
    assert errors == []
    assert [r[PATIENT_COL] for r in rows] == [PATIENT, PATIENT, OTHER, OTHER]


def test_a_gap_between_bindings_belongs_to_nobody() -> None:
    bindings = [
        Binding(PATIENT, SINCE, MOVED),
        Binding(OTHER, MOVED + timedelta(days=2), None),
    ]
    assert "no patient bound" in reason(hr(time="2026-06-02T12:00:00Z"), bindings=bindings)
    assert one(hr(time="2026-06-03T08:00:00Z"), bindings=bindings)["patient_id"] == OTHER


def test_a_device_without_bindings_has_every_reading_refused() -> None:
    rows, errors = run(hr(), bp(), bindings=[])
    assert rows == []
    assert all("no patient bound to device at 2026-11-24T06:31:00+00:00" in e for _, e in errors)


def test_bindings_in_another_offset_are_compared_as_instants() -> None:
    cet = timezone(timedelta(hours=1))
    start = datetime(2026, 11, 24, 7, 31, tzinfo=cet)  # 06:31Z, the reading's instant
    assert one(hr(), bindings=[Binding(PATIENT, start)])["patient_id"] == PATIENT
    later = Binding(PATIENT, start + timedelta(microseconds=1))
    assert "no patient bound" in reason(hr(), bindings=[later])


# --- dedup keys --------------------------------------------------------------------------


def test_the_same_instant_in_any_offset_gives_the_same_key() -> None:
    keys = {
        one(hr(time=t))["dedup_key"]
        for t in (
            "2026-11-24T07:31:00+01:00",
            "2026-11-24T06:31:00Z",
            "2026-11-24T06:31:00.000+00:00",
            "2026-11-24T01:01:00-05:30",
        )
    }
    assert keys == {f"{DEVICE}|heart_rate|2026-11-24T06:31:00.000000+00:00"}


def test_a_key_keeps_microseconds_and_the_type() -> None:
    a = one(hr(time="2026-11-24T06:31:00.123456Z"))["dedup_key"]
    b = one(hr(time="2026-11-24T06:31:00.123457Z"))["dedup_key"]
    assert a == f"{DEVICE}|heart_rate|2026-11-24T06:31:00.123456+00:00"
    assert a != b
    assert one(single("spo2", 96, "%"))["dedup_key"] != one(hr())["dedup_key"]


def test_a_reading_id_replaces_type_and_time_in_the_key() -> None:
    a = one(hr(id="r-17"))
    b = one(single("spo2", 96, "%", id="r-17", time="2026-11-24T06:00:00Z"))
    assert a["dedup_key"] == b["dedup_key"] == f"{DEVICE}|id|r-17"


def test_dedup_key_helper_matches_normalise() -> None:
    row = one(hr())
    assert dedup_key(DEVICE, "heart_rate", parse_time(T), None) == row["dedup_key"]
    cet = datetime(2026, 11, 24, 7, 31, tzinfo=timezone(timedelta(hours=1)))
    assert dedup_key(DEVICE, "heart_rate", cet, None) == row["dedup_key"]
    assert dedup_key(DEVICE, "heart_rate", cet, "x") == f"{DEVICE}|id|x"


# --- the caller's own mistakes -----------------------------------------------------------


def test_caller_mistakes_raise_value_error() -> None:
    message = ReadingMessage(readings=[hr()])
    naive = datetime(2026, 11, 24, 12, 0)
    with pytest.raises(ValueError, match="source"):
        normalise(message, DEVICE, BOUND, NOW, "ftp", RECEIVED)
    with pytest.raises(ValueError, match="timezone-aware"):
        normalise(message, DEVICE, BOUND, naive, "http", RECEIVED)
    with pytest.raises(ValueError, match="timezone-aware"):
        normalise(message, DEVICE, BOUND, NOW, "http", naive)
    with pytest.raises(ValueError, match="binding"):
        normalise(message, DEVICE, [Binding(PATIENT, naive)], NOW, "http", RECEIVED)


# --- conversion helpers ------------------------------------------------------------------


def test_to_canonical_converts_aliases_with_clinical_md_factors() -> None:
    assert math.isclose(to_canonical("blood_pressure", "kPa", 10), 75.0062)
    assert math.isclose(to_canonical("body_temperature", "°F", 212), 100.0)
    assert math.isclose(to_canonical("body_weight", "lb", 1), 0.45359237)
    assert math.isclose(to_canonical("blood_glucose", "mg/dL", 180.16), 10.0)
    assert to_canonical("heart_rate", "bpm", 72) == 72
    assert math.isclose(from_canonical("blood_pressure", "kPa", 75.0062), 10)


def test_conversion_helpers_refuse_unknown_types_and_units() -> None:
    with pytest.raises(ValueError, match="unknown type 'pulse'"):
        to_canonical("pulse", "/min", 72)
    with pytest.raises(ValueError, match=r"unknown unit 'mg/dL' for body_weight; accepted: kg"):
        from_canonical("body_weight", "mg/dL", 72)


# --- properties --------------------------------------------------------------------------

PAIRS = [(name, unit) for name, t in TYPES.items() for unit in t.units]
OFFSETS = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
INSTANTS = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 11, 24, 12, 4, 59)
).map(lambda d: d.replace(tzinfo=UTC))


@settings(database=None, deadline=None)
@given(pair=st.sampled_from(PAIRS), value=st.floats(0.1, 1e5))
def test_conversions_round_trip(pair: tuple[str, str], value: float) -> None:
    name, unit = pair
    back = from_canonical(name, unit, to_canonical(name, unit, value))
    assert math.isclose(back, value, rel_tol=1e-9)


def _step_value(draw: st.DrawFn, type_name: str, key: str, low: float, high: float) -> float:
    """A canonical value on the type's precision grid within [low, high]."""
    scale = 10 ** TYPES[type_name].value_precision
    return draw(st.integers(math.ceil(low * scale), math.floor(high * scale))) / scale


@st.composite
def valid_readings(draw: st.DrawFn) -> tuple[dict[str, Any], datetime, tuple[float | None, ...]]:
    """A valid reading in any accepted unit and offset, its instant and stored values."""
    name, unit = draw(st.sampled_from(PAIRS))
    t = TYPES[name]
    limits = {c.name: (float(c.low), float(c.high)) for c in t.components}
    if t.is_panel:
        dia = _step_value(draw, name, "diastolic", *limits["diastolic"])
        sys_low = max(limits["systolic"][0], dia + 1)
        sys = _step_value(draw, name, "systolic", sys_low, limits["systolic"][1])
        mean = draw(st.none() | st.integers(*map(int, limits["mean"])).map(float))
        canonical: dict[str, float | None] = {"systolic": sys, "diastolic": dia, "mean": mean}
        stored = (sys, dia, mean)
    else:
        value = _step_value(draw, name, "value", *limits["value"])
        canonical = {"value": value}
        stored = (value, None, None)
    instant = draw(INSTANTS)
    reading: dict[str, Any] = {
        "type": name,
        "time": instant.astimezone(draw(OFFSETS)).isoformat(),
        "unit": unit,
    }
    for key, v in canonical.items():
        if v is not None:
            sent = from_canonical(name, unit, v)
            # Devices send ints where they can; a whole number must work as int and float.
            reading[key] = int(sent) if sent.is_integer() and draw(st.booleans()) else sent
    optional = st.fixed_dictionaries(
        {},
        optional={
            "id": st.text(min_size=1, max_size=200).filter(lambda s: "\x00" not in s),
            "on_oxygen": st.booleans(),
            "note": st.text(max_size=1000).filter(lambda s: "\x00" not in s),
        },
    )
    reading.update(draw(optional))
    return reading, instant, stored


@settings(database=None, deadline=None, max_examples=300)
@given(case=valid_readings())
def test_any_valid_reading_normalises_to_its_canonical_values(
    case: tuple[dict[str, Any], datetime, tuple[float | None, ...]],
) -> None:
    reading, instant, stored = case
    row = one(reading)
    assert row["time"] == instant
    assert row["time"].utcoffset() == timedelta(0)
    assert (row["value"], row["value2"], row["value3"]) == stored
    assert (row["code"], row["mdc"], row["unit"]) == CODES[reading["type"]]
    assert row["on_oxygen"] == reading.get("on_oxygen")
    assert row["note"] == reading.get("note")
    if "id" in reading:
        assert row["dedup_key"] == f"{DEVICE}|id|{reading['id']}"
    else:
        assert row["dedup_key"] == dedup_key(DEVICE, reading["type"], instant, None)


@settings(database=None, deadline=None)
@given(instant=INSTANTS, a=OFFSETS, b=OFFSETS)
def test_dedup_keys_do_not_depend_on_the_offset(
    instant: datetime, a: timezone, b: timezone
) -> None:
    one_way = one(hr(time=instant.astimezone(a).isoformat()))["dedup_key"]
    other_way = one(hr(time=instant.astimezone(b).isoformat()))["dedup_key"]
    assert one_way == other_way


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from([T, "2026-11-24T07:31:00", "9999-12-31T23:59:59-01:00", "mm[Hg]", "°F"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)
# Readings close enough to valid that the deeper checks get exercised, not only the first.
NEAR_READINGS = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from([*TYPES, "pulse"]) | JSONISH,
        "time": st.sampled_from([T, "2026-11-24T07:31:00", "2099-01-01T00:00:00Z"]) | JSONISH,
        "unit": st.sampled_from([u for _, u in PAIRS]) | JSONISH,
        "value": JSONISH,
        "systolic": JSONISH,
        "diastolic": JSONISH,
        "mean": JSONISH,
        "id": JSONISH,
        "on_oxygen": JSONISH,
        "note": JSONISH,
        "extra": JSONISH,
    },
)


@settings(database=None, deadline=None, max_examples=400)
@given(readings=st.lists(NEAR_READINGS | JSONISH, min_size=1, max_size=8))
def test_any_input_gives_each_reading_a_row_or_a_reason_and_never_raises(
    readings: list[Any],
) -> None:
    rows, errors = run(*readings)
    refused = [i for i, _ in errors]
    assert refused == sorted(set(refused))
    assert len(rows) + len(errors) == len(readings)
    assert all(isinstance(e, str) and e for _, e in errors)
    for row in rows:
        assert len(row) == len(COLUMNS)
        assert row[TIME].utcoffset() == timedelta(0)
        assert row[TIME] <= NOW + timedelta(minutes=5)
