"""Every type of clinical.md, from its canonical unit and every alias, through a real serve."""

from __future__ import annotations

import datetime as dt

import httpx
import orjson
import pytest

from egenmon.domain.measurements import TYPES
from tests.ingest.conftest import auth, stored

# clinical.md: LOINC and MDC codes and canonical UCUM units, written out here on purpose
# rather than read from types.py.
CODES = {
    "blood_pressure": ("85354-9", "150020", "mm[Hg]"),
    "heart_rate": ("8867-4", "149546", "/min"),
    "spo2": ("2708-6", "150456", "%"),
    "body_temperature": ("8310-5", "150364", "Cel"),
    "body_weight": ("29463-7", "188736", "kg"),
    "respiratory_rate": ("9279-1", "151562", "/min"),
    "blood_glucose": ("14743-9", "160184", "mmol/L"),
}

# (type, unit as sent, values as sent, stored (value, value2, value3) in the canonical unit)
CASES = [
    ("blood_pressure", "mm[Hg]", {"systolic": 120, "diastolic": 80, "mean": 93}, (120, 80, 93)),
    ("blood_pressure", "mmHg", {"systolic": 131, "diastolic": 85}, (131, 85, None)),
    ("blood_pressure", "kPa", {"systolic": 16, "diastolic": 10.7}, (120, 80, None)),
    ("heart_rate", "/min", {"value": 72}, (72, None, None)),
    ("heart_rate", "bpm", {"value": 73}, (73, None, None)),
    ("heart_rate", "{beats}/min", {"value": 74}, (74, None, None)),
    ("spo2", "%", {"value": 97}, (97, None, None)),
    ("body_temperature", "Cel", {"value": 37.1}, (37.1, None, None)),
    ("body_temperature", "°C", {"value": 37.2}, (37.2, None, None)),
    ("body_temperature", "C", {"value": 37.3}, (37.3, None, None)),
    ("body_temperature", "[degF]", {"value": 98.6}, (37.0, None, None)),
    ("body_temperature", "°F", {"value": 100.4}, (38.0, None, None)),
    ("body_weight", "kg", {"value": 81.4}, (81.4, None, None)),
    ("body_weight", "g", {"value": 81400}, (81.4, None, None)),
    ("body_weight", "lb", {"value": 180}, (81.65, None, None)),
    ("body_weight", "[lb_av]", {"value": 150}, (68.04, None, None)),
    ("respiratory_rate", "/min", {"value": 16}, (16, None, None)),
    ("respiratory_rate", "{breaths}/min", {"value": 17}, (17, None, None)),
    ("respiratory_rate", "bpm", {"value": 18}, (18, None, None)),
    ("blood_glucose", "mmol/L", {"value": 6.1}, (6.1, None, None)),
    ("blood_glucose", "mg/dL", {"value": 110}, (6.11, None, None)),
]
T0 = dt.datetime(2026, 3, 1, 6, 0, tzinfo=dt.UTC)


def test_the_cases_cover_every_type_and_every_accepted_unit():
    assert {(t, u) for t, u, _, _ in CASES} == {
        (name, unit) for name, t in TYPES.items() for unit in t.units
    }
    assert set(CODES) == set(TYPES)


def test_every_type_and_alias_stores_with_its_codes_and_canonical_unit(serve, device, conn):
    base, _ = serve("--no-mqtt", "--no-scheduler")
    readings = []
    for i, (type_name, unit, values, _) in enumerate(CASES):
        # Times with offsets other than UTC: stored as the same instants.
        local = (T0 + dt.timedelta(minutes=i)).astimezone(dt.timezone(dt.timedelta(hours=1)))
        readings.append({"type": type_name, "time": local.isoformat(), "unit": unit, **values})
    message = {"message_id": "all-types", "device_id": device["id"], "readings": readings}
    r = httpx.post(
        base + "/api/v1/readings",
        content=orjson.dumps(message),
        headers=auth(device["secret"]),
        timeout=10,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": len(CASES), "duplicates": 0, "rejected": []}

    rows = {row["time"]: row for row in stored(conn, device["id"])}
    assert len(rows) == len(CASES)
    for i, (type_name, _unit, _values, expected) in enumerate(CASES):
        row = rows[T0 + dt.timedelta(minutes=i)]
        code, mdc, unit = CODES[type_name]
        assert (row["type"], row["code"], row["mdc"], row["unit"]) == (
            type_name,
            code,
            mdc,
            unit,
        ), type_name
        got = (row["value"], row["value2"], row["value3"])
        for g, e in zip(got, expected, strict=True):
            assert (g is None and e is None) or g == pytest.approx(e, abs=1e-9), (
                type_name,
                _unit,
                got,
                expected,
            )
        assert str(row["patient_id"]) == device["patient"]
        assert (row["source"], row["message_id"]) == ("http", "all-types")
