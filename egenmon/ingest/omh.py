"""Open mHealth (IEEE 1752) data points as readings of the Reading message v1 (pure).

`POST /api/v1/omh/dataPoints` takes one data point or an array of them; each is
translated here and then goes the way of every reading (normalise, dedup, quarantine,
source ``omh``). The schemas taken (any version: their value layouts did not change):
blood-pressure, heart-rate, body-weight, oxygen-saturation, body-temperature,
blood-glucose and respiratory-rate, namespace ``omh``.

- `header.uuid` (IEEE 1752) or `header.id` (Open mHealth 1.x) is the reading's id, so a
  data point sent twice is stored once; it is served back as an Observation identifier.
- Units become UCUM: mmHg, kPa; beats/min and breaths/min to /min; kg, g, lb, oz; C, F,
  K; mg/dL, mmol/L; %. Any other unit is refused, naming the ones taken.
- `effective_time_frame`: a `date_time`, or a `time_interval` (start and end, or one of
  them with a `duration`) of at most 24 hours: the reading's time is the interval's end,
  and the Observation is served with `effectivePeriod`. A date with a part of the day is
  refused (it is no measurement time).
- `descriptive_statistic` is refused: egenmon's rules judge single measurements, and a
  minimum, maximum or average over a period is not one (it stays whole in quarantine).
- `header.acquisition_provenance` and the schema's descriptive fields (posture, location,
  relation to meals, sleep or activity) are kept with the reading; a measurement location
  becomes the Observation's `bodySite`. Oxygen flow or an oxygen therapy mode marks the
  SpO2 as taken on oxygen (NEWS2). A skin temperature (finger, toe, wrist) and a glucose
  from anything but blood are refused. `header.user_id` is not kept: the patient is the
  one the device is bound to.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from egenmon.ingest.translated import MAX_ITEMS, PROJECT_NS, FormatError, Translated
from egenmon.jsonbody import JsonBodyError, loads

__all__ = ["EXTENSION_URL", "SCHEMAS", "translate_body", "translate_item"]

EXTENSION_URL = f"{PROJECT_NS}/StructureDefinition/omh-data-point"
HEADER_ID_SYSTEM = f"{PROJECT_NS}/omh-header-id"
MAX_INTERVAL = timedelta(hours=24)
MAX_ID = 200

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_DURATION_S = {
    "ps": 1e-12,
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "sec": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "wk": 604800.0,
}
_KG_PER_OZ = 0.028349523125


class _Refuse(Exception):
    """The data point is refused; the text names the field."""


def _convert(factor: float, offset: float = 0.0) -> Callable[[float], float]:
    return lambda v: v * factor + offset


# The value field of each schema and its units: OMH spelling -> (unit for the Reading
# message, conversion done here first or None).
_UNITS: dict[str, dict[str, tuple[str, Callable[[float], float] | None]]] = {
    "pressure": {"mmHg": ("mm[Hg]", None), "kPa": ("kPa", None)},
    "heart_rate": {"beats/min": ("/min", None)},
    "respiratory_rate": {"breaths/min": ("/min", None)},
    "body_weight": {
        "kg": ("kg", None),
        "g": ("g", None),
        "lb": ("[lb_av]", None),
        "oz": ("kg", _convert(_KG_PER_OZ)),
    },
    "body_temperature": {
        "C": ("Cel", None),
        "F": ("[degF]", None),
        "K": ("Cel", _convert(1.0, -273.15)),
    },
    "blood_glucose": {"mg/dL": ("mg/dL", None), "mmol/L": ("mmol/L", None)},
    "oxygen_saturation": {"%": ("%", None)},
}

# schema name -> (egenmon type, descriptive fields kept beside the reading)
SCHEMAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "blood-pressure": (
        "blood_pressure",
        ("body_posture", "measurement_location", "temporal_relationship_to_physical_activity"),
    ),
    "heart-rate": (
        "heart_rate",
        ("temporal_relationship_to_physical_activity", "temporal_relationship_to_sleep"),
    ),
    "body-weight": ("body_weight", ()),
    "oxygen-saturation": (
        "spo2",
        (
            "system",
            "measurement_method",
            "oxygen_therapy_mode_of_administration",
            "supplemental_oxygen_flow_rate",
        ),
    ),
    "body-temperature": (
        "body_temperature",
        ("measurement_location", "temporal_relationship_to_sleep"),
    ),
    "blood-glucose": (
        "blood_glucose",
        ("specimen_source", "temporal_relationship_to_meal", "temporal_relationship_to_sleep"),
    ),
    "respiratory-rate": ("respiratory_rate", ("temporal_relationship_to_physical_activity",)),
}
_VALUE_FIELD = {
    "heart-rate": "heart_rate",
    "body-weight": "body_weight",
    "oxygen-saturation": "oxygen_saturation",
    "body-temperature": "body_temperature",
    "blood-glucose": "blood_glucose",
    "respiratory-rate": "respiratory_rate",
}
# What the normaliser's reasons (time, value, unit) are about, named in the data point.
_WHERE = {
    "blood_pressure": "body (effective_time_frame, systolic/diastolic_blood_pressure)",
    "heart_rate": "body (effective_time_frame, heart_rate)",
    "body_weight": "body (effective_time_frame, body_weight)",
    "spo2": "body (effective_time_frame, oxygen_saturation)",
    "body_temperature": "body (effective_time_frame, body_temperature)",
    "blood_glucose": "body (effective_time_frame, blood_glucose)",
    "respiratory_rate": "body (effective_time_frame, respiratory_rate)",
}
_SKIN_SITES = frozenset({"finger", "toe", "wrist"})
_PROVENANCE = (
    "source_name",
    "source_data_point_id",
    "source_creation_date_time",
    "source_last_modification_date_time",
    "modality",
)


def translate_body(body: bytes | str, *, parse_time: Callable[[str], datetime]) -> list[Translated]:
    """The data points of a request body (one object or an array); FormatError when the
    body as a whole is not JSON, not a data point or array of them, or too many."""
    try:
        data = loads(body)
    except JsonBodyError as e:
        raise FormatError(f"body {e}") from None
    if isinstance(data, dict):
        items: list[Any] = [data]
    elif isinstance(data, list):
        if not 1 <= len(data) <= MAX_ITEMS:
            raise FormatError(f"body: an array of 1 to {MAX_ITEMS} data points, not {len(data)}")
        items = data
    else:
        raise FormatError("body: an Open mHealth data point (an object) or an array of them")
    return [translate_item(item, parse_time=parse_time) for item in items]


def translate_item(item: Any, *, parse_time: Callable[[str], datetime]) -> Translated:
    """One data point as a reading (with its FHIR extra), or the reason it is refused."""
    try:
        reading, extra = _translate(item, parse_time)
    except _Refuse as e:
        return Translated.refused(item, str(e))
    return Translated(item, (reading,), (extra,), (None,), (), _WHERE[reading["type"]])


@dataclass(frozen=True, slots=True)
class _Schema:
    """What translating one schema needs, looked up once per (namespace, name, version)."""

    name: str
    type: str
    descriptive: frozenset[str]
    known: frozenset[str]  # the body fields read
    sub: dict[str, str]  # the schema id as a sub-extension


_SCHEMA_CACHE: dict[tuple[Any, Any, Any], _Schema] = {}
_PROVENANCE_URL = {key: key.replace("_", "-") for key in _PROVENANCE}


def _schema_of(schema: Any) -> _Schema:
    if not isinstance(schema, dict):
        raise _Refuse("header.schema_id: required, an object with namespace, name, version")
    key = (schema.get("namespace"), schema.get("name"), schema.get("version"))
    try:
        return _SCHEMA_CACHE[key]
    except (KeyError, TypeError):  # TypeError: a list or object where a string belongs
        pass
    namespace, name, version = key
    if namespace != "omh" or not isinstance(name, str) or name not in SCHEMAS:
        raise _Refuse(
            f"header.schema_id: {_show(namespace)}:{_show(name)} is not taken; taken: "
            + ", ".join(f"omh:{n}" for n in SCHEMAS)
        )
    if not isinstance(version, str) or not re.fullmatch(r"[0-9]{1,4}\.[0-9]{1,4}", version):
        raise _Refuse('header.schema_id.version: required, such as "4.0"')
    type_name, descriptive = SCHEMAS[name]
    found = _Schema(
        name,
        type_name,
        frozenset(descriptive),
        frozenset({"effective_time_frame", *descriptive, *_value_fields(name)}),
        {"url": "schema", "valueString": f"omh:{name}:{version}"},
    )
    if len(_SCHEMA_CACHE) < 1000:  # versions are few; hostile ones must not grow it
        _SCHEMA_CACHE[key] = found
    return found


def _translate(item: Any, parse_time: Callable[[str], datetime]) -> tuple[dict, dict]:
    if type(item) is not dict:
        raise _Refuse("a data point must be a JSON object with header and body")
    header = item.get("header")
    body = item.get("body")
    if type(header) is not dict:
        raise _Refuse("header: required, an object")
    if type(body) is not dict:
        raise _Refuse("body: required, an object")
    point_id = header.get("uuid")
    if point_id is None:
        point_id = header.get("id")
    if type(point_id) is not str or not 0 < len(point_id) <= MAX_ID or "\x00" in point_id:
        raise _Refuse(f"header.uuid: required, a string of at most {MAX_ID} characters")
    schema = _schema_of(header.get("schema_id"))
    name = schema.name

    if "descriptive_statistic" in body:
        stat = body["descriptive_statistic"]
        raise _Refuse(
            f"body.descriptive_statistic {_show(stat)}: egenmon stores single measurements, "
            "and a statistic over a period is not one"
        )
    time, period = _time_frame(body.get("effective_time_frame"), parse_time)

    reading: dict[str, Any] = {"type": schema.type, "time": time, "id": "omh:" + point_id}
    if name == "blood-pressure":
        systolic, unit = _unit_value(body, "systolic_blood_pressure", "pressure")
        diastolic, unit2 = _unit_value(body, "diastolic_blood_pressure", "pressure")
        if unit != unit2:
            raise _Refuse(
                "body: systolic_blood_pressure and diastolic_blood_pressure in different units"
            )
        reading["systolic"] = systolic
        reading["diastolic"] = diastolic
        reading["unit"] = unit
    else:
        field = _VALUE_FIELD[name]
        reading["value"], reading["unit"] = _unit_value(body, field, field)

    subs: list[dict[str, Any]] = [schema.sub]
    provenance = header.get("acquisition_provenance")
    if provenance is not None:
        subs += _provenance(provenance)
    created = header.get("creation_date_time")
    if created is not None:
        if type(created) is not str or not 0 < len(created) <= 200 or "\x00" in created:
            _text(created, "header.creation_date_time")  # raises, naming it
        subs.append({"url": "creation-date-time", "valueString": created})
    body_site = None
    ignored: list[str] = []
    for key, value in body.items():
        if key not in schema.descriptive:
            if key not in schema.known:
                ignored.append(key)
            continue
        if value is None:
            continue
        if key == "supplemental_oxygen_flow_rate":
            flow, _ = _number_unit(value, f"body.{key}", {"L/min"})
            reading["on_oxygen"] = flow > 0
            subs.append({"url": "supplemental-oxygen-flow-rate", "valueString": f"{flow:g} L/min"})
            continue
        text = _text(value, f"body.{key}")
        if key == "oxygen_therapy_mode_of_administration":
            reading["on_oxygen"] = True
        elif key == "measurement_location":
            if name == "body-temperature" and text in _SKIN_SITES:
                raise _Refuse(
                    f"body.measurement_location {text!r}: a skin temperature, not a body "
                    "temperature"
                )
            body_site = text
        elif key == "specimen_source" and text != "capillary blood":
            raise _Refuse(f"body.specimen_source {text!r}: not a blood glucose")
        subs.append({"url": key.replace("_", "-"), "valueString": text})
    if ignored:
        text = ", ".join(_show(k) for k in sorted(ignored))[:500]
        subs.append({"url": "ignored-fields", "valueString": text})

    extra: dict[str, Any] = {
        "identifier": [_identifier(point_id)],
        "extension": [{"url": EXTENSION_URL, "extension": subs}],
    }
    if period is not None:
        extra["effectivePeriod"] = period
    if body_site is not None:
        extra["bodySite"] = {"text": body_site}
    return reading, extra


_PROVENANCE_CACHE: dict[tuple[tuple[str, Any], ...], list[dict[str, str]]] = {}


def _provenance(provenance: Any) -> list[dict[str, str]]:
    """acquisition_provenance as sub-extensions; the data points of one source share it,
    so it is made once per distinct provenance (a bounded cache)."""
    if type(provenance) is not dict:
        raise _Refuse("header.acquisition_provenance: must be an object")
    try:
        key = tuple(provenance.items())
        return _PROVENANCE_CACHE[key]
    except (KeyError, TypeError):  # TypeError: a list or object among the values
        pass
    subs = []
    for name, value in provenance.items():
        url = _PROVENANCE_URL.get(name)
        if url is not None and value is not None:
            subs.append(
                {"url": url, "valueString": _text(value, f"header.acquisition_provenance.{name}")}
            )
    with contextlib.suppress(TypeError):
        if len(_PROVENANCE_CACHE) < 1000:
            _PROVENANCE_CACHE[key] = subs
    return subs


def _value_fields(name: str) -> tuple[str, ...]:
    if name == "blood-pressure":
        return ("systolic_blood_pressure", "diastolic_blood_pressure")
    return (_VALUE_FIELD[name],)


def _identifier(point_id: str) -> dict[str, str]:
    if _UUID.fullmatch(point_id):
        return {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{point_id.lower()}"}
    return {"system": HEADER_ID_SYSTEM, "value": point_id}


def _unit_value(body: dict, field: str, kind: str) -> tuple[float, str]:
    units = _UNITS[kind]
    raw = body.get(field)
    if type(raw) is dict:
        value, unit = raw.get("value"), raw.get("unit")
        found = units.get(unit) if type(unit) is str else None
        if found is not None and (type(value) is int or type(value) is float):
            spelling, convert = found
            if convert is None:
                return value, spelling
            try:
                return convert(value), spelling
            except OverflowError:
                raise _Refuse(f"body.{field}.value: number too large") from None
    _number_unit(raw, f"body.{field}", set(units))  # raises, naming what is wrong
    raise AssertionError("unreachable")


def _number_unit(raw: Any, where: str, units: set[str]) -> tuple[float, str]:
    if type(raw) is not dict:
        raise _Refuse(f"{where}: required, an object with value and unit")
    value, unit = raw.get("value"), raw.get("unit")
    if type(value) is not int and type(value) is not float:
        raise _Refuse(f"{where}.value: required, a number")
    if type(unit) is not str or unit not in units:
        raise _Refuse(
            f"{where}.unit: {_show(unit)} is not taken; taken: {', '.join(sorted(units))}"
        )
    return value, unit


def _time_frame(
    frame: Any, parse_time: Callable[[str], datetime]
) -> tuple[str, dict[str, str] | None]:
    """The reading's time (RFC 3339) and, for an interval, its FHIR effectivePeriod."""
    where = "body.effective_time_frame"
    if not isinstance(frame, dict):
        raise _Refuse(f"{where}: required, an object with date_time or time_interval")
    if ("date_time" in frame) == ("time_interval" in frame):
        raise _Refuse(f"{where}: exactly one of date_time and time_interval")
    if "date_time" in frame:
        text = frame["date_time"]
        if type(text) is not str:
            raise _Refuse(f"{where}.date_time: must be an RFC 3339 date-time string")
        # Checked by the normaliser, whose reason is put behind the data point's `where`.
        return text, None
    interval = frame["time_interval"]
    where += ".time_interval"
    if not isinstance(interval, dict):
        raise _Refuse(f"{where}: must be an object")
    if "date" in interval or "part_of_day" in interval:
        raise _Refuse(f"{where}: a date with a part of the day is not a measurement time")
    start = end = None
    if interval.get("start_date_time") is not None:
        start = _instant(interval["start_date_time"], f"{where}.start_date_time", parse_time)
    if interval.get("end_date_time") is not None:
        end = _instant(interval["end_date_time"], f"{where}.end_date_time", parse_time)
    if interval.get("duration") is not None:
        if start is not None and end is not None:
            raise _Refuse(f"{where}: start_date_time, end_date_time and duration together")
        length = _duration(interval["duration"], f"{where}.duration")
        if start is not None:
            end = start + length
        elif end is not None:
            start = end - length
    if start is None or end is None:
        raise _Refuse(f"{where}: start_date_time and end_date_time, or one of them and duration")
    if end < start:
        raise _Refuse(f"{where}: end_date_time is before start_date_time")
    if end - start > MAX_INTERVAL:
        raise _Refuse(f"{where}: longer than 24 hours, not the time of one measurement")
    period = {"start": _fhir(start), "end": _fhir(end)}
    return end.isoformat(), period


def _instant(text: Any, where: str, parse_time: Callable[[str], datetime]) -> datetime:
    if not isinstance(text, str):
        raise _Refuse(f"{where}: must be an RFC 3339 date-time string")
    try:
        return parse_time(text)
    except ValueError as e:
        raise _Refuse(f"{where}: {str(e).removeprefix('time: ')}") from None


def _duration(raw: Any, where: str) -> timedelta:
    if not isinstance(raw, dict):
        raise _Refuse(f"{where}: must be an object with value and unit")
    value, unit = raw.get("value"), raw.get("unit")
    if (type(value) is not int and type(value) is not float) or not 0 <= value <= 1e6:
        raise _Refuse(f"{where}.value: must be a number from 0")
    if unit not in _DURATION_S:
        raise _Refuse(f"{where}.unit: {_show(unit)} is not taken; taken: {', '.join(_DURATION_S)}")
    return timedelta(seconds=value * _DURATION_S[unit])


def _fhir(when: datetime) -> str:
    text = when.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 200 or "\x00" in value:
        raise _Refuse(f"{where}: must be a string of at most 200 characters")
    return value


def _show(v: Any) -> str:
    try:
        text = repr(v)
    except ValueError:
        return f"<{type(v).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."
