"""Bluetooth health device profiles: GATT characteristic values as readings (pure, no I/O).

A gateway or phone app forwards the raw value of a characteristic with its UUID
(`POST /api/v1/ble/measurements`); this module decodes it by the field layouts of the
Bluetooth SIG's GATT Specification Supplement and turns it into readings of the Reading
message v1, so the pipeline, dedup and quarantine stay one path.

- Numbers: IEEE 11073-20601 SFLOAT (4-bit exponent, 12-bit mantissa) and FLOAT (8-bit
  exponent, 24-bit mantissa), both signed, value = mantissa x 10^exponent. Their special
  values (NaN, NRes, +INF, -INF, reserved) are never stored: a required value that is one
  refuses the measurement with a reason; an optional one (a blood pressure's mean, a
  pulse amplitude index) is left out and named in the kept context.
- Every flag bit of each characteristic is read; a flags byte with a reserved bit set is
  refused, since it announces fields this decoder does not know.
- Time: the characteristic's time stamp (the Date Time layout: year, month, day, hours,
  minutes, seconds, in the device's local time, read as the platform's time zone); without
  one, the request's `time`; without that, the time the platform received it. Which one
  was used is kept (`time-source`).
- Status bits that say a value is not the patient's or not a measurement (control
  solution, demonstration or test data, sensor off the skin, a strip error, a reading
  beyond the meter's range) refuse it with the bit named; quality notes (body movement,
  irregular pulse, weak signal) are kept with the reading.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from egenmon.ingest.translated import (
    MAX_ITEMS,
    PROJECT_NS,
    FormatError,
    Translated,
    context_extension,
)
from egenmon.jsonbody import JsonBodyError, loads

__all__ = [
    "BleError",
    "CHARACTERISTICS",
    "EXTENSION_URL",
    "decode",
    "decode_float",
    "decode_sfloat",
    "translate_body",
    "translate_item",
]

EXTENSION_URL = f"{PROJECT_NS}/StructureDefinition/ble-measurement"
MAX_VALUE_BYTES = 512  # the largest attribute value ATT allows

CHARACTERISTICS = {
    0x2A35: "Blood Pressure Measurement",
    0x2A9D: "Weight Measurement",
    0x2A1C: "Temperature Measurement",
    0x2A5E: "PLX Spot-Check Measurement",
    0x2A18: "Glucose Measurement",
    0x2A37: "Heart Rate Measurement",
}

_SFLOAT_SPECIAL = {
    0x07FF: "NaN",
    0x0800: "NRes",
    0x07FE: "+INF",
    0x0802: "-INF",
    0x0801: "reserved",
}
_FLOAT_SPECIAL = {
    0x007FFFFF: "NaN",
    0x00800000: "NRes",
    0x007FFFFE: "+INF",
    0x00800002: "-INF",
    0x00800001: "reserved",
}
_SPECIAL_MEANING = {
    "NaN": "not a number: no valid value",
    "NRes": "not at this resolution",
    "+INF": "positive infinity: above the device's range",
    "-INF": "negative infinity: below the device's range",
    "reserved": "a reserved special value",
}


class BleError(ValueError):
    """The value is refused; the text names the field and what is wrong with it."""


class _Special(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _scale(mantissa: int, exponent: int) -> float:
    """mantissa x 10^exponent as the float nearest to that decimal."""
    if exponent >= 0:
        return float(mantissa * 10**exponent)
    return round(mantissa / 10**-exponent, -exponent)


def _sfloat_parts(raw: int) -> tuple[int, int]:
    if raw in _SFLOAT_SPECIAL:
        raise _Special(_SFLOAT_SPECIAL[raw])
    exponent = raw >> 12
    exponent = exponent - 16 if exponent >= 8 else exponent
    mantissa = raw & 0x0FFF
    mantissa = mantissa - 0x1000 if mantissa >= 0x0800 else mantissa
    return mantissa, exponent


def _float_parts(raw: int) -> tuple[int, int]:
    if raw in _FLOAT_SPECIAL:
        raise _Special(_FLOAT_SPECIAL[raw])
    exponent = raw >> 24
    exponent = exponent - 256 if exponent >= 128 else exponent
    mantissa = raw & 0xFFFFFF
    mantissa = mantissa - 0x1000000 if mantissa >= 0x800000 else mantissa
    return mantissa, exponent


def decode_sfloat(raw: int) -> float:
    """A 16-bit SFLOAT as a number; BleError naming a special value."""
    try:
        return _scale(*_sfloat_parts(raw))
    except _Special as s:
        raise BleError(f"SFLOAT special value {s.name}") from None


def decode_float(raw: int) -> float:
    """A 32-bit FLOAT as a number; BleError naming a special value."""
    try:
        return _scale(*_float_parts(raw))
    except _Special as s:
        raise BleError(f"FLOAT special value {s.name}") from None


class _Reader:
    """Little-endian fields off a characteristic value, each named for its errors."""

    def __init__(self, data: bytes, tz: tzinfo) -> None:
        self.data = data
        self.pos = 0
        self.tz = tz

    def _take(self, n: int, field: str) -> bytes:
        if self.pos + n > len(self.data):
            raise BleError(
                f"{field}: the value ends at byte {len(self.data)}, the field needs bytes "
                f"{self.pos}-{self.pos + n - 1} (is a flag bit set for a field not sent?)"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n: int, field: str) -> int:
        return int.from_bytes(self._take(n, field), "little")

    def sint16(self, field: str) -> int:
        return int.from_bytes(self._take(2, field), "little", signed=True)

    def sfloat_parts(self, field: str) -> tuple[int, int]:
        """(mantissa, exponent); BleError for a special value."""
        raw = self.uint(2, field)
        try:
            return _sfloat_parts(raw)
        except _Special as s:
            raise BleError(_special_text(field, s.name, raw, 4)) from None

    def sfloat(self, field: str) -> float:
        return _scale(*self.sfloat_parts(field))

    def sfloat_or_special(self, field: str) -> float | str:
        """A number, or the name of the special value sent instead."""
        try:
            return _scale(*_sfloat_parts(self.uint(2, field)))
        except _Special as s:
            return s.name

    def float32(self, field: str) -> float:
        raw = self.uint(4, field)
        try:
            return _scale(*_float_parts(raw))
        except _Special as s:
            raise BleError(_special_text(field, s.name, raw, 8)) from None

    def date_time(self, field: str) -> datetime:
        """The Date Time characteristic's layout (7 bytes), local time read in `tz`."""
        year = self.uint(2, f"{field} year")
        month, day, hours, minutes, seconds = self._take(5, field)
        for name, value, low, high in (
            ("year", year, 1582, 9999),
            ("month", month, 1, 12),
            ("day", day, 1, 31),
        ):
            if value == 0:
                raise BleError(f"{field}: {name} not known (0): the device's clock is not set")
            if not low <= value <= high:
                raise BleError(f"{field}: {name} {value} is outside {low}-{high}")
        for name, value, high in (("hours", hours, 23), ("minutes", minutes, 59)):
            if value > high:
                raise BleError(f"{field}: {name} {value} is outside 0-{high}")
        if seconds > 59:
            raise BleError(f"{field}: seconds {seconds} is outside 0-59")
        try:
            local = datetime(year, month, day, hours, minutes, seconds, tzinfo=self.tz)
        except ValueError:
            raise BleError(f"{field}: {year:04}-{month:02}-{day:02} is not a date") from None
        return local.astimezone(UTC)

    def rest(self) -> int:
        return len(self.data) - self.pos

    def done(self, name: str) -> None:
        if self.pos != len(self.data):
            raise BleError(
                f"{name}: {len(self.data) - self.pos} byte(s) after the last field the flags "
                "announce"
            )


def _special_text(field: str, name: str, raw: int, width: int) -> str:
    return f"{field}: special value {name} (0x{raw:0{width}X}, {_SPECIAL_MEANING[name]})"


def _flags(r: _Reader, name: str, known: int) -> int:
    flags = r.uint(1, "flags")
    reserved = flags & ~known & 0xFF
    if reserved:
        raise BleError(
            f"flags: reserved bit(s) 0x{reserved:02X} set in a {name}: fields this "
            "decoder does not know may follow"
        )
    return flags


def _bits(value: int, names: dict[int, str]) -> list[str]:
    return [text for bit, text in names.items() if value & (1 << bit)]


class _Out:
    """What one characteristic value becomes: readings, their MDC codes, refusals and
    the context kept beside them."""

    def __init__(self) -> None:
        self.readings: list[dict[str, Any]] = []
        self.mdcs: list[str | None] = []
        self.errors: list[str] = []
        self.context: dict[str, Any] = {}
        self.body_site: str | None = None
        self.device_time: datetime | None = None

    def add(self, reading: dict[str, Any], mdc: str | None = None) -> None:
        self.readings.append(reading)
        self.mdcs.append(mdc)


# --- Blood Pressure Measurement (0x2A35) ----------------------------------------------

_BP_STATUS = {
    0: "body movement detected",
    1: "cuff fit too loose",
    2: "irregular pulse detected",
    5: "improper measurement position",
}
_PULSE_RANGE = {1: "pulse rate exceeds upper limit", 2: "pulse rate below lower limit"}


def _blood_pressure(r: _Reader, out: _Out) -> None:
    flags = _flags(r, "Blood Pressure Measurement", 0x1F)
    unit = "kPa" if flags & 0x01 else "mm[Hg]"
    out.context["unit"] = unit
    systolic = r.sfloat("systolic")
    diastolic = r.sfloat("diastolic")
    mean = r.sfloat_or_special("mean arterial pressure")
    if flags & 0x02:
        out.device_time = r.date_time("time stamp")
    pulse: float | str | None = None
    if flags & 0x04:
        pulse = r.sfloat_or_special("pulse rate")
    if flags & 0x08:
        _user(r, out)
    if flags & 0x10:
        status = r.uint(2, "measurement status")
        notes = _bits(status, _BP_STATUS)
        pulse_range = (status >> 3) & 0x03
        if pulse_range == 3:
            notes.append("pulse rate range detection: reserved value 3")
        elif pulse_range:
            notes.append(_PULSE_RANGE[pulse_range])
        if status & 0xFFC0:
            notes.append(f"reserved status bits 0x{status & 0xFFC0:04X}")
        out.context["status"] = notes
    r.done("Blood Pressure Measurement")
    reading: dict[str, Any] = {
        "type": "blood_pressure",
        "systolic": systolic,
        "diastolic": diastolic,
        "unit": unit,
    }
    if isinstance(mean, str):
        out.context["mean"] = f"special value {mean}: not stored"
    else:
        reading["mean"] = mean
    out.add(reading)
    if isinstance(pulse, str):
        out.errors.append(
            f"pulse rate: special value {pulse} ({_SPECIAL_MEANING[pulse]}); the blood "
            "pressure is stored without it"
        )
    elif pulse is not None:
        out.add({"type": "heart_rate", "value": pulse, "unit": "/min"}, "149546")


def _user(r: _Reader, out: _Out) -> None:
    user = r.uint(1, "user id")
    out.context["user"] = user
    if user == 0xFF:
        out.context["user-note"] = "unknown user (255)"


# --- Weight Measurement (0x2A9D) ------------------------------------------------------


def _weight(r: _Reader, out: _Out) -> None:
    flags = _flags(r, "Weight Measurement", 0x0F)
    imperial = bool(flags & 0x01)
    raw = r.uint(2, "weight")
    if raw == 0xFFFF:
        raise BleError("weight: 0xFFFF, the scale reports the measurement unsuccessful")
    # Resolutions: 0.005 kg (SI) or 0.01 lb (imperial).
    weight = round(raw * 0.01, 2) if imperial else round(raw * 0.005, 3)
    unit = "[lb_av]" if imperial else "kg"
    if flags & 0x02:
        out.device_time = r.date_time("time stamp")
    if flags & 0x04:
        _user(r, out)
    if flags & 0x08:
        bmi = r.uint(2, "BMI")
        height = r.uint(2, "height")
        out.context["bmi"] = round(bmi * 0.1, 1)
        out.context["height"] = (
            f"{round(height * 0.1, 1)} [in_i]" if imperial else (f"{round(height * 0.001, 3)} m")
        )
    r.done("Weight Measurement")
    out.add({"type": "body_weight", "value": weight, "unit": unit})


# --- Temperature Measurement (0x2A1C) -------------------------------------------------

_TEMPERATURE_TYPES = {
    1: "armpit",
    2: "body (general)",
    3: "ear (usually earlobe)",
    5: "gastro-intestinal tract",
    6: "mouth",
    7: "rectum",
    9: "tympanum (ear drum)",
}
_SKIN_SITES = {4: "finger", 8: "toe"}


def _temperature(r: _Reader, out: _Out) -> None:
    flags = _flags(r, "Temperature Measurement", 0x07)
    unit = "[degF]" if flags & 0x01 else "Cel"
    value = r.float32("temperature")
    if flags & 0x02:
        out.device_time = r.date_time("time stamp")
    if flags & 0x04:
        kind = r.uint(1, "temperature type")
        if kind in _SKIN_SITES:
            raise BleError(
                f"temperature type {kind} ({_SKIN_SITES[kind]}) is a skin temperature, not a "
                "body temperature"
            )
        if kind not in _TEMPERATURE_TYPES:
            raise BleError(f"temperature type {kind} is reserved")
        out.body_site = _TEMPERATURE_TYPES[kind]
    r.done("Temperature Measurement")
    out.add({"type": "body_temperature", "value": value, "unit": unit})


# --- PLX Spot-Check Measurement (0x2A5E) ----------------------------------------------

_PLX_REFUSE = {
    5: "measurement ongoing",
    10: "data for demonstration",
    11: "data for testing",
    12: "calibration ongoing",
    13: "measurement unavailable",
    15: "invalid measurement detected",
}
_PLX_NOTE = {
    6: "early estimated data",
    7: "validated data",
    8: "fully qualified data",
    9: "data from measurement storage",
    14: "questionable measurement detected",
}
_SENSOR_REFUSE = {
    1: "equipment malfunction detected",
    11: "sensor unconnected to user",
    14: "sensor malfunctioning",
    15: "sensor disconnected",
}
_SENSOR_NOTE = {
    0: "extended display update ongoing",
    2: "signal processing irregularity detected",
    3: "inadequate signal detected",
    4: "poor signal detected",
    5: "low perfusion detected",
    6: "erratic signal detected",
    7: "nonpulsatile signal detected",
    8: "questionable pulse detected",
    9: "signal analysis ongoing",
    10: "sensor interference detected",
    12: "unknown sensor connected",
    13: "sensor displaced",
}


def _plx_spot_check(r: _Reader, out: _Out) -> None:
    flags = _flags(r, "PLX Spot-Check Measurement", 0x1F)
    spo2 = r.sfloat("SpO2")
    pulse = r.sfloat_or_special("pulse rate")
    stamp = r.date_time("time stamp") if flags & 0x01 else None
    notes: list[str] = []
    if flags & 0x02:
        status = r.uint(2, "measurement status")
        refused = _bits(status, _PLX_REFUSE)
        if refused:
            raise BleError(f"measurement status: {', '.join(refused)}")
        notes += _bits(status, _PLX_NOTE)
        if status & 0x001F:
            notes.append(f"reserved measurement status bits 0x{status & 0x001F:04X}")
    if flags & 0x04:
        sensor = r.uint(3, "device and sensor status")
        refused = _bits(sensor, _SENSOR_REFUSE)
        if refused:
            raise BleError(f"device and sensor status: {', '.join(refused)}")
        notes += _bits(sensor, _SENSOR_NOTE)
        if sensor & 0xFF0000:
            notes.append(f"reserved sensor status bits 0x{sensor & 0xFF0000:06X}")
    if flags & 0x08:
        pai = r.sfloat_or_special("pulse amplitude index")
        out.context["pulse-amplitude-index"] = (
            f"special value {pai}: not stored" if isinstance(pai, str) else pai
        )
    if stamp is not None:
        if flags & 0x10:
            # The device says its clock is not set: its time stamp cannot place the value.
            notes.append("device clock not set: its time stamp was not used")
            out.context["device-time-stamp"] = stamp.isoformat()
        else:
            out.device_time = stamp
    if notes:
        out.context["status"] = notes
    r.done("PLX Spot-Check Measurement")
    out.add({"type": "spo2", "value": spo2, "unit": "%"})
    if isinstance(pulse, str):
        out.errors.append(
            f"pulse rate: special value {pulse} ({_SPECIAL_MEANING[pulse]}); the SpO2 is "
            "stored without it"
        )
    else:
        out.add({"type": "heart_rate", "value": pulse, "unit": "/min"}, "149530")


# --- Glucose Measurement (0x2A18) -----------------------------------------------------

_GLUCOSE_TYPES = {
    1: "capillary whole blood",
    2: "capillary plasma",
    3: "venous whole blood",
    4: "venous plasma",
    5: "arterial whole blood",
    6: "arterial plasma",
    7: "undetermined whole blood",
    8: "undetermined plasma",
}
_GLUCOSE_REFUSED_TYPES = {
    9: "interstitial fluid (ISF), not a blood glucose",
    10: "control solution, a test of the meter, not the patient's glucose",
}
_GLUCOSE_LOCATIONS = {1: "finger", 2: "alternate site test (AST)", 3: "earlobe", 15: None}
_GLUCOSE_REFUSE = {
    1: "sensor malfunction or faulting at time of measurement",
    2: "sample size for blood or control solution insufficient",
    3: "strip insertion error",
    4: "strip type incorrect for device",
    5: "sensor result higher than the device can process (not an exact value)",
    6: "sensor result lower than the device can process (not an exact value)",
    7: "sensor temperature too high for a valid test",
    8: "sensor temperature too low for a valid test",
    9: "sensor read interrupted because the strip was pulled too soon",
    10: "general device fault",
    11: "time fault: the meter's time stamps cannot be trusted",
}


def _glucose(r: _Reader, out: _Out) -> None:
    flags = _flags(r, "Glucose Measurement", 0x1F)
    out.context["sequence-number"] = r.uint(2, "sequence number")
    base = r.date_time("base time")
    offset = r.sint16("time offset") if flags & 0x01 else 0
    if offset:
        out.context["time-offset-minutes"] = offset
    out.device_time = base + timedelta(minutes=offset)
    if not flags & 0x02:
        raise BleError(
            "no glucose concentration in this measurement (flags bit 1 clear): nothing to store"
        )
    mantissa, exponent = r.sfloat_parts("glucose concentration")
    type_location = r.uint(1, "type-sample location")
    sample, location = type_location & 0x0F, type_location >> 4
    if sample in _GLUCOSE_REFUSED_TYPES:
        raise BleError(f"type {sample}: {_GLUCOSE_REFUSED_TYPES[sample]}")
    if sample not in _GLUCOSE_TYPES:
        raise BleError(f"type {sample} is reserved")
    if location == 4:
        raise BleError("sample location 4: control solution, not the patient's glucose")
    if location not in _GLUCOSE_LOCATIONS:
        raise BleError(f"sample location {location} is reserved")
    out.context["sample-type"] = _GLUCOSE_TYPES[sample]
    if _GLUCOSE_LOCATIONS[location] is not None:
        out.body_site = _GLUCOSE_LOCATIONS[location]
    if flags & 0x08:
        status = r.uint(2, "sensor status annunciation")
        refused = _bits(status, _GLUCOSE_REFUSE)
        if refused:
            raise BleError(f"sensor status annunciation: {', '.join(refused)}")
        notes = ["device battery low"] if status & 0x01 else []
        if status & 0xF000:
            notes.append(f"reserved status bits 0x{status & 0xF000:04X}")
        if notes:
            out.context["status"] = notes
    if flags & 0x10:
        out.context["context"] = "a Glucose Measurement Context follows (not decoded)"
    r.done("Glucose Measurement")
    if flags & 0x04:  # mol/L: 1 mol/L = 1000 mmol/L
        out.add(
            {"type": "blood_glucose", "value": _scale(mantissa, exponent + 3), "unit": "mmol/L"}
        )
    else:  # kg/L: 1 kg/L = 100,000 mg/dL
        out.add({"type": "blood_glucose", "value": _scale(mantissa, exponent + 5), "unit": "mg/dL"})


# --- Heart Rate Measurement (0x2A37) --------------------------------------------------


def _heart_rate(r: _Reader, out: _Out) -> None:
    flags = _flags(r, "Heart Rate Measurement", 0x1F)
    value = r.uint(2, "heart rate (uint16)") if flags & 0x01 else r.uint(1, "heart rate (uint8)")
    contact = (flags >> 1) & 0x03
    if contact == 2:
        raise BleError("sensor contact: supported but not detected: the sensor is not on the skin")
    out.context["sensor-contact"] = "detected" if contact == 3 else "not supported"
    if flags & 0x08:
        out.context["energy-expended-kJ"] = r.uint(2, "energy expended")
    if flags & 0x10:
        if r.rest() == 0 or r.rest() % 2:
            raise BleError(
                f"RR-intervals: {r.rest()} byte(s) left; RR-intervals come as 2-byte values"
            )
        out.context["rr-interval-s"] = [
            round(r.uint(2, "RR-interval") / 1024, 4) for _ in range(r.rest() // 2)
        ]
    r.done("Heart Rate Measurement")
    out.add({"type": "heart_rate", "value": value, "unit": "/min"})


_DECODERS: dict[int, Callable[[_Reader, _Out], None]] = {
    0x2A35: _blood_pressure,
    0x2A9D: _weight,
    0x2A1C: _temperature,
    0x2A5E: _plx_spot_check,
    0x2A18: _glucose,
    0x2A37: _heart_rate,
}


def decode(
    characteristic: int,
    value: bytes,
    *,
    fallback_time: datetime,
    time_source: str,
    tz: tzinfo,
) -> tuple[list[dict[str, Any]], list[dict[str, Any] | None], list[str | None], list[str]]:
    """Decode one characteristic value: (readings, extras, MDC codes, refusals of parts).

    Raises BleError when the whole value is refused. `fallback_time` (aware) is used
    when the value carries no time stamp; `time_source` names it ("request", "received").
    """
    decoder = _DECODERS.get(characteristic)
    if decoder is None:
        known = ", ".join(f"0x{c:04X} {n}" for c, n in CHARACTERISTICS.items())
        raise BleError(f"characteristic: 0x{characteristic:04X} is not decoded; known: {known}")
    if not value:
        raise BleError("value_hex: empty")
    out = _Out()
    decoder(_Reader(value, tz), out)
    if out.device_time is not None:
        when, source = out.device_time, "device"
    else:
        when, source = fallback_time.astimezone(UTC), time_source
    text = when.isoformat()
    extra: dict[str, Any] = {
        "extension": [
            context_extension(
                EXTENSION_URL,
                {
                    "characteristic": f"0x{characteristic:04X} {CHARACTERISTICS[characteristic]}",
                    "time-source": source,
                    **out.context,
                },
            )
        ]
    }
    if out.body_site is not None:
        extra["bodySite"] = {"text": out.body_site}
    readings = [{**reading, "time": text} for reading in out.readings]
    return readings, [extra for _ in readings], out.mdcs, out.errors


# --- the request items ----------------------------------------------------------------

_UUID16 = re.compile(r"(?:0[xX])?([0-9A-Fa-f]{4})")
_UUID128 = re.compile(r"0000([0-9A-Fa-f]{4})-0000-1000-8000-00805[fF]9[bB]34[fF][bB]")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+")
_KEYS = ("characteristic", "value_hex", "time", "user_id")


def parse_characteristic(text: Any) -> int:
    """A characteristic UUID ("0x2A35", "2A35" or the 128-bit form) as its 16-bit number."""
    if not isinstance(text, str):
        raise BleError('characteristic: required, a UUID such as "0x2A35"')
    m = _UUID16.fullmatch(text) or _UUID128.fullmatch(text)
    if m is None:
        raise BleError(f"characteristic: {_show(text)} is not a 16-bit or Bluetooth base UUID")
    return int(m.group(1), 16)


def translate_item(
    item: Any,
    *,
    received_at: datetime,
    tz: tzinfo,
    parse_time: Callable[[str], datetime],
) -> Translated:
    """One request item `{"characteristic", "value_hex", "time"?, "user_id"?}` as
    readings, or the reason it is refused. `parse_time` checks the request's time."""
    try:
        if not isinstance(item, dict):
            raise BleError("a measurement must be a JSON object")
        unknown = [k for k in item if k not in _KEYS]
        if unknown:
            raise BleError(
                f"unknown key {', '.join(_show(k) for k in unknown)}; allowed: {', '.join(_KEYS)}"
            )
        characteristic = parse_characteristic(item.get("characteristic"))
        hex_text = item.get("value_hex")
        if not isinstance(hex_text, str) or not _HEX.fullmatch(hex_text):
            raise BleError("value_hex: required, an even number of hexadecimal digits")
        value = bytes.fromhex(hex_text)
        if len(value) > MAX_VALUE_BYTES:
            raise BleError(f"value_hex: {len(value)} bytes, more than {MAX_VALUE_BYTES}")
        fallback, source = received_at, "received"
        if item.get("time") is not None:
            if not isinstance(item["time"], str):
                raise BleError("time: must be an RFC 3339 string")
            try:
                fallback, source = parse_time(item["time"]), "request"
            except ValueError as e:
                raise BleError(str(e)) from None
        user_id = item.get("user_id")
        if user_id is not None and (type(user_id) is not int or not 0 <= user_id <= 255):
            raise BleError("user_id: must be an integer from 0 to 255")
        readings, extras, mdcs, errors = decode(
            characteristic, value, fallback_time=fallback, time_source=source, tz=tz
        )
        if user_id is not None:
            _check_user(extras, user_id)
    except BleError as e:
        return Translated.refused(item, str(e))
    return Translated(item, tuple(readings), tuple(extras), tuple(mdcs), tuple(errors))


def translate_body(
    body: bytes | str,
    *,
    received_at: datetime,
    tz: tzinfo,
    parse_time: Callable[[str], datetime],
) -> list[Translated]:
    """The measurements of a request body (one object or an array of them); FormatError
    when the body as a whole is not JSON, not a measurement or array of them, or too many."""
    try:
        data = loads(body)
    except JsonBodyError as e:
        raise FormatError(f"body {e}") from None
    if isinstance(data, dict):
        items: list[Any] = [data]
    elif isinstance(data, list):
        if not 1 <= len(data) <= MAX_ITEMS:
            raise FormatError(f"body: an array of 1 to {MAX_ITEMS} measurements, not {len(data)}")
        items = data
    else:
        raise FormatError(
            'body: a measurement {"characteristic": ..., "value_hex": ...} or an array of them'
        )
    return [
        translate_item(item, received_at=received_at, tz=tz, parse_time=parse_time)
        for item in items
    ]


def _check_user(extras: list[dict[str, Any] | None], user_id: int) -> None:
    """A shared cuff or scale: only the bound patient's user index is theirs."""
    for extra in extras:
        subs = (extra or {}).get("extension", [{}])[0].get("extension", [])
        sent = next((s.get("valueInteger") for s in subs if s.get("url") == "user"), None)
        if sent is None:
            raise BleError(f"user_id {user_id} was asked for, but the measurement names no user")
        if sent != user_id:
            raise BleError(f"user {sent} is not this device's patient (user_id {user_id})")


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."
