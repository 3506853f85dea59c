"""The accepted code list: the variants gateways send, each mapped to one type (issue 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from egenmon.domain.measurements import (
    ACCEPTED_CODES,
    LOINC,
    MDC,
    TYPES,
    accepted_code,
    accepted_codes_text,
    accepted_type,
    codes_of,
    refused_reason,
    type_for_code,
    unit_fits_code,
)

# Written out independently of the code: (system, code) -> (type, component or None).
EXPECTED = {
    # blood pressure
    (LOINC, "85354-9"): ("blood_pressure", None),
    (LOINC, "55284-4"): ("blood_pressure", None),
    (LOINC, "35094-2"): ("blood_pressure", None),
    (MDC, "150020"): ("blood_pressure", None),
    (LOINC, "8480-6"): ("blood_pressure", "systolic"),
    (LOINC, "8459-0"): ("blood_pressure", "systolic"),
    (LOINC, "8460-8"): ("blood_pressure", "systolic"),
    (LOINC, "8461-6"): ("blood_pressure", "systolic"),
    (MDC, "150021"): ("blood_pressure", "systolic"),
    (LOINC, "8462-4"): ("blood_pressure", "diastolic"),
    (LOINC, "8453-3"): ("blood_pressure", "diastolic"),
    (LOINC, "8454-1"): ("blood_pressure", "diastolic"),
    (LOINC, "8455-8"): ("blood_pressure", "diastolic"),
    (MDC, "150022"): ("blood_pressure", "diastolic"),
    (LOINC, "8478-0"): ("blood_pressure", "mean"),
    (MDC, "150023"): ("blood_pressure", "mean"),
    # heart rate
    (LOINC, "8867-4"): ("heart_rate", None),
    (LOINC, "8889-8"): ("heart_rate", None),
    (LOINC, "8893-0"): ("heart_rate", None),
    (MDC, "149546"): ("heart_rate", None),
    (MDC, "149530"): ("heart_rate", None),
    (MDC, "147842"): ("heart_rate", None),
    # SpO2
    (LOINC, "2708-6"): ("spo2", None),
    (LOINC, "59408-5"): ("spo2", None),
    (LOINC, "20564-1"): ("spo2", None),
    (LOINC, "2710-2"): ("spo2", None),
    (MDC, "150456"): ("spo2", None),
    # body temperature
    (LOINC, "8310-5"): ("body_temperature", None),
    (LOINC, "8331-1"): ("body_temperature", None),
    (LOINC, "8332-9"): ("body_temperature", None),
    (LOINC, "8333-7"): ("body_temperature", None),
    (LOINC, "8328-7"): ("body_temperature", None),
    (LOINC, "8329-5"): ("body_temperature", None),
    (LOINC, "75539-7"): ("body_temperature", None),
    (LOINC, "76010-8"): ("body_temperature", None),
    (MDC, "150364"): ("body_temperature", None),
    (MDC, "188424"): ("body_temperature", None),
    (MDC, "188420"): ("body_temperature", None),
    (MDC, "188428"): ("body_temperature", None),
    (MDC, "150392"): ("body_temperature", None),
    (MDC, "188452"): ("body_temperature", None),
    (MDC, "188456"): ("body_temperature", None),
    # body weight
    (LOINC, "29463-7"): ("body_weight", None),
    (LOINC, "3141-9"): ("body_weight", None),
    (MDC, "188736"): ("body_weight", None),
    # respiratory rate
    (LOINC, "9279-1"): ("respiratory_rate", None),
    (MDC, "151562"): ("respiratory_rate", None),
    # blood glucose
    (LOINC, "14743-9"): ("blood_glucose", None),
    (LOINC, "15074-8"): ("blood_glucose", None),
    (LOINC, "2339-0"): ("blood_glucose", None),
    (LOINC, "41653-7"): ("blood_glucose", None),
    (LOINC, "32016-8"): ("blood_glucose", None),
    (LOINC, "2345-7"): ("blood_glucose", None),
    (LOINC, "14749-6"): ("blood_glucose", None),
    (MDC, "160184"): ("blood_glucose", None),
    (MDC, "160020"): ("blood_glucose", None),
    (MDC, "160188"): ("blood_glucose", None),
    (MDC, "160192"): ("blood_glucose", None),
    (MDC, "160196"): ("blood_glucose", None),
    (MDC, "160200"): ("blood_glucose", None),
    (MDC, "160204"): ("blood_glucose", None),
    (MDC, "160364"): ("blood_glucose", None),
    (MDC, "160368"): ("blood_glucose", None),
}
REFUSED = [(MDC, "160208"), (MDC, "160212"), (MDC, "188432"), (MDC, "188448"), (LOINC, "61008-9")]
MASS = ["2339-0", "41653-7", "32016-8", "2345-7"]
MOLES = ["15074-8", "14749-6"]


@pytest.mark.parametrize(("key", "expected"), sorted(EXPECTED.items()))
def test_each_accepted_code_maps_to_one_type(key, expected):
    found = accepted_code(*key)
    assert found is not None, key
    assert (found.type, found.component) == expected
    assert accepted_type(*key) == (expected[0] if expected[1] is None else None)


def test_the_list_is_exactly_the_table():
    assert {(a.system, a.code) for a in ACCEPTED_CODES} == set(EXPECTED)
    assert len(ACCEPTED_CODES) == len(EXPECTED)  # no code listed twice


def test_canonical_codes_are_the_types_own_and_stay_what_is_emitted_and_searched():
    for t in TYPES.values():
        own = accepted_code(LOINC, t.loinc)
        assert own is not None and own.canonical
        assert type_for_code(t.loinc, LOINC) == t.name
    # an alias is taken in but neither emitted nor found by search
    oral = accepted_code(LOINC, "8331-1")
    assert oral is not None and not oral.canonical
    assert type_for_code("8331-1", LOINC) is None


@pytest.mark.parametrize("key", REFUSED)
def test_near_miss_codes_are_refused_with_a_reason(key):
    assert accepted_code(*key) is None
    reason = refused_reason(*key)
    assert reason is not None and "not" in reason


@pytest.mark.parametrize("code", MASS)
def test_a_mass_glucose_code_takes_only_mg_per_dl(code):
    a = accepted_code(LOINC, code)
    assert a is not None
    assert unit_fits_code(a, "mg/dL") and not unit_fits_code(a, "mmol/L")


@pytest.mark.parametrize("code", MOLES)
def test_a_molar_glucose_code_takes_only_mmol_per_l(code):
    a = accepted_code(LOINC, code)
    assert a is not None
    assert unit_fits_code(a, "mmol/L") and not unit_fits_code(a, "mg/dL")


def test_refusal_text_names_every_accepted_observation_code():
    text = accepted_codes_text()
    for (_system, code), (_type, component) in EXPECTED.items():
        if component is None:
            assert code in text
    assert accepted_codes_text("body_temperature").startswith("body_temperature: LOINC 8310-5")


def test_component_codes():
    assert codes_of("blood_pressure", "systolic") == {
        k for k, v in EXPECTED.items() if v == ("blood_pressure", "systolic")
    }


def test_readme_documents_every_accepted_code():
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Accepted codes", 1)[1].split("\n## ", 1)[0]
    for system, code in EXPECTED:
        assert f"| {code} |" in section or f"| **{code}** |" in section, (system, code)
    for _system, code in REFUSED:
        assert code in section
