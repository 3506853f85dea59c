"""The patient's own data paths (the patient app's backend, issue 15), as JSON.

- `POST /api/v1/me/readings`: readings the patient entered by hand (source
  `patient-entered`), through the pipeline's checks, dedup and quarantine; per reading,
  whether it is outside the patient's own limits and the plan's instruction ("what to do
  if"). `"dry_run": true` checks without storing (the app's confirmation step).
- `POST /api/v1/patients/{id}/readings`: the same, entered by a clinician of the
  patient's care unit on their behalf (source `staff-entered`, the clinician kept as
  performer).
- `GET /api/v1/me/today`: the measurements the plan expects today and where each stands.
- `GET /api/v1/me/observations?type=&days=7|30|90`: own readings, source and device, and
  the plan's limits and instructions.
- `GET /api/v1/me/devices`, `DELETE /api/v1/me/devices/{id}` (unbinds from now on).
- `POST /api/v1/me/devices/pairing-codes` and `POST /api/v1/devices/pair` (no credential
  but the code): pairing a self-bought device.

Every route but `pair` needs a principal; the `me` routes a patient's. Everything is
written to the access log; nothing here logs a value or a personnummer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from egenmon import jsonbody
from egenmon.alerts import monitoring
from egenmon.alerts.plans import QUANTITIES, Plan
from egenmon.alerts.today import today
from egenmon.deps import PrincipalDep, RuntimeDep, patient_access
from egenmon.devices import pairing
from egenmon.domain.ids import observation_id
from egenmon.domain.measurements import TYPES
from egenmon.domain.principals import AuthError, Principal
from egenmon.ingest.normalise import normalise_entered
from egenmon.ingest.service import pipeline_of
from egenmon.ingest.writer import WriteError
from egenmon.runtime import Runtime
from egenmon.store import devices as devices_store
from egenmon.store import login_throttle as throttle
from egenmon.store import pairing as pairing_store
from egenmon.store import plans, readings
from egenmon.store.access_log import log_access
from egenmon.store.quarantine import QuarantineEntry

router = APIRouter(prefix="/api/v1", tags=["patient"])

MAX_ENTRIES = 100
MEAL_URL = "https://egenmon.example.org/fhir/StructureDefinition/meal-context"
MEALS = ("fasting", "before_meal", "after_meal", "bedtime")
PRINCIPAL_SYSTEM = "urn:egenmon:principal"
DAYS = (7, 30, 90)
MAX_OBSERVATIONS = 5000
# At most this many pairing codes a patient may create an hour.
CODES_PER_HOUR = 5
# Wrong pairing codes from one address within PAIR_WINDOW before it is paused.
PAIR_ATTEMPTS = 10
PAIR_WINDOW = dt.timedelta(minutes=15)
_PAIR_COUNTER = "device-pairing"

# Message keys of an entry's refusal, with Swedish and English words for the app.
MESSAGES: dict[str, tuple[str, str]] = {
    "entry.implausible": (
        "Värdet kan inte stämma. Kontrollera att du skrivit av det rätt från mätaren.",
        "That value is not possible. Check that you copied it correctly from the device.",
    ),
    "entry.bp_order": (
        "Det övre trycket (systoliskt) måste vara högre än det undre (diastoliskt).",
        "The upper (systolic) pressure must be higher than the lower (diastolic) one.",
    ),
    "entry.future": (
        "Tiden ligger i framtiden. Ange när du mätte.",
        "The time is in the future. Give the time you measured.",
    ),
    "entry.time": (
        "Ange datum och tid för mätningen.",
        "Give the date and time of the measurement.",
    ),
    "entry.unit": ("Enheten känns inte igen.", "The unit is not recognised."),
    "entry.missing": ("Ett värde saknas.", "A value is missing."),
    "entry.invalid": ("Mätningen kunde inte tas emot.", "The measurement could not be taken."),
    "entry.meal": (
        "Ange måltid som fastande, före måltid, efter måltid eller vid sänggående.",
        "Give the meal context as fasting, before a meal, after a meal or at bedtime.",
    ),
}
OUTSIDE_TEXT = (
    "Värdet ligger utanför dina gränser.",
    "The value is outside your limits.",
)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _message_key(reason: str) -> str:
    if "outside the plausible range" in reason:
        return "entry.implausible"
    if "must exceed diastolic" in reason:
        return "entry.bp_order"
    if reason.startswith("time is in the future"):
        return "entry.future"
    if reason.startswith("time"):
        return "entry.time"
    if "unit" in reason:
        return "entry.unit"
    if "required" in reason or "missing" in reason or "needs" in reason:
        return "entry.missing"
    return "entry.invalid"


def _refusal(index: int, reason: str, key: str | None = None) -> dict[str, Any]:
    key = key or _message_key(reason)
    sv, en = MESSAGES[key]
    return {"index": index, "error": reason, "key": key, "message": {"sv": sv, "en": en}}


def _require_patient(principal: Principal) -> uuid.UUID:
    if principal.role != "patient" or principal.patient_id is None:
        raise AuthError(403, "only a patient may use /api/v1/me")
    return principal.patient_id


# --- entries ---------------------------------------------------------------------------


def _parse_entries(body: bytes) -> tuple[list[Any], bool]:
    """(the readings, dry_run) from an entry body; ValueError naming what is wrong."""
    try:
        data = jsonbody.loads(body)
    except jsonbody.JsonBodyError as e:
        raise ValueError(f"body {e}") from None
    if type(data) is not dict:
        raise ValueError("body must be a JSON object with readings")
    unknown = sorted(set(data) - {"readings", "dry_run"})
    if unknown:
        shown = ", ".join(repr(k)[:40] for k in unknown[:5])
        raise ValueError(f"unknown field {shown}; an entry has readings and dry_run")
    entries = data.get("readings")
    if type(entries) is not list or not 1 <= len(entries) <= MAX_ENTRIES:
        raise ValueError(f"readings: must be an array of 1 to {MAX_ENTRIES} readings")
    dry_run = data.get("dry_run", False)
    if type(dry_run) is not bool:
        raise ValueError("dry_run: must be true or false")
    return entries, dry_run


def _split_meal(
    entries: list[Any], performer: dict[str, Any] | None
) -> tuple[list[Any], list[dict[str, Any] | None], dict[int, dict[str, Any]]]:
    """The readings without `meal` (normalise does not know it), each row's extra (meal
    context, performer), and the refusals of a wrong meal context."""
    plain: list[Any] = []
    extras: list[dict[str, Any] | None] = []
    refused: dict[int, dict[str, Any]] = {}
    for i, entry in enumerate(entries):
        extra: dict[str, Any] = {}
        if performer is not None:
            extra["performer"] = [performer]
        if type(entry) is dict and "meal" in entry:
            entry = dict(entry)
            meal = entry.pop("meal")
            if entry.get("type") != "blood_glucose" or meal not in MEALS:
                refused[i] = _refusal(
                    i,
                    f"meal: one of {', '.join(MEALS)}, for blood_glucose only",
                    "entry.meal",
                )
            else:
                extra["extension"] = [{"url": MEAL_URL, "valueCode": meal}]
        plain.append(entry)
        extras.append(extra or None)
    return plain, extras, refused


def _limits_check(plan: Plan, row: tuple) -> dict[str, Any]:
    """Whether a row is outside the plan's limits, which limits, and the instruction."""
    type_ = row[3]
    thresholds = plan.effective_thresholds()
    crossed: list[dict[str, Any]] = []
    for quantity, (qtype, column) in QUANTITIES.items():
        if qtype != type_:
            continue
        value = row[6] if column == "value" else row[7]
        threshold = thresholds.get(quantity)
        if threshold is None or value is None:
            continue
        crossed += [
            {"quantity": quantity, "value": value, **c.as_dict()} for c in threshold.check(value)
        ]
    out: dict[str, Any] = {"outside_limits": bool(crossed), "crossed": crossed}
    if crossed:
        out["outside_text"] = {"sv": OUTSIDE_TEXT[0], "en": OUTSIDE_TEXT[1]}
        text = plan.instructions.get(type_)
        out["instruction"] = {"type": type_, "text": text} if text else None
    return out


async def _plan(runtime: Runtime, patient_id: uuid.UUID) -> Plan:
    async with runtime.pool.connection() as conn:
        return monitoring.from_row(await plans.aget_plan(conn, patient_id))


async def _enter(
    runtime: Runtime,
    principal: Principal,
    patient_id: uuid.UUID,
    body: bytes,
    source: str,
) -> JSONResponse:
    try:
        entries, dry_run = _parse_entries(body)
    except ValueError as e:
        return _error(400, str(e))
    performer = None
    if source != "patient-entered":
        performer = {
            "identifier": {"system": PRINCIPAL_SYSTEM, "value": principal.subject},
            "display": principal.role,
        }
    pipeline = pipeline_of(runtime)
    if pipeline is None:
        return _error(503, "ingest is not running in this process; try again")
    plain, extras, meal_refused = _split_meal(entries, performer)
    plan = await _plan(runtime, patient_id)
    keep = [i for i in range(len(plain)) if i not in meal_refused]
    now = dt.datetime.now(dt.UTC)
    if dry_run:
        rows, errors = normalise_entered([plain[i] for i in keep], patient_id, now, source, now)
        accepted = duplicates = 0
    else:
        if meal_refused:
            await pipeline.store_quarantine(
                [
                    _quarantine_entry(source, r["error"], entries[i], i, now)
                    for i, r in meal_refused.items()
                ]
            )
        try:
            result, rows = await pipeline.ingest_entered(
                [plain[i] for i in keep],
                patient_id=patient_id,
                source=source,
                extra=[extras[i] for i in keep],
            )
        except WriteError:
            return _error(503, "the store is unavailable; try again")
        errors = [(r["index"], r["error"]) for r in result.rejected]
        accepted, duplicates = result.accepted, result.duplicates
    rejected = sorted(
        [*meal_refused.values(), *(_refusal(keep[i], reason) for i, reason in errors)],
        key=lambda r: int(r["index"]),
    )
    bad = {keep[i] for i, _ in errors}
    good = [i for i in keep if i not in bad]
    answered = []
    for index, row in zip(good, rows, strict=True):
        answered.append(
            {
                "index": index,
                "id": observation_id(row[0], row[13]),
                "type": row[3],
                "time": row[0].isoformat(),
                **_limits_check(plan, row),
            }
        )
    if not dry_run and (accepted or duplicates):
        await log_access(
            runtime.pool,
            principal,
            "create",
            "readings/entered",
            [patient_id],
            {"source": source, "accepted": accepted, "duplicates": duplicates},
        )
    status = 200 if rows else 422
    return JSONResponse(
        {
            "dry_run": dry_run,
            "accepted": accepted,
            "duplicates": duplicates,
            "rejected": rejected,
            "readings": answered,
        },
        status_code=status,
    )


def _quarantine_entry(
    source: str, reason: str, raw: Any, index: int, at: dt.datetime
) -> QuarantineEntry:
    return QuarantineEntry(
        at, source, reason, orjson.dumps(raw), None, None, "reading", None, index
    )


@router.post("/me/readings")
async def post_my_readings(
    request: Request, principal: PrincipalDep, runtime: RuntimeDep
) -> JSONResponse:
    """Readings the patient entered by hand (source patient-entered)."""
    patient_id = _require_patient(principal)
    return await _enter(runtime, principal, patient_id, await request.body(), "patient-entered")


@router.post("/patients/{patient}/readings")
async def post_patient_readings(
    request: Request, patient: str, principal: PrincipalDep, runtime: RuntimeDep
) -> JSONResponse:
    """Readings a clinician of the patient's care unit entered on their behalf."""
    if principal.role != "clinician":
        raise AuthError(403, "only a clinician of the patient's care unit may enter readings")
    principal.require("Observation", "c")
    try:
        patient_id = uuid.UUID(patient)
    except ValueError:
        return _error(404, "unknown patient")
    async with runtime.pool.connection() as conn:
        access = await patient_access(conn, principal, patient_id)
    if not access.granted:
        await log_access(
            runtime.pool,
            principal,
            "create-refused",
            "readings/entered",
            [patient_id] if access.exists else [],
            {"status": 404},
        )
        return _error(404, f"unknown patient {patient_id}")
    return await _enter(runtime, principal, patient_id, await request.body(), "staff-entered")


# --- today and own values ----------------------------------------------------------------


@router.get("/me/today")
async def get_today(principal: PrincipalDep, runtime: RuntimeDep) -> dict[str, Any]:
    """The measurements the plan expects today and whether each is done."""
    patient_id = _require_patient(principal)
    plan = await _plan(runtime, patient_id)
    tz = runtime.settings.tz
    now = dt.datetime.now(dt.UTC)
    types = [t for t in plan.expected if t in TYPES]
    longest = max(plan.expected.values(), default=dt.timedelta(days=1))
    since = now - max(longest, dt.timedelta(days=2))
    async with runtime.pool.connection() as conn:
        rows = await readings.patient_readings(
            conn, patient_id, [TYPES[t].loinc for t in types], since, MAX_OBSERVATIONS
        )
    times: dict[str, list[dt.datetime]] = {}
    for r in rows:
        times.setdefault(r["type"], []).append(r["time"])
    tasks = today(plan.expected, times, now, tz)
    await log_access(runtime.pool, principal, "read", "me/today", [patient_id])
    return {
        "date": now.astimezone(tz).date().isoformat(),
        "timezone": str(tz),
        "protocol": plan.protocol,
        "tasks": [t.as_dict() for t in tasks],
    }


def _limits_of(plan: Plan, types: list[str]) -> dict[str, Any]:
    thresholds = plan.effective_thresholds()
    out: dict[str, Any] = {}
    for quantity, (type_, _) in QUANTITIES.items():
        t = thresholds.get(quantity)
        if type_ in types and t is not None:
            alarms = [{"op": a.op, "limit": a.limit} for a in t.alarms]
            out[quantity] = {"low": t.low, "high": t.high, "alarms": alarms}
    return out


def _observation(row: Mapping[str, Any]) -> dict[str, Any]:
    extra = row.get("extra") or {}
    meal = next(
        (e.get("valueCode") for e in extra.get("extension", ()) if e.get("url") == MEAL_URL),
        None,
    )
    return {
        "id": observation_id(row["time"], row["dedup_key"]),
        "type": row["type"],
        "time": row["time"].isoformat(),
        "value": row["value"],
        "value2": row["value2"],
        "unit": row["unit"],
        "note": row["note"],
        "meal": meal,
        "source": row["source"],
        "device_id": row["device_id"],
        "entered": row["device_id"] is None,
    }


@router.get("/me/observations")
async def get_my_observations(
    principal: PrincipalDep, runtime: RuntimeDep, type: str | None = None, days: int = 30
) -> Any:
    """Own readings over 7, 30 or 90 days, newest first, with the plan's limits."""
    patient_id = _require_patient(principal)
    if days not in DAYS:
        return _error(400, f"days: one of {', '.join(map(str, DAYS))}")
    if type is not None and type not in TYPES:
        return _error(400, f"type: unknown; one of {', '.join(TYPES)}")
    types = [type] if type else list(TYPES)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    async with runtime.pool.connection() as conn:
        rows = await readings.patient_readings(
            conn, patient_id, [TYPES[t].loinc for t in types], since, MAX_OBSERVATIONS
        )
    plan = await _plan(runtime, patient_id)
    await log_access(runtime.pool, principal, "read", "me/observations", [patient_id])
    return {
        "days": days,
        "observations": [_observation(r) for r in rows if r["type"] in types],
        "limits": _limits_of(plan, types),
        "instructions": {t: s for t, s in plan.instructions.items() if t in types},
    }


# --- own devices and pairing ------------------------------------------------------------


@router.get("/me/devices")
async def get_my_devices(principal: PrincipalDep, runtime: RuntimeDep) -> dict[str, Any]:
    """The devices bound to the patient now: model, last heard, battery."""
    patient_id = _require_patient(principal)
    async with runtime.pool.connection() as conn:
        rows = await devices_store.patient_devices(conn, patient_id)
    await log_access(runtime.pool, principal, "read", "me/devices", [patient_id])
    return {
        "devices": [
            {
                "id": r["id"],
                "model": r["model"],
                "manufacturer": r["manufacturer"],
                "status": r["status"],
                "last_seen": r["last_seen"].isoformat() if r["last_seen"] else None,
                "battery": r["battery"],
                "bound_from": r["bound_from"].isoformat(),
            }
            for r in rows
            if r["bound_until"] is None
        ]
    }


@router.delete("/me/devices/{device_id}")
async def delete_my_device(
    device_id: str, principal: PrincipalDep, runtime: RuntimeDep
) -> JSONResponse:
    """Unbind one of the patient's devices from now on; its readings stay."""
    patient_id = _require_patient(principal)
    now = dt.datetime.now(dt.UTC)
    async with runtime.pool.connection() as conn:
        closed = await devices_store.end_patient_binding(conn, device_id[:64], patient_id, now)
    if not closed:
        return _error(404, "no such device bound to you")
    await log_access(
        runtime.pool, principal, "update", "me/devices", [patient_id], {"unbound": device_id}
    )
    return JSONResponse({"device_id": device_id, "unbound_at": now.isoformat()})


@router.post("/me/devices/pairing-codes")
async def post_pairing_code(
    request: Request, principal: PrincipalDep, runtime: RuntimeDep
) -> JSONResponse:
    """A one-time code (15 minutes, one use) to pair a self-bought device."""
    patient_id = _require_patient(principal)
    try:
        data = jsonbody.loads(await request.body())
        if type(data) is not dict or set(data) - {"model"}:
            raise ValueError('body must be {"model": "..."}')
        model = pairing.check_model(data.get("model"))
    except (jsonbody.JsonBodyError, ValueError) as e:
        return _error(400, str(e))
    code = pairing.new_code()
    async with runtime.pool.connection() as conn:
        if (
            await pairing_store.codes_since(conn, patient_id, dt.timedelta(hours=1))
            >= CODES_PER_HOUR
        ):
            return _error(429, f"at most {CODES_PER_HOUR} pairing codes an hour")
        expires = await pairing_store.create_code(
            conn,
            pairing.code_digest(pairing.normalise_code(code) or ""),
            patient_id,
            model,
            pairing.CODE_TTL,
        )
    await log_access(runtime.pool, principal, "create", "me/pairing-codes", [patient_id])
    return JSONResponse(
        {
            "code": code,
            "model": model,
            "expires_at": expires.isoformat(),
            "valid_seconds": int(pairing.CODE_TTL.total_seconds()),
        },
        status_code=201,
    )


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.post("/devices/pair")
async def post_pair(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """Redeem a pairing code once for the device's credentials (no other credential)."""
    address = _address(request)
    async with runtime.pool.connection() as conn:
        _, left = await throttle.blocked_for(conn, address, _PAIR_COUNTER)
    if left is not None:
        seconds = max(1, int(left.total_seconds()))
        return JSONResponse(
            {"error": "too many wrong pairing codes; try again later"},
            status_code=429,
            headers={"Retry-After": str(seconds)},
        )
    try:
        data = jsonbody.loads(await request.body())
    except jsonbody.JsonBodyError as e:
        return _error(400, f"body {e}")
    if type(data) is not dict or set(data) != {"code"}:
        return _error(400, 'body must be {"code": "..."}')
    code = pairing.normalise_code(data["code"])
    try:
        if code is None:
            raise pairing.PairingError(404, "unknown pairing code")
        paired = await asyncio.to_thread(pairing.redeem, runtime.settings, code)
    except pairing.PairingError as e:
        if e.status in (404, 410):
            async with runtime.pool.connection() as conn:
                failures = await throttle.count_failure(
                    conn, "account", address, _PAIR_COUNTER, PAIR_WINDOW
                )
                if failures >= PAIR_ATTEMPTS:
                    await throttle.block(conn, "account", address, _PAIR_COUNTER, PAIR_WINDOW)
        return _error(e.status, e.message)
    await log_access(
        runtime.pool,
        Principal(f"device:{paired.device_id}", "device"),
        "create",
        "devices/pair",
        [paired.patient_id],
        {"device": paired.device_id},
    )
    return JSONResponse(
        {"device_id": paired.device_id, "secret": paired.secret, "mqtt": paired.mqtt},
        status_code=200,
    )
