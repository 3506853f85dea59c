"""Stored rows to FHIR R4 JSON, as plain dicts (fhir.resources stays out of the hot path).

Observations follow the R4 vital-signs profiles (http://hl7.org/fhir/observation-vitalsigns):
category vital-signs, the profile's LOINC code plus the IEEE 11073 MDC code as a second
coding, UCUM units, subject, device, effectiveDateTime, performer the patient
(self-measured), blood pressure as the 85354-9 panel with systolic and diastolic
components. Capillary glucose is a laboratory observation, not a vital sign: category
`laboratory` and no vital-signs profile.

Decisions a client may rely on:

- `identifier[0]` is ``{"system": "urn:egenmon:dedup", "value": <dedup key>}``; the dedup
  key holds the device id and the reading's id or type and time, never a personnummer.
- Whether the patient was on supplemental oxygen (NEWS2's "air or oxygen") is the
  extension ``https://egenmon.example.org/fhir/StructureDefinition/on-oxygen`` with
  `valueBoolean` (true: on oxygen, false: on air), present only when it was reported.
- Times are UTC instants with ``Z``. A reading measured over an interval (an Open mHealth
  time_interval) is served with `effectivePeriod` instead of `effectiveDateTime`.
- Content an integrator posted that the columns do not hold (the readings row's
  `extra`, see `egenmon.fhir.observation_in`) is merged back: elements we do not
  render are added as posted; lists gain the posted items (a Coding, CodeableConcept,
  component or Identifier naming the same code or identifier as one of ours is merged
  into ours); where a value conflicts with a column, the column wins.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from egenmon.domain.ids import observation_id
from egenmon.domain.measurements import CATEGORY_SYSTEM, LOINC, MDC, TYPES, UCUM, MeasurementType
from egenmon.domain.readings import entered_source

__all__ = [
    "ALERT_RULE_SYSTEM",
    "DEDUP_SYSTEM",
    "DEVICE_ID_SYSTEM",
    "FLAG_STATUS",
    "HSA_SYSTEM",
    "ON_OXYGEN_URL",
    "PERSONNUMMER_OID",
    "PERSONNUMMER_SYSTEM",
    "SAMORDNINGSNUMMER_OID",
    "SAMORDNINGSNUMMER_SYSTEM",
    "TASK_PRIORITY",
    "TASK_STATUS",
    "alert_meta",
    "content_version",
    "fhir_instant",
    "audit_action_names",
    "render_audit_event",
    "render_bundle_searchset",
    "render_device",
    "render_flag",
    "render_observation",
    "render_patient",
    "render_task",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PROJECT_NS = "https://egenmon.example.org/fhir"
DEDUP_SYSTEM = "urn:egenmon:dedup"
DEVICE_ID_SYSTEM = "urn:egenmon:device"
ON_OXYGEN_URL = f"{PROJECT_NS}/StructureDefinition/on-oxygen"
ALERT_RULE_SYSTEM = f"{PROJECT_NS}/CodeSystem/alert-rule"

# HL7 Sweden base profiles (SEBasePatient); the OIDs are accepted on input only.
PERSONNUMMER_SYSTEM = "http://electronichealth.se/identifier/personnummer"
SAMORDNINGSNUMMER_SYSTEM = "http://electronichealth.se/identifier/samordningsnummer"
PERSONNUMMER_OID = "urn:oid:1.2.752.129.2.1.3.1"
SAMORDNINGSNUMMER_OID = "urn:oid:1.2.752.129.2.1.3.3"
HSA_SYSTEM = "urn:oid:1.2.752.29.4.19"
IDENTIFIER_SYSTEMS = {
    "personnummer": PERSONNUMMER_SYSTEM,
    "samordningsnummer": SAMORDNINGSNUMMER_SYSTEM,
}

_SD = "http://hl7.org/fhir/StructureDefinition/"
VITAL_SIGNS_PROFILES = {
    "blood_pressure": _SD + "bp",
    "heart_rate": _SD + "heartrate",
    "spo2": _SD + "oxygensat",
    "body_temperature": _SD + "bodytemp",
    "body_weight": _SD + "bodyweight",
    "respiratory_rate": _SD + "resprate",
}
_POSTED_STATUSES = frozenset({"amended", "corrected", "preliminary"})
_CATEGORY_DISPLAY = {"vital-signs": "Vital Signs", "laboratory": "Laboratory"}
# LOINC codes a type carries beyond its own (types.extra_loinc), with their displays.
_EXTRA_LOINC_DISPLAY = {"59408-5": "Oxygen saturation in Arterial blood by Pulse oximetry"}
_MDC_DISPLAY = {t.mdc: t.mdc_display for t in TYPES.values()} | {
    code: display for t in TYPES.values() for code, display in t.extra_mdc
}

# Alerts as FHIR: a Flag (the deviation) and a Task (the care contact it asks for).
FLAG_STATUS = {
    "open": "active",
    "acknowledged": "active",
    "resolved": "inactive",
    "dismissed": "inactive",
}
TASK_STATUS = {
    "open": "requested",
    "acknowledged": "accepted",
    "resolved": "completed",
    "dismissed": "cancelled",
}
# http://hl7.org/fhir/request-priority: routine < urgent < asap < stat. NEWS2 "high" asks
# for an emergency response, which a home-monitoring service hands on as fast as it can
# (asap); stat is kept for a clinician to set.
TASK_PRIORITY = {"low": "routine", "medium": "urgent", "high": "asap"}
FLAG_PRIORITY_URL = "http://hl7.org/fhir/StructureDefinition/flag-priority"
_FLAG_PRIORITY = {
    "low": ("PL", "Low priority"),
    "medium": ("PM", "Medium priority"),
    "high": ("PH", "High priority"),
}
RULE_DISPLAY = {
    "threshold": "Value outside the patient's thresholds",
    "trend_weight": "Weight gain",
    "trend_bp_mean": "High home blood pressure mean",
    "spo2_drop": "Fall in oxygen saturation",
    "news2": "NEWS2 score",
    "missing_data": "Expected measurement missing",
    "device_inactive": "Device not reporting",
}


def fhir_instant(value: datetime | str) -> str:
    """A FHIR instant (UTC, with Z) from an aware datetime; a string passes through."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a FHIR instant needs a timezone-aware datetime")
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _num(value: Any, precision: int) -> int | float:
    if precision == 0:
        return int(round(float(value)))
    return round(float(value), precision)


def _ref(base: str, kind: str, ident: object) -> dict[str, str]:
    return {"reference": f"{base}{kind}/{ident}"}


def _prefix(base: str) -> str:
    return base.rstrip("/") + "/" if base else ""


def _category(category: str) -> list[dict[str, Any]]:
    display = _CATEGORY_DISPLAY.get(category, category)
    return [
        {
            "coding": [{"system": CATEGORY_SYSTEM, "code": category, "display": display}],
            "text": display,
        }
    ]


def _code(t: MeasurementType, mdc: str | None) -> dict[str, Any]:
    coding = [{"system": LOINC, "code": t.loinc, "display": t.loinc_display}]
    for extra in t.extra_loinc:
        coding.append({"system": LOINC, "code": extra, "display": _EXTRA_LOINC_DISPLAY[extra]})
    mdc = mdc if mdc in _MDC_DISPLAY else t.mdc
    coding.append({"system": MDC, "code": mdc, "display": _MDC_DISPLAY[mdc]})
    return {"coding": coding, "text": t.loinc_display}


def _quantity(value: Any, t: MeasurementType, unit: str | None) -> dict[str, Any]:
    unit = unit or t.unit
    return {
        "value": _num(value, t.value_precision),
        "unit": t.unit_display if unit == t.unit else unit,
        "system": UCUM,
        "code": unit,
    }


def render_observation(row: Mapping[str, Any], base: str = "") -> dict[str, Any]:
    """A readings row as a FHIR R4 Observation.

    `row` has the `readings` columns (time, patient_id, device_id, type, mdc, value,
    value2, value3, unit, on_oxygen, note, dedup_key, received_at, extra); `extra` may be
    a dict, JSON text or None. References are relative unless `base` (the FHIR base URL)
    is given.
    """
    t = TYPES[row["type"]]
    dedup_key = row["dedup_key"]
    received = fhir_instant(row["received_at"])
    prefix = _prefix(base)
    subject = _ref(prefix, "Patient", row["patient_id"])

    # A reading never changes once stored: version 1, last updated when it was received.
    meta: dict[str, Any] = {"versionId": "1", "lastUpdated": received}
    profile = VITAL_SIGNS_PROFILES.get(t.name)
    if profile:
        meta["profile"] = [profile]
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": observation_id(row["time"], dedup_key),
        "meta": meta,
    }
    on_oxygen = row.get("on_oxygen")
    if on_oxygen is not None:
        obs["extension"] = [{"url": ON_OXYGEN_URL, "valueBoolean": bool(on_oxygen)}]
    obs["identifier"] = [{"system": DEDUP_SYSTEM, "value": dedup_key}]
    obs["status"] = "final"
    obs["category"] = _category(t.category)
    obs["code"] = _code(t, row.get("mdc"))
    obs["subject"] = subject
    obs["effectiveDateTime"] = fhir_instant(row["time"])
    obs["issued"] = received
    entered = entered_source(dedup_key) if row.get("device_id") is None else None
    if entered is not None:
        # Entered without a device: where it came from, and the performer is who entered
        # it (kept in extra) unless the patient did.
        meta["source"] = f"urn:egenmon:source:{entered}"
    raw_extra = row.get("extra")
    if entered is None or entered == "patient-entered" or not _has_performer(raw_extra):
        obs["performer"] = [dict(subject)]
    unit = row.get("unit")
    if not t.is_panel:
        obs["valueQuantity"] = _quantity(row["value"], t, unit)
    note = row.get("note")
    if note:
        obs["note"] = [{"text": note}]
    if row.get("device_id") is not None:
        obs["device"] = _ref(prefix, "Device", row["device_id"])
    if t.is_panel:
        components = []
        for comp, column in zip(t.components, ("value", "value2", "value3"), strict=False):
            value = row.get(column)
            if value is None:
                continue
            components.append(
                {
                    "code": {
                        "coding": [
                            {"system": LOINC, "code": comp.loinc, "display": comp.loinc_display},
                            {"system": MDC, "code": comp.mdc, "display": comp.mdc_display},
                        ],
                        "text": comp.loinc_display,
                    },
                    "valueQuantity": _quantity(value, t, unit),
                }
            )
        obs["component"] = components
    extra = row.get("extra")
    if extra:
        if isinstance(extra, str | bytes):
            extra = orjson.loads(extra)
        extra = dict(extra)
        # A posted status other than final is kept in extra and served as posted.
        if extra.get("status") in _POSTED_STATUSES:
            obs["status"] = extra["status"]
        if isinstance(extra.get("issued"), str):
            obs["issued"] = extra.pop("issued")
        _posted_effective(obs, extra, row["time"])
        code = extra.get("code")
        if isinstance(code, Mapping) and isinstance(code.get("text"), str):
            extra["code"] = {k: v for k, v in code.items() if k != "text"}
            obs["code"]["text"] = code["text"]
        notes = extra.get("note")
        if isinstance(notes, list) and notes and (not note or notes[0].get("text") == note):
            # Every posted note whole (the first one's text is the note column); rows
            # stored before notes were kept whole hold only the further notes.
            obs["note"] = _copy(extra.pop("note"))
        merge_extra(obs, extra)
        if "effectivePeriod" in extra:
            # Measured over an interval (Open mHealth): effective[x] is the period, and
            # the stored time (the interval's end) is its end.
            del obs["effectiveDateTime"]
    return obs


def _has_performer(extra: Any) -> bool:
    if isinstance(extra, str | bytes):
        extra = orjson.loads(extra)
    return isinstance(extra, Mapping) and bool(extra.get("performer"))


def _posted_effective(obs: dict[str, Any], extra: dict[str, Any], time: datetime) -> None:
    """The measurement time in the form it was posted in: a Period (as kept; without a
    start, the time column) or an instant; otherwise effectiveDateTime stays."""
    period = extra.pop("effectivePeriod", None)
    instant = extra.pop("effectiveInstant", None)
    if isinstance(period, Mapping):
        del obs["effectiveDateTime"]
        # The period as kept; the time column is its start (FHIR in) or its end (an Open
        # mHealth interval), so a kept start wins over the column.
        obs["effectivePeriod"] = {"start": fhir_instant(time), **_copy(period)}
    elif instant is not None:
        del obs["effectiveDateTime"]
        obs["effectiveInstant"] = fhir_instant(time)


# --- merging posted content back ------------------------------------------------------


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def _codings(concept: Any) -> set[tuple[Any, Any]]:
    if not isinstance(concept, Mapping) or not isinstance(concept.get("coding"), list):
        return set()
    return {
        (c.get("system"), c.get("code"))
        for c in concept["coding"]
        if isinstance(c, Mapping) and c.get("code") is not None
    }


def _same(ours: Mapping[str, Any], theirs: Mapping[str, Any]) -> bool:
    """Whether two list items name the same thing, so `theirs` merges into `ours`."""
    if "code" in ours and "code" in theirs and "system" in ours and "system" in theirs:
        return (ours["system"], ours["code"]) == (theirs["system"], theirs["code"])  # Coding
    if "coding" in ours and "coding" in theirs:  # CodeableConcept
        return bool(_codings(ours) & _codings(theirs))
    if isinstance(ours.get("code"), Mapping) and isinstance(theirs.get("code"), Mapping):
        return bool(_codings(ours["code"]) & _codings(theirs["code"]))  # component
    if "value" in ours and "value" in theirs and "system" in ours and "system" in theirs:
        return (ours["system"], ours["value"]) == (theirs["system"], theirs["value"])
    return False


def _merge_list(ours: list[Any], theirs: Sequence[Any]) -> None:
    for item in theirs:
        for existing in ours:
            if existing == item:
                break
            if isinstance(existing, dict) and isinstance(item, Mapping) and _same(existing, item):
                merge_extra(existing, item)
                break
        else:
            ours.append(_copy(item))


def merge_extra(ours: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Merge posted content into a rendered resource in place; ours wins on conflicts."""
    for key, value in extra.items():
        if key not in ours:
            ours[key] = _copy(value)
            continue
        current = ours[key]
        if isinstance(current, dict) and isinstance(value, Mapping):
            merge_extra(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            _merge_list(current, value)
    return ours


# --- Bundle, Patient, Device ----------------------------------------------------------


def render_bundle_searchset(
    entries: Iterable[Mapping[str, Any]],
    total: int | None = None,
    links: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    base: str = "",
    outcome: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A searchset Bundle of the matched resources.

    `links` maps relation (self, first, previous, next, last) to URL in the order given;
    `fullUrl` is set when `base` (the absolute FHIR base URL) is given; `outcome` (an
    OperationOutcome, e.g. warnings about ignored parameters) is added with search mode
    `outcome`.
    """
    prefix = _prefix(base)
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        bundle["total"] = total
    pairs = links.items() if isinstance(links, Mapping) else links
    link = [{"relation": rel, "url": url} for rel, url in pairs]
    if link:
        bundle["link"] = link
    out = []
    for resource in entries:
        entry: dict[str, Any] = {}
        if prefix:
            entry["fullUrl"] = f"{prefix}{resource['resourceType']}/{resource['id']}"
        entry["resource"] = resource
        entry["search"] = {"mode": "match"}
        out.append(entry)
    if outcome is not None:
        out.append({"resource": outcome, "search": {"mode": "outcome"}})
    if out:
        bundle["entry"] = out
    return bundle


def render_patient(row: Mapping[str, Any]) -> dict[str, Any]:
    """A patients row as a FHIR Patient.

    Keys: id, personnummer (12 digits), identifier_kind (personnummer or
    samordningsnummer), display_name (optional), care_unit_name and care_unit_hsa_id
    (optional, the managing care unit).
    """
    system = IDENTIFIER_SYSTEMS[row["identifier_kind"]]
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": str(row["id"]),
        "identifier": [{"use": "official", "system": system, "value": row["personnummer"]}],
        "active": True,
    }
    if row.get("display_name"):
        patient["name"] = [{"text": row["display_name"]}]
    org: dict[str, Any] = {}
    if row.get("care_unit_hsa_id"):
        org["identifier"] = {"system": HSA_SYSTEM, "value": row["care_unit_hsa_id"]}
    if row.get("care_unit_name"):
        org["display"] = row["care_unit_name"]
    if org:
        patient["managingOrganization"] = org
    return _with_version(patient)


def render_device(row: Mapping[str, Any], base: str = "") -> dict[str, Any]:
    """A devices row as a FHIR Device.

    Keys: id, model, manufacturer (optional), status (active or revoked), patient_id
    (optional: the patient the device is bound to now).
    """
    device: dict[str, Any] = {
        "resourceType": "Device",
        "id": row["id"],
        "identifier": [{"system": DEVICE_ID_SYSTEM, "value": row["id"]}],
        "status": "active" if row.get("status", "active") == "active" else "inactive",
    }
    for ident in row.get("identifiers") or ():  # "system|value" (PHD system ids), issue 17
        system, _, value = ident.partition("|")
        device["identifier"].append({"system": system, "value": value})
    if row.get("manufacturer"):
        device["manufacturer"] = row["manufacturer"]
    if row.get("model"):
        device["deviceName"] = [{"name": row["model"], "type": "model-name"}]
        device["modelNumber"] = row["model"]
    if row.get("patient_id"):
        device["patient"] = _ref(_prefix(base), "Patient", row["patient_id"])
    return _with_version(device)


# --- alerts: Flag and Task ------------------------------------------------------------


def alert_meta(alert: Mapping[str, Any]) -> dict[str, str]:
    """An alert's Flag and Task change with it: the version is its update time (in
    microseconds since 1970, so a later change is a larger number), as is lastUpdated."""
    updated = alert["updated_at"]
    if not isinstance(updated, datetime):
        updated = datetime.fromisoformat(str(updated).replace("Z", "+00:00"))
    micros = (updated - _EPOCH) // timedelta(microseconds=1)
    return {"versionId": str(micros), "lastUpdated": fhir_instant(updated)}


def content_version(resource: Mapping[str, Any]) -> str:
    """A version id for a resource the store keeps no update time for (Patient, Device):
    a digest of its content, so any change to what is served is a new version."""
    body = {k: v for k, v in resource.items() if k != "meta"}
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def _with_version(resource: dict[str, Any]) -> dict[str, Any]:
    resource["meta"] = {"versionId": content_version(resource)}
    return resource


def _rule_coding(rule: str) -> dict[str, str]:
    return {"system": ALERT_RULE_SYSTEM, "code": rule, "display": RULE_DISPLAY.get(rule, rule)}


def render_flag(alert: Mapping[str, Any], base: str = "") -> dict[str, Any]:
    """An alert as a FHIR Flag: the deviation, shown while the alert is open.

    Keys: id, patient_id, rule, severity (low, medium, high), status (open,
    acknowledged, resolved, dismissed), opened_at, updated_at (datetimes), summary
    (optional text). Open and acknowledged alerts are active flags; a resolved or
    dismissed one is inactive and its period ends at updated_at. The severity is the
    standard flag-priority extension (PL, PM, PH).
    """
    status = FLAG_STATUS[alert["status"]]
    code, display = _FLAG_PRIORITY[alert["severity"]]
    period = {"start": fhir_instant(alert["opened_at"])}
    if status == "inactive":
        period["end"] = fhir_instant(alert["updated_at"])
    rule = alert["rule"]
    return {
        "resourceType": "Flag",
        "id": str(alert["id"]),
        "meta": alert_meta(alert),
        "extension": [
            {
                "url": FLAG_PRIORITY_URL,
                "valueCodeableConcept": {
                    "coding": [
                        {
                            "system": "http://hl7.org/fhir/flag-priority-code",
                            "code": code,
                            "display": display,
                        }
                    ]
                },
            }
        ],
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/flag-category",
                        "code": "clinical",
                        "display": "Clinical",
                    }
                ]
            }
        ],
        "code": {
            "coding": [_rule_coding(rule)],
            "text": alert.get("summary") or RULE_DISPLAY.get(rule, rule),
        },
        "subject": _ref(_prefix(base), "Patient", alert["patient_id"]),
        "period": period,
    }


def render_task(alert: Mapping[str, Any], base: str = "") -> dict[str, Any]:
    """An alert as a FHIR Task: the care contact it asks for.

    Keys: those of `render_flag`, plus due_at (optional datetime: the contact should
    happen by then, as `restriction.period.end`) and evidence (optional list of
    Observation ids, as `input`). Status: open → requested, acknowledged → accepted,
    resolved → completed, dismissed → cancelled; priority: low → routine, medium →
    urgent, high → asap. `focus` is the alert's Flag.
    """
    prefix = _prefix(base)
    rule = alert["rule"]
    reason = alert.get("summary") or RULE_DISPLAY.get(rule, rule)
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": str(alert["id"]),
        "meta": alert_meta(alert),
        "status": TASK_STATUS[alert["status"]],
        "businessStatus": {"text": alert["status"]},
        "intent": "order",
        "priority": TASK_PRIORITY[alert["severity"]],
        "code": {"text": "Care contact"},
        "description": reason,
        "focus": _ref(prefix, "Flag", alert["id"]),
        "for": _ref(prefix, "Patient", alert["patient_id"]),
        "authoredOn": fhir_instant(alert["opened_at"]),
        "lastModified": fhir_instant(alert["updated_at"]),
    }
    if alert.get("due_at") is not None:
        task["restriction"] = {"period": {"end": fhir_instant(alert["due_at"])}}
    task["reasonCode"] = {"coding": [_rule_coding(rule)], "text": reason}
    evidence = alert.get("evidence") or ()
    if evidence:
        task["input"] = [
            {"type": {"text": "evidence"}, "valueReference": _ref(prefix, "Observation", oid)}
            for oid in evidence
        ]
    return task


# --- AuditEvent (the access log) ------------------------------------------------------

# The FHIR action code of each stored action (a "-refused" suffix is the same action,
# refused); anything else egenmon logs (an app authorized, an export) is E, execute.
AUDIT_ACTION_CODES = {"create": "C", "read": "R", "update": "U", "delete": "D", "search": "E"}
_RESTFUL = {
    "create": "create",
    "read": "read",
    "update": "update",
    "delete": "delete",
    "search": "search-type",
}
ACTOR_SYSTEM = "urn:egenmon:actor"
ROLE_SYSTEM = "urn:egenmon:role"
ACTION_SYSTEM = "urn:egenmon:access-log-action"
CARE_UNIT_EXTENSION = "https://egenmon.example.org/fhir/StructureDefinition/care-unit"
_T = "http://terminology.hl7.org/CodeSystem/"


def audit_action_names(codes: Iterable[str]) -> tuple[str, ...]:
    """The stored action names behind FHIR action codes, refused ones included."""
    names = [n for n, c in AUDIT_ACTION_CODES.items() if c in codes]
    return tuple(x for n in names for x in (n, f"{n}-refused"))


def render_audit_event(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An access-log entry as a FHIR R4 AuditEvent.

    Keys: id, at, actor, role, care_unit_id, care_unit_hsa_id, care_unit_name, action,
    resource, patient_ids, detail. A refused attempt ("...-refused", or a detail whose
    outcome is refused) has outcome 4 (minor failure) and says why.
    """
    action = str(entry["action"])
    detail = entry.get("detail") or {}
    refused = action.endswith("-refused") or (
        isinstance(detail, dict) and detail.get("outcome") == "refused"
    )
    base = action.removesuffix("-refused")
    subtype = (
        {"system": "http://hl7.org/fhir/restful-interaction", "code": _RESTFUL[base]}
        if base in _RESTFUL
        else {"system": ACTION_SYSTEM, "code": base}
    )
    role = str(entry["role"])
    agent: dict[str, Any] = {
        "type": {
            "coding": [
                {
                    "system": _T + "extra-security-role-type",
                    "code": "dataprocessor" if role == "integrator" else "humanuser",
                }
            ]
        },
        "role": [{"coding": [{"system": ROLE_SYSTEM, "code": role}]}],
        "who": {
            "identifier": {"system": ACTOR_SYSTEM, "value": str(entry["actor"])},
            "display": str(entry["actor"]),
        },
        "requestor": True,
    }
    if entry.get("care_unit_id"):
        unit: dict[str, Any] = {"system": HSA_SYSTEM, "value": entry.get("care_unit_hsa_id")}
        if not unit["value"]:
            unit = {"system": "urn:egenmon:care-unit", "value": str(entry["care_unit_id"])}
        agent["extension"] = [{"url": CARE_UNIT_EXTENSION, "valueIdentifier": unit}]
    entities: list[dict[str, Any]] = [
        {
            "what": {"reference": f"Patient/{pid}"},
            "type": {"system": _T + "audit-entity-type", "code": "1", "display": "Person"},
            "role": {"system": _T + "object-role", "code": "1", "display": "Patient"},
        }
        for pid in entry.get("patient_ids") or []
    ]
    accessed: dict[str, Any] = {
        "what": {"display": str(entry["resource"])},
        "type": {"system": _T + "audit-entity-type", "code": "2", "display": "System Object"},
    }
    params = detail.get("params") if isinstance(detail, dict) else None
    if isinstance(params, list) and params:
        accessed["detail"] = [{"type": "params", "valueString": ",".join(map(str, params))}]
    entities.append(accessed)
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(entry["id"]),
        "type": {"system": _T + "audit-event-type", "code": "rest", "display": "RESTful Operation"},
        "subtype": [subtype],
        "action": AUDIT_ACTION_CODES.get(base, "E"),
        "recorded": fhir_instant(entry["at"]),
        "outcome": "4" if refused else "0",
    }
    if refused:
        status = detail.get("status") if isinstance(detail, dict) else None
        reason = detail.get("reason") if isinstance(detail, dict) else None
        event["outcomeDesc"] = (
            "refused" + (f" ({status})" if status else "") + (f": {reason}" if reason else "")
        )
    event["agent"] = [agent]
    event["source"] = {
        "observer": {"display": "egenmon"},
        "type": [
            {"system": _T + "security-source-type", "code": "4", "display": "Application Server"}
        ],
    }
    event["entity"] = entities
    return event
