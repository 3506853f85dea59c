"""The $export kick-off parser and the research pseudonymiser, without a server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egenmon.domain.measurements import TYPES
from egenmon.domain.principals import Principal, parse_scopes
from egenmon.export.bulk import EXPORT_TYPES, allowed_types, parse_export
from egenmon.export.research import SHIFT_DAYS, Pseudonymiser
from egenmon.fhir.outcome import FhirError

NAMES = ("_outputFormat", "_since", "_type", "_typeFilter", "_elements", "patient", "x")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(NAMES), st.text(max_size=60)), max_size=6))
def test_any_kick_off_parses_or_is_a_400(params: list[tuple[str, str]]) -> None:
    try:
        req = parse_export(params)
    except FhirError as exc:
        assert exc.status == 400
        assert exc.diagnostics.split(":")[0] in NAMES
        return
    assert req.types is None or set(req.types) <= set(EXPORT_TYPES)
    assert req.since is None or req.since.tzinfo is not None


def test_type_filters_are_ored_and_lists_split() -> None:
    req = parse_export(
        [
            ("_type", "Observation,Patient"),
            (
                "_typeFilter",
                "Observation?code=http://loinc.org|8867-4,Observation?category=laboratory",
            ),
            ("_since", "2026-11-01T00:00:00+01:00"),
        ]
    )
    assert req.types == ("Patient", "Observation")
    assert req.codes == frozenset({"8867-4", "14743-9"})
    assert req.since == datetime(2026, 10, 31, 23, tzinfo=UTC)
    # A code list inside one filter stays one filter.
    req = parse_export([("_typeFilter", "Observation?code=8867-4,2708-6")])
    assert req.codes == frozenset({TYPES["heart_rate"].loinc, TYPES["spo2"].loinc})
    # Lenient: unknown parameters are ignored, not refused.
    assert parse_export([("_elements", "id")], lenient=True).ignored == ("_elements",)


def test_types_need_read_and_search_scopes() -> None:
    p = Principal("s", "integrator", scopes=parse_scopes("system/Observation.rs system/Patient.r"))
    assert allowed_types(p, None) == ("Observation",)
    with pytest.raises(FhirError) as err:
        allowed_types(p, ("Patient",))
    assert err.value.status == 403


@settings(max_examples=25, deadline=None)
@given(st.lists(st.uuids(), min_size=1, max_size=20))
def test_pseudonyms_and_shifts_are_consistent_within_an_extract(ids: list[uuid.UUID]) -> None:
    one, two = Pseudonymiser("shift"), Pseudonymiser("shift")
    t = datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
    for pid in ids:
        assert one.patient(pid) == one.patient(pid) != two.patient(pid)
        assert str(pid) not in one.patient(pid)
        shifted = one.time(pid, t)
        assert shifted is not None
        assert shifted - t == one.time(pid, t + timedelta(hours=5)) - (t + timedelta(hours=5))  # type: ignore[operator]
        assert abs((shifted - t).days) <= SHIFT_DAYS and (shifted - t).seconds == 0
    assert one.patients == len(set(ids))
