"""Readings entered without a device (issue 15): `normalise_entered`, their dedup key and
source, and the patient app's entry body (hypothesis: never anything but a clear refusal)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egenmon.domain.readings import COLUMNS, entered_dedup_key, entered_source
from egenmon.fhir.render import render_observation
from egenmon.ingest.normalise import dedup_key, normalise_entered
from egenmon.web.me import MESSAGES, _message_key, _parse_entries, _split_meal

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PATIENT = uuid.UUID("6f1c2b1e-8a55-4c1e-9a55-1f0e0c7b9d10")


def bp(systolic: Any = 142, diastolic: Any = 91, **more: Any) -> dict[str, Any]:
    return {"type": "blood_pressure", "time": "2026-11-24T07:31:00+01:00",
            "systolic": systolic, "diastolic": diastolic, "unit": "mm[Hg]", **more}  # fmt: skip


def test_a_row_without_a_device_keyed_by_patient_type_time_and_source() -> None:
    rows, errors = normalise_entered(
        [bp(note="efter promenad")], PATIENT, NOW, "patient-entered", NOW
    )
    assert errors == []
    [row] = rows
    r = dict(zip(COLUMNS, row, strict=True))
    assert r["device_id"] is None and r["patient_id"] == PATIENT
    assert r["source"] == "patient-entered" and r["note"] == "efter promenad"
    assert (
        r["dedup_key"]
        == f"patient-entered:{PATIENT}|blood_pressure|2026-11-24T06:31:00.000000+00:00"
    )
    assert entered_source(r["dedup_key"]) == "patient-entered"
    # The same reading entered by staff is another reading (the source is in the key).
    [staff] = normalise_entered([bp()], PATIENT, NOW, "staff-entered", NOW)[0]
    assert staff[COLUMNS.index("dedup_key")] != r["dedup_key"]


def test_device_keys_are_never_read_as_entered() -> None:
    t = datetime(2026, 11, 24, tzinfo=UTC)
    assert entered_source(dedup_key("omron-1", "spo2", t, None)) is None
    assert entered_source(dedup_key("omron-1", "spo2", t, "fhir:x|y")) is None
    assert entered_source(entered_dedup_key("fhir", PATIENT, "spo2", t, "a:b")) == "fhir"


def test_impossible_values_are_refused_with_the_reason() -> None:
    rows, errors = normalise_entered(
        [bp(400, 90), bp(90, 120)], PATIENT, NOW, "patient-entered", NOW
    )
    assert rows == []
    assert [_message_key(reason) for _, reason in errors] == ["entry.implausible", "entry.bp_order"]


def test_only_sources_without_a_device() -> None:
    with pytest.raises(ValueError, match="source"):
        normalise_entered([bp()], PATIENT, NOW, "http", NOW)


def test_rendered_without_device_and_with_the_entering_clinician() -> None:
    [row] = normalise_entered(
        [bp()], PATIENT, NOW, "staff-entered", NOW,
        extra=[{"performer": [{"identifier": {"system": "urn:egenmon:principal",
                                              "value": "anna"}, "display": "clinician"}]}],
    )[0]  # fmt: skip
    obs = render_observation(dict(zip(COLUMNS, row, strict=True)))
    assert "device" not in obs
    assert obs["meta"]["source"] == "urn:egenmon:source:staff-entered"
    assert obs["performer"] == [
        {"identifier": {"system": "urn:egenmon:principal", "value": "anna"}, "display": "clinician"}
    ]


def test_a_meal_context_only_for_glucose() -> None:
    glucose = {"type": "blood_glucose", "time": "2026-11-24T07:45:00+01:00", "value": 6.1,
               "unit": "mmol/L", "meal": "before_meal"}  # fmt: skip
    plain, extras, refused = _split_meal([glucose, bp(meal="before_meal")], None)
    assert "meal" not in plain[0]
    assert extras[0] == {"extension": [{"url": extras[0]["extension"][0]["url"],
                                        "valueCode": "before_meal"}]}  # fmt: skip
    assert list(refused) == [1] and refused[1]["key"] == "entry.meal"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
reading_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["blood_pressure", "heart_rate", "blood_glucose", "x"]),
     "time": st.one_of(st.just("2026-11-24T07:31:00+01:00"), st.text(max_size=30)),
     "unit": st.sampled_from(["mm[Hg]", "/min", "mmol/L", "kg", "?"])},
    optional={"value": json_values, "systolic": json_values, "diastolic": json_values,
              "meal": json_values, "note": json_values, "id": json_values, "extra": json_values},
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.builds(
            lambda readings, more: __import__("orjson").dumps({"readings": readings, **more}),
            st.lists(reading_like | json_values, max_size=5),
            st.dictionaries(st.sampled_from(["dry_run", "x"]), json_values, max_size=2),
        ),
    )
)
def test_any_entry_body_is_taken_or_refused_with_a_reason(body: bytes) -> None:
    try:
        entries, _ = _parse_entries(body)
    except ValueError as e:
        assert str(e)
        return
    plain, extras, refused = _split_meal(entries, None)
    keep = [i for i in range(len(plain)) if i not in refused]
    rows, errors = normalise_entered([plain[i] for i in keep], PATIENT, NOW, "patient-entered",
                                     NOW, extra=[extras[i] for i in keep])  # fmt: skip
    assert len(rows) + len(errors) == len(keep)
    for _, reason in errors:
        assert reason and _message_key(reason) in MESSAGES
    for row in rows:
        assert row[COLUMNS.index("time")] <= NOW + timedelta(minutes=5)
