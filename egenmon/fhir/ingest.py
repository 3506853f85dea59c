"""The FHIR way in: posted Observations and batch or transaction Bundles, into the pipeline.

A posted Observation is validated with fhir.resources (`observation_to_reading`), then
goes exactly where a device reading goes: the device's bindings, `normalise` (source
``fhir``: codes, UCUM units, limits, dedup key), and the ingest pipeline's batch writer,
whose unique index settles duplicates. What the columns do not hold is stored in `extra`
and served back. What is refused is kept in quarantine with its reason.

- The subject must be the patient the device was bound to when the measurement was
  taken; otherwise 422 (and quarantine).
- Each posted Observation gets its own `message_id` (``fhir:<request>:<entry>``), so
  after the write the stored row says whether this request created it (201) or it was
  there already (200 with the stored resource): the database decides, never a
  check-then-insert.
- ``If-None-Exist: identifier=<system>|<value>`` must name the Observation's first
  identifier (the one its dedup key is made of; anything else is a 400). An Observation
  of the same device with that identifier at any time answers 200 with the stored one
  and nothing is written; two racing posts of the same measurement are settled by the
  unique index. The scope of the check is the device the Observation names.
- A transaction is all or nothing: every entry is checked first; if one fails, nothing
  is written and the answer is an OperationOutcome naming each failed entry. Otherwise
  all rows go to the pipeline in one write (one database transaction).
- A batch answers each entry on its own (``batch-response`` with per-entry status,
  location and outcome); the entries that pass are written together in one write.
- References between the entries of a Bundle (an entry's ``fullUrl``, such as
  ``urn:uuid:...``) are resolved to the ids the Bundle's entries get: an Observation's
  ``Observation/<id>`` (known before the write: ids derive from the dedup key), and in a
  PHD gateway's Bundle the Patient's and Devices' ids (`egenmon.fhir.phd`).
- An Observation's PHD identifier (`egenmon.fhir.phd.PHD_IDENTIFIER_SYSTEM`), wherever it
  stands among its identifiers, is its reading id and so its dedup key.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import orjson

from egenmon import jsonbody
from egenmon.domain.ids import observation_id
from egenmon.domain.principals import AuthError, Principal, parse_scopes
from egenmon.domain.readings import COLUMNS, Binding
from egenmon.fhir import phd
from egenmon.fhir.observation_in import PostedObservation, observation_to_reading
from egenmon.fhir.outcome import FhirError, bad_request, unprocessable
from egenmon.fhir.render import render_observation
from egenmon.ingest.message import ReadingMessage
from egenmon.ingest.normalise import normalise, normalise_entered
from egenmon.ingest.pipeline import Pipeline
from egenmon.ingest.writer import WriteError
from egenmon.store import device_identifiers, patients, readings
from egenmon.store.access_log import log_access
from egenmon.store.db import Conflict

__all__ = [
    "Gateway",
    "IngestContext",
    "gateway_context",
    "MAX_ENTRIES",
    "create_observation",
    "process_bundle",
    "replay_quarantined",
]

MAX_ENTRIES = 1000
SOURCE = "fhir"
_MDC = COLUMNS.index("mdc")
_EXTRA = COLUMNS.index("extra")
_MESSAGE_ID = COLUMNS.index("message_id")
_PATIENT = COLUMNS.index("patient_id")
_DEVICE = COLUMNS.index("device_id")
_DEDUP = COLUMNS.index("dedup_key")
_TIME = COLUMNS.index("time")
_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Entity",
}
# A PHD's coincident time stamp, coded by its clock type (the PHD IG's MDCClockTypes value
# set, and 68225 of its PhdCoincidentTimeStampObservation notes). Its measurements carry
# their own absolute times, so it is read and answered, neither stored nor quarantined.
_TIME_STAMP_CODES = frozenset({"67975", "67983", "68072", "68225", "68226"})


@dataclass(frozen=True)
class Gateway:
    """A PHD gateway: an egenmon device, authenticated by its secret, and its patient now."""

    device_id: str
    patient_id: uuid.UUID
    since: datetime  # the start of the gateway's binding to the patient


@dataclass(frozen=True)
class IngestContext:
    """What FHIR ingest needs: the pool, the pipeline service, who is posting, the base."""

    pool: Any
    pipeline: Any
    principal: Principal
    base: str
    quarantine: bool = True  # False when replaying an entry that is the quarantine already
    source: str = SOURCE  # "phd" for a gateway's Bundle
    gateway: Gateway | None = None


async def gateway_context(pool: Any, pipeline: Any, device_id: str, base: str) -> IngestContext:
    """The context of a PHD gateway posting with its device secret: it acts for the patient
    it is bound to now, and for no one else (a principal that may see only that patient)."""
    now = datetime.now(UTC)
    current = [
        b
        for b in await pipeline.bindings(device_id)
        if b.start <= now and (b.end is None or now < b.end)
    ]
    if not current:
        raise AuthError(403, f"Device/{device_id} is bound to no patient now")
    binding = current[0]
    principal = Principal(
        f"device/{device_id}",
        "patient",
        patient_id=binding.patient_id,
        scopes=parse_scopes("patient/Observation.c patient/Device.c"),
    )
    gateway = Gateway(device_id, binding.patient_id, binding.start)
    return IngestContext(pool, pipeline, principal, base, source="phd", gateway=gateway)


@dataclass
class _Entry:
    """One Observation on its way in, or the reason it was refused."""

    index: int
    where: str  # "Observation" or "Bundle.entry[i].resource"
    raw: Any
    if_none_exist: str | None = None
    kind: str = "Observation"  # Patient and Device: entries of a PHD gateway's Bundle
    full_url: str | None = None
    location: str | None = None  # Patient and Device entries: the id they resolved to
    kept: str | None = None  # an Observation read but not stored: why
    kept_severity: str = "information"
    any_time: bool = False  # deduplicated by its identifier at any time (a PHD identifier)
    posted: PostedObservation | None = None
    row: tuple | None = None
    error: FhirError | None = None
    result: dict[str, Any] | None = field(default=None)  # the stored row
    created: bool = False


class BundleRefused(FhirError):
    """A transaction refused as a whole: one issue per failed entry."""

    def __init__(self, status: int, issues: list[dict[str, Any]]) -> None:
        super().__init__(status, issues[0]["code"], issues[0]["diagnostics"])
        self.issues = issues

    def outcome(self) -> dict[str, Any]:
        return {"resourceType": "OperationOutcome", "issue": self.issues}


# --- checking one Observation ---------------------------------------------------------


def _relocate(error: FhirError, where: str) -> FhirError:
    """The error with its element paths under `where` (a Bundle entry's resource)."""
    if where == "Observation":
        return error

    def move(text: str) -> str:
        return where + text[len("Observation") :] if text.startswith("Observation") else text

    return FhirError(
        error.status,
        error.code,
        f"{where}: {move(error.diagnostics)}"
        if not error.diagnostics.startswith("Observation")
        else move(error.diagnostics),
        [move(e) for e in error.expression or ()] or where,
        error.severity,
    )


def _reason_element(reason: str, panel: bool) -> str:
    """The element a normaliser reason is about, for the OperationOutcome's expression."""
    value = "Observation.component" if panel else "Observation.valueQuantity"
    if reason.startswith("no patient bound"):
        return "Observation.device"
    if reason.startswith(("time", "time is in the future")):
        return "Observation.effective[x]"
    if "unit" in reason.split(" ", 2)[:2] or reason.startswith("unit"):
        return f"{value}.code"
    if reason.startswith("id:"):
        return "Observation.identifier"
    if reason.startswith("note:"):
        return "Observation.note"
    return value


def _criteria_identifier(header: str) -> str:
    """The identifier an If-None-Exist header names (``identifier=<system>|<value>``)."""
    text = header.strip()
    text = text.split("?", 1)[1] if text.startswith("Observation?") else text
    name, eq, value = text.partition("=")
    if name != "identifier" or not eq or "&" in value or not value:
        raise bad_request(
            "If-None-Exist: only identifier=<system>|<value> is supported", "If-None-Exist"
        )
    return unquote(value)


def _matches(criteria: str, reading_id: str | None) -> bool:
    if reading_id is None:
        return False
    if criteria == reading_id:
        return True
    # A bare value (or "|value") names the value in any system.
    bare = criteria.removeprefix("|")
    return "|" not in bare and reading_id.rpartition("|")[2] == bare


async def _may_post_for(ctx: IngestContext, patient_id: uuid.UUID) -> None:
    if ctx.principal.patient_filter is None:
        return
    unit = None
    if ctx.principal.role == "clinician":
        async with ctx.pool.connection() as conn:
            unit = await patients.patient_care_unit(conn, patient_id)
    if not ctx.principal.may_see(patient_id, unit):
        raise AuthError(403, f"this token may not add data for Patient/{patient_id}")


async def _prepare(
    ctx: IngestContext,
    entry: _Entry,
    message_id: str,
    now: datetime,
    bindings_cache: dict[str, Any],
) -> None:
    """Fill `entry.row`, or raise FhirError (AuthError for another unit's patient)."""
    posted = observation_to_reading(entry.raw)
    phd_id = phd.phd_identifier(entry.raw)
    if phd_id is not None:
        # The conditional create the IG asks for, whether or not ifNoneExist says so: a
        # gateway's clock may have moved since the device's memory was last sent.
        posted = replace(posted, reading={**posted.reading, "id": phd_id})
        entry.any_time = True
    entry.posted = posted
    await _may_post_for(ctx, posted.patient_id)
    if entry.if_none_exist is not None:
        criteria = _criteria_identifier(entry.if_none_exist)
        if not _matches(criteria, posted.reading.get("id")):
            raise bad_request(
                "If-None-Exist: must name the Observation's first identifier "
                "(identifier=<system>|<value>)",
                "If-None-Exist",
            )
    device_id = posted.device_id
    if device_id is None:
        entry.row = _entered_row(ctx.principal, posted, message_id, now)
        return
    if ctx.gateway is None and ctx.principal.role in _ENTERED_BY:
        # Least privilege: patients and clinicians enter readings by hand; a device's
        # readings come from the device itself (a PHD gateway for its devices) or an
        # integrator.
        raise AuthError(
            403, "a patient or clinician posts readings without a device (they are entered)"
        )
    if device_id not in bindings_cache:
        bindings_cache[device_id] = await ctx.pipeline.bindings(device_id)
    message = ReadingMessage(readings=[posted.reading], message_id=message_id)
    rows, errors = normalise(message, device_id, bindings_cache[device_id], now, ctx.source, now)
    if errors:
        reason = errors[0][1]
        panel = posted.reading["type"] == "blood_pressure"
        raise unprocessable(f"Observation: {reason}", _reason_element(reason, panel))
    row: list[Any] = list(rows[0])  # positional columns (COLUMNS); edited in place below
    if row[_PATIENT] != posted.patient_id:
        raise unprocessable(
            f"Observation.subject: Patient/{posted.patient_id} is not the patient Device/"
            f"{device_id} was bound to at {row[_TIME].isoformat()}",
            "Observation.subject",
        )
    if posted.mdc is not None:
        row[_MDC] = posted.mdc
    row[_EXTRA] = posted.extra
    entry.row = tuple(row)


# Who posts an Observation without a device decides its source (contract).
_ENTERED_BY = {"patient": "patient-entered", "clinician": "staff-entered"}
PRINCIPAL_SYSTEM = "urn:egenmon:principal"


def _entered_row(
    principal: Principal, posted: PostedObservation, message_id: str, now: datetime
) -> tuple:
    """The row of an Observation posted without a device: source from the poster's role,
    the poster kept as its performer (a patient is the subject, already the performer)."""
    source = _ENTERED_BY.get(principal.role, SOURCE)
    extra = dict(posted.extra or {})
    if source != "patient-entered":
        who = {
            "identifier": {"system": PRINCIPAL_SYSTEM, "value": principal.subject},
            "display": principal.role,
        }
        extra["performer"] = [*extra.get("performer", []), who]
    rows, errors = normalise_entered(
        [posted.reading], posted.patient_id, now, source, now, message_id=message_id
    )
    if errors:
        reason = errors[0][1]
        panel = posted.reading["type"] == "blood_pressure"
        raise unprocessable(f"Observation: {reason}", _reason_element(reason, panel))
    row: list[Any] = list(rows[0])
    if posted.mdc is not None:
        row[_MDC] = posted.mdc
    row[_EXTRA] = extra or None
    return tuple(row)


async def _quarantine(ctx: IngestContext, raw: bytes, reason: str, device: str | None) -> None:
    if not ctx.quarantine:
        return
    await ctx.pipeline.quarantine(source=ctx.source, reason=reason, raw=raw, device_id=device)


def _device_of(resource: Any) -> str | None:
    """The device id a (possibly invalid) Observation names, for the quarantine entry."""
    if not isinstance(resource, dict) or not isinstance(resource.get("device"), dict):
        return None
    ref = resource["device"].get("reference")
    if not isinstance(ref, str) or not ref.startswith("Device/"):
        return None
    ident = ref[len("Device/") :]
    return ident if 0 < len(ident) <= 64 else None


# --- writing --------------------------------------------------------------------------


async def _existing(ctx: IngestContext, entries: Sequence[_Entry]) -> None:
    """Entries whose If-None-Exist identifier is already stored: answer with that row."""
    asking = [
        e for e in entries if e.row is not None and (e.if_none_exist is not None or e.any_time)
    ]
    if not asking:
        return
    async with ctx.pool.connection() as conn:
        for e in asking:
            assert e.row is not None
            found = await readings.find_by_dedup_key(conn, e.row[_DEDUP])
            if found is not None:
                e.result, e.created = found, False


async def _write(ctx: IngestContext, entries: Sequence[_Entry]) -> None:
    """Write the entries' rows in one pipeline call; then see which this request created."""
    todo = [e for e in entries if e.row is not None and e.result is None]
    if not todo:
        return
    rows = [e.row for e in todo if e.row is not None]
    # One write for the whole Bundle, so that a transaction stays one transaction.
    try:
        await ctx.pipeline.ingest_rows(rows, source=ctx.source)
    except WriteError as exc:
        raise FhirError(503, "transient", "the store is unavailable; try again") from exc
    async with ctx.pool.connection() as conn:
        stored = await readings.stored_readings(conn, [(r[_DEDUP], r[_TIME]) for r in rows])
    for e in todo:
        assert e.row is not None
        row = stored.get((e.row[_DEDUP], e.row[_TIME]))
        if row is None:  # committed, so it is there; a vanished row is a server fault
            raise FhirError(500, "exception", "a written observation could not be read back")
        e.result = row
        e.created = row.get("message_id") == e.row[_MESSAGE_ID]


async def _log_created(ctx: IngestContext, entries: Sequence[_Entry]) -> None:
    created = [e for e in entries if e.created and e.result is not None]
    if created:
        await log_access(
            ctx.pool,
            ctx.principal,
            "create",
            "Observation",
            {e.result["patient_id"] for e in created if e.result},
            {
                "created": [
                    observation_id(e.result["time"], e.result["dedup_key"])
                    for e in created
                    if e.result
                ]
            },
        )


def _location(ctx: IngestContext, row: dict[str, Any], absolute: bool) -> str:
    path = f"Observation/{observation_id(row['time'], row['dedup_key'])}"
    return f"{ctx.base}/{path}" if absolute else path


# --- the two ways in ------------------------------------------------------------------


async def create_observation(
    ctx: IngestContext, body: bytes, if_none_exist: str | None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """POST /fhir/Observation: (status, the stored resource, headers)."""
    ctx.principal.require("Observation", "c")
    request_id = uuid.uuid4().hex
    try:
        resource = jsonbody.loads(body)
    except jsonbody.JsonBodyError as exc:
        await _quarantine(ctx, body, f"the body {exc}", None)
        raise bad_request(f"the body {exc}") from None
    entry = _Entry(0, "Observation", resource, if_none_exist)
    now = datetime.now(UTC)
    try:
        await _prepare(ctx, entry, f"fhir:{request_id}:0", now, {})
    except FhirError as exc:
        await _quarantine(ctx, body, exc.diagnostics, _device_of(resource))
        raise
    await _existing(ctx, [entry])
    await _write(ctx, [entry])
    await _log_created(ctx, [entry])
    assert entry.result is not None
    status = 201 if entry.created else 200
    headers = {"Location": _location(ctx, entry.result, absolute=True)}
    return status, render_observation(entry.result), headers


def _entries(
    bundle: Any, gateway: bool = False
) -> tuple[str, list[_Entry], list[tuple[int, FhirError]]]:
    """The Bundle's type, its entries, and the entries refused by their shape.

    A PHD gateway's Bundle may hold POST Patient and POST Device entries as well."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise bad_request("POST /fhir takes a Bundle of type batch or transaction", "Bundle")
    kind = bundle.get("type")
    if kind not in ("batch", "transaction"):
        raise bad_request(
            f"Bundle.type: only batch and transaction are accepted, not {kind!r}", "Bundle.type"
        )
    items = bundle.get("entry") or []
    if not isinstance(items, list):
        raise bad_request("Bundle.entry: must be a list", "Bundle.entry")
    if len(items) > MAX_ENTRIES:
        raise FhirError(
            413, "too-costly", f"Bundle.entry: at most {MAX_ENTRIES} entries", "Bundle.entry"
        )
    allowed = ("Observation", "Patient", "Device") if gateway else ("Observation",)
    entries: list[_Entry] = []
    refused: list[tuple[int, FhirError]] = []
    seen_urls: set[str] = set()
    for i, item in enumerate(items):
        where = f"Bundle.entry[{i}]"
        request = item.get("request") if isinstance(item, dict) else None
        resource = item.get("resource") if isinstance(item, dict) else None
        full_url = item.get("fullUrl") if isinstance(item, dict) else None
        entry = _Entry(i, f"{where}.resource", resource)
        entries.append(entry)
        url = str(request.get("url", "")).strip("/") if isinstance(request, dict) else ""
        if not isinstance(request, dict):
            entry.error = bad_request(f"{where}.request: required", f"{where}.request")
        elif request.get("method") != "POST" or url not in allowed:
            supported = "POST Observation, Patient or Device" if gateway else "POST Observation"
            entry.error = bad_request(
                f"{where}.request: only {supported} is supported (got "
                f"{request.get('method')} {request.get('url')})",
                f"{where}.request",
            )
        elif not isinstance(resource, dict):
            entry.error = bad_request(f"{where}.resource: required", f"{where}.resource")
        elif url != "Observation" and resource.get("resourceType") != url:
            entry.error = bad_request(
                f"{where}.resource: POST {url} takes a {url}, not a "
                f"{str(resource.get('resourceType'))[:40]!r}",
                f"{where}.resource",
            )
        elif full_url is not None and (not isinstance(full_url, str) or full_url in seen_urls):
            entry.error = bad_request(
                f"{where}.fullUrl: must be a string that no other entry has", f"{where}.fullUrl"
            )
        else:
            entry.kind = url
            entry.full_url = full_url
            if full_url is not None:
                seen_urls.add(full_url)
            if url == "Observation":
                entry.if_none_exist = request.get("ifNoneExist")
        if entry.error is not None:
            entry.raw = item  # quarantine keeps the whole entry that could not be taken
            refused.append((i, entry.error))
    return kind, entries, refused


def resolve_references(value: Any, ids: Mapping[str, str]) -> Any:
    """`value` with every ``reference`` that names a Bundle entry's fullUrl replaced by the
    id that entry got (FHIR transaction processing); `value` itself is not changed."""
    if not ids:
        return value
    if isinstance(value, dict):
        return {
            k: ids[v]
            if k == "reference" and isinstance(v, str) and v in ids
            else resolve_references(v, ids)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [resolve_references(v, ids) for v in value]
    return value


@dataclass
class _NewDevice:
    """A measuring device a gateway registers, once every entry has passed."""

    device_id: str
    device: phd.PhdDevice


async def _resolve_phd(
    ctx: IngestContext, entries: Sequence[_Entry], bindings: dict[str, Any]
) -> tuple[list[_NewDevice], list[str]]:
    """Resolve the Patient and Device entries of a gateway's Bundle to egenmon ids.

    Fills each entry's `location` (or `error`); returns the measuring devices to register
    and the system ids to record for the gateway, both written only once all entries pass.
    New devices get their binding in `bindings`, so their Observations normalise now."""
    gw = ctx.gateway
    assert gw is not None
    new: list[_NewDevice] = []
    gateway_ids: list[str] = []
    async with ctx.pool.connection() as conn:
        header = await patients.patient_header(conn, gw.patient_id)
        for e in entries:
            if e.error is not None or e.kind == "Observation":
                continue
            try:
                if e.kind == "Patient":
                    for _kind, number in phd.patient_identities(e.raw, e.where):
                        if header is None or number != header["personnummer"]:
                            raise FhirError(
                                403,
                                "forbidden",
                                f"{e.where}.identifier: not the patient the gateway is bound "
                                "to; a gateway uploads for its own patient only",
                                f"{e.where}.identifier",
                            )
                    e.location = f"Patient/{gw.patient_id}"
                    continue
                dev = phd.device_entry(e.raw, e.where)
                found = await device_identifiers.find_device(conn, phd.EUI64_SYSTEM, dev.system_id)
                if dev.gateway:
                    if found is not None and found[0] != gw.device_id:
                        raise FhirError(
                            403,
                            "forbidden",
                            f"{e.where}.identifier: system id {dev.system_id} is another "
                            "device's, not the authenticated gateway's",
                            f"{e.where}.identifier",
                        )
                    if found is None:
                        gateway_ids.append(dev.system_id)
                    e.location = f"Device/{gw.device_id}"
                elif found is not None:
                    device_id = found[0]
                    if device_id not in bindings:
                        bindings[device_id] = await ctx.pipeline.bindings(device_id)
                    if not any(b.patient_id == gw.patient_id for b in bindings[device_id]):
                        raise FhirError(
                            403,
                            "forbidden",
                            f"{e.where}.identifier: system id {dev.system_id} names a device "
                            "of another patient",
                            f"{e.where}.identifier",
                        )
                    e.location = f"Device/{device_id}"
                else:
                    device_id = phd.sensor_device_id(dev.system_id)
                    if not any(n.device_id == device_id for n in new):
                        new.append(_NewDevice(device_id, dev))
                    bindings[device_id] = [Binding(gw.patient_id, gw.since, None)]
                    e.location, e.created = f"Device/{device_id}", True
            except FhirError as exc:
                e.error = exc
    return new, gateway_ids


async def _register_phd(
    ctx: IngestContext, new: Sequence[_NewDevice], gateway_ids: Sequence[str]
) -> None:
    """Register the gateway's new measuring devices and record its own system ids."""
    gw = ctx.gateway
    assert gw is not None
    created: list[str] = []
    async with ctx.pool.connection() as conn:
        for n in new:
            # No credentials of its own: the digest of a secret nobody is ever given.
            digest = hashlib.sha256(secrets.token_bytes(32)).digest()
            try:
                await device_identifiers.register_device(
                    conn,
                    device_id=n.device_id,
                    model=n.device.model,
                    manufacturer=n.device.manufacturer,
                    secret_sha256=digest,
                    patient_id=gw.patient_id,
                    since=gw.since,
                    identifier=(phd.EUI64_SYSTEM, n.device.system_id),
                    registered_by=gw.device_id,
                )
                created.append(n.device_id)
            except Conflict:
                # A concurrent upload registered it first; anything else is refused.
                found = await device_identifiers.find_device(
                    conn, phd.EUI64_SYSTEM, n.device.system_id
                )
                if found is None or found[0] != n.device_id:
                    raise FhirError(
                        409,
                        "conflict",
                        f"Device/{n.device_id} exists already without system id "
                        f"{n.device.system_id}; an admin must sort out which device it is",
                    ) from None
        for system_id in gateway_ids:
            await device_identifiers.add_identifier(
                conn, phd.EUI64_SYSTEM, system_id, gw.device_id, None
            )
    if created:
        await log_access(
            ctx.pool, ctx.principal, "create", "Device", {gw.patient_id}, {"created": created}
        )


def _response_entry(ctx: IngestContext, e: _Entry) -> dict[str, Any]:
    if e.error is not None:
        status = e.error.status
        return {
            "response": {
                "status": f"{status} {_REASONS.get(status, '')}".strip(),
                "outcome": e.error.outcome(),
            }
        }
    if e.kept is not None:
        return {
            "response": {
                "status": "202 Accepted",
                "outcome": {
                    "resourceType": "OperationOutcome",
                    "issue": [
                        {
                            "severity": e.kept_severity,
                            "code": "informational",
                            "diagnostics": e.kept,
                        }
                    ],
                },
            }
        }
    if e.location is not None:  # a PHD Bundle's Patient or Device entry
        return {
            "fullUrl": f"{ctx.base}/{e.location}",
            "response": {
                "status": "201 Created" if e.created else "200 OK",
                "location": e.location,
            },
        }
    assert e.result is not None
    resource = render_observation(e.result)
    return {
        "fullUrl": f"{ctx.base}/Observation/{resource['id']}",
        "resource": resource,
        "response": {
            "status": "201 Created" if e.created else "200 OK",
            "location": _location(ctx, e.result, absolute=False),
            "lastModified": resource["meta"]["lastUpdated"],
        },
    }


def _code_text(resource: Any) -> str:
    codes = phd.codings(resource.get("code")) if isinstance(resource, Mapping) else []
    return ", ".join(f"{s}|{c}" for s, c in codes[:3])[:200] or "no code"


def _keep(ctx: IngestContext, e: _Entry) -> bool:
    """A gateway's Observation egenmon stores no column for: read, not stored (`e.kept`)."""
    if ctx.gateway is None or phd.holds_measurement(e.raw):
        return False
    codes = {c for _, c in phd.codings(e.raw.get("code"))}
    if codes & _TIME_STAMP_CODES:
        e.kept = (
            f"{e.where}: a coincident time stamp, read and not stored (measurements carry "
            "their own times)"
        )
    else:
        e.kept = (
            f"{e.where}: not a measurement egenmon stores ({_code_text(e.raw)}); kept in "
            "quarantine, not stored as an Observation"
        )
    return True


async def process_bundle(ctx: IngestContext, body: bytes) -> dict[str, Any]:
    """POST /fhir with a batch or transaction Bundle: the response Bundle."""
    ctx.principal.require("Observation", "c")
    try:
        bundle = jsonbody.loads(body)
    except jsonbody.JsonBodyError as exc:
        await _quarantine(ctx, body, f"the body {exc}", None)
        raise bad_request(f"the body {exc}") from None
    try:
        kind, entries, _ = _entries(bundle, gateway=ctx.gateway is not None)
    except FhirError as exc:
        await _quarantine(ctx, body, exc.diagnostics, None)
        raise
    request_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    bindings: dict[str, Any] = {}
    new_devices: list[_NewDevice] = []
    gateway_ids: list[str] = []
    if ctx.gateway is not None:
        new_devices, gateway_ids = await _resolve_phd(ctx, entries, bindings)
    # The ids the Patient and Device entries resolved to, by fullUrl; then the
    # Observations' own, which derive from their dedup keys.
    ids = {e.full_url: e.location for e in entries if e.full_url and e.location}
    for e in entries:
        if e.error is not None or e.kind != "Observation":
            continue
        e.raw = resolve_references(e.raw, ids)
        if _keep(ctx, e):
            continue
        try:
            if ctx.gateway is not None:
                phd.check_gateway_reference(e.raw, f"Device/{ctx.gateway.device_id}", e.where)
            await _prepare(ctx, e, f"fhir:{request_id}:{e.index}", now, bindings)
        except AuthError as exc:
            if kind == "transaction" and ctx.gateway is None:
                raise
            e.error = FhirError(exc.status, "forbidden", f"{e.where}: {exc.message}")
        except FhirError as exc:
            e.error = _relocate(exc, e.where)
            if ctx.gateway is not None and exc.status == 422:
                # A device's memory is resent on every connection: one measurement egenmon
                # refuses (implausible, before the binding) must not block the others for
                # ever. It is kept in quarantine and answered so, not stored.
                e.kept = f"not stored, kept in quarantine: {e.error.diagnostics}"
                e.kept_severity, e.error = "warning", None
    observation_ids = {
        e.full_url: f"Observation/{observation_id(e.row[_TIME], e.row[_DEDUP])}"
        for e in entries
        if e.full_url and e.row is not None
    }
    for e in entries:
        if e.row is not None and e.row[_EXTRA] is not None and observation_ids:
            row = list(e.row)
            row[_EXTRA] = resolve_references(row[_EXTRA], observation_ids)
            e.row = tuple(row)
        elif e.kept is not None:
            e.raw = resolve_references(e.raw, observation_ids)
    failed = [e for e in entries if e.error is not None]
    if kind == "transaction" and failed:
        issues: list[dict[str, Any]] = [
            {
                "severity": "error",
                "code": e.error.code,
                "diagnostics": e.error.diagnostics,
                **({"expression": e.error.expression} if e.error.expression else {}),
            }
            for e in failed
            if e.error is not None
        ]
        reason = "transaction refused: " + "; ".join(i["diagnostics"] for i in issues)
        await _quarantine(ctx, body, reason, ctx.gateway.device_id if ctx.gateway else None)
        status = failed[0].error.status if failed[0].error else 400
        raise BundleRefused(status, issues)
    for e in failed:
        assert e.error is not None
        raw = orjson.dumps(e.raw) if e.raw is not None else b"null"
        await _quarantine(ctx, raw, e.error.diagnostics, _device_of(e.raw))
    if ctx.gateway is not None and (new_devices or gateway_ids):
        await _register_phd(ctx, new_devices, gateway_ids)
    for e in entries:
        if e.kept is not None and "quarantine" in e.kept:
            await _quarantine(ctx, orjson.dumps(e.raw), e.kept, _device_of(e.raw))
    await _existing(ctx, entries)
    await _write(ctx, entries)
    await _log_created(ctx, entries)
    return {
        "resourceType": "Bundle",
        "type": f"{kind}-response",
        "entry": [_response_entry(ctx, e) for e in entries],
    }


async def replay_quarantined(
    pipeline: Pipeline, raw: bytes, gateway: str | None = None
) -> tuple[bool, str]:
    """A quarantined FHIR body (an Observation or a transaction Bundle) through FHIR
    ingest again, as an admin and without quarantining it anew: (stored, what happened).
    A PHD gateway's Bundle (`gateway`: its device id) is replayed as that gateway, for the
    patient it is bound to now. Quarantine replay (`egenmon.ingest.quarantine.replay`) is
    given this function."""
    ctx = IngestContext(
        pool=pipeline.pool,
        pipeline=pipeline,
        principal=Principal("quarantine-replay", "admin", scopes=parse_scopes("system/*.cruds")),
        base="",
        quarantine=False,
    )
    try:
        kind = orjson.loads(raw).get("resourceType")
    except (orjson.JSONDecodeError, AttributeError):
        kind = None
    try:
        if gateway is not None and kind == "Bundle":
            as_gateway = await gateway_context(pipeline.pool, pipeline, gateway, "")
            ctx = replace(as_gateway, quarantine=False)
        if kind == "Bundle":
            response = await process_bundle(ctx, raw)
            answers = [e["response"] for e in response.get("entry", [])]
            statuses = [a["status"] for a in answers]
            # A gateway's measurement kept rather than stored (202 with a warning) is still
            # refused: resolving the entry would lose it.
            refused = [
                a
                for a in answers
                if not a["status"].startswith("2")
                or any(
                    i.get("severity") == "warning" for i in a.get("outcome", {}).get("issue", [])
                )
            ]
            if refused:
                return False, f"still refused: {len(refused)} of {len(statuses)} entries"
            return True, f"{len(statuses)} entries stored"
        status, _, _ = await create_observation(ctx, raw, None)
        return True, "created" if status == 201 else "already stored"
    except (FhirError, AuthError) as exc:
        reason = exc.diagnostics if isinstance(exc, FhirError) else exc.message
        return False, f"still refused: {reason}"
