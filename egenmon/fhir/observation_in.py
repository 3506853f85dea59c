"""A posted FHIR Observation to a reading, plus the content the columns cannot hold.

Pure: no database, no normalisation. The FHIR ingest route hands `reading` to the
shared normaliser (units, limits, dedup key) with the patient and device found here,
and stores `extra` in the row's jsonb column, where `egenmon.fhir.render` merges it back
into what is served.

First the JSON is checked strictly against FHIR JSON's types (`egenmon.fhir.strict`:
``"value": "72"``, ``"issued": 12345``, ``"valueBoolean": "true"`` are refused, never
coerced), then validated with the fhir.resources R4B model (formats such as an instant
without seconds, unknown elements, cardinality).

What is taken into columns (everything else is kept in `extra` as posted, and served
back by `egenmon.fhir.render`):

- the type, from any code of the accepted list (`egenmon.domain.measurements.ACCEPTED_CODES`:
  the variants gateways send map to one type, served with the canonical coding first; a
  glucose code of the mass kind must carry mg/dL, of the molar kind mmol/L, and a mass code
  is not served back beside the mmol/L value; other codings are kept);
- the value(s) and unit from `valueQuantity` (blood pressure: the 85354-9 panel's
  systolic, diastolic and optional mean `component`s; other components are kept, and so
  is what a recognised component or quantity carries besides its code, value and unit);
- the time from `effectiveDateTime`, `effectiveInstant` or `effectivePeriod.start`,
  which must hold a time with an offset; a period (its end too) or an instant is kept
  and served back in that form;
- the reading id from the first identifier (``system|value``, or the value alone); every
  posted identifier is also kept, so the integrator's own identifiers are served back;
- the note from the first `note`'s text; when there are several notes, or a note has
  more than text (its `time`, `authorString`, ...), every note is kept whole;
- on_oxygen from the extension `egenmon.fhir.render.ON_OXYGEN_URL` (others are kept);
- `subject` (``Patient/<uuid>``) and `device` (``Device/<id>``), whose other elements
  (display, identifier) are kept; `status` final (amended, corrected and preliminary are
  accepted and kept); `category` (the type decides it; a posted category other than the
  type's own is kept); `performer` entries naming the subject (others are kept);
  `issued` (kept and served as posted); `meta` (its `tag`, `security` and `source` are
  kept; versionId and lastUpdated are the server's, and a `profile` claim is not taken
  over: the server names the profiles what it serves follows); `id` (the server assigns
  ids); a primitive's `_element` (id and extensions) is kept.

What changes in form only: times are served in UTC; a quantity's display `unit` and a
known coding's `display` are egenmon's own (a posted `code.text` is served as posted); a
value is converted to the type's canonical UCUM unit and rounded to its precision (as
for device readings); a quantity in another system than UCUM is taken by its `unit`.

Refused: what fails FHIR validation (400: wrong JSON types, formats, a period ending
before it starts); a code egenmon does not know, no value, a `valueQuantity.comparator`,
a partial or missing time, a missing or foreign subject or device, a status that is not
a result, `modifierExtension` and `implicitRules` (both may change the meaning in ways
egenmon cannot honour) (422); a `dataAbsentReason` beside a value (invariant obs-6, 400).
Every error names the element.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from egenmon.domain.measurements import (
    ACCEPTED_CODES,
    CATEGORY_SYSTEM,
    LOINC,
    MDC,
    TYPES,
    UCUM,
    AcceptedCode,
    MeasurementType,
    accepted_code,
    accepted_codes_text,
    codes_of,
    refused_reason,
    unit_fits_code,
)
from egenmon.fhir.outcome import bad_request, unprocessable
from egenmon.fhir.render import ON_OXYGEN_URL
from egenmon.fhir.strict import primitive_errors
from egenmon.jsonbody import quote_key

__all__ = ["PostedObservation", "observation_to_reading"]

_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_DEVICE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_RESULT_STATUSES = frozenset({"final", "amended", "corrected", "preliminary"})
_OTHER_STATUSES = frozenset({"registered", "cancelled", "entered-in-error", "unknown"})
_TAKEN = frozenset(
    {
        "resourceType", "id", "meta", "status", "category", "code", "subject", "device",
        "effectiveDateTime", "effectiveInstant", "effectivePeriod", "issued",
        "valueQuantity", "component", "identifier", "note", "extension", "performer",
    }
)  # fmt: skip
_MAX_ERRORS = 5


@dataclass(frozen=True)
class PostedObservation:
    """What a posted Observation becomes.

    `reading` is shaped like a reading of the Reading message v1: type, time (RFC 3339
    with offset), value or systolic/diastolic/mean, unit (as posted: the normaliser
    converts), and id, note, on_oxygen when given. `mdc` is the MDC code the poster
    used when it is one the type knows (a heart rate may come from a cuff or an
    oximeter). `extra` is None when nothing beyond the columns was posted.
    """

    reading: dict[str, Any]
    patient_id: uuid.UUID
    device_id: str | None  # None: posted without a device
    extra: dict[str, Any] | None
    mdc: str | None = None


def _element_path(loc: tuple[int | str, ...]) -> str:
    path = "Observation"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:  # a key from the body: control characters escaped, a long one cut short
            path += (
                f".{part}"
                if str(part).isprintable() and len(str(part)) <= 60
                else ("." + quote_key(str(part)))
            )
    return path


def _validate(resource: Any) -> Observation:
    if not isinstance(resource, Mapping):
        raise bad_request("Observation: expected a JSON object", "Observation")
    if resource.get("resourceType") != "Observation":
        raise bad_request(
            f"Observation.resourceType: expected 'Observation', got "
            f"{resource.get('resourceType')!r}",
            "Observation.resourceType",
        )
    wrong = primitive_errors(resource)
    if wrong:
        shown = wrong[:_MAX_ERRORS]
        parts = [f"{path}: {reason}" for path, reason in shown]
        if len(wrong) > _MAX_ERRORS:
            parts.append(f"and {len(wrong) - _MAX_ERRORS} more")
        raise bad_request("; ".join(parts), list(dict.fromkeys(p for p, _ in shown)))
    try:
        return Observation.model_validate(dict(resource))
    except ValidationError as exc:
        errors = exc.errors()
        parts, paths = [], []
        for err in errors[:_MAX_ERRORS]:
            path = _element_path(tuple(err["loc"]))
            msg = str(err["msg"]).removeprefix("Value error, ").split("\n")[0].strip()
            parts.append(f"{path}: {msg}")
            paths.append(path)
        more = len(errors) - _MAX_ERRORS
        if more > 0:
            parts.append(f"and {more} more")
        raise bad_request("; ".join(parts), list(dict.fromkeys(paths))) from exc


def _number(value: Decimal | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if value == value.to_integral_value() else float(value)


def _codes(concept: Any) -> list[tuple[str | None, str | None]]:
    if concept is None or not concept.coding:
        return []
    return [(c.system, c.code) for c in concept.coding]


def _type_of(obs: Observation) -> tuple[MeasurementType, str | None, list[AcceptedCode]]:
    """The type the codings name (any code of the accepted list), the MDC code to keep
    when it is one egenmon emits, and the accepted codes found (for the unit check)."""
    found: set[str] = set()
    mdc: str | None = None
    matched: list[AcceptedCode] = []
    for system, code in _codes(obs.code):
        refused = refused_reason(system, code)
        if refused is not None:
            raise unprocessable(f"Observation.code: {refused}", "Observation.code")
        accepted = accepted_code(system, code)
        if accepted is None or accepted.component is not None:
            continue
        found.add(accepted.type)
        matched.append(accepted)
        if system == MDC and accepted.canonical:
            mdc = code
    if not found:
        raise unprocessable(
            "Observation.code: no LOINC or MDC coding of a measurement egenmon holds; "
            f"accepted: {accepted_codes_text()}",
            "Observation.code",
        )
    if len(found) > 1:
        raise unprocessable(
            f"Observation.code: codings name different measurements ({', '.join(sorted(found))})",
            "Observation.code",
        )
    return TYPES[found.pop()], mdc, matched


def _check_unit(matched: list[AcceptedCode], unit: str, where: str) -> None:
    """A mass-concentration code must carry a mass unit, a molar one a molar unit: the
    same number under the other kind of code means a very different glucose."""
    for a in matched:
        if not unit_fits_code(a, unit):
            raise unprocessable(
                f"{where}.code: {a.code} ({a.display}) must be in {' or '.join(a.units)}, "
                f"not {unit!r}",
                f"{where}.code",
            )


def _unit(quantity: Any, where: str) -> str:
    if quantity.code and (quantity.system is None or quantity.system == UCUM):
        return str(quantity.code)
    if quantity.unit:
        return str(quantity.unit)
    raise unprocessable(f"{where}.code: no unit (a UCUM code or a unit)", f"{where}.code")


def _value(quantity: Any, where: str) -> tuple[int | float, str]:
    if quantity is None:
        raise unprocessable(f"{where}: no value (a valueQuantity is needed)", where)
    if quantity.comparator is not None:
        raise unprocessable(
            f"{where}.comparator: a value with a comparator is not a measurement egenmon can hold",
            f"{where}.comparator",
        )
    value = _number(quantity.value)
    if value is None:
        raise unprocessable(f"{where}.value: no value", f"{where}.value")
    return value, _unit(quantity, where)


def _time(obs: Observation) -> str:
    if obs.effectiveDateTime is not None:
        when, where = obs.effectiveDateTime, "Observation.effectiveDateTime"
    elif obs.effectiveInstant is not None:
        when, where = obs.effectiveInstant, "Observation.effectiveInstant"
    elif obs.effectivePeriod is not None and obs.effectivePeriod.start is not None:
        when, where = obs.effectivePeriod.start, "Observation.effectivePeriod.start"
    else:
        raise unprocessable(
            "Observation.effective[x]: no measurement time (effectiveDateTime, "
            "effectiveInstant or effectivePeriod.start)",
            "Observation.effective[x]",
        )
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise unprocessable(f"{where}: the time of day with an offset is needed", where)
    end = obs.effectivePeriod.end if obs.effectivePeriod is not None else None
    if isinstance(end, datetime) and end.tzinfo is not None and end < when:
        # per-1: a period's start is not after its end.
        raise bad_request(
            "Observation.effectivePeriod: the end is before the start",
            "Observation.effectivePeriod.end",
        )
    return when.isoformat()


def _reference(ref: Any, kind: str, where: str) -> str:
    text = ref.reference if ref is not None else None
    if not text:
        raise unprocessable(f"{where}: a reference {kind}/<id> is needed", where)
    head, slash, ident = str(text).partition("/")
    if head != kind or not slash:
        raise unprocessable(f"{where}: must be {kind}/<id>, not {text!r}", where)
    return ident


def _is_ours_category(category: Any, ours: str) -> bool:
    """Whether a posted category is the one the type decides (it is rendered anyway)."""
    if not isinstance(category, Mapping):
        return False
    codings = [c for c in category.get("coding") or () if isinstance(c, Mapping)]
    return (
        bool(codings)
        and all(c.get("system") == CATEGORY_SYSTEM and c.get("code") == ours for c in codings)
        and set(category) <= {"coding", "text"}
    )


def _known_coding(coding: Any, codes: set[tuple[str, str]]) -> bool:
    return isinstance(coding, Mapping) and (coding.get("system"), coding.get("code")) in codes


def _component_codes(comp: Any) -> set[tuple[str, str]]:
    return {(LOINC, comp.loinc), (MDC, comp.mdc)} | set(codes_of("blood_pressure", comp.name))


def _rest(element: Any, taken: tuple[str, ...]) -> dict[str, Any]:
    """What an object element carries beyond the keys the columns hold."""
    if not isinstance(element, Mapping):
        return {}
    return {k: v for k, v in element.items() if k not in taken}


def _whole_notes(notes: list[Any]) -> bool:
    """Whether the notes hold more than the first one's text (the note column)."""
    return len(notes) > 1 or any(isinstance(n, Mapping) and set(n) - {"text"} for n in notes)


def _extra(
    raw: Mapping[str, Any],
    t: MeasurementType,
    subject_ref: str,
    used_components: dict[int, Any],
    mdc: str | None,
) -> dict[str, Any] | None:
    extra: dict[str, Any] = {
        k: v for k, v in raw.items() if k not in _TAKEN and k != "_id"
    }  # `_x` (a primitive's id and extensions) is kept for every `x`
    meta = raw.get("meta") or {}
    kept_meta = {k: meta[k] for k in ("tag", "security", "source") if meta.get(k)}
    if kept_meta:
        extra["meta"] = kept_meta
    if raw.get("status") not in (None, "final"):
        extra["status"] = raw["status"]
    if raw.get("issued") is not None:
        extra["issued"] = raw["issued"]
    # The measurement time is the column; the form it was posted in is served back.
    if raw.get("effectivePeriod") is not None:
        extra["effectivePeriod"] = dict(raw["effectivePeriod"])
    elif raw.get("effectiveInstant") is not None:
        extra["effectiveInstant"] = raw["effectiveInstant"]
    for name in ("subject", "device"):
        rest = _rest(raw.get(name), ("reference",))
        if rest:
            extra[name] = rest
    quantity = _rest(raw.get("valueQuantity"), ("value", "unit", "system", "code"))
    if quantity:
        extra["valueQuantity"] = quantity
    categories = [c for c in raw.get("category") or () if not _is_ours_category(c, t.category)]
    if categories:
        extra["category"] = categories
    # The codings the renderer writes itself (the type's own codes; a posted variant code
    # is served back as posted, unless its property contradicts the unit served: a
    # mass-concentration glucose code beside a value in mmol/L); others are kept, and so
    # is what a rendered one carries beyond its system, code and display.
    rendered = {(LOINC, t.loinc), (MDC, mdc or t.mdc)} | {(LOINC, c) for c in t.extra_loinc}
    rendered |= {
        (a.system, a.code)
        for a in ACCEPTED_CODES
        if a.type == t.name
        and a.component is None
        and (a.canonical or not unit_fits_code(a, t.unit))
    }
    kept_codings = []
    for c in (raw.get("code") or {}).get("coding") or ():
        if not _known_coding(c, rendered):
            kept_codings.append(c)
        elif set(c) - {"system", "code", "display"}:
            kept_codings.append({k: v for k, v in c.items() if k != "display"})
    code: dict[str, Any] = {"coding": kept_codings} if kept_codings else {}
    text = (raw.get("code") or {}).get("text")
    if text is not None and text != t.loinc_display:
        code["text"] = text  # what the poster's user saw; served in place of ours
    if code:
        extra["code"] = code
    if raw.get("identifier"):
        extra["identifier"] = list(raw["identifier"])
    notes = list(raw.get("note") or ())
    if _whole_notes(notes):
        # Every note whole, the first too: its text is also the note column, and the
        # renderer serves these in its place (egenmon.fhir.render).
        extra["note"] = notes
    extensions = [e for e in raw.get("extension") or () if e.get("url") != ON_OXYGEN_URL]
    if extensions:
        extra["extension"] = extensions
    performers = [p for p in raw.get("performer") or () if p != {"reference": subject_ref}]
    if performers:
        extra["performer"] = performers
    components = []
    for i, comp in enumerate(raw.get("component") or ()):
        spec = used_components.get(i)
        if spec is None:
            components.append(comp)
            continue
        # What a recognised component carries beyond its code and value, keyed by the
        # LOINC coding that merges it back into the rendered component.
        rest = {k: v for k, v in comp.items() if k not in ("code", "valueQuantity")}
        quantity = _rest(comp.get("valueQuantity"), ("value", "unit", "system", "code"))
        if quantity:
            rest["valueQuantity"] = quantity
        codings = [
            c
            for c in (comp.get("code") or {}).get("coding") or ()
            if not _known_coding(c, _component_codes(spec))
        ]
        if rest or codings:
            rest["code"] = {"coding": [{"system": LOINC, "code": spec.loinc}, *codings]}
            components.append(rest)
    if components:
        extra["component"] = components
    return extra or None


def observation_to_reading(resource: Mapping[str, Any]) -> PostedObservation:
    """Map a posted FHIR Observation (parsed JSON) to a reading; raises FhirError."""
    obs = _validate(resource)
    if obs.modifierExtension:
        raise unprocessable(
            "Observation.modifierExtension: modifier extensions are not supported",
            "Observation.modifierExtension",
        )
    if obs.implicitRules:
        raise unprocessable(
            "Observation.implicitRules: implicit rules are not supported",
            "Observation.implicitRules",
        )
    status = str(obs.status)
    if status in _OTHER_STATUSES:
        raise unprocessable(
            f"Observation.status: {status!r} is not a result egenmon stores (final, amended, "
            "corrected or preliminary)",
            "Observation.status",
        )
    if status not in _RESULT_STATUSES:
        raise bad_request(
            f"Observation.status: {status!r} is not an observation status", "Observation.status"
        )
    t, mdc, matched = _type_of(obs)

    patient_ident = _reference(obs.subject, "Patient", "Observation.subject")
    if not _UUID_RE.fullmatch(patient_ident):
        raise unprocessable("Observation.subject: a patient id is a UUID", "Observation.subject")
    # Without a device the reading is entered (by the patient, staff or an integrator):
    # the poster's role decides its source (fhir.ingest).
    device_id: str | None = None
    if obs.device is not None:
        device_id = _reference(obs.device, "Device", "Observation.device")
        if not _DEVICE_ID_RE.fullmatch(device_id):
            raise unprocessable("Observation.device: not a device id", "Observation.device")

    # obs-6: a value and a reason for its absence contradict each other.
    if obs.dataAbsentReason is not None and (obs.valueQuantity or obs.component):
        raise bad_request(
            "Observation.dataAbsentReason: present together with a value",
            "Observation.dataAbsentReason",
        )
    reading: dict[str, Any] = {"type": t.name, "time": _time(obs)}
    used_components: dict[int, Any] = {}
    if t.is_panel:
        if obs.valueQuantity is not None:
            raise unprocessable(
                "Observation.valueQuantity: blood pressure is a panel of components, not one value",
                "Observation.valueQuantity",
            )
        units: set[str] = set()
        for spec in t.components:
            codes = _component_codes(spec)
            matches = [
                (i, comp)
                for i, comp in enumerate(obs.component or ())
                if any(code in codes for code in _codes(comp.code))
            ]
            where = f"Observation.component:{spec.name}"
            if not matches:
                if spec.required:
                    raise unprocessable(f"{where}: no {spec.name} component ({spec.loinc})", where)
                continue
            if len(matches) > 1:
                raise unprocessable(f"{where}: more than one {spec.name} component", where)
            i, comp = matches[0]
            if comp.dataAbsentReason is not None and comp.valueQuantity is not None:
                raise bad_request(
                    f"Observation.component[{i}].dataAbsentReason: present together with a value",
                    f"Observation.component[{i}].dataAbsentReason",
                )
            where = f"Observation.component[{i}].valueQuantity"
            value, unit = _value(comp.valueQuantity, where)
            reading[spec.name] = value
            units.add(unit)
            used_components[i] = spec
        if len(units) > 1:
            raise unprocessable(
                "Observation.component: the components use different units "
                f"({', '.join(sorted(units))})",
                "Observation.component",
            )
        reading["unit"] = units.pop()
    else:
        value, unit = _value(obs.valueQuantity, "Observation.valueQuantity")
        _check_unit(matched, unit, "Observation.valueQuantity")
        reading["value"] = value
        reading["unit"] = unit

    if obs.identifier:
        first = obs.identifier[0]
        if first.value:
            reading["id"] = f"{first.system}|{first.value}" if first.system else first.value
    if obs.note and obs.note[0].text:
        reading["note"] = str(obs.note[0].text)
    for ext in obs.extension or ():
        if ext.url == ON_OXYGEN_URL:
            if ext.valueBoolean is None:
                raise unprocessable(
                    f"Observation.extension: {ON_OXYGEN_URL} needs a valueBoolean",
                    "Observation.extension",
                )
            reading["on_oxygen"] = bool(ext.valueBoolean)

    subject_ref = f"Patient/{patient_ident}"
    return PostedObservation(
        reading=reading,
        patient_id=uuid.UUID(patient_ident),
        device_id=device_id,
        extra=_extra(resource, t, subject_ref, used_components, mdc),
        mdc=mdc,
    )
