"""The type registry agrees with clinical.md and the contract's unit aliases."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egenmon.domain.measurements import LOINC, MDC, TYPES, type_for_code

# clinical.md, "Measurement types", written out independently of the code.
CLINICAL = {
    "blood_pressure": ("85354-9", "150020", "mm[Hg]", "vital-signs"),
    "heart_rate": ("8867-4", "149546", "/min", "vital-signs"),
    "spo2": ("2708-6", "150456", "%", "vital-signs"),
    "body_temperature": ("8310-5", "150364", "Cel", "vital-signs"),
    "body_weight": ("29463-7", "188736", "kg", "vital-signs"),
    "respiratory_rate": ("9279-1", "151562", "/min", "vital-signs"),
    "blood_glucose": ("14743-9", "160184", "mmol/L", "laboratory"),
}
BP_COMPONENTS = {
    "systolic": ("8480-6", "150021", True),
    "diastolic": ("8462-4", "150022", True),
    "mean": ("8478-0", "150023", False),
}
# contract.md, "Units": every alias it promises, with the canonical unit it converts to.
CONTRACT_ALIASES = {
    "blood_pressure": {"mmHg", "kPa"},
    "heart_rate": {"bpm"},
    "body_temperature": {"°C", "C", "[degF]", "°F"},
    "body_weight": {"g", "lb", "[lb_av]"},
    "blood_glucose": {"mg/dL"},
}
# (type, unit, value in that unit, value in the canonical unit), from clinical.md's factors.
CONVERSIONS = [
    ("blood_pressure", "kPa", 1.0, 7.50062),
    ("blood_pressure", "kPa", 20.0, 150.0124),
    ("body_temperature", "[degF]", 212.0, 100.0),
    ("body_temperature", "°F", 98.6, 37.0),
    ("body_temperature", "[degF]", -40.0, -40.0),
    ("body_weight", "lb", 1.0, 0.45359237),
    ("body_weight", "[lb_av]", 200.0, 90.718474),
    ("body_weight", "g", 81400.0, 81.4),
    ("blood_glucose", "mg/dL", 18.016, 1.0),
    ("blood_glucose", "mg/dL", 180.16, 10.0),
]


def test_registry_holds_exactly_the_types_of_clinical_md() -> None:
    assert set(TYPES) == set(CLINICAL)


@pytest.mark.parametrize("name", sorted(CLINICAL))
def test_type_codes_unit_and_category_match_clinical_md(name: str) -> None:
    loinc, mdc, unit, category = CLINICAL[name]
    t = TYPES[name]
    assert (t.loinc, t.mdc, t.unit, t.category) == (loinc, mdc, unit, category)
    assert t.units[unit].to_canonical(12.5) == 12.5  # the canonical unit is accepted as is


def test_blood_pressure_components_carry_their_own_codes() -> None:
    t = TYPES["blood_pressure"]
    assert t.is_panel
    got = {c.name: (c.loinc, c.mdc, c.required) for c in t.components}
    assert got == BP_COMPONENTS


@pytest.mark.parametrize("name", sorted(set(CLINICAL) - {"blood_pressure"}))
def test_single_value_types_have_one_value_component_with_the_type_codes(name: str) -> None:
    t = TYPES[name]
    assert not t.is_panel
    assert [(c.name, c.loinc, c.mdc) for c in t.components] == [("value", t.loinc, t.mdc)]


@pytest.mark.parametrize("name", sorted(CONTRACT_ALIASES))
def test_every_alias_of_the_contract_is_accepted(name: str) -> None:
    assert CONTRACT_ALIASES[name] <= set(TYPES[name].units)


def test_pulse_oximetry_codes_find_their_types() -> None:
    assert type_for_code("59408-5", LOINC) == "spo2"
    assert type_for_code("149530", MDC) == "heart_rate"
    assert type_for_code("8867-4") == "heart_rate"
    assert type_for_code("8867-4", MDC) is None
    assert type_for_code("0000-0") is None


@pytest.mark.parametrize("name", sorted(CLINICAL))
def test_each_type_is_found_by_its_loinc_and_mdc_code(name: str) -> None:
    loinc, mdc, _, _ = CLINICAL[name]
    assert type_for_code(loinc, LOINC) == name
    assert type_for_code(mdc, MDC) == name


@pytest.mark.parametrize(("name", "unit", "given", "canonical"), CONVERSIONS)
def test_conversion_factors_follow_clinical_md(
    name: str, unit: str, given: float, canonical: float
) -> None:
    u = TYPES[name].units[unit]
    assert math.isclose(u.to_canonical(given), canonical, rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(u.from_canonical(canonical), given, rel_tol=1e-12, abs_tol=1e-12)


@pytest.mark.parametrize(
    ("name", "component", "value", "plausible"),
    [
        ("heart_rate", "value", 0, False),  # contract: a pulse of 0 or 400 is impossible
        ("heart_rate", "value", 400, False),
        ("heart_rate", "value", 35, True),  # very low, but a real patient's
        ("heart_rate", "value", 220, True),
        ("spo2", "value", 100.5, False),  # contract: SpO2 over 100
        ("spo2", "value", 100, True),
        ("spo2", "value", 70, True),
        ("body_temperature", "value", 60, False),  # contract: 60 Cel
        ("body_temperature", "value", 41.5, True),
        ("body_temperature", "value", 33, True),  # hypothermia is stored and alerted on
        ("respiratory_rate", "value", 0, False),
        ("respiratory_rate", "value", 40, True),
        ("body_weight", "value", 0, False),
        ("body_weight", "value", 250, True),
        ("blood_glucose", "value", 0, False),
        ("blood_glucose", "value", 2.5, True),  # level 2 hypoglycaemia must get through
        ("blood_glucose", "value", 30, True),
        ("blood_pressure", "systolic", 350, False),
        ("blood_pressure", "systolic", 230, True),
        ("blood_pressure", "diastolic", 10, False),
        ("blood_pressure", "diastolic", 120, True),
    ],
)
def test_plausibility_limits_refuse_the_impossible_but_keep_the_abnormal(
    name: str, component: str, value: float, plausible: bool
) -> None:
    c = next(c for c in TYPES[name].components if c.name == component)
    assert (c.low <= value <= c.high) is plausible


def test_precision_keeps_whole_numbers_for_counts_and_pressures() -> None:
    got = {name: t.value_precision for name, t in TYPES.items()}
    assert got == {
        "blood_pressure": 0,
        "heart_rate": 0,
        "spo2": 0,
        "respiratory_rate": 0,
        "body_temperature": 2,
        "body_weight": 2,
        "blood_glucose": 2,
    }


UNIT_PAIRS = [(name, unit) for name, t in TYPES.items() for unit in t.units]


@settings(database=None, deadline=None)
@given(pair=st.sampled_from(UNIT_PAIRS), value=st.floats(-1e6, 1e6, allow_nan=False))
def test_every_unit_converts_there_and_back(pair: tuple[str, str], value: float) -> None:
    name, unit = pair
    u = TYPES[name].units[unit]
    assert math.isclose(u.from_canonical(u.to_canonical(value)), value, rel_tol=1e-9, abs_tol=1e-9)
