"""The Alerts API (contract "Alerts API"), monitoring plans and webhooks, as JSON.

Who may do what: clinicians see and act on the alerts of their care unit's patients only;
integrators and admins see all; acting on an alert needs the Task update scope; plans are
read with the CarePlan read scope and set by a clinician of the patient's unit or an admin
with the CarePlan update scope (`user/CarePlan.u`, part of a clinician's default token);
webhooks are an admin's or an integrator's own (bound to its care unit, see below).
Patients have no access to this API.

An alert or patient the caller may not see answers 404, exactly as one that does not exist
(as FHIR reads do), so the API tells nothing about other care units. Every list and every
action is written to the access log, and so is every refusal (action `…-refused`, with
the status and reason); the log holds parameter names and checked filter values, never a
raw query value.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from egenmon.alerts import lifecycle, monitoring
from egenmon.alerts.rules.findings import RULES
from egenmon.deps import PrincipalDep, get_runtime, patient_access
from egenmon.domain.principals import AuthError, Principal, roles_allowed
from egenmon.domain.severity import SEVERITIES
from egenmon.runtime import Runtime
from egenmon.store import alerts as alerts_store
from egenmon.store import plans, webhooks
from egenmon.store.access_log import log_access, param_names

router = APIRouter(prefix="/api/v1", tags=["alerts"])

MAX_LIMIT = 5000


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _uuid(text: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not an id") from None


def _values(text: str | None, allowed: tuple[str, ...], what: str) -> list[str]:
    """A comma-separated filter, each value checked."""
    if not text:
        return []
    values = [v.strip() for v in text.split(",") if v.strip()]
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ValueError(f"unknown {what} {', '.join(bad)}; use {', '.join(allowed)}")
    return values


STAFF = ("clinician", "integrator", "admin")


async def _log_refused(
    runtime: Runtime,
    principal: Principal,
    action: str,
    resource: str,
    patient_ids: Any,
    status: int,
    reason: str,
    **detail: Any,
) -> None:
    await log_access(
        runtime.pool,
        principal,
        f"{action}-refused",
        resource,
        patient_ids,
        {"outcome": "refused", "status": status, "reason": reason, **detail},
    )


async def _allow(
    request: Request,
    principal: Principal,
    action: str,
    resource: str,
    roles: tuple[str, ...],
    scope: tuple[str, str],
) -> None:
    """The role and scope check of a route; a refusal is logged, then raised (403)."""
    try:
        roles_allowed(principal, roles)
        principal.require(*scope)
    except AuthError as e:
        await _log_refused(
            get_runtime(request),
            principal,
            action,
            resource,
            [],
            e.status,
            e.message,
            params=param_names(request.query_params.multi_items()),
        )
        raise


# --- alerts ------------------------------------------------------------------------------------


@router.get("/alerts")
async def list_alerts(
    request: Request,
    principal: PrincipalDep,
    patient: str | None = None,
    care_unit: str | None = None,
    status: str | None = None,
    severity: str | None = None,
    rule: str | None = None,
    category: str | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 500,
) -> Any:
    """Alerts by patient, care unit, status, severity, rule (comma-separated values)."""
    await _allow(request, principal, "read", "alerts", STAFF, ("Flag", "s"))
    names = param_names(request.query_params.multi_items())
    try:
        patient_id = _uuid(patient, "patient") if patient else None
        unit_id = _uuid(care_unit, "care_unit") if care_unit else None
        statuses = _values(status, lifecycle.STATUSES, "status")
        severities = _values(severity, SEVERITIES, "severity")
        rules = _values(rule, RULES, "rule")
        categories = _values(category, lifecycle.CATEGORIES, "category")
    except ValueError as e:
        return _error(400, str(e))
    runtime = get_runtime(request)
    if principal.role == "clinician":
        if unit_id is not None and unit_id != principal.care_unit_id:
            message = "you may list only your own care unit's alerts"
            await _log_refused(runtime, principal, "read", "alerts", [], 403, message, params=names)
            raise AuthError(403, message)
        unit_id = principal.care_unit_id
    async with runtime.pool.connection() as conn:
        if patient_id is not None:
            access = await patient_access(conn, principal, patient_id)
            if not access.granted:
                # Another unit's patient and an unknown one get the same answer.
                await _log_refused(
                    runtime,
                    principal,
                    "read",
                    "alerts",
                    [patient_id] if access.exists else [],
                    404,
                    "not visible" if access.exists else "unknown patient",
                    params=names,
                )
                return _error(404, f"unknown patient {patient_id}")
        rows = await alerts_store.list_alerts(
            conn,
            patient_id=patient_id,
            care_unit_id=unit_id,
            statuses=statuses,
            severities=severities,
            rules=rules,
            categories=categories,
            limit=limit,
        )
    alerts = [lifecycle.alert_json(r) for r in rows]
    await log_access(
        runtime.pool,
        principal,
        "read",
        "alerts",
        {r["patient_id"] for r in rows},
        {
            "params": names,
            "filters": {
                "care_unit": str(unit_id) if unit_id else None,
                "status": statuses,
                "severity": severities,
                "rule": rules,
                "category": categories,
                "limit": limit,
            },
            "count": len(rows),
        },
    )
    return {"alerts": alerts}


@router.get("/alerts/{alert_id}")
async def get_alert(request: Request, alert_id: str, principal: PrincipalDep) -> Any:
    """One alert with its history of events."""
    await _allow(request, principal, "read", "alerts", STAFF, ("Flag", "r"))
    runtime = get_runtime(request)
    try:
        aid = _uuid(alert_id, "alert")
    except ValueError:
        await _log_refused(runtime, principal, "read", "alerts", [], 404, "not an id")
        return _error(404, "no such alert")
    async with runtime.pool.connection() as conn:
        row = await alerts_store.alert_for_update(conn, aid, lock=False)
        if row is None or not principal.may_see(row["patient_id"], row["care_unit_id"]):
            await _log_refused(
                runtime,
                principal,
                "read",
                f"alerts/{aid}",
                [row["patient_id"]] if row else [],
                404,
                "not visible" if row else "unknown alert",
            )
            return _error(404, f"no alert {aid}")
        history = await alerts_store.alert_events(conn, aid)
    await log_access(runtime.pool, principal, "read", f"alerts/{aid}", [row["patient_id"]])
    return {
        **lifecycle.alert_json(row),
        "events": [{**e, "at": e["at"].isoformat()} for e in history],
    }


class ActionIn(BaseModel):
    note: str | None = Field(default=None, max_length=lifecycle.MAX_NOTE)


@router.post("/alerts/{alert_id}/{action}")
async def alert_action(
    request: Request,
    alert_id: str,
    action: Literal["acknowledge", "resolve", "dismiss"],
    principal: PrincipalDep,
    body: ActionIn | None = None,
) -> Any:
    """Acknowledge, resolve or dismiss an alert, with a note."""
    await _allow(request, principal, "update", "alerts", ("clinician", "admin"), ("Task", "u"))
    runtime = get_runtime(request)
    try:
        aid = _uuid(alert_id, "alert")
    except ValueError:
        await _log_refused(runtime, principal, "update", "alerts", [], 404, "not an id")
        return _error(404, "no such alert")
    note = body.note if body else None
    try:
        result = await lifecycle.act(runtime.pool, principal, aid, action, note)
    except (lifecycle.AlertNotFound, AuthError) as e:
        # Another unit's alert answers as an unknown one.
        async with runtime.pool.connection() as conn:
            row = await alerts_store.alert_for_update(conn, aid, lock=False)
        await _log_refused(
            runtime,
            principal,
            "update",
            f"alerts/{aid}",
            [row["patient_id"]] if row else [],
            404,
            "not visible" if isinstance(e, AuthError) else "unknown alert",
            alert_action=action,
        )
        return _error(404, f"no alert {aid}")
    except lifecycle.TransitionError as e:
        return _error(409, str(e))
    await log_access(
        runtime.pool,
        principal,
        "update",
        f"alerts/{aid}",
        [result.patient_id],
        {"action": action, "status": result.alert["status"]},
    )
    return result.alert


# --- monitoring plans --------------------------------------------------------------------------


class ThresholdIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    low: float | None = None
    high: float | None = None
    severity: Literal["low", "medium", "high"] = "medium"


class PlanIn(BaseModel):
    """A plan as a clinician sets it; a field not named here is refused (422), never
    silently dropped."""

    model_config = ConfigDict(extra="forbid")

    protocol: str
    thresholds: list[str] | dict[str, ThresholdIn] = Field(default_factory=list)
    news2_scale2: bool = False
    spo2_target: list[float] | None = None
    news2_freshness_hours: float | None = Field(
        default=None, description="how old a NEWS2 value may be and still score (1-24 h)"
    )
    expected: dict[str, float | None] | None = Field(
        default=None, description="hours per measurement type (null removes it)"
    )
    instructions: dict[str, str] = Field(
        default_factory=dict,
        description="what to do if: measurement type → the patient's instruction",
    )


async def _patient_access(
    runtime: Runtime, principal: Principal, patient: str, action: str
) -> uuid.UUID | JSONResponse:
    """The patient's id if this principal may see them; else a 404, the same for another
    unit's patient and an unknown one, and the refusal logged."""
    try:
        pid = _uuid(patient, "patient")
    except ValueError:
        await _log_refused(runtime, principal, action, "patients/plan", [], 404, "not an id")
        return _error(404, "unknown patient")
    async with runtime.pool.connection() as conn:
        access = await patient_access(conn, principal, pid)
    if not access.granted:
        await _log_refused(
            runtime,
            principal,
            action,
            f"patients/{pid}/plan",
            [pid] if access.exists else [],
            404,
            "not visible" if access.exists else "unknown patient",
        )
        return _error(404, f"unknown patient {pid}")
    return pid


@router.get("/patients/{patient}/plan")
async def get_plan(request: Request, patient: str, principal: PrincipalDep) -> Any:
    """The patient's plan (the `general` protocol when none was set) and its history."""
    await _allow(request, principal, "read", "patients/plan", STAFF, ("CarePlan", "r"))
    runtime = get_runtime(request)
    pid = await _patient_access(runtime, principal, patient, "read")
    if isinstance(pid, JSONResponse):
        return pid
    async with runtime.pool.connection() as conn:
        row = await plans.aget_plan(conn, pid)
        history = await plans.plan_history(conn, pid)
    await log_access(runtime.pool, principal, "read", f"patients/{pid}/plan", [pid])
    return {
        **monitoring.view(pid, row),
        "history": [
            {
                "version": h["version"],
                "protocol": h["protocol"],
                "plan": h["plan"],
                "set_by": h["set_by"],
                "set_at": h["set_at"].isoformat(),
            }
            for h in history
        ],
    }


@router.put("/patients/{patient}/plan")
async def put_plan(request: Request, patient: str, body: PlanIn, principal: PrincipalDep) -> Any:
    """Set the patient's plan (a new version; who and when are recorded). Needs the
    CarePlan update scope; the limits are checked as the CLI and the UI check them."""
    await _allow(
        request, principal, "update", "patients/plan", ("clinician", "admin"), ("CarePlan", "u")
    )
    runtime = get_runtime(request)
    pid = await _patient_access(runtime, principal, patient, "update")
    if isinstance(pid, JSONResponse):
        return pid
    thresholds: Any = body.thresholds
    if isinstance(thresholds, dict):
        thresholds = {q: t.model_dump() for q, t in thresholds.items()}
    try:
        plan = monitoring.make_plan(
            body.protocol,
            thresholds,
            news2_scale2=body.news2_scale2,
            spo2_target=body.spo2_target,
            expected_hours=body.expected,
            news2_freshness_hours=body.news2_freshness_hours,
            instructions=body.instructions,
        )
    except monitoring.PlanError as e:
        return _error(400, str(e))
    async with runtime.pool.connection() as conn:
        row = await plans.aset_plan(
            conn, pid, plan.protocol, monitoring.document(plan), principal.subject
        )
    await log_access(
        runtime.pool,
        principal,
        "update",
        f"patients/{pid}/plan",
        [pid],
        {"version": row["version"], "protocol": plan.protocol},
    )
    return monitoring.view(pid, row)


# --- webhooks (admins and integrators) ---------------------------------------------------------
#
# An admin's webhooks get every alert (or one care unit's, given `care_unit`). An
# integrator registers its own with its own token; one bound to a care unit (its token's
# `care_unit`) gets that unit's alerts only, and sees and changes only the hooks it made.
# An integrator's hook always has a secret of its own (generated and shown once when not
# given): the platform's EGENMON_WEBHOOK_SECRET is never an integrator's to know.

HOOK_ROLES = ("admin", "integrator")


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://\S+$", max_length=2048)
    secret: str | None = Field(default=None, min_length=16, max_length=256)
    description: str | None = Field(default=None, max_length=500)
    care_unit: uuid.UUID | None = None


class WebhookPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(default=None, pattern=r"^https?://\S+$", max_length=2048)
    description: str | None = Field(default=None, max_length=500)
    active: bool | None = None


def _hook(row: dict) -> dict[str, Any]:
    out = {
        "id": str(row["id"]),
        "url": row["url"],
        "active": row["active"],
        "description": row["description"],
        "created_by": row["created_by"],
        "created_at": row["created_at"].isoformat(),
    }
    if "care_unit_id" in row:
        out["care_unit"] = str(row["care_unit_id"]) if row["care_unit_id"] else None
    return out


async def _own_hook(conn: Any, principal: Principal, webhook_id: str) -> dict | None:
    """The caller's webhook (an admin's: any); another's looks unknown."""
    try:
        wid = _uuid(webhook_id, "webhook")
    except ValueError:
        return None
    row = await webhooks.aget_webhook(conn, wid)
    if row is None or (principal.role != "admin" and row["created_by"] != principal.subject):
        return None
    return row


@router.get("/webhooks")
async def list_webhooks(request: Request, principal: PrincipalDep) -> Any:
    roles_allowed(principal, HOOK_ROLES)
    async with get_runtime(request).pool.connection() as conn:
        if principal.role == "admin":
            rows = await webhooks.alist_webhooks(conn)
        else:
            rows = await webhooks.alist_owned_webhooks(conn, principal.subject)
    return {"webhooks": [_hook(r) for r in rows]}


@router.post("/webhooks", status_code=201)
async def add_webhook(request: Request, body: WebhookIn, principal: PrincipalDep) -> Any:
    """Subscribe a URL to alert events. An admin's hook without a secret is signed with
    EGENMON_WEBHOOK_SECRET; an integrator's gets a generated one, shown once."""
    roles_allowed(principal, HOOK_ROLES)
    runtime = get_runtime(request)
    if runtime.settings.production and not body.url.startswith("https://"):
        return _error(400, "url must be https in production")
    unit = body.care_unit
    bound = principal.care_unit_id if principal.role == "integrator" else None
    if bound is not None:
        if unit is not None and unit != bound:
            return _error(403, "care_unit: your token is bound to another care unit")
        unit = bound
    secret, shown = body.secret, None
    if secret is None and principal.role != "admin":
        secret = shown = secrets.token_urlsafe(32)
    if secret is None and not runtime.settings.webhook_secret:
        return _error(400, "give a secret: EGENMON_WEBHOOK_SECRET is not set")
    async with runtime.pool.connection() as conn:
        try:
            row = await webhooks.aadd_owned_webhook(
                conn, body.url, secret, body.description, principal.subject, unit, principal.role
            )
        except psycopg.errors.ForeignKeyViolation:
            return _error(400, "care_unit: no such care unit")
    out = _hook(row)
    if shown:
        out["secret"] = shown
    return out


@router.get("/webhooks/{webhook_id}")
async def get_webhook(request: Request, webhook_id: str, principal: PrincipalDep) -> Any:
    """A webhook and its latest deliveries (status, attempts, last error; no payloads)."""
    roles_allowed(principal, HOOK_ROLES)
    async with get_runtime(request).pool.connection() as conn:
        row = await _own_hook(conn, principal, webhook_id)
        if row is None:
            return _error(404, f"unknown webhook {webhook_id[:64]}")
        log = await webhooks.adelivery_log(conn, row["id"])
    out = _hook(row)
    out["deliveries"] = [
        {
            "id": d["id"],
            "alert_id": str(d["alert_id"]) if d["alert_id"] else None,
            "event": d["event"],
            "status": d["status"],
            "attempts": d["attempts"],
            "created_at": d["created_at"].isoformat(),
            "delivered_at": d["delivered_at"].isoformat() if d["delivered_at"] else None,
            "last_status": d["last_status"],
            "last_error": d["last_error"],
        }
        for d in log
    ]
    return out


@router.patch("/webhooks/{webhook_id}")
async def change_webhook(
    request: Request, webhook_id: str, body: WebhookPatch, principal: PrincipalDep
) -> Any:
    """Change a webhook's URL or description, or switch it off and on again."""
    roles_allowed(principal, HOOK_ROLES)
    runtime = get_runtime(request)
    if body.url and runtime.settings.production and not body.url.startswith("https://"):
        return _error(400, "url must be https in production")
    async with runtime.pool.connection() as conn:
        row = await _own_hook(conn, principal, webhook_id)
        if row is None:
            return _error(404, f"unknown webhook {webhook_id[:64]}")
        changed = await webhooks.aupdate_webhook(
            conn, row["id"], url=body.url, description=body.description, active=body.active
        )
    assert changed is not None
    return _hook(changed)


@router.delete("/webhooks/{webhook_id}")
async def disable_webhook(request: Request, webhook_id: str, principal: PrincipalDep) -> Any:
    """Stop sending to a webhook (kept, disabled, for the delivery log)."""
    roles_allowed(principal, HOOK_ROLES)
    async with get_runtime(request).pool.connection() as conn:
        row = await _own_hook(conn, principal, webhook_id)
        if row is None:
            return _error(404, f"unknown webhook {webhook_id[:64]}")
        await webhooks.aset_webhook_active(conn, row["id"], False)
    return {"id": str(row["id"]), "active": False}
