"""HL7 Personal Health Device IG (STU 2) transaction Bundles: the pure translation.

A Personal Health Gateway (PHG: a phone app or a hub) uploads what its Personal Health
Devices (PHDs: a cuff, an oximeter, a scale) measured as one transaction Bundle: the
Patient, the gateway Device and the measuring Device as conditional creates on their
identifiers (``ifNoneExist``; a device's IEEE 11073 system id, an EUI-64, under
`EUI64_SYSTEM`), then Observations coded in MDC (and LOINC), categories ``phd`` and
``vital-signs``, with the `GATEWAY_EXTENSION` naming the gateway and, for stored data,
the PHD identifier (`PHD_IDENTIFIER_SYSTEM`: device-patient-time-type-...), which
egenmon takes as the dedup key because devices resend their memory on every connection.

How egenmon takes such a Bundle (`egenmon.fhir.ingest` does the I/O):

- The gateway is an egenmon device bound to the patient and authenticates with its own
  device secret; it is the credential holder. Its Device entry is matched to itself (the
  system id is recorded the first time); a system id recorded for another device is
  refused.
- The Patient entry is the gateway's patient, never created; an entry naming another
  Swedish personal identity number is refused.
- A measuring Device entry maps to the egenmon device its system id was recorded for, or
  is registered under the gateway's authority: device id ``phd-<system id>``, no
  credentials of its own, bound to the gateway's patient from the start of the gateway's
  binding. A gateway may register measuring devices only, for its own patient only; a
  system id that names a device of another patient is refused.
- Observations of a measurement egenmon holds go through the FHIR ingest path (source
  ``phd``); the other PHD Observations (the coincident time stamp, battery level, device
  status) are kept whole in quarantine with their reason and answered 202.

Everything here is pure: plain values in, plain values out, FhirError for what is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from egenmon.domain.identifiers import system_kind
from egenmon.domain.measurements import LOINC, MDC, type_for_code
from egenmon.fhir.outcome import FhirError, bad_request, unprocessable

__all__ = [
    "EUI64_SYSTEM",
    "GATEWAY_EXTENSION",
    "GATEWAY_TYPE",
    "PHD_CATEGORY_SYSTEM",
    "PHD_IDENTIFIER_SYSTEM",
    "PhdDevice",
    "device_entry",
    "holds_measurement",
    "normalise_eui64",
    "patient_identities",
    "phd_identifier",
    "sensor_device_id",
]

EUI64_SYSTEM = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
PHD_IDENTIFIER_SYSTEM = "http://hl7.org/fhir/uv/phd/StructureDefinition/PhdBaseObservation"
GATEWAY_EXTENSION = "http://hl7.org/fhir/StructureDefinition/observation-gatewayDevice"
PHD_CATEGORY_SYSTEM = "http://hl7.org/fhir/uv/phd/CodeSystem/PhdObservationCategories"
# MDC_MOC_VMS_MDS_AHD: the Device.type of a Personal Health Gateway (PhgDevice profile).
GATEWAY_TYPE = "531981"

_EUI64 = re.compile(r"[0-9A-Fa-f]{2}(?:[-:]?[0-9A-Fa-f]{2}){7}")
_MAX_TEXT = 64


@dataclass(frozen=True)
class PhdDevice:
    """A Device entry of a PHD Bundle: gateway or measuring device, and its system id."""

    gateway: bool
    system_id: str  # EUI-64, upper-case hex bytes joined by '-'
    model: str
    manufacturer: str | None


def normalise_eui64(value: Any) -> str | None:
    """An EUI-64 as the IG writes it (``4C-4E-49-12-34-56-FF-FF``), or None."""
    if not isinstance(value, str) or _EUI64.fullmatch(value) is None:
        return None
    digits = re.sub(r"[-:]", "", value).upper()
    return "-".join(digits[i : i + 2] for i in range(0, 16, 2))


def sensor_device_id(system_id: str) -> str:
    """The egenmon device id of a measuring device a gateway registers."""
    return "phd-" + system_id.replace("-", "").lower()


def _items(value: Any) -> list[Any]:
    """A JSON array's items; nothing for any other value (hostile input is not a list)."""
    return value if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return None
    clean = "".join(c for c in value.strip() if c.isprintable())
    return clean[:_MAX_TEXT] or None


def codings(concept: Any) -> list[tuple[Any, Any]]:
    if not isinstance(concept, Mapping):
        return []
    return [
        (c.get("system"), c.get("code"))
        for c in _items(concept.get("coding"))
        if isinstance(c, Mapping)
    ]


def device_entry(resource: Any, where: str) -> PhdDevice:
    """The Device entry's kind, system id, model and manufacturer; FhirError otherwise."""
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Device":
        raise bad_request(f"{where}: expected a Device", where)
    idents = resource.get("identifier")
    system_ids = [
        i.get("value")
        for i in _items(idents)
        if isinstance(i, Mapping) and i.get("system") == EUI64_SYSTEM
    ]
    if not isinstance(idents, list) or not system_ids:
        raise unprocessable(
            f"{where}.identifier: a PHD Device needs its IEEE 11073 system id "
            f"(system {EUI64_SYSTEM})",
            f"{where}.identifier",
        )
    system_id = normalise_eui64(system_ids[0])
    if system_id is None:
        raise unprocessable(
            f"{where}.identifier: the system id must be an EUI-64 (8 bytes in hex, "
            "such as 4C-4E-49-12-34-56-FF-FF)",
            f"{where}.identifier",
        )
    gateway = (MDC, GATEWAY_TYPE) in codings(resource.get("type"))
    names = [n.get("name") for n in _items(resource.get("deviceName")) if isinstance(n, Mapping)]
    model = (
        _text(resource.get("modelNumber"))
        or next((t for t in map(_text, names) if t), None)
        or ("PHD gateway" if gateway else "PHD device")
    )
    return PhdDevice(gateway, system_id, model, _text(resource.get("manufacturer")))


def patient_identities(resource: Any, where: str) -> list[tuple[str, str]]:
    """The Swedish personal identity numbers a Patient entry names: (kind, number)."""
    if not isinstance(resource, Mapping) or resource.get("resourceType") != "Patient":
        raise bad_request(f"{where}: expected a Patient", where)
    found = []
    for ident in _items(resource.get("identifier")):
        if not isinstance(ident, Mapping) or not isinstance(ident.get("system"), str):
            continue
        kind = system_kind(ident["system"])
        if kind is not None:
            value = ident.get("value")
            found.append((kind, value.replace("-", "") if isinstance(value, str) else ""))
    return found


def holds_measurement(resource: Any) -> bool:
    """Does this Observation's code name a measurement egenmon stores (LOINC or MDC)?"""
    if not isinstance(resource, Mapping):
        return True  # not an Observation at all: let the Observation checks say why
    codes = codings(resource.get("code"))
    return any(
        type_for_code(code, system) is not None
        for system, code in codes
        if system in (LOINC, MDC) and isinstance(code, str)
    )


def phd_identifier(resource: Any) -> str | None:
    """``system|value`` of the Observation's PHD identifier, the dedup key; or None."""
    if not isinstance(resource, Mapping):
        return None
    for ident in _items(resource.get("identifier")):
        if (
            isinstance(ident, Mapping)
            and ident.get("system") == PHD_IDENTIFIER_SYSTEM
            and isinstance(ident.get("value"), str)
            and ident["value"]
        ):
            return f"{PHD_IDENTIFIER_SYSTEM}|{ident['value']}"
    return None


def check_gateway_reference(resource: Any, gateway_ref: str | None, where: str) -> None:
    """The gatewayDevice extension, where given, must name the authenticated gateway."""
    if not isinstance(resource, Mapping) or gateway_ref is None:
        return
    for ext in _items(resource.get("extension")):
        if isinstance(ext, Mapping) and ext.get("url") == GATEWAY_EXTENSION:
            value = ext.get("valueReference")
            ref = value.get("reference") if isinstance(value, Mapping) else None
            if ref != gateway_ref:
                raise FhirError(
                    403,
                    "forbidden",
                    f"{where}.extension: the gatewayDevice {ref!r} is not the authenticated "
                    f"gateway ({gateway_ref})",
                    f"{where}.extension",
                )
