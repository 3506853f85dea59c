"""The Bluetooth decoder against the GATT Specification Supplement's field layouts.

Each characteristic's values are built here by an encoder written from the layout tables
(flags, then the fields each flag announces, little-endian), independently of the
decoder, for every combination of its flag bits; then the special values of each SFLOAT
and FLOAT field, the reserved flag bits, and hypothesis on random bytes.
"""

from __future__ import annotations

import re
import struct
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egenmon.ingest import ble
from egenmon.ingest.ble import BleError, decode, decode_float, decode_sfloat, translate_item
from egenmon.ingest.normalise import parse_time

TZ = ZoneInfo("Europe/Stockholm")
RECEIVED = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)
# 2026-11-24 08:31:05 in Stockholm (UTC+1) as the Date Time characteristic's 7 bytes.
STAMP = struct.pack("<HBBBBB", 2026, 11, 24, 8, 31, 5)
STAMP_UTC = "2026-11-24T07:31:05+00:00"


def sfloat(mantissa: int, exponent: int) -> bytes:
    return struct.pack("<H", ((exponent & 0xF) << 12) | (mantissa & 0x0FFF))


def float32(mantissa: int, exponent: int) -> bytes:
    return struct.pack("<I", ((exponent & 0xFF) << 24) | (mantissa & 0xFFFFFF))


def run(characteristic: int, value: bytes) -> tuple[list, list, list, list]:
    return decode(characteristic, value, fallback_time=RECEIVED, time_source="received", tz=TZ)


def context(extra: dict[str, Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for sub in extra["extension"][0]["extension"]:
        value = next(v for k, v in sub.items() if k.startswith("value"))
        out.setdefault(sub["url"], []).append(value)
    return out


def flag_sets(bits: int) -> list[int]:
    return list(range(1 << bits))


# --- numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (0x0048, 72.0),  # exponent 0
        (0xF05A, 9.0),  # 90 x 10^-1
        (0xFFFF, -0.1),  # mantissa -1, exponent -1
        (0x2001, 100.0),  # 1 x 10^2
        (0x07FD, 2045.0),  # the largest mantissa that is a number
        (0x0803 | 0x1000, -20450.0),  # mantissa -2045, exponent 1
        (0xE172, 3.7),  # 370 x 10^-2
    ],
)
def test_sfloat_numbers(raw: int, value: float) -> None:
    assert decode_sfloat(raw) == value


@pytest.mark.parametrize(
    ("raw", "name"),
    [(0x07FF, "NaN"), (0x0800, "NRes"), (0x07FE, "+INF"), (0x0802, "-INF"), (0x0801, "reserved")],
)
def test_sfloat_special_values(raw: int, name: str) -> None:
    with pytest.raises(BleError, match=rf"special value {re.escape(name)}"):
        decode_sfloat(raw)


@pytest.mark.parametrize(
    ("raw", "value"),
    [(0xFF00016F, 36.7), (0x00000024, 36.0), (0xFE000E42, 36.5), (0xFDFFFFFF, -0.001)],
)
def test_float_numbers(raw: int, value: float) -> None:
    assert decode_float(raw) == value


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (0x007FFFFF, "NaN"),
        (0x00800000, "NRes"),
        (0x007FFFFE, "+INF"),
        (0x00800002, "-INF"),
        (0x00800001, "reserved"),
    ],
)
def test_float_special_values(raw: int, name: str) -> None:
    with pytest.raises(BleError, match=rf"special value {re.escape(name)}"):
        decode_float(raw)


# --- Blood Pressure Measurement 0x2A35 ---------------------------------------------------
# flags: 0 units kPa, 1 time stamp, 2 pulse rate, 3 user id, 4 measurement status.


def bp_value(flags: int) -> bytes:
    kpa = flags & 0x01
    out = bytes([flags])
    out += sfloat(180, -1) if kpa else sfloat(142, 0)  # systolic
    out += sfloat(120, -1) if kpa else sfloat(91, 0)  # diastolic
    out += sfloat(147, -1) if kpa else sfloat(108, 0)  # mean arterial pressure
    if flags & 0x02:
        out += STAMP
    if flags & 0x04:
        out += sfloat(72, 0)
    if flags & 0x08:
        out += bytes([2])
    if flags & 0x10:
        out += struct.pack("<H", 0b0000_0000_0010_1101)  # movement, irregular, upper, position
    return out


@pytest.mark.parametrize("flags", flag_sets(5))
def test_blood_pressure_every_flag_combination(flags: int) -> None:
    readings, extras, mdcs, errors = run(0x2A35, bp_value(flags))
    assert errors == []
    bp = readings[0]
    time = STAMP_UTC if flags & 0x02 else RECEIVED.isoformat()
    if flags & 0x01:
        assert (bp["unit"], bp["systolic"], bp["diastolic"], bp["mean"]) == (
            "kPa",
            18.0,
            12.0,
            14.7,
        )
    else:
        assert (bp["unit"], bp["systolic"], bp["diastolic"], bp["mean"]) == ("mm[Hg]", 142, 91, 108)
    assert bp["type"] == "blood_pressure" and bp["time"] == time
    if flags & 0x04:
        assert readings[1] == {"type": "heart_rate", "value": 72, "unit": "/min", "time": time}
        assert mdcs == [None, "149546"]
    else:
        assert len(readings) == 1
    ctx = context(extras[0])
    assert ctx["time-source"] == ["device" if flags & 0x02 else "received"]
    assert ctx.get("user") == ([2] if flags & 0x08 else None)
    if flags & 0x10:
        assert ctx["status"] == [
            "body movement detected",
            "irregular pulse detected",
            "improper measurement position",
            "pulse rate exceeds upper limit",
        ]
    else:
        assert "status" not in ctx


def test_blood_pressure_special_values() -> None:
    nan = struct.pack("<H", 0x07FF)
    with pytest.raises(BleError, match="systolic: special value NaN"):
        run(0x2A35, b"\x00" + nan + sfloat(91, 0) + sfloat(108, 0))
    with pytest.raises(BleError, match=r"diastolic: special value \+INF"):
        run(0x2A35, b"\x00" + sfloat(142, 0) + struct.pack("<H", 0x07FE) + sfloat(108, 0))
    # A mean not measured: the pressure is stored without it, and the context says so.
    readings, extras, _, errors = run(0x2A35, b"\x00" + sfloat(142, 0) + sfloat(91, 0) + nan)
    assert "mean" not in readings[0] and errors == []
    assert context(extras[0])["mean"] == ["special value NaN: not stored"]
    # A pulse rate of NRes: the pressure is stored, the pulse refused with the reason.
    value = b"\x04" + sfloat(142, 0) + sfloat(91, 0) + sfloat(108, 0) + struct.pack("<H", 0x0800)
    readings, _, _, errors = run(0x2A35, value)
    assert [r["type"] for r in readings] == ["blood_pressure"]
    assert errors and "pulse rate: special value NRes" in errors[0]


def test_blood_pressure_pulse_range_reserved_and_status_reserved_bits_are_named() -> None:
    value = b"\x10" + sfloat(142, 0) + sfloat(91, 0) + sfloat(108, 0) + struct.pack("<H", 0x8018)
    ctx = context(run(0x2A35, value)[1][0])
    assert "pulse rate range detection: reserved value 3" in ctx["status"]
    assert "reserved status bits 0x8000" in ctx["status"]


# --- Weight Measurement 0x2A9D -----------------------------------------------------------
# flags: 0 imperial, 1 time stamp, 2 user id, 3 BMI and height.


def weight_value(flags: int) -> bytes:
    imperial = flags & 0x01
    out = bytes([flags]) + struct.pack("<H", 17946 if imperial else 16280)  # 179.46 lb / 81.4 kg
    if flags & 0x02:
        out += STAMP
    if flags & 0x04:
        out += bytes([1])
    if flags & 0x08:
        out += struct.pack("<HH", 251, 709 if imperial else 1800)  # BMI 25.1, 70.9 in / 1.8 m
    return out


@pytest.mark.parametrize("flags", flag_sets(4))
def test_weight_every_flag_combination(flags: int) -> None:
    readings, extras, _, errors = run(0x2A9D, weight_value(flags))
    assert errors == []
    [w] = readings
    if flags & 0x01:
        assert (w["value"], w["unit"]) == (179.46, "[lb_av]")
    else:
        assert (w["value"], w["unit"]) == (81.4, "kg")
    assert w["time"] == (STAMP_UTC if flags & 0x02 else RECEIVED.isoformat())
    ctx = context(extras[0])
    assert ctx.get("user") == ([1] if flags & 0x04 else None)
    if flags & 0x08:
        assert ctx["bmi"] == [25.1]
        assert ctx["height"] == (["70.9 [in_i]"] if flags & 0x01 else ["1.8 m"])
    else:
        assert "bmi" not in ctx


def test_weight_unsuccessful_is_refused() -> None:
    with pytest.raises(BleError, match="unsuccessful"):
        run(0x2A9D, b"\x00\xff\xff")


# --- Temperature Measurement 0x2A1C ------------------------------------------------------
# flags: 0 Fahrenheit, 1 time stamp, 2 temperature type.


def temperature_value(flags: int, kind: int = 6) -> bytes:
    out = bytes([flags]) + (float32(995, -1) if flags & 0x01 else float32(3750, -2))
    if flags & 0x02:
        out += STAMP
    if flags & 0x04:
        out += bytes([kind])
    return out


@pytest.mark.parametrize("flags", flag_sets(3))
def test_temperature_every_flag_combination(flags: int) -> None:
    readings, extras, _, _ = run(0x2A1C, temperature_value(flags))
    [t] = readings
    assert (t["value"], t["unit"]) == ((99.5, "[degF]") if flags & 0x01 else (37.5, "Cel"))
    assert t["time"] == (STAMP_UTC if flags & 0x02 else RECEIVED.isoformat())
    assert extras[0].get("bodySite") == ({"text": "mouth"} if flags & 0x04 else None)


@pytest.mark.parametrize(
    ("kind", "site"),
    [(1, "armpit"), (2, "body (general)"), (3, "ear (usually earlobe)"),
     (5, "gastro-intestinal tract"), (6, "mouth"), (7, "rectum"), (9, "tympanum (ear drum)")],
)  # fmt: skip
def test_temperature_types(kind: int, site: str) -> None:
    assert run(0x2A1C, temperature_value(0x04, kind))[1][0]["bodySite"] == {"text": site}


@pytest.mark.parametrize(
    ("kind", "reason"),
    [(4, "skin temperature"), (8, "skin temperature"), (0, "reserved"), (10, "reserved")],
)
def test_temperature_skin_and_reserved_types_are_refused(kind: int, reason: str) -> None:
    with pytest.raises(BleError, match=reason):
        run(0x2A1C, temperature_value(0x04, kind))


@pytest.mark.parametrize("raw", [0x007FFFFF, 0x00800000, 0x007FFFFE, 0x00800002, 0x00800001])
def test_temperature_special_values_are_refused(raw: int) -> None:
    with pytest.raises(BleError, match="temperature: special value"):
        run(0x2A1C, b"\x00" + struct.pack("<I", raw))


# --- PLX Spot-Check Measurement 0x2A5E ---------------------------------------------------
# flags: 0 time stamp, 1 measurement status, 2 device and sensor status, 3 pulse amplitude
# index, 4 device clock not set.


def plx_value(flags: int, status: int = 0x0180, sensor: int = 0x000020) -> bytes:
    out = bytes([flags]) + sfloat(96, 0) + sfloat(72, 0)
    if flags & 0x01:
        out += STAMP
    if flags & 0x02:
        out += struct.pack("<H", status)  # validated, fully qualified
    if flags & 0x04:
        out += sensor.to_bytes(3, "little")  # low perfusion
    if flags & 0x08:
        out += sfloat(35, -1)
    return out


@pytest.mark.parametrize("flags", flag_sets(5))
def test_plx_spot_check_every_flag_combination(flags: int) -> None:
    readings, extras, mdcs, errors = run(0x2A5E, plx_value(flags))
    assert errors == []
    spo2, pulse = readings
    device_time = flags & 0x01 and not flags & 0x10
    time = STAMP_UTC if device_time else RECEIVED.isoformat()
    assert spo2 == {"type": "spo2", "value": 96, "unit": "%", "time": time}
    assert pulse == {"type": "heart_rate", "value": 72, "unit": "/min", "time": time}
    assert mdcs == [None, "149530"]
    ctx = context(extras[0])
    notes = ctx.get("status", [])
    assert ("validated data" in notes) == bool(flags & 0x02)
    assert ("low perfusion detected" in notes) == bool(flags & 0x04)
    assert ctx.get("pulse-amplitude-index") == ([3.5] if flags & 0x08 else None)
    assert ("device clock not set: its time stamp was not used" in notes) == bool(
        flags & 0x01 and flags & 0x10
    )


@pytest.mark.parametrize(
    ("bit", "text"),
    [(5, "measurement ongoing"), (10, "data for demonstration"), (11, "data for testing"),
     (12, "calibration ongoing"), (13, "measurement unavailable"),
     (15, "invalid measurement detected")],
)  # fmt: skip
def test_plx_measurement_status_that_is_not_a_measurement_is_refused(bit: int, text: str) -> None:
    with pytest.raises(BleError, match=text):
        run(0x2A5E, plx_value(0x02, status=1 << bit))


@pytest.mark.parametrize(
    ("bit", "text"),
    [(1, "equipment malfunction"), (11, "sensor unconnected to user"),
     (14, "sensor malfunctioning"), (15, "sensor disconnected")],
)  # fmt: skip
def test_plx_sensor_status_faults_are_refused(bit: int, text: str) -> None:
    with pytest.raises(BleError, match=text):
        run(0x2A5E, plx_value(0x04, sensor=1 << bit))


def test_plx_special_values() -> None:
    with pytest.raises(BleError, match="SpO2: special value NaN"):
        run(0x2A5E, b"\x00" + struct.pack("<H", 0x07FF) + sfloat(72, 0))
    readings, _, _, errors = run(0x2A5E, b"\x00" + sfloat(96, 0) + struct.pack("<H", 0x07FE))
    assert [r["type"] for r in readings] == ["spo2"]
    assert "pulse rate: special value +INF" in errors[0]


# --- Glucose Measurement 0x2A18 ----------------------------------------------------------
# flags: 0 time offset, 1 concentration + type/location, 2 units mol/L, 3 sensor status
# annunciation, 4 context information follows.


def glucose_value(flags: int, type_location: int = 0x11, status: int = 0x0001) -> bytes:
    out = bytes([flags]) + struct.pack("<H", 7) + STAMP
    if flags & 0x01:
        out += struct.pack("<h", -30)
    if flags & 0x02:
        # 6.1 mmol/L as mol/L (61 x 10^-4), or 110 mg/dL as kg/L (110 x 10^-5)
        out += sfloat(61, -4) if flags & 0x04 else sfloat(110, -5)
        out += bytes([type_location])
    if flags & 0x08:
        out += struct.pack("<H", status)
    return out


@pytest.mark.parametrize("flags", flag_sets(5))
def test_glucose_every_flag_combination(flags: int) -> None:
    value = glucose_value(flags)
    if not flags & 0x02:
        with pytest.raises(BleError, match="no glucose concentration"):
            run(0x2A18, value)
        return
    readings, extras, _, errors = run(0x2A18, value)
    assert errors == []
    [g] = readings
    assert (g["value"], g["unit"]) == ((6.1, "mmol/L") if flags & 0x04 else (110, "mg/dL"))
    assert g["time"] == ("2026-11-24T07:01:05+00:00" if flags & 0x01 else STAMP_UTC)
    ctx = context(extras[0])
    assert ctx["sequence-number"] == [7]
    assert ctx["sample-type"] == ["capillary whole blood"]
    assert extras[0]["bodySite"] == {"text": "finger"}
    assert ctx.get("status") == (["device battery low"] if flags & 0x08 else None)
    assert ("context" in ctx) == bool(flags & 0x10)


@pytest.mark.parametrize(
    ("type_location", "text"),
    [(0x19, "interstitial fluid"), (0x1A, "control solution"), (0x10, "type 0 is reserved"),
     (0x1B, "type 11 is reserved"), (0x41, "control solution"),
     (0x51, "sample location 5 is reserved")],
)  # fmt: skip
def test_glucose_types_and_locations_refused(type_location: int, text: str) -> None:
    with pytest.raises(BleError, match=text):
        run(0x2A18, glucose_value(0x02, type_location))


@pytest.mark.parametrize("bit", range(1, 12))
def test_glucose_sensor_faults_are_refused(bit: int) -> None:
    with pytest.raises(BleError, match="sensor status annunciation"):
        run(0x2A18, glucose_value(0x0A, status=1 << bit))


@pytest.mark.parametrize("raw", [0x07FF, 0x0800, 0x07FE, 0x0802, 0x0801])
def test_glucose_special_values_are_refused(raw: int) -> None:
    value = b"\x02" + struct.pack("<H", 1) + STAMP + struct.pack("<H", raw) + b"\x11"
    with pytest.raises(BleError, match="glucose concentration: special value"):
        run(0x2A18, value)


# --- Heart Rate Measurement 0x2A37 -------------------------------------------------------
# flags: 0 uint16 value, 1-2 sensor contact, 3 energy expended, 4 RR-intervals.


def hr_value(flags: int) -> bytes:
    out = bytes([flags]) + (struct.pack("<H", 72) if flags & 0x01 else bytes([72]))
    if flags & 0x08:
        out += struct.pack("<H", 120)
    if flags & 0x10:
        out += struct.pack("<HH", 1024, 870)
    return out


@pytest.mark.parametrize("flags", flag_sets(5))
def test_heart_rate_every_flag_combination(flags: int) -> None:
    contact = (flags >> 1) & 0x03
    if contact == 2:
        with pytest.raises(BleError, match="not on the skin"):
            run(0x2A37, hr_value(flags))
        return
    readings, extras, _, _ = run(0x2A37, hr_value(flags))
    assert readings == [
        {"type": "heart_rate", "value": 72, "unit": "/min", "time": RECEIVED.isoformat()}
    ]
    ctx = context(extras[0])
    assert ctx["sensor-contact"] == ["detected" if contact == 3 else "not supported"]
    assert ctx["time-source"] == ["received"]
    assert ctx.get("energy-expended-kJ") == ([120] if flags & 0x08 else None)
    assert ctx.get("rr-interval-s") == ([1.0, 0.8496] if flags & 0x10 else None)


def test_heart_rate_odd_rr_bytes_are_refused() -> None:
    with pytest.raises(BleError, match="RR-intervals"):
        run(0x2A37, b"\x10\x48\x00\x04\x01")


# --- every characteristic: reserved flag bits, truncation, trailing bytes ----------------

RESERVED = {0x2A35: 0xE0, 0x2A9D: 0xF0, 0x2A1C: 0xF8, 0x2A5E: 0xE0, 0x2A18: 0xE0, 0x2A37: 0xE0}
FULL = {
    0x2A35: bp_value(0x1F),
    0x2A9D: weight_value(0x0F),
    0x2A1C: temperature_value(0x07),
    0x2A5E: plx_value(0x0F),
    0x2A18: glucose_value(0x1F),
    0x2A37: hr_value(0x1F),
}


@pytest.mark.parametrize("characteristic", sorted(RESERVED))
def test_reserved_flag_bits_are_refused(characteristic: int) -> None:
    for bit in range(8):
        if RESERVED[characteristic] & (1 << bit):
            value = bytes([FULL[characteristic][0] | (1 << bit)]) + FULL[characteristic][1:]
            with pytest.raises(BleError, match="reserved bit"):
                run(characteristic, value)


@pytest.mark.parametrize("characteristic", sorted(FULL))
def test_every_truncation_and_trailing_bytes_are_refused_naming_the_field(
    characteristic: int,
) -> None:
    full = FULL[characteristic]
    run(characteristic, full)
    for cut in range(len(full)):
        if characteristic == 0x2A37 and cut in (len(full) - 2,):
            continue  # one RR-interval fewer is still a whole value
        with pytest.raises(BleError):
            run(characteristic, full[:cut])
    if characteristic != 0x2A37:  # RR-intervals take the rest of the value
        with pytest.raises(BleError, match="after the last field"):
            run(characteristic, full + b"\x00")


def test_an_unknown_characteristic_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(BleError, match="0x2A35 Blood Pressure Measurement"):
        run(0x2A19, b"\x64")


@pytest.mark.parametrize(
    ("stamp", "text"),
    [
        (struct.pack("<HBBBBB", 0, 11, 24, 8, 0, 0), "year not known"),
        (struct.pack("<HBBBBB", 2026, 13, 24, 8, 0, 0), "month 13"),
        (struct.pack("<HBBBBB", 2026, 2, 30, 8, 0, 0), "not a date"),
        (struct.pack("<HBBBBB", 2026, 2, 3, 24, 0, 0), "hours 24"),
        (struct.pack("<HBBBBB", 2026, 2, 3, 8, 60, 0), "minutes 60"),
        (struct.pack("<HBBBBB", 2026, 2, 3, 8, 0, 60), "seconds 60"),
    ],
)
def test_bad_time_stamps_are_refused(stamp: bytes, text: str) -> None:
    with pytest.raises(BleError, match=text):
        run(0x2A1C, b"\x02" + float32(375, -1) + stamp)


def test_a_summer_time_stamp_is_read_in_the_platform_time_zone() -> None:
    stamp = struct.pack("<HBBBBB", 2026, 7, 1, 8, 0, 0)
    [t], _, _, _ = run(0x2A1C, b"\x02" + float32(375, -1) + stamp)
    assert t["time"] == "2026-07-01T06:00:00+00:00"


# --- request items -------------------------------------------------------------------------


def item(**over: Any) -> Any:
    return translate_item(over, received_at=RECEIVED, tz=TZ, parse_time=parse_time)


def test_request_item_forms_and_the_request_time() -> None:
    for characteristic in ("0x2A37", "2a37", "00002a37-0000-1000-8000-00805f9b34fb"):
        t = item(characteristic=characteristic, value_hex="0648")
        assert t.errors == () and t.readings[0]["value"] == 72
    t = item(characteristic="0x2A37", value_hex="0648", time="2026-11-24T08:00:00+01:00")
    assert t.readings[0]["time"] == "2026-11-24T07:00:00+00:00"
    assert context(t.extras[0])["time-source"] == ["request"]


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"characteristic": "0x2A37"}, "value_hex"),
        ({"characteristic": "0x2A37", "value_hex": "064"}, "value_hex"),
        ({"characteristic": "0x2A37", "value_hex": "zz"}, "value_hex"),
        ({"characteristic": "heart", "value_hex": "0648"}, "characteristic"),
        ({"characteristic": 0x2A37, "value_hex": "0648"}, "characteristic"),
        ({"characteristic": "0x2A37", "value_hex": "0648", "colour": 1}, "unknown key"),
        ({"characteristic": "0x2A37", "value_hex": "0648", "time": "yesterday"}, "time"),
        ({"characteristic": "0x2A37", "value_hex": "0648", "time": 5}, "time"),
        ({"characteristic": "0x2A37", "value_hex": "00" * 513}, "more than 512"),
        ({"characteristic": "0x2A37", "value_hex": "0648", "user_id": "1"}, "user_id"),
    ],
)
def test_bad_request_items_are_refused_naming_the_field(fields: dict, text: str) -> None:
    t = item(**fields)
    assert t.readings == () and text in t.errors[0]


def test_user_id_keeps_a_shared_cuff_to_its_patient() -> None:
    value = bp_value(0x08).hex()  # user 2
    assert item(characteristic="0x2A35", value_hex=value, user_id=2).errors == ()
    refused = item(characteristic="0x2A35", value_hex=value, user_id=1)
    assert refused.readings == () and "user 2 is not this device's patient" in refused.errors[0]
    nouser = item(characteristic="0x2A35", value_hex=bp_value(0).hex(), user_id=1)
    assert "names no user" in nouser.errors[0]


def test_a_non_object_item_is_refused() -> None:
    t = translate_item([1, 2], received_at=RECEIVED, tz=TZ, parse_time=parse_time)
    assert "JSON object" in t.errors[0]


# --- hostile bytes -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    characteristic=st.sampled_from(sorted(ble.CHARACTERISTICS) + [0x2A19, 0]),
    value=st.binary(max_size=40),
)
def test_random_bytes_decode_or_raise_only_the_decoders_error(characteristic, value) -> None:
    try:
        readings, extras, mdcs, errors = run(characteristic, value)
    except BleError as e:
        assert str(e)
        return
    assert len(readings) == len(extras) == len(mdcs) >= 1
    for r in readings:
        for key in ("value", "systolic", "diastolic", "mean"):
            if key in r:
                assert r[key] == r[key]  # never NaN
                assert abs(r[key]) != float("inf")


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["characteristic", "value_hex", "time", "user_id", "x"]),
        st.one_of(
            st.text(max_size=20), st.integers(), st.none(), st.binary(max_size=8).map(bytes.hex)
        ),
    )
)
def test_random_items_never_raise(fields: dict) -> None:
    t = translate_item(fields, received_at=RECEIVED, tz=TZ, parse_time=parse_time)
    assert t.readings or t.errors
