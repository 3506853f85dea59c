"""Monitoring plans: what a patient is expected to measure, how often, and which limits
make a reading a deviation.

Facts come from the design notes, clinical.md ("Home-monitoring rules in practice" and
the NEWS2 table); each default below names its source. A plan stores only what a
clinician set for the patient (protocol, individual limits, scale 2); the protocol
defaults are applied when the plan is read (`Plan.effective_thresholds`), so a corrected
default reaches every plan without rewriting stored plans.

Threshold model, two levels per measured quantity:

- *Alarms* are the guideline levels (``value OP limit`` → severity), e.g. systolic
  ``>= 180`` → high. They are the protocol defaults.
- The *individual range* ``[low, high]`` is what a clinician sets for this patient
  (``egenmon plan set --threshold TYPE:LOW:HIGH``); both ends are inside the range. A
  value outside it deviates with `Threshold.severity` (medium by default). The individual
  range wins: on a side where it is set, a value inside it never deviates, whatever the
  default alarms on that side say (a patient whose usual systolic is 88 can be given
  ``systolic:85:``); a value outside it takes the worst of medium and every alarm it
  crosses (systolic 80 under ``systolic:85:`` is still high).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from egenmon.domain.measurements import TYPES
from egenmon.domain.severity import SEVERITIES, Severity

# --- what a protocol expects -------------------------------------------------------------

# clinical.md "Missing data": a daily measurement is missing after 36 hours, 1.5 times its
# interval; a twice-daily one gets the same proportion, 18 hours.
DAILY = timedelta(hours=36)
TWICE_DAILY = timedelta(hours=18)

PROTOCOLS: dict[str, dict[str, timedelta]] = {
    # ESH home BP: two readings morning and two evening.
    "hypertension": {"blood_pressure": TWICE_DAILY},
    # ESC HFA patient guidance: weigh daily; BP with it.
    "heart_failure": {"body_weight": DAILY, "blood_pressure": DAILY},
    # BTS 2017: SpO2 against the target range; the oximeter gives pulse with it.
    "copd": {"spo2": DAILY, "heart_rate": DAILY, "respiratory_rate": DAILY},
    "diabetes": {"blood_glucose": DAILY},
    "general": {},
}

# --- limits -------------------------------------------------------------------------------

Op = Literal["<", "<=", ">", ">="]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_LOW_SIDE = ("<", "<=")

# Quantities a threshold is set on: (measurement type, column of the readings table).
QUANTITIES: dict[str, tuple[str, str]] = {
    "systolic": ("blood_pressure", "value"),
    "diastolic": ("blood_pressure", "value2"),
    "heart_rate": ("heart_rate", "value"),
    "spo2": ("spo2", "value"),
    "body_temperature": ("body_temperature", "value"),
    "body_weight": ("body_weight", "value"),
    "respiratory_rate": ("respiratory_rate", "value"),
    "blood_glucose": ("blood_glucose", "value"),
}
# The contract's CLI example `blood_pressure:90:150` sets systolic limits.
QUANTITY_ALIASES = {"blood_pressure": "systolic"}


@dataclass(frozen=True)
class Alarm:
    """A guideline level: a value for which ``value OP limit`` holds deviates."""

    op: Op
    limit: float
    severity: Severity
    source: str = ""

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"unknown operator {self.op!r}; use one of {', '.join(_OPS)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    def crossed(self, value: float) -> bool:
        return _OPS[self.op](value, self.limit)


@dataclass(frozen=True)
class Crossing:
    """One limit a value went beyond: which, and how severe."""

    op: str
    limit: float
    severity: Severity
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "limit": self.limit,
            "severity": self.severity,
            "source": self.source,
        }


INDIVIDUAL = "individual range in the patient's monitoring plan"


@dataclass(frozen=True)
class Threshold:
    """Limits for one quantity: an individual range [low, high] and guideline alarms."""

    low: float | None = None
    high: float | None = None
    severity: Severity = "medium"
    alarms: tuple[Alarm, ...] = ()

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            v = getattr(self, name)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{name} limit must be a finite number, not {v!r}")
        if self.low is not None and self.high is not None and self.low >= self.high:
            raise ValueError(f"low limit {self.low:g} must be below high limit {self.high:g}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    def check(self, value: float) -> tuple[Crossing, ...]:
        """Every limit `value` goes beyond; empty when it is within all of them."""
        out: list[Crossing] = []
        for low_side, limit in ((True, self.low), (False, self.high)):
            if limit is not None:
                outside = value < limit if low_side else value > limit
                if not outside:
                    continue  # inside the individual range: it wins over the alarms
                out.append(Crossing("<" if low_side else ">", limit, self.severity, INDIVIDUAL))
            out.extend(
                Crossing(a.op, a.limit, a.severity, a.source)
                for a in self.alarms
                if (a.op in _LOW_SIDE) == low_side and a.crossed(value)
            )
        return tuple(out)


_ESH_SINGLE = "clinical.md, hypertension (ESH): single readings >= 180/110 mmHg need prompt contact"
_ESH_LOW = "clinical.md, hypertension (ESH): systolic < 90 mmHg is low"
_ADA_1 = "clinical.md, diabetes (ADA): < 3.9 mmol/L is level 1 hypoglycaemia"
_ADA_2 = "clinical.md, diabetes (ADA): < 3.0 mmol/L is level 2 hypoglycaemia"
_ADA_HIGH = "clinical.md, diabetes (ADA, CGM consensus): > 13.9 mmol/L is high (level 2)"
_FEVER = "clinical.md, fever (1177): fever is >= 38.0 Cel"
_FEVER_2 = "clinical.md, fever: >= 39.1 Cel scores 2 in NEWS2"
_OXIMETRY = (
    "clinical.md, COPD and oxygen: home oximetry programmes used <= 92% (2 points under the "
    "94% target floor) as urgent; the same distance under a hypercapnic target is egenmon's"
)

# The same for every protocol: protocols differ in what they expect, not in what a value
# means. SpO2 depends on the target range and is added in `Plan.effective_thresholds`.
# Heart rate, respiratory rate and weight have no single-reading default: NEWS2 scores the
# first two, trend_weight watches the last; a clinician can set individual limits on all.
DEFAULT_ALARMS: dict[str, tuple[Alarm, ...]] = {
    "systolic": (Alarm(">=", 180, "high", _ESH_SINGLE), Alarm("<", 90, "high", _ESH_LOW)),
    "diastolic": (Alarm(">=", 110, "high", _ESH_SINGLE),),
    "blood_glucose": (
        Alarm("<", 3.9, "medium", _ADA_1),
        Alarm("<", 3.0, "high", _ADA_2),
        Alarm(">", 13.9, "medium", _ADA_HIGH),
    ),
    "body_temperature": (Alarm(">=", 38.0, "low", _FEVER), Alarm(">=", 39.1, "medium", _FEVER_2)),
}

# BTS 2017 target ranges (clinical.md, COPD and oxygen).
SPO2_TARGET = (94.0, 98.0)
SPO2_TARGET_HYPERCAPNIC = (88.0, 92.0)
# NEWS2 scores values measured this recently (a plan may set a shorter window, not longer:
# the rule cycle reads 24 hours of every NEWS2 parameter).
NEWS2_FRESHNESS = timedelta(hours=24)
NEWS2_FRESHNESS_MIN = timedelta(hours=1)
SPO2_URGENT_BELOW_TARGET = 2.0


# --- the plan ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """A patient's monitoring plan as a clinician set it.

    expected: measurement type → window after which its absence is a deviation.
    thresholds: quantity (see QUANTITIES) → individual range; protocol alarms are added by
    `effective_thresholds`. news2_scale2: the patient is marked as having hypercapnic
    respiratory failure (NEWS2 SpO2 scale 2, BTS target 88–92%). spo2_target overrides
    the target range that follows from news2_scale2. started_at: when monitoring began
    (missing data of a type never received counts from it; set_at when None).
    """

    protocol: str
    expected: Mapping[str, timedelta]
    thresholds: Mapping[str, Threshold] = field(default_factory=dict)
    news2_scale2: bool = False
    spo2_target: tuple[float, float] | None = None
    set_by: str | None = None
    set_at: datetime | None = None
    started_at: datetime | None = None
    # NEWS2 scores only values this recent (None: NEWS2_FRESHNESS); older ones are stale.
    news2_freshness: timedelta | None = None
    # What to do if (egenbehandlingsplan): measurement type → the clinician's instruction
    # to the patient when a value of that type crosses a limit.
    instructions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"unknown protocol {self.protocol!r}; choose one of {', '.join(PROTOCOLS)}"
            )
        for type_, window in self.expected.items():
            if type_ not in TYPES:
                raise ValueError(f"unknown measurement type {type_!r} in expected")
            if window <= timedelta(0):
                raise ValueError(f"window for {type_} must be positive, not {window}")
        for quantity in self.thresholds:
            if quantity not in QUANTITIES:
                raise ValueError(_unknown_quantity(quantity))
        if self.spo2_target is not None:
            lo, hi = self.spo2_target
            if not 50 <= lo < hi <= 100:
                raise ValueError(f"SpO2 target {lo:g}-{hi:g} is not a range within 50-100 %")
        f = self.news2_freshness
        if f is not None and not NEWS2_FRESHNESS_MIN <= f <= NEWS2_FRESHNESS:
            raise ValueError(
                f"NEWS2 freshness {f.total_seconds() / 3600:g} h is not within "
                f"{NEWS2_FRESHNESS_MIN.total_seconds() / 3600:g}-"
                f"{NEWS2_FRESHNESS.total_seconds() / 3600:g} h"
            )
        for name in ("set_at", "started_at"):
            t = getattr(self, name)
            if t is not None and t.utcoffset() is None:
                raise ValueError(f"{name} must be timezone-aware")
        for type_, text in self.instructions.items():
            check_instruction(type_, text)
        # Private copies: a frozen plan must not change through a caller's dict.
        object.__setattr__(self, "expected", dict(self.expected))
        object.__setattr__(self, "instructions", dict(self.instructions))
        object.__setattr__(self, "thresholds", dict(self.thresholds))

    @property
    def start(self) -> datetime | None:
        """When monitoring under this plan began."""
        return self.started_at or self.set_at

    @property
    def spo2_range(self) -> tuple[float, float]:
        """The SpO2 target range in % (BTS 2017)."""
        if self.spo2_target is not None:
            return self.spo2_target
        return SPO2_TARGET_HYPERCAPNIC if self.news2_scale2 else SPO2_TARGET

    def effective_thresholds(self) -> dict[str, Threshold]:
        """Quantity → the limits in force: individual ranges plus the protocol's alarms."""
        alarms = dict(DEFAULT_ALARMS)
        urgent = self.spo2_range[0] - SPO2_URGENT_BELOW_TARGET
        alarms["spo2"] = (Alarm("<=", urgent, "high", _OXIMETRY),)
        result: dict[str, Threshold] = {}
        for quantity in QUANTITIES:
            own = self.thresholds.get(quantity)
            if own is None:
                if quantity in alarms:
                    result[quantity] = Threshold(alarms=alarms[quantity])
                continue
            result[quantity] = Threshold(
                low=own.low,
                high=own.high,
                severity=own.severity,
                alarms=alarms.get(quantity, ()) + own.alarms,
            )
        return result

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form for storage (windows in seconds, times in RFC 3339)."""
        return {
            "protocol": self.protocol,
            "expected": {t: w.total_seconds() for t, w in self.expected.items()},
            "thresholds": {
                q: {"low": t.low, "high": t.high, "severity": t.severity}
                for q, t in self.thresholds.items()
            },
            "news2_scale2": self.news2_scale2,
            "spo2_target": list(self.spo2_target) if self.spo2_target else None,
            "news2_freshness_hours": (
                self.news2_freshness.total_seconds() / 3600 if self.news2_freshness else None
            ),
            "instructions": dict(self.instructions),
            "set_by": self.set_by,
            "set_at": self.set_at.isoformat() if self.set_at else None,
            "started_at": self.started_at.isoformat() if self.started_at else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """The inverse of `to_dict`."""
        target = data.get("spo2_target")
        fresh = data.get("news2_freshness_hours")
        return cls(
            protocol=data["protocol"],
            expected={t: timedelta(seconds=s) for t, s in data["expected"].items()},
            thresholds={q: Threshold(**t) for q, t in data.get("thresholds", {}).items()},
            news2_scale2=bool(data.get("news2_scale2", False)),
            spo2_target=(float(target[0]), float(target[1])) if target else None,
            set_by=data.get("set_by"),
            set_at=_parse_time(data.get("set_at")),
            started_at=_parse_time(data.get("started_at")),
            news2_freshness=timedelta(hours=float(fresh)) if fresh else None,
            instructions=dict(data.get("instructions") or {}),
        )


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def build_plan(
    protocol: str,
    thresholds: Mapping[str, Threshold] | Iterable[str] = (),
    *,
    expected: Mapping[str, timedelta | None] | None = None,
    news2_scale2: bool = False,
    spo2_target: tuple[float, float] | None = None,
    set_by: str | None = None,
    set_at: datetime | None = None,
    started_at: datetime | None = None,
    news2_freshness: timedelta | None = None,
    instructions: Mapping[str, str] | Iterable[str] = (),
) -> Plan:
    """A plan from a protocol's defaults and a clinician's overrides.

    thresholds: a mapping of quantity → Threshold, or CLI strings ``TYPE:LOW:HIGH``.
    expected: per-type windows that replace the protocol's (None removes a type).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    windows = dict(PROTOCOLS[protocol])
    for type_, window in (expected or {}).items():
        if window is None:
            windows.pop(type_, None)
        else:
            windows[type_] = window
    if isinstance(thresholds, Mapping):
        own = {canonical_quantity(q): t for q, t in thresholds.items()}
    else:
        own = parse_thresholds(thresholds)
    return Plan(
        protocol=protocol,
        expected=windows,
        thresholds=own,
        news2_scale2=news2_scale2,
        spo2_target=spo2_target,
        set_by=set_by,
        set_at=set_at,
        started_at=started_at,
        news2_freshness=news2_freshness,
        instructions=(
            dict(instructions)
            if isinstance(instructions, Mapping)
            else parse_instructions(instructions)
        ),
    )


# --- what to do if: TYPE:TEXT -------------------------------------------------------------

MAX_INSTRUCTION = 500


def check_instruction(type_: str, text: object) -> str:
    """An instruction for a measurement type after the checks (a known type, 1 to 500
    printable characters); ValueError naming what is wrong."""
    if type_ not in TYPES:
        raise ValueError(
            f"instruction for unknown measurement type {type_!r}; use one of {', '.join(TYPES)}"
        )
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"instruction for {type_}: give a text")
    if len(text) > MAX_INSTRUCTION or not text.replace("\n", " ").isprintable():
        raise ValueError(f"instruction for {type_}: at most {MAX_INSTRUCTION} printable characters")
    return text.strip()


def parse_instructions(texts: Iterable[str]) -> dict[str, str]:
    """Parse ``TYPE:TEXT`` items (the CLI's --instruction); a type given twice is an error."""
    result: dict[str, str] = {}
    for item in texts:
        type_, colon, text = item.partition(":")
        type_ = type_.strip()
        if not colon:
            raise ValueError(f"instruction {item[:40]!r} is not TYPE:TEXT")
        if type_ in result:
            raise ValueError(f"instruction for {type_} given twice")
        result[type_] = check_instruction(type_, text)
    return result


# --- the CLI form TYPE:LOW:HIGH -----------------------------------------------------------


def _unknown_quantity(name: str) -> str:
    known = ", ".join([*QUANTITIES, *QUANTITY_ALIASES])
    return f"unknown threshold type {name!r}; use one of {known}"


def canonical_quantity(name: str) -> str:
    """The quantity a threshold type names (``blood_pressure`` means systolic)."""
    name = QUANTITY_ALIASES.get(name, name)
    if name not in QUANTITIES:
        raise ValueError(_unknown_quantity(name))
    return name


def _plausible(quantity: str) -> tuple[float, float, str]:
    type_name, column = QUANTITIES[quantity]
    mtype = TYPES[type_name]
    component = mtype.components[0] if column == "value" else mtype.components[1]
    return component.low, component.high, mtype.unit


def check_limits(quantity: str, low: float | None, high: float | None) -> Threshold:
    """An individual range after the checks every way of setting a plan shares (CLI, UI,
    API): a known quantity, finite numbers within the plausible range of its measurement
    type (the same range ingest accepts readings in), at least one limit, low below high.
    ValueError naming what is wrong."""
    quantity = canonical_quantity(quantity)
    plausible_low, plausible_high, unit = _plausible(quantity)
    for name, value in (("low", low), ("high", high)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{quantity}: {name} limit {value!r} is not a number")
        if not math.isfinite(value):
            raise ValueError(f"{quantity}: {name} limit {value!r} is not a finite number")
        if not plausible_low <= value <= plausible_high:
            raise ValueError(
                f"{quantity}: {name} limit {value:g} is outside the plausible range "
                f"{plausible_low:g}-{plausible_high:g} {unit}"
            )
    if low is None and high is None:
        raise ValueError(f"{quantity}: give a low limit, a high limit or both")
    if low is not None and high is not None and low >= high:
        raise ValueError(f"{quantity}: low limit {low:g} must be below high limit {high:g}")
    return Threshold(
        low=None if low is None else float(low), high=None if high is None else float(high)
    )


def parse_threshold(text: str) -> tuple[str, Threshold]:
    """Parse ``TYPE:LOW:HIGH`` into (quantity, individual range).

    TYPE is a quantity (``systolic``, ``diastolic``, ``heart_rate``, ``spo2``,
    ``body_temperature``, ``body_weight``, ``respiratory_rate``, ``blood_glucose``) or
    ``blood_pressure`` for systolic. LOW and HIGH are in the canonical unit, inclusive
    (a value equal to a limit is within), and either may be empty: ``body_weight::95``.
    The limits are checked by `check_limits`.
    """
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise ValueError(
            f"threshold {text!r} is not TYPE:LOW:HIGH (for example body_weight::95, "
            "systolic:90:150 or diastolic::95)"
        )
    quantity = canonical_quantity(parts[0].strip())
    limits: list[float | None] = []
    for name, raw in (("LOW", parts[1].strip()), ("HIGH", parts[2].strip())):
        if not raw:
            limits.append(None)
            continue
        try:
            limits.append(float(raw))
        except ValueError:
            raise ValueError(f"threshold {text!r}: {name} {raw!r} is not a number") from None
    try:
        return quantity, check_limits(quantity, limits[0], limits[1])
    except ValueError as e:
        raise ValueError(f"threshold {text!r}: {e}") from None


def parse_thresholds(texts: Iterable[str]) -> dict[str, Threshold]:
    """Parse several ``TYPE:LOW:HIGH``; a quantity given twice is an error."""
    result: dict[str, Threshold] = {}
    for text in texts:
        quantity, threshold = parse_threshold(text)
        if quantity in result:
            raise ValueError(f"threshold for {quantity} given twice")
        result[quantity] = threshold
    return result
