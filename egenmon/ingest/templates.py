"""Mapping templates for vendor JSON, in the open-source IoMT FHIR connector's format (pure).

A region adds a vendor's payload format without code: a template set is the connector's
two files, the device content templates (``CollectionContent`` of ``JsonPathContent``
and ``CalculatedContent``) and the FHIR mapping templates (``CollectionFhir`` of
``CodeValueFhir``). A set written for the connector works unchanged for the measurement
types egenmon knows; `parse_template_set` checks it when it is added, and `evaluate`
turns a vendor payload into readings of the Reading message v1, which then go through
the ingest pipeline (normalisation, dedup, quarantine) like any device's.

How the connector's notions map onto egenmon's:

- The payload is the connector's event ``Body``: expressions see
  ``{"Body": payload, "Properties": {}, "SystemProperties": {}}``. A ``typeMatchExpression``
  selects the matched tokens; a ``JsonPathContent`` template evaluates its other
  expressions against the matched token, a ``CalculatedContent`` one against the event
  with the token added as ``matchedToken`` (JSONPath, or JmesPath where the expression
  says ``"language": "JmesPath"`` or the template's ``defaultExpressionLanguage`` does).
- The ``typeName`` binds a content template to a ``CodeValueFhir`` template, whose
  ``codes`` say which egenmon measurement it is (a LOINC or MDC code of
  `egenmon.domain.measurements`); for blood pressure each component's codes say which
  value is systolic, diastolic or mean, whatever the value is called. A code that names
  another measurement (the connector's own sample codes diastolic pressure 8867-4, which
  is heart rate) refuses the set. Mapping templates of types egenmon does not know (steps,
  heart rate variability ...) are listed as ignored, and their measurements not taken.
- The unit is the value template's (Quantity: its UCUM ``code``, else ``unit``;
  SampledData: ``unit``) and must be one egenmon accepts for the type; the connector's
  spellings of a rate per minute (``count/min``, ``beats/minute``, ``breaths/minute``)
  are read as ``/min``. A value template without a unit is refused: never a guess.
- Each measurement becomes one reading at its ``timestampExpression`` (RFC 3339 with an
  offset), which egenmon requires. ``periodInterval`` (the connector's grouping into
  SampledData series) does not apply: readings are stored one by one. The device is the
  authenticated one; ``deviceIdExpression`` and ``patientIdExpression`` are read for
  `template test` only (a payload never chooses its patient).
- ``required`` values missing (absent, null or an empty string) drop that measurement
  with a reason; a value must be a number or a string holding one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jmespath
import jmespath.exceptions

from egenmon.domain.measurements import LOINC, MDC, TYPES, MeasurementType, type_for_code
from egenmon.ingest.jsonpath import PathError, compile_path

__all__ = [
    "ContentTemplate",
    "Measurement",
    "TemplateError",
    "TemplateSet",
    "evaluate",
    "parse_template_set",
    "split_files",
    "show_sample",
]

MAX_TEMPLATES = 200
MAX_MATCHES = 1000
_RATE_SPELLINGS = frozenset(
    {"count/min", "beats/minute", "breaths/minute", "{beat}/min", "{beats}/min", "{breath}/min"}
)
_VALUE_TYPES = ("Quantity", "SampledData", "String")


class TemplateError(ValueError):
    """A template set egenmon cannot take; the text names the template and what is wrong."""


@dataclass(frozen=True)
class _Expression:
    language: str  # "JsonPath" or "JmesPath"
    text: str
    compiled: Any

    def find(self, document: Any) -> list[Any]:
        """The expression's results, never raising for any JSON document."""
        if self.language == "JsonPath":
            return list(self.compiled.find(document))
        try:
            result = self.compiled.search(document)
        except (jmespath.exceptions.JMESPathError, TypeError, ValueError, OverflowError):
            return []
        if result is None:
            return []
        return list(result) if isinstance(result, list) else [result]


@dataclass(frozen=True)
class _Value:
    name: str
    expression: _Expression
    required: bool


@dataclass(frozen=True)
class ContentTemplate:
    """One JsonPathContent or CalculatedContent template."""

    kind: str
    type_name: str
    type_match: _Expression
    timestamp: _Expression | None
    device_id: _Expression | None
    patient_id: _Expression | None
    values: tuple[_Value, ...]


@dataclass(frozen=True)
class _Mapping:
    """A CodeValueFhir template bound to an egenmon measurement type."""

    type_name: str
    measurement: str  # egenmon type name
    keys: dict[str, str]  # valueName -> the reading's key (value, systolic, ...)
    unit: str


@dataclass(frozen=True)
class TemplateSet:
    content: tuple[ContentTemplate, ...]
    mappings: dict[str, _Mapping]  # by typeName
    ignored: tuple[str, ...] = ()  # typeNames of measurements egenmon does not know

    def describe(self) -> dict[str, Any]:
        """What the set maps, for `template add` and `template list`."""
        return {
            "types": {m.type_name: m.measurement for m in self.mappings.values()},
            "ignored": list(self.ignored),
            "content_templates": len(self.content),
        }


@dataclass(frozen=True)
class Measurement:
    """What one matched token became: a reading, or why it could not be."""

    type_name: str
    reading: dict[str, Any] | None
    error: str | None = None
    device_id: Any = None
    patient_id: Any = None
    values: dict[str, Any] = field(default_factory=dict)


# --- parsing a template set ----------------------------------------------------------


def _where(kind: str, i: int, type_name: Any = None) -> str:
    name = f" ({type_name!r})" if isinstance(type_name, str) else ""
    return f"{kind} template[{i}]{name}"


def _expression(raw: Any, default: str, where: str, field_name: str) -> _Expression:
    language = default
    text = raw
    if isinstance(raw, Mapping):
        text = raw.get("value")
        language = raw.get("language", default)
    if language not in ("JsonPath", "JmesPath"):
        raise TemplateError(f"{where}: {field_name}: language must be JsonPath or JmesPath")
    if not isinstance(text, str) or not text.strip():
        raise TemplateError(f"{where}: {field_name}: an expression is needed")
    try:
        compiled: Any = compile_path(text) if language == "JsonPath" else jmespath.compile(text)
    except PathError as e:
        raise TemplateError(f"{where}: {field_name}: {e}") from None
    except jmespath.exceptions.JMESPathError as e:
        raise TemplateError(f"{where}: {field_name}: not a JmesPath expression ({e})") from None
    return _Expression(language, text, compiled)


def _required(raw: Any) -> bool:
    # The connector's samples write both true and "true".
    return raw is True or (isinstance(raw, str) and raw.strip().lower() == "true")


def _content(raw: Any, i: int) -> ContentTemplate:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("template"), Mapping):
        raise TemplateError(f"content template[{i}]: needs templateType and template")
    kind = raw.get("templateType")
    body = raw["template"]
    type_name = body.get("typeName")
    where = _where("content", i, type_name)
    if kind not in ("JsonPathContent", "CalculatedContent"):
        raise TemplateError(
            f"{where}: templateType {str(kind)[:40]!r} is not supported (JsonPathContent, "
            "CalculatedContent)"
        )
    if not isinstance(type_name, str) or not type_name:
        raise TemplateError(f"{where}: typeName is required")
    default = "JsonPath"
    if kind == "CalculatedContent":
        default = body.get("defaultExpressionLanguage", "JsonPath")
        if default not in ("JsonPath", "JmesPath"):
            raise TemplateError(f"{where}: defaultExpressionLanguage must be JsonPath or JmesPath")
    elif any(isinstance(body.get(k), Mapping) for k in body):
        raise TemplateError(f"{where}: a JsonPathContent template takes JSONPath strings only")

    def expr(name: str, required: bool = False) -> _Expression | None:
        if body.get(name) is None:
            if required:
                raise TemplateError(f"{where}: {name} is required")
            return None
        return _expression(body[name], default, where, name)

    type_match = expr("typeMatchExpression", required=True)
    assert type_match is not None
    timestamp = expr("timestampExpression")
    if timestamp is None:
        raise TemplateError(
            f"{where}: timestampExpression is required (egenmon stores each measurement at "
            "the time it was taken)"
        )
    values_raw = body.get("values")
    if not isinstance(values_raw, list) or not values_raw:
        raise TemplateError(f"{where}: values must list at least one value")
    values = []
    for j, v in enumerate(values_raw):
        if not isinstance(v, Mapping) or not isinstance(v.get("valueName"), str):
            raise TemplateError(f"{where}: values[{j}] needs a valueName")
        e = _expression(v.get("valueExpression"), default, where, f"values[{j}].valueExpression")
        values.append(_Value(v["valueName"], e, _required(v.get("required"))))
    return ContentTemplate(
        kind,
        type_name,
        type_match,
        timestamp,
        expr("deviceIdExpression"),
        expr("patientIdExpression"),
        tuple(values),
    )


def _codes(raw: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise TemplateError(f"{where}: codes must list at least one code")
    out = []
    for c in raw:
        if not isinstance(c, Mapping) or not isinstance(c.get("code"), str):
            raise TemplateError(f"{where}: each code needs a code and a system")
        out.append((str(c.get("system", "")), c["code"]))
    return out


def _types_of(codes: Sequence[tuple[str, str]]) -> set[str]:
    return {
        t for system, code in codes if system in (LOINC, MDC)
        for t in [type_for_code(code, system)] if t is not None
    }  # fmt: skip


def _unit(value: Mapping[str, Any], t: MeasurementType, where: str) -> str:
    value_type = value.get("valueType")
    if not isinstance(value_type, str) or value_type.lower() not in {
        v.lower() for v in _VALUE_TYPES
    }:
        raise TemplateError(
            f"{where}: valueType {str(value_type)[:40]!r} cannot hold a {t.name} "
            f"({', '.join(_VALUE_TYPES)})"
        )
    unit = value.get("unit")
    if value_type.lower() == "quantity" and isinstance(value.get("code"), str):
        unit = value["code"]
    if not isinstance(unit, str) or not unit:
        raise TemplateError(
            f"{where}: no unit; egenmon never guesses one (accepted for {t.name}: "
            f"{', '.join(t.units)})"
        )
    if unit in t.units:
        return unit
    if unit in _RATE_SPELLINGS and t.unit == "/min":
        return "/min"
    raise TemplateError(
        f"{where}: unit {unit[:40]!r} is not one egenmon accepts for {t.name} "
        f"({', '.join(t.units)})"
    )


def _value_name(value: Any, where: str) -> tuple[Mapping[str, Any], str]:
    if not isinstance(value, Mapping) or not isinstance(value.get("valueName"), str):
        raise TemplateError(f"{where}: value needs a valueName")
    return value, value["valueName"]


def _mapping(raw: Any, i: int) -> _Mapping | str:
    """The mapping, or the typeName of a measurement egenmon does not know."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("template"), Mapping):
        raise TemplateError(f"FHIR template[{i}]: needs templateType and template")
    body = raw["template"]
    type_name = body.get("typeName")
    where = _where("FHIR", i, type_name)
    if raw.get("templateType") != "CodeValueFhir":
        raise TemplateError(f"{where}: templateType must be CodeValueFhir")
    if not isinstance(type_name, str) or not type_name:
        raise TemplateError(f"{where}: typeName is required")
    codes = _codes(body.get("codes"), f"{where}: codes")
    found = _types_of(codes)
    if not found:
        return type_name
    if len(found) > 1:
        raise TemplateError(f"{where}: codes name different measurements ({', '.join(found)})")
    t = TYPES[found.pop()]
    shown = ", ".join(f"{s}|{c}" for s, c in codes)
    if not t.is_panel:
        if body.get("components"):
            raise TemplateError(f"{where}: {t.name} has one value, not components")
        value, name = _value_name(body.get("value"), f"{where}: value")
        return _Mapping(type_name, t.name, {name: "value"}, _unit(value, t, f"{where}: value"))
    comps = body.get("components")
    if body.get("value") is not None or not isinstance(comps, list) or not comps:
        raise TemplateError(f"{where}: {t.name} ({shown}) maps its values as components")
    keys: dict[str, str] = {}
    units: set[str] = set()
    for j, comp in enumerate(comps):
        cwhere = f"{where}: components[{j}]"
        if not isinstance(comp, Mapping):
            raise TemplateError(f"{cwhere}: must be an object")
        ccodes = _codes(comp.get("codes"), f"{cwhere}.codes")
        known = {(LOINC, c.loinc): c.name for c in t.components}
        known |= {(MDC, c.mdc): c.name for c in t.components}
        names = {known[c] for c in ccodes if c in known}
        others = _types_of(ccodes) - {t.name}
        wrong = [f"{s}|{c}" for s, c in ccodes if s in (LOINC, MDC) and (s, c) not in known]
        if others or wrong or len(names) != 1:
            named = f" (that is {', '.join(sorted(others))})" if others else ""
            raise TemplateError(
                f"{cwhere}: code {', '.join(wrong) or 'none'}{named}: not a component of "
                f"{t.name} ("
                + ", ".join(f"{c.name} {c.loinc} or MDC {c.mdc}" for c in t.components)
                + ")"
            )
        value, name = _value_name(comp.get("value"), f"{cwhere}.value")
        key = names.pop()
        if key in keys.values():
            raise TemplateError(f"{cwhere}: a second {key} component")
        keys[name] = key
        units.add(_unit(value, t, f"{cwhere}.value"))
    missing = [c.name for c in t.components if c.required and c.name not in keys.values()]
    if missing:
        raise TemplateError(f"{where}: {t.name} needs components {', '.join(missing)}")
    if len(units) > 1:
        raise TemplateError(f"{where}: the components use different units")
    return _Mapping(type_name, t.name, keys, units.pop())


def _collection(raw: Any, kind: str, what: str) -> list[Any]:
    if not isinstance(raw, Mapping) or raw.get("templateType") != kind:
        raise TemplateError(f"{what}: must be a {kind} template (templateType {kind!r})")
    items = raw.get("template")
    if not isinstance(items, list):
        raise TemplateError(f"{what}: template must be a list")
    if len(items) > MAX_TEMPLATES:
        raise TemplateError(f"{what}: at most {MAX_TEMPLATES} templates")
    return items


def parse_template_set(content: Any, fhir: Any) -> TemplateSet:
    """Check a device content template and a FHIR mapping template; TemplateError if wrong.

    The set must map at least one measurement egenmon knows, and every content template
    of such a type must have its mapping."""
    items = _collection(content, "CollectionContent", "device content template")
    fhir_items = _collection(fhir, "CollectionFhir", "FHIR mapping template")
    mappings: dict[str, _Mapping] = {}
    ignored: list[str] = []
    for i, raw in enumerate(fhir_items):
        m = _mapping(raw, i)
        if isinstance(m, str):
            ignored.append(m)
        elif m.type_name in mappings:
            raise TemplateError(f"FHIR template[{i}]: typeName {m.type_name!r} mapped twice")
        else:
            mappings[m.type_name] = m
    if not mappings:
        raise TemplateError(
            "the FHIR mapping template maps no measurement egenmon knows "
            f"({', '.join(sorted(TYPES))}, by their LOINC or MDC codes)"
        )
    templates = []
    for i, raw in enumerate(items):
        t = _content(raw, i)
        if t.type_name in mappings:
            m = mappings[t.type_name]
            names = {v.name for v in t.values}
            unbound = sorted(set(m.keys) - names)
            if unbound:
                raise TemplateError(
                    f"{_where('content', i, t.type_name)}: no value named "
                    f"{', '.join(unbound)} for the FHIR mapping"
                )
            templates.append(t)
        elif t.type_name not in ignored:
            ignored.append(t.type_name)
    if not templates:
        raise TemplateError("no device content template has a typeName the FHIR mapping maps")
    return TemplateSet(tuple(templates), mappings, tuple(dict.fromkeys(ignored)))


# --- evaluating a payload ------------------------------------------------------------


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    try:
        if isinstance(v, int | float):
            f = float(v)
        elif isinstance(v, str) and 0 < len(v) <= 40:
            f = float(v.strip())
        else:
            return None
    except (ValueError, OverflowError):  # not a number, or an integer no float can hold
        return None
    return f if math.isfinite(f) else None


def _first(expr: _Expression | None, doc: Any) -> Any:
    if expr is None:
        return None
    found = expr.find(doc)
    return found[0] if found else None


def _scalar(v: Any) -> Any:
    return v if isinstance(v, str | int | float | bool) or v is None else None


def _measure(t: ContentTemplate, m: _Mapping, token: Any, event: Any) -> Measurement:
    doc = token if t.kind == "JsonPathContent" else {**event, "matchedToken": token}
    device = _scalar(_first(t.device_id, doc))
    patient = _scalar(_first(t.patient_id, doc))
    time = _first(t.timestamp, doc)
    values: dict[str, Any] = {}
    reading: dict[str, Any] = {"type": m.measurement}
    problems: list[str] = []
    for v in t.values:
        found = _first(v.expression, doc)
        if found is None or found == "":
            if v.required:
                problems.append(f"{v.name}: required, not in the payload")
            continue
        values[v.name] = _scalar(found)
        key = m.keys.get(v.name)
        if key is None:
            continue
        number = _number(found)
        if number is None:
            problems.append(f"{v.name}: not a number")
            continue
        reading[key] = int(number) if number.is_integer() else number
    if not isinstance(time, str):
        problems.append("timestamp: not in the payload, or not a string")
    missing = [k for k in m.keys.values() if k not in reading and k != "mean"]
    if not problems and missing:
        problems.append(f"no value for {', '.join(missing)}")
    if problems:
        return Measurement(t.type_name, None, "; ".join(problems), device, patient, values)
    reading["time"] = time
    reading["unit"] = m.unit
    return Measurement(t.type_name, reading, None, device, patient, values)


def evaluate(templates: TemplateSet, payload: Any) -> list[Measurement]:
    """Every measurement the templates find in a vendor payload (parsed JSON), in order.

    Never raises for any JSON value: what cannot be mapped is a Measurement with an error.
    At most MAX_MATCHES measurements (the rest is reported as one error)."""
    event = {"Body": payload, "Properties": {}, "SystemProperties": {}}
    out: list[Measurement] = []
    for t in templates.content:
        m = templates.mappings[t.type_name]
        for token in t.type_match.find(event):
            if len(out) >= MAX_MATCHES:
                out.append(Measurement(t.type_name, None, f"more than {MAX_MATCHES} measurements"))
                return out
            out.append(_measure(t, m, token, event))
    return out


def split_files(first: Any, second: Any = None) -> tuple[Any, Any]:
    """(device content, FHIR mapping) from the connector's two files, or from one object
    holding both under their file names (``devicecontent`` and ``fhirmapping``)."""
    if second is not None:
        return first, second
    if isinstance(first, Mapping) and "devicecontent" in first and "fhirmapping" in first:
        return first["devicecontent"], first["fhirmapping"]
    raise TemplateError(
        "give the device content template and the FHIR mapping template: two files, or one "
        'object {"devicecontent": ..., "fhirmapping": ...}'
    )


def show_sample(templates: TemplateSet, payload: Any) -> dict[str, Any]:
    """What a sample payload becomes (`egenmon template test`)."""
    found = evaluate(templates, payload)
    return {
        "readings": [m.reading for m in found if m.reading is not None],
        "measurements": [
            {
                "type_name": m.type_name,
                "reading": m.reading,
                "error": m.error,
                "device_id": m.device_id,
                "patient_id": m.patient_id,
                "values": m.values,
            }
            for m in found
        ],
        **templates.describe(),
    }
