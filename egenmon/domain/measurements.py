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

# --- the accepted code list ------------------------------------------------------------
#
# The codes gateways, apps and PHD managers really send for the seven types. Each maps to
# exactly one egenmon type (or one blood-pressure component); what egenmon stores and
# emits stays the type's canonical coding above. Sources: the FHIR R4 vital-signs profiles
# and their LOINC codes; the HL7 Personal Health Device IG (its consumer page lists
# 188424 oral temperature and 160368 glucose in plasma); the IEEE 11073-10101 terms of
# the PHD specialisations (-10407 blood pressure, -10408 thermometer, -10415 scale,
# -10417 glucose meter, -10404 pulse oximeter), SCADA partition 2, so code = 2 * 65536 +
# term code (MDC_TEMP_ORAL 57352 -> 188424).


@dataclass(frozen=True)
class AcceptedCode:
    """A code egenmon takes in for a type (or, with `component`, for a BP component)."""

    system: str
    code: str
    display: str
    type: str  # the egenmon type it maps to
    component: str | None = None  # blood pressure: systolic, diastolic or mean
    units: tuple[str, ...] = ()  # when given: the only units the code's property allows
    canonical: bool = False  # emitted by egenmon (the type's own codes)


_MASS = ("mg/dL",)  # LOINC property MCnc: a mass concentration
_MOLES = ("mmol/L",)  # LOINC property SCnc: a substance (molar) concentration

# (type, component, system, code, display, units): the variants beyond each type's own.
_ALIASES: tuple[tuple[str, str | None, str, str, str, tuple[str, ...]], ...] = (
    # blood pressure: the older panels and the position-specific components
    ("blood_pressure", None, LOINC, "55284-4", "Blood pressure systolic and diastolic", ()),
    ("blood_pressure", None, LOINC, "35094-2", "Blood pressure panel", ()),
    ("blood_pressure", "systolic", LOINC, "8459-0", "Systolic blood pressure--sitting", ()),
    ("blood_pressure", "systolic", LOINC, "8460-8", "Systolic blood pressure--standing", ()),
    ("blood_pressure", "systolic", LOINC, "8461-6", "Systolic blood pressure--supine", ()),
    ("blood_pressure", "diastolic", LOINC, "8453-3", "Diastolic blood pressure--sitting", ()),
    ("blood_pressure", "diastolic", LOINC, "8454-1", "Diastolic blood pressure--standing", ()),
    ("blood_pressure", "diastolic", LOINC, "8455-8", "Diastolic blood pressure--supine", ()),
    # heart rate: by pulse oximetry, by palpation; the ECG heart rate of a PHD monitor
    ("heart_rate", None, LOINC, "8889-8", "Heart rate by Pulse oximetry", ()),
    ("heart_rate", None, LOINC, "8893-0", "Heart rate Peripheral artery by Palpation", ()),
    ("heart_rate", None, MDC, "147842", "MDC_ECG_HEART_RATE", ()),
    # oxygen saturation
    ("spo2", None, LOINC, "20564-1", "Oxygen saturation in Blood", ()),
    ("spo2", None, LOINC, "2710-2", "Oxygen saturation in Capillary blood by Oximetry", ()),
    # body temperature at a site (a core or near-core temperature, never the skin's)
    ("body_temperature", None, LOINC, "8331-1", "Oral temperature", ()),
    ("body_temperature", None, LOINC, "8332-9", "Rectal temperature", ()),
    ("body_temperature", None, LOINC, "8333-7", "Tympanic membrane temperature", ()),
    ("body_temperature", None, LOINC, "8328-7", "Axillary temperature", ()),
    ("body_temperature", None, LOINC, "8329-5", "Body temperature - Core", ()),
    ("body_temperature", None, LOINC, "75539-7", "Body temperature - Temporal artery", ()),
    ("body_temperature", None, LOINC, "76010-8", "Nasal temperature", ()),
    ("body_temperature", None, MDC, "188424", "MDC_TEMP_ORAL", ()),
    ("body_temperature", None, MDC, "188420", "MDC_TEMP_RECT", ()),
    ("body_temperature", None, MDC, "188428", "MDC_TEMP_EAR", ()),
    ("body_temperature", None, MDC, "150392", "MDC_TEMP_TYMP", ()),
    ("body_temperature", None, MDC, "188452", "MDC_TEMP_AXILLA", ()),
    ("body_temperature", None, MDC, "188456", "MDC_TEMP_GIT", ()),
    # body weight
    ("body_weight", None, LOINC, "3141-9", "Body weight Measured", ()),
    # blood glucose: a mass code must carry a mass unit, a molar code a molar unit
    ("blood_glucose", None, LOINC, "15074-8", "Glucose [Moles/volume] in Blood", _MOLES),
    ("blood_glucose", None, LOINC, "2339-0", "Glucose [Mass/volume] in Blood", _MASS),
    (
        "blood_glucose",
        None,
        LOINC,
        "41653-7",
        "Glucose [Mass/volume] in Capillary blood by Glucometer",
        _MASS,
    ),
    ("blood_glucose", None, LOINC, "32016-8", "Glucose [Mass/volume] in Capillary blood", _MASS),
    ("blood_glucose", None, LOINC, "2345-7", "Glucose [Mass/volume] in Serum or Plasma", _MASS),
    ("blood_glucose", None, LOINC, "14749-6", "Glucose [Moles/volume] in Serum or Plasma", _MOLES),
    ("blood_glucose", None, MDC, "160020", "MDC_CONC_GLU_GEN", ()),
    ("blood_glucose", None, MDC, "160188", "MDC_CONC_GLU_CAPILLARY_PLASMA", ()),
    ("blood_glucose", None, MDC, "160192", "MDC_CONC_GLU_VENOUS_WHOLEBLOOD", ()),
    ("blood_glucose", None, MDC, "160196", "MDC_CONC_GLU_VENOUS_PLASMA", ()),
    ("blood_glucose", None, MDC, "160200", "MDC_CONC_GLU_ARTERIAL_WHOLEBLOOD", ()),
    ("blood_glucose", None, MDC, "160204", "MDC_CONC_GLU_ARTERIAL_PLASMA", ()),
    ("blood_glucose", None, MDC, "160364", "MDC_CONC_GLU_UNDETERMINED_WHOLEBLOOD", ()),
    ("blood_glucose", None, MDC, "160368", "MDC_CONC_GLU_UNDETERMINED_PLASMA", ()),
)

# Codes near the seven types that must never be taken as one of them: the reason is the
# refusal's text.
REFUSED_CODES: dict[tuple[str, str], str] = {
    (MDC, "160208"): (
        "MDC_CONC_GLU_CONTROL is a control-solution test of the meter, not the patient's glucose"
    ),
    (MDC, "160212"): (
        "MDC_CONC_GLU_ISF is interstitial (CGM) glucose, not a capillary blood glucose"
    ),
    (MDC, "188432"): "MDC_TEMP_FINGER is a skin temperature, not a body temperature",
    (MDC, "188448"): "MDC_TEMP_TOE is a skin temperature, not a body temperature",
    (LOINC, "61008-9"): "61008-9 is a body surface (skin) temperature, not a body temperature",
}


def _accepted_codes() -> tuple[AcceptedCode, ...]:
    out: list[AcceptedCode] = []
    for t in TYPES.values():
        out.append(AcceptedCode(LOINC, t.loinc, t.loinc_display, t.name, canonical=True))
        out.extend(AcceptedCode(LOINC, c, c, t.name, canonical=True) for c in t.extra_loinc)
        out.append(AcceptedCode(MDC, t.mdc, t.mdc_display, t.name, canonical=True))
        out.extend(AcceptedCode(MDC, c, d, t.name, canonical=True) for c, d in t.extra_mdc)
        if t.is_panel:
            for comp in t.components:
                out.append(
                    AcceptedCode(LOINC, comp.loinc, comp.loinc_display, t.name, comp.name, (), True)
                )
                out.append(
                    AcceptedCode(MDC, comp.mdc, comp.mdc_display, t.name, comp.name, (), True)
                )
    out.extend(AcceptedCode(sy, co, di, ty, cp, un) for ty, cp, sy, co, di, un in _ALIASES)
    return tuple(out)


ACCEPTED_CODES: tuple[AcceptedCode, ...] = _accepted_codes()
_ACCEPTED: dict[tuple[str, str], AcceptedCode] = {}
for _a in ACCEPTED_CODES:
    if (_a.system, _a.code) in _ACCEPTED:  # one code, one meaning
        raise AssertionError(f"code {_a.system}|{_a.code} is listed twice")
    _ACCEPTED[(_a.system, _a.code)] = _a


def accepted_code(system: str | None, code: str | None) -> AcceptedCode | None:
    """What an incoming (system, code) stands for, or None when egenmon does not take it."""
    if system is None or code is None:
        return None
    return _ACCEPTED.get((system, code))


def accepted_type(system: str | None, code: str | None) -> str | None:
    """The type an incoming observation code maps to (not a BP component's code), or None."""
    found = accepted_code(system, code)
    return found.type if found is not None and found.component is None else None


def refused_reason(system: str | None, code: str | None) -> str | None:
    """Why a code close to one of the types is refused on purpose, or None."""
    if system is None or code is None:
        return None
    return REFUSED_CODES.get((system, code))


def accepted_codes_text(type_name: str | None = None) -> str:
    """The accepted observation codes, by type, for a refusal's text."""
    parts = []
    for name in [type_name] if type_name is not None else sorted(TYPES):
        loinc = [
            a.code
            for a in ACCEPTED_CODES
            if a.type == name and a.component is None and a.system == LOINC
        ]
        mdc = [
            a.code
            for a in ACCEPTED_CODES
            if a.type == name and a.component is None and a.system == MDC
        ]
        parts.append(f"{name}: LOINC {', '.join(loinc)}; MDC {', '.join(mdc)}")
    return " | ".join(parts)


def codes_of(type_name: str, component: str | None = None) -> frozenset[tuple[str, str]]:
    """Every accepted (system, code) of a type's observation code, or of one component."""
    return frozenset(
        (a.system, a.code)
        for a in ACCEPTED_CODES
        if a.type == type_name and a.component == component
    )


def unit_fits_code(accepted: AcceptedCode, unit: str) -> bool:
    """Whether a unit agrees with the code's property (a mass code with a mass unit)."""
    return not accepted.units or unit in accepted.units


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
