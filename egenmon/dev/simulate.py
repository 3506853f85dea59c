"""Simulated patients' readings (pure: no I/O, no clock; time and randomness come in).

`generate` yields the readings a patient's home devices would send between two times:
plausible values per patient with a daily rhythm and noise (`stable`), or a decline over
days (`deteriorating`: heart-failure decompensation with fluid gain, falling SpO2, rising
pulse, breathing rate and temperature). `messages` groups readings into Reading messages
v1. Transports (HTTP here, MQTT elsewhere) only send what these produce.

The stable scenario stays inside the normal ranges of clinical.md; the deteriorating one
crosses them within days: weight gain of more than 2 kg in 3 days (ESC HFA), SpO2 falling
by 3 points and below 92 % (BTS), pulse over 90, breathing rate over 20, temperature of
38.0 Cel or more (fever, 1177).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from egenmon.settings import DEFAULT_TIMEZONE

SCENARIOS = ("stable", "deteriorating")
PROTOCOL_TYPES: dict[str | None, tuple[str, ...]] = {
    "hypertension": ("blood_pressure", "heart_rate", "body_weight"),
    "heart_failure": (
        "body_weight",
        "blood_pressure",
        "heart_rate",
        "spo2",
        "body_temperature",
        "respiratory_rate",
    ),
    "copd": ("spo2", "heart_rate", "respiratory_rate", "body_temperature", "blood_pressure"),
    "diabetes": ("blood_glucose", "blood_pressure", "heart_rate", "body_weight"),
    None: (
        "blood_pressure",
        "heart_rate",
        "spo2",
        "body_temperature",
        "body_weight",
        "respiratory_rate",
        "blood_glucose",
    ),
}
UNITS = {
    "heart_rate": "/min",
    "spo2": "%",
    "body_temperature": "Cel",
    "body_weight": "kg",
    "respiratory_rate": "/min",
    "blood_glucose": "mmol/L",
    "blood_pressure": "mm[Hg]",
}

# Normal ranges the stable scenario keeps to (clinical.md: ESH home BP < 135/85, NEWS2
# zero-score bands for pulse, breathing and SpO2, 1177's normal temperature, the ADA
# glucose target range).
NORMAL = {
    "systolic": (112.0, 132.0),
    "diastolic": (62.0, 82.0),
    "heart_rate": (55.0, 88.0),
    "spo2": (96.0, 99.0),
    "body_temperature": (36.2, 37.6),
    "respiratory_rate": (12.0, 19.0),
    "blood_glucose": (4.2, 9.5),
}
# Change per day of decline, and how many days it lasts before a plateau (values stay
# physiologically possible however long a simulation runs).
DECLINE_PER_DAY = {
    "body_weight": 1.2,
    "spo2": -1.6,
    "heart_rate": 9.0,
    "respiratory_rate": 2.2,
    "body_temperature": 0.4,
    "systolic": -3.0,
    "diastolic": -1.5,
}
DECLINE_DAYS = 6.0
_LIMITS = {  # plausibility limits of types.py, kept well inside
    "systolic": (60.0, 260.0),
    "diastolic": (35.0, 160.0),
    "heart_rate": (30.0, 220.0),
    "spo2": (70.0, 100.0),
    "body_temperature": (34.0, 42.0),
    "body_weight": (30.0, 250.0),
    "respiratory_rate": (5.0, 50.0),
    "blood_glucose": (1.5, 35.0),
}
_SIM_NAMESPACE = uuid.UUID("3c9f3a0e-5d1e-4d5e-9b0a-6e67656e6d6f")


@dataclass(frozen=True)
class SimDevice:
    """A simulated device: its credentials, the patient's scenario and protocol."""

    device_id: str
    secret: str = ""
    patient_id: str | None = None
    scenario: str = "stable"
    protocol: str | None = None


@dataclass(frozen=True)
class Baseline:
    """A patient's own usual values (mid-range, so rhythm and noise stay normal)."""

    systolic: float
    diastolic: float
    heart_rate: float
    spo2: float
    body_temperature: float
    body_weight: float
    respiratory_rate: float
    blood_glucose: float
    phase_minutes: int  # when in the hour this patient measures


def _seed(device_id: str) -> int:
    return int.from_bytes(hashlib.sha256(device_id.encode()).digest()[:8], "big")


def baseline(device_id: str) -> Baseline:
    """The patient's usual values, the same for a device id every time."""
    r = random.Random(_seed(device_id))  # noqa: S311 (simulation, not security)
    return Baseline(
        systolic=r.uniform(119, 125),
        diastolic=r.uniform(70, 75),
        heart_rate=r.uniform(66, 74),
        spo2=r.uniform(97.2, 98.0),
        body_temperature=r.uniform(36.8, 37.0),
        body_weight=r.uniform(62, 105),
        respiratory_rate=r.uniform(14.5, 16.0),
        blood_glucose=r.uniform(5.8, 7.0),
        phase_minutes=r.randrange(60),
    )


def _rhythm(hour: float, peak: float) -> float:
    """-1..1 over the day, 1 at `peak` o'clock (local time)."""
    return math.cos(2 * math.pi * (hour - peak) / 24.0)


def session_times(
    start: dt.datetime, end: dt.datetime, every: dt.timedelta, phase: dt.timedelta = dt.timedelta(0)
) -> Iterator[dt.datetime]:
    """Measurement times in [start, end): multiples of `every` after the epoch, plus phase.

    Fixed to the epoch, so the same span always gives the same times and a repeated
    back-fill is stored once (the dedup key holds the time).
    """
    epoch = dt.datetime(2000, 1, 1, tzinfo=dt.UTC) + phase
    step = every.total_seconds()
    k = math.ceil((start - epoch).total_seconds() / step)
    t = epoch + dt.timedelta(seconds=k * step)
    while t < end:
        yield t
        k += 1
        t = epoch + dt.timedelta(seconds=k * step)


def decline(scenario: str, at: dt.datetime, onset: dt.datetime | None) -> float:
    """Days of decline at `at` (0 for stable, or before onset; capped at DECLINE_DAYS)."""
    if scenario != "deteriorating" or onset is None or at <= onset:
        return 0.0
    return min((at - onset).total_seconds() / 86400.0, DECLINE_DAYS)


def values_at(
    base: Baseline, scenario: str, at: dt.datetime, days: float, rng: random.Random, tz: ZoneInfo
) -> dict[str, float]:
    """Every value a patient would measure at `at`, `days` into a decline."""
    local = at.astimezone(tz)
    hour = local.hour + local.minute / 60.0
    v = {
        # Morning surge of blood pressure, afternoon peak of pulse and temperature, a
        # little lower SpO2 at night, heavier in the evening, glucose after lunch.
        "systolic": base.systolic + 5 * _rhythm(hour, 9) + rng.gauss(0, 3.5),
        "diastolic": base.diastolic + 3 * _rhythm(hour, 9) + rng.gauss(0, 2.5),
        "heart_rate": base.heart_rate + 4 * _rhythm(hour, 14) + rng.gauss(0, 3),
        "spo2": base.spo2 + 0.4 * _rhythm(hour, 14) + rng.gauss(0, 0.5),
        "body_temperature": base.body_temperature + 0.25 * _rhythm(hour, 17) + rng.gauss(0, 0.1),
        "body_weight": base.body_weight + 0.3 * _rhythm(hour, 20) + rng.gauss(0, 0.12),
        "respiratory_rate": base.respiratory_rate + 0.8 * _rhythm(hour, 14) + rng.gauss(0, 0.8),
        "blood_glucose": base.blood_glucose + 1.0 * _rhythm(hour, 13) + rng.gauss(0, 0.4),
    }
    if scenario == "stable":
        for key, (low, high) in NORMAL.items():
            v[key] = min(max(v[key], low), high)
        # Stable weight: within 0.6 kg of the usual, never a trend.
        v["body_weight"] = min(
            max(v["body_weight"], base.body_weight - 0.6), base.body_weight + 0.6
        )
    elif days > 0:
        for key, per_day in DECLINE_PER_DAY.items():
            v[key] += per_day * days
    for key, (low, high) in _LIMITS.items():
        v[key] = min(max(v[key], low), high)
    return v


def generate(
    device: SimDevice,
    scenario: str,
    start: dt.datetime,
    end: dt.datetime,
    rng: random.Random,
    *,
    every: dt.timedelta = dt.timedelta(hours=12),
    onset: dt.datetime | None = None,
    tz: ZoneInfo = ZoneInfo(DEFAULT_TIMEZONE),
) -> Iterator[dict]:
    """Readings (Reading message v1 dicts) measured in [start, end), one session each `every`.

    `onset` is when a deteriorating patient starts to decline (default: `start`).
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    base = baseline(device.device_id)
    types = PROTOCOL_TYPES.get(device.protocol, PROTOCOL_TYPES[None])
    onset = start if onset is None else onset
    # Twice a day, at about seven and nineteen o'clock; a faster pace keeps just the phase.
    phase = dt.timedelta(minutes=base.phase_minutes)
    if every >= dt.timedelta(hours=6):
        phase += dt.timedelta(hours=6)
    else:
        phase = dt.timedelta(seconds=base.phase_minutes * every.total_seconds() / 60.0)
    for at in session_times(start, end, every, phase):
        v = values_at(base, scenario, at, decline(scenario, at, onset), rng, tz)
        for offset, type_name in enumerate(types):
            # The readings of a session a few seconds apart, as a person measures them.
            t = at + dt.timedelta(seconds=offset * 2)
            yield _reading(type_name, t.astimezone(tz), v)


def _reading(type_name: str, t: dt.datetime, v: dict[str, float]) -> dict:
    time = t.isoformat(timespec="seconds")
    unit = UNITS[type_name]
    if type_name == "blood_pressure":
        return {
            "type": type_name,
            "time": time,
            "systolic": round(v["systolic"]),
            "diastolic": round(v["diastolic"]),
            "unit": unit,
        }
    decimals = {"body_temperature": 1, "body_weight": 1, "blood_glucose": 1}.get(type_name, 0)
    value = round(v[type_name], decimals)
    return {
        "type": type_name,
        "time": time,
        "value": int(value) if decimals == 0 else value,
        "unit": unit,
    }


def battery_at(device_id: str, at: dt.datetime) -> float:
    """A battery that runs down over a 30-day cycle and is then recharged."""
    cycle = 30 * 86400
    phase = (at.timestamp() + _seed(device_id) % cycle) % cycle / cycle
    return round(1.0 - 0.8 * phase, 2)


def messages(
    device: SimDevice, readings: Iterable[dict], max_readings: int = 500, battery: bool = True
) -> Iterator[dict]:
    """Reading messages v1 of at most `max_readings` readings, with stable message ids."""
    batch: list[dict] = []
    for reading in readings:
        batch.append(reading)
        if len(batch) >= max_readings:
            yield _message(device, batch, battery)
            batch = []
    if batch:
        yield _message(device, batch, battery)


def _message(device: SimDevice, readings: list[dict], battery: bool) -> dict:
    first = readings[0]["time"]
    mid = uuid.uuid5(_SIM_NAMESPACE, f"{device.device_id}|{first}|{len(readings)}")
    msg: dict = {"message_id": str(mid), "device_id": device.device_id, "readings": readings}
    if battery:
        msg["battery"] = battery_at(device.device_id, dt.datetime.fromisoformat(first))
    return msg


def live_interval(
    devices: int, readings_per_second: float, readings_per_session: float = 5.0
) -> dt.timedelta:
    """Time between one patient's sessions so all patients together send at the rate."""
    if readings_per_second <= 0:
        raise ValueError("rate must be positive")
    seconds = devices * readings_per_session / readings_per_second
    return dt.timedelta(seconds=max(1.0, seconds))
