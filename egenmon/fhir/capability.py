"""What the FHIR API serves, as one table, and the CapabilityStatement made from it.

`RESOURCES` is the single source of truth: `egenmon.fhir.api` registers a route for each
interaction and operation listed here (and fails at import when one has no handler), and
`capability_statement` describes exactly the same list. A search parameter listed here
is one the parser in `egenmon.fhir.search` accepts (the tests check both directions).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from egenmon.fhir.render import VITAL_SIGNS_PROFILES
from egenmon.settings import DEFAULT_TIMEZONE

__all__ = [
    "BULK_OPERATIONS",
    "FHIR_VERSION",
    "FORMATS",
    "RESOURCES",
    "ROUTED_ELSEWHERE",
    "SYSTEM_INTERACTIONS",
    "SYSTEM_OPERATIONS",
    "Operation",
    "ResourceSpec",
    "SearchParam",
    "capability_statement",
    "resource_spec",
]

FHIR_VERSION = "4.0.1"
FORMATS = ("application/fhir+json", "json")
_SP = "http://hl7.org/fhir/SearchParameter/"
_PROJECT_SP = "https://egenmon.example.org/fhir/SearchParameter/"


@dataclass(frozen=True)
class SearchParam:
    name: str
    type: str  # FHIR search parameter type: reference, token, date, ...
    documentation: str
    definition: str | None = None


@dataclass(frozen=True)
class Operation:
    name: str  # without the $
    definition: str
    documentation: str


@dataclass(frozen=True)
class ResourceSpec:
    type: str
    interactions: tuple[str, ...]  # read, search-type, create
    documentation: str
    search_params: tuple[SearchParam, ...] = ()
    operations: tuple[Operation, ...] = ()
    conditional_create: bool = False
    supported_profiles: tuple[str, ...] = field(default=())
    # What its reads say of versions (meta.versionId and ETag: "versioned") and which
    # conditional reads they honour (If-None-Match: "not-match"; If-Modified-Since too,
    # where meta.lastUpdated is known: "full-support"); see egenmon.fhir.http.
    versioning: str = "no-version"
    conditional_read: str = "not-supported"

    @property
    def param_names(self) -> frozenset[str]:
        return frozenset(p.name for p in self.search_params)


_PATIENT_REF = "The patient, as Patient/<id> or the bare id (one per search)."

RESOURCES: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        type="Observation",
        interactions=("read", "search-type", "create"),
        documentation=(
            "Home measurements as FHIR R4 vital signs (capillary glucose as laboratory). "
            "Searches page with Bundle.link next (a keyset cursor: a client paging while "
            "readings arrive sees each observation once); _count defaults to 50, at most "
            "1000; _sort is date or -date (the default); _summary=count gives the total "
            "only. Create (and POST of a batch or transaction Bundle) goes through the "
            "same normalisation, dedup and quarantine as device readings; If-None-Exist "
            "with identifier=<system>|<value> is honoured."
        ),
        search_params=(
            SearchParam("patient", "reference", _PATIENT_REF, _SP + "clinical-patient"),
            SearchParam("subject", "reference", "Same as patient.", _SP + "Observation-subject"),
            SearchParam(
                "code",
                "token",
                "LOINC or IEEE 11073 MDC code, with or without its system; the MDC code "
                "finds the same observations as the LOINC one.",
                _SP + "clinical-code",
            ),
            SearchParam(
                "date",
                "date",
                "Measurement time with prefixes eq, ge, gt, le, lt; repeatable; values "
                "without an offset are {timezone} local time.",
                _SP + "clinical-date",
            ),
            SearchParam(
                "category",
                "token",
                "vital-signs or laboratory.",
                _SP + "Observation-category",
            ),
            SearchParam("device", "reference", "The measuring device.", _SP + "Observation-device"),
            SearchParam(
                "_lastUpdated",
                "date",
                "When the observation was stored (its meta.lastUpdated), with the same "
                "prefixes and precision rules as date.",
                _SP + "Resource-lastUpdated",
            ),
        ),
        operations=(
            Operation(
                "lastn",
                "http://hl7.org/fhir/OperationDefinition/Observation-lastn",
                "The max (default 1) most recent observations per code of one patient "
                "(patient required; code repeatable).",
            ),
        ),
        conditional_create=True,
        supported_profiles=tuple(VITAL_SIGNS_PROFILES.values()),
        versioning="versioned",
        conditional_read="full-support",
    ),
    ResourceSpec(
        type="Patient",
        interactions=("read", "search-type"),
        versioning="versioned",
        conditional_read="not-match",
        documentation=(
            "Patients by opaque id. Search by identifier (personnummer or "
            "samordningsnummer, URI or urn:oid system); use POST Patient/_search so the "
            "number is not in a URL. Links in the answer never carry it."
        ),
        search_params=(
            SearchParam(
                "identifier",
                "token",
                "http://electronichealth.se/identifier/personnummer|<12 digits> (or "
                "urn:oid:1.2.752.129.2.1.3.1, or the samordningsnummer systems).",
                _SP + "Patient-identifier",
            ),
        ),
    ),
    ResourceSpec(
        type="Device",
        interactions=("read", "search-type"),
        versioning="versioned",
        conditional_read="not-match",
        documentation="Home measuring devices; patient is the patient the device is bound to now.",
        search_params=(
            SearchParam("patient", "reference", _PATIENT_REF, _SP + "Device-patient"),
            SearchParam(
                "identifier",
                "token",
                "urn:egenmon:device|<device id> or the bare id; or a PHD's IEEE 11073 "
                "system id, urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680|<EUI-64>.",
                _SP + "Device-identifier",
            ),
        ),
    ),
    ResourceSpec(
        type="Flag",
        interactions=("read", "search-type"),
        versioning="versioned",
        conditional_read="full-support",
        documentation="Deviations (alerts): active while open or acknowledged.",
        search_params=(
            SearchParam("patient", "reference", _PATIENT_REF, _SP + "clinical-patient"),
            SearchParam(
                "status",
                "token",
                "active, inactive or entered-in-error.",
                _PROJECT_SP + "Flag-status",
            ),
            SearchParam(
                "_lastUpdated",
                "date",
                "When the alert last changed (meta.lastUpdated), with the prefixes of "
                "Observation's date.",
                _SP + "Resource-lastUpdated",
            ),
        ),
    ),
    ResourceSpec(
        type="Task",
        interactions=("read", "search-type"),
        versioning="versioned",
        conditional_read="full-support",
        documentation="Care contacts asked for by alerts.",
        search_params=(
            SearchParam("patient", "reference", _PATIENT_REF, _SP + "Task-patient"),
            SearchParam(
                "status",
                "token",
                "requested, accepted, completed or cancelled (others find nothing).",
                _SP + "Task-status",
            ),
            SearchParam(
                "_lastUpdated",
                "date",
                "When the alert last changed (meta.lastUpdated), with the prefixes of "
                "Observation's date.",
                _SP + "Resource-lastUpdated",
            ),
        ),
    ),
)

RESOURCES += (
    ResourceSpec(
        type="AuditEvent",
        interactions=("read", "search-type"),
        documentation=(
            "The access log (patientdatalagen 4:3, HSLF-FS 2016:40), refused attempts "
            "included (outcome 4), for the region's log follow-up. Read by an admin, by a "
            "system with system/AuditEvent.rs, or by a care unit's log reviewer with "
            "user/AuditEvent.rs (their unit's staff and patients); never through a "
            "wildcard scope, never by patients (they have /api/v1/me/access-log). Newest "
            "first, paged with Bundle.link next."
        ),
        search_params=(
            SearchParam("patient", "reference", _PATIENT_REF, _SP + "AuditEvent-patient"),
            SearchParam(
                "agent",
                "token",
                "Who acted, as the log names them: a user name, a token's subject or a "
                "SMART client id (exact).",
            ),
            SearchParam(
                "date",
                "date",
                "When, with prefixes eq, ge, gt, le, lt; repeatable; values without an "
                "offset are {timezone} local time.",
                _SP + "AuditEvent-date",
            ),
            SearchParam(
                "action",
                "token",
                "C, R, U, D or E (searches and other actions); comma for OR.",
                _SP + "AuditEvent-action",
            ),
        ),
    ),
)

# Group: a care unit's monitored patients, for Bulk Data export (egenmon.fhir.groups).
RESOURCES += (
    ResourceSpec(
        type="Group",
        interactions=("read", "search-type"),
        documentation=(
            "A care unit's monitored patients (the id is the care unit's id): the group "
            "a Bulk Data export names. Members are not listed; quantity says how many."
        ),
        search_params=(
            SearchParam(
                "identifier",
                "token",
                "The care unit's HSA-id (urn:oid:1.2.752.29.4.19|<HSA-id> or the bare id).",
                _SP + "Group-identifier",
            ),
        ),
    ),
)

_BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/"

# Served by a router of their own (egenmon.fhir.subscription_api), listed all the same.
ROUTED_ELSEWHERE: tuple[ResourceSpec, ...] = (
    ResourceSpec(
        type="Subscription",
        interactions=("read", "search-type", "create", "delete"),
        documentation=(
            "Topic-based subscriptions as the R5 Subscriptions Backport IG has them on R4: "
            "the topic canonical in criteria (see Basic?code=SubscriptionTopic), filters in "
            "backport-filter-criteria (patient, care-unit, code), rest-hook channel, "
            "payload content empty, id-only or full-resource, heartbeats, channel.header "
            "lines and an HMAC signature (X-Egenmon-Signature) as the subscriber asks. A "
            "token bound to a care unit subscribes to that unit's patients only. Search and "
            "read show the caller's own subscriptions; delete sets status off."
        ),
        search_params=(
            SearchParam(
                "status", "token", "requested, active, error or off.", _SP + "Subscription-status"
            ),
            SearchParam("url", "uri", "The topic canonical (criteria).", _SP + "Subscription-url"),
        ),  # fmt: skip
        operations=(
            Operation(
                "status",
                _BACKPORT + "OperationDefinition/backport-subscription-status",
                "The subscription's status (with delivered, pending and failed counts).",
            ),
            Operation(
                "events",
                _BACKPORT + "OperationDefinition/backport-subscription-events",
                "Past notifications by event number (eventsSinceNumber, eventsUntilNumber, "
                "content).",
            ),
        ),
        supported_profiles=(_BACKPORT + "StructureDefinition/backport-subscription",),
    ),
    ResourceSpec(
        type="Basic",
        interactions=("read", "search-type"),
        documentation=(
            "The Subscription topics (R4 has no SubscriptionTopic): one Basic per topic, "
            "carrying its canonical in backport-topic-canonical."
        ),
        search_params=(
            SearchParam(
                "code", "token", "SubscriptionTopic (other codes find nothing).", _SP + "Basic-code"
            ),
        ),  # fmt: skip
    ),
)
# Bulk Data Access (HL7 FHIR Bulk Data IG v2), served by egenmon.export.api (kick-off,
# status, files, delete), declared here beside the rest.
_BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/"
_BULK_DOC = (
    "Bulk Data export (Prefer: respond-async): 202 with Content-Location to poll; "
    "_type (Patient, Device, Observation, Flag, Task), _since, _typeFilter for "
    "Observation by code or category; NDJSON files behind the same token."
)
BULK_OPERATIONS: dict[str, tuple[Operation, ...]] = {
    "Patient": (Operation("export", _BULK + "patient-export", _BULK_DOC),),
    "Group": (Operation("export", _BULK + "group-export", _BULK_DOC),),
}
SYSTEM_OPERATIONS: tuple[Operation, ...] = (Operation("export", _BULK + "export", _BULK_DOC),)
BULK_DATA_CAPABILITY = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"

SYSTEM_INTERACTIONS: tuple[tuple[str, str], ...] = (
    ("batch", "A batch Bundle of Observation creates; each entry answered on its own."),
    (
        "transaction",
        "A transaction Bundle of Observation creates: all or nothing; references to an "
        "entry's fullUrl resolve to the id it gets. A PHD gateway (HL7 PHD IG, device "
        "secret) also sends its Patient and Device conditional creates.",
    ),
)


_OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"


def _oauth_uris(base: str) -> dict[str, Any]:
    """The SMART oauth-uris extension: egenmon's own authorize and token endpoints (the
    same as its .well-known/smart-configuration names)."""
    root = base.removesuffix("/fhir")
    return {
        "url": _OAUTH_URIS,
        "extension": [
            {"url": "authorize", "valueUri": f"{root}/oauth/authorize"},
            {"url": "token", "valueUri": f"{root}/oauth/token"},
        ],
    }


def resource_spec(resource_type: str) -> ResourceSpec:
    for spec in RESOURCES:
        if spec.type == resource_type:
            return spec
    raise KeyError(resource_type)


def capability_statement(
    base: str, date: str = "2026-01-01", timezone: str = DEFAULT_TIMEZONE
) -> dict[str, Any]:
    """The CapabilityStatement of this server at `base` (its absolute FHIR base URL);
    `timezone` is the server's (EGENMON_TIMEZONE), named where dates without an offset
    are read."""
    resources = []
    for spec in (*RESOURCES, *ROUTED_ELSEWHERE):
        entry: dict[str, Any] = {
            "type": spec.type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{spec.type}",
        }
        if spec.supported_profiles:
            entry["supportedProfile"] = list(spec.supported_profiles)
        entry["documentation"] = spec.documentation
        entry["interaction"] = [{"code": code} for code in spec.interactions]
        entry["versioning"] = spec.versioning
        entry["readHistory"] = False
        entry["updateCreate"] = False
        if "create" in spec.interactions:
            entry["conditionalCreate"] = spec.conditional_create
        entry["conditionalRead"] = spec.conditional_read
        entry["conditionalUpdate"] = False
        entry["conditionalDelete"] = "not-supported"
        if spec.search_params:
            entry["searchParam"] = [
                {
                    "name": p.name,
                    **({"definition": p.definition} if p.definition else {}),
                    "type": p.type,
                    "documentation": p.documentation.replace("{timezone}", timezone),
                }
                for p in spec.search_params
            ]
        operations = (*spec.operations, *BULK_OPERATIONS.get(spec.type, ()))
        if operations:
            entry["operation"] = [
                {"name": op.name, "definition": op.definition, "documentation": op.documentation}
                for op in operations
            ]
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "egenmon",
        "kind": "instance",
        "instantiates": [BULK_DATA_CAPABILITY],
        "software": {"name": "egenmon", "version": "0.1.0"},
        "implementation": {"description": "egenmon FHIR R4 API", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": list(FORMATS),
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Every request needs Authorization: Bearer <token>. Errors are "
                    "OperationOutcomes. Unknown search parameters are refused (400) unless "
                    'the request says Prefer: handling=lenient. Reads carry ETag (W/"<'
                    'versionId>") and, where meta.lastUpdated is known, Last-Modified; '
                    "If-None-Match and If-Modified-Since answer 304. HEAD works on every "
                    "read and search; answers over 2 KiB are gzipped for clients that "
                    "accept it. Create honours Prefer: return=minimal, representation "
                    "(the default) or OperationOutcome. Posted resources are checked "
                    "strictly against FHIR JSON's types: nothing is coerced."
                ),
                "security": {
                    "extension": [_oauth_uris(base)],
                    "cors": True,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "description": (
                        "Bearer JWT access tokens with SMART v2 scopes (system/*.rs, "
                        "user/*.rs, patient/*.rs, system/Observation.c). Clinicians see the "
                        "patients of their care unit, a patient token only that patient. "
                        "Every read and search of patient data is written to the access log. "
                        "SMART App Launch (standalone and EHR launch, authorization code "
                        "with PKCE S256) and SMART Backend Services (client_credentials "
                        "with a private_key_jwt assertion) at the endpoints named here and "
                        "in .well-known/smart-configuration; CORS for registered apps' "
                        "origins only."
                    ),
                },
                "resource": resources,
                "interaction": [
                    {"code": code, "documentation": doc} for code, doc in SYSTEM_INTERACTIONS
                ],
                "operation": [
                    {"name": o.name, "definition": o.definition, "documentation": o.documentation}
                    for o in SYSTEM_OPERATIONS
                ],
            }
        ],
    }
