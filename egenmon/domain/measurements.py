"""The measurement types egenmon accepts: codes, canonical units, aliases and limits.

Sources (see ../shared/design/clinical.md): LOINC codes from the FHIR R4 vital-signs
profiles; IEEE 11073 MDC codes from the HL7 Personal Health Device IG; UCUM units.
Plausibility limits reject physiologically impossible values, not abnormal ones: an
abnormal value is exactly what the platform must store and alert on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"

MMHG_PER_KPA = 7.50062
KG_PER_LB = 0.45359237
MGDL_PER_MMOLL = 18.016


def _identity(v: float) -> float:
    return v


@dataclass(frozen=True)
class Unit:
    """An accepted spelling of a unit and how to convert it to the canonical unit."""

    to_canonical: Callable[[float], float]
    from_canonical: Callable[[float], float]


@dataclass(frozen=True)
class Component:
    """One value of a measurement: the only one, or one of blood pressure's."""

    name: str  # key in the reading message ("value", "systolic", ...)
    loinc: str
    loinc_display: str
    mdc: str
    mdc_display: str
    low: float  # plausibility limits in the canonical unit, inclusive
    high: float
    required: bool = True


@dataclass(frozen=True)
class MeasurementType:
    name: str
    loinc: str  # the observation's code (the panel for blood pressure)
    loinc_display: str
    mdc: str
    mdc_display: str
    unit: str  # canonical UCUM code
    unit_display: str
    category: str  # vital-signs or laboratory
    components: tuple[Component, ...]
    units: dict[str, Unit] = field(default_factory=dict)  # accepted spellings
    extra_loinc: tuple[str, ...] = ()  # further LOINC codes that find this type
    extra_mdc: tuple[tuple[str, str], ...] = ()  # further MDC codes (code, display)

    @property
    def is_panel(self) -> bool:
        return self.components[0].name != "value"

    @property
    def value_precision(self) -> int:
        """Decimals kept after conversion to the canonical unit."""
        return _PRECISION.get(self.name, 1)


_SAME = Unit(_identity, _identity)


def _linear(factor: float) -> Unit:
    return Unit(lambda v: v * factor, lambda v: v / factor)


_KPA = _linear(MMHG_PER_KPA)
_FAHRENHEIT = Unit(lambda f: (f - 32.0) * 5.0 / 9.0, lambda c: c * 9.0 / 5.0 + 32.0)
_GRAM = _linear(0.001)
_POUND = _linear(KG_PER_LB)
_MGDL = _linear(1.0 / MGDL_PER_MMOLL)

_PRESSURE_UNITS = {"mm[Hg]": _SAME, "mmHg": _SAME, "kPa": _KPA}
_PULSE_UNITS = {"/min": _SAME, "bpm": _SAME, "{beats}/min": _SAME}
# "bpm" is also read as breaths per minute by respiration monitors.
_BREATH_UNITS = {"/min": _SAME, "bpm": _SAME, "{breaths}/min": _SAME}

_PRECISION = {
    "blood_pressure": 0,
    "heart_rate": 0,
    "spo2": 0,
    "respiratory_rate": 0,
    "body_temperature": 2,
    "body_weight": 2,
    "blood_glucose": 2,
}

TYPES: dict[str, MeasurementType] = {
    t.name: t
    for t in (
        MeasurementType(
            name="blood_pressure",
            loinc="85354-9",
            loinc_display="Blood pressure panel with all children optional",
            mdc="150020",
            mdc_display="MDC_PRESS_BLD_NONINV",
            unit="mm[Hg]",
            unit_display="mmHg",
            category="vital-signs",
            components=(
                Component(
                    "systolic",
                    "8480-6",
                    "Systolic blood pressure",
                    "150021",
                    "MDC_PRESS_BLD_NONINV_SYS",
                    40,
                    300,
                ),
                Component(
                    "diastolic",
                    "8462-4",
                    "Diastolic blood pressure",
                    "150022",
                    "MDC_PRESS_BLD_NONINV_DIA",
                    20,
                    200,
                ),
                Component(
                    "mean",
                    "8478-0",
                    "Mean blood pressure",
                    "150023",
                    "MDC_PRESS_BLD_NONINV_MEAN",
                    25,
                    250,
                    required=False,
                ),
            ),
            units=_PRESSURE_UNITS,
        ),
        MeasurementType(
            name="heart_rate",
            loinc="8867-4",
            loinc_display="Heart rate",
            mdc="149546",
            mdc_display="MDC_PULS_RATE_NON_INV",
            unit="/min",
            unit_display="beats/minute",
            category="vital-signs",
            components=(
                Component(
                    "value", "8867-4", "Heart rate", "149546", "MDC_PULS_RATE_NON_INV", 20, 300
                ),
            ),
            units=_PULSE_UNITS,
            extra_mdc=(("149530", "MDC_PULS_OXIM_PULS_RATE"),),
        ),
        MeasurementType(
            name="spo2",
            loinc="2708-6",
            loinc_display="Oxygen saturation in Arterial blood",
            mdc="150456",
            mdc_display="MDC_PULS_OXIM_SAT_O2",
            unit="%",
            unit_display="%",
            category="vital-signs",
            components=(
                Component(
                    "value",
                    "2708-6",
                    "Oxygen saturation in Arterial blood",
                    "150456",
                    "MDC_PULS_OXIM_SAT_O2",
                    50,
                    100,
                ),
            ),
            units={"%": _SAME},
            extra_loinc=("59408-5",),
        ),
        MeasurementType(
            name="body_temperature",
            loinc="8310-5",
            loinc_display="Body temperature",
            mdc="150364",
            mdc_display="MDC_TEMP_BODY",
            unit="Cel",
            unit_display="C",
            category="vital-signs",
            components=(
                Component("value", "8310-5", "Body temperature", "150364", "MDC_TEMP_BODY", 25, 45),
            ),
            units={"Cel": _SAME, "°C": _SAME, "C": _SAME, "[degF]": _FAHRENHEIT, "°F": _FAHRENHEIT},
        ),
        MeasurementType(
            name="body_weight",
            loinc="29463-7",
            loinc_display="Body weight",
            mdc="188736",
            mdc_display="MDC_MASS_BODY_ACTUAL",
            unit="kg",
            unit_display="kg",
            category="vital-signs",
            components=(
                Component(
                    "value", "29463-7", "Body weight", "188736", "MDC_MASS_BODY_ACTUAL", 1, 400
                ),
            ),
            units={"kg": _SAME, "g": _GRAM, "lb": _POUND, "[lb_av]": _POUND},
        ),
        MeasurementType(
            name="respiratory_rate",
            loinc="9279-1",
            loinc_display="Respiratory rate",
            mdc="151562",
            mdc_display="MDC_RESP_RATE",
            unit="/min",
            unit_display="breaths/minute",
            category="vital-signs",
            components=(
                Component("value", "9279-1", "Respiratory rate", "151562", "MDC_RESP_RATE", 2, 80),
            ),
            units=_BREATH_UNITS,
        ),
        MeasurementType(
            name="blood_glucose",
            loinc="14743-9",
            loinc_display="Glucose [Moles/volume] in Capillary blood by Glucometer",
            mdc="160184",
            mdc_display="MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD",
            unit="mmol/L",
            unit_display="mmol/L",
            category="laboratory",
            components=(
                Component(
                    "value",
                    "14743-9",
                    "Glucose [Moles/volume] in Capillary blood by Glucometer",
                    "160184",
                    "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD",
                    0.5,
                    60,
                ),
            ),
            units={"mmol/L": _SAME, "mg/dL": _MGDL},
        ),
    )
}

# Every code (LOINC or MDC, with or without its system) that finds a type in a search.
_CODE_INDEX: dict[tuple[str, str], str] = {}
for _t in TYPES.values():
    _CODE_INDEX[(LOINC, _t.loinc)] = _t.name
    _CODE_INDEX[(MDC, _t.mdc)] = _t.name
    for _c in _t.extra_loinc:
        _CODE_INDEX[(LOINC, _c)] = _t.name
    for _c, _ in _t.extra_mdc:
        _CODE_INDEX[(MDC, _c)] = _t.name


def type_for_code(code: str, system: str | None = None) -> str | None:
    """The type name a (system, code) pair stands for, or None; any system when None."""
    if system is not None:
        return _CODE_INDEX.get((system, code))
    for (_sys, c), name in _CODE_INDEX.items():
        if c == code:
            return name
    return None
