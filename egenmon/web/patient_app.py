"""The patient app's first pages: sign-in at `/app/login` (through the provider), the
landing page `/app/` with the patient's own access-log extract ("Vem har sett mina
uppgifter"), logout; and the same extract as JSON at `GET /api/v1/me/access-log`.

Another issue grows `/app/` into the full patient app; this module holds its sign-in and
the extract.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from egenmon.deps import PrincipalDep, RuntimeDep, get_runtime
from egenmon.domain.principals import AuthError, Principal
from egenmon.store import access_log
from egenmon.web import sso, views
from egenmon.web.i18n import LOCALES, local_time, translate
from egenmon.web.routes import (
    LOCALE_COOKIE,
    UIRoute,
    _csrf_ok,
    _form,
    _redirect,
    _refused,
    _remember_locale,
    _sessions,
    render,
)
from egenmon.web.sessions import UISession

router = APIRouter(route_class=UIRoute, include_in_schema=False)
api = APIRouter()

PAGE_DEFAULT = 50
PAGE_MAX = 200
# What a log entry's action reads as in the extract (others show as they are).
ACTIONS = ("read", "search", "create", "update", "delete", "read-refused", "login", "login-refused")


async def _patient_session(request: Request) -> UISession | None:
    session = await _sessions(request).load(request)
    return session if session is not None and session.is_patient else None


@router.get("/app/login")
async def app_login(request: Request) -> Response:
    next_ = views.local_path(request.query_params.get("next"), "/app/")
    if await _patient_session(request) is not None:
        return _redirect(next_)
    locale = sso.locale_of(request)
    runtime = get_runtime(request)
    response = render(
        request,
        "app_login.html",
        None,
        locale=locale,
        next=next_,
        sso=runtime.settings.oidc,
        flash={"kind": "info", "text": translate(locale, "login.logged_out")}
        if request.query_params.get("bye")
        else None,
    )
    if request.query_params.get("lang") in LOCALES:
        _remember_locale(request, response, locale)
    return response


def entry_view(row: dict[str, Any], own: str, locale: str, tz: Any) -> dict[str, Any]:
    """One extract line as the page shows it."""
    action = row["action"] if row["action"] in ACTIONS else "other"
    if row["actor"] == own:
        who = translate(locale, "extract.you")
    else:
        who = row["actor_name"] or row["actor"]
    return {
        "at": local_time(row["at"], tz),
        "who": who,
        "hsa_id": row["actor_hsa_id"] or "",
        "role": translate(locale, f"extract.role.{row['role']}"),
        "unit": row["care_unit_name"] or "–",
        "action": translate(locale, f"extract.action.{action}"),
        "resource": row["resource"],
        "refused": row["action"].endswith("-refused"),
    }


@router.get("/app/")
async def app_home(request: Request) -> Response:
    session = await _patient_session(request)
    if session is None:
        return _redirect("/app/login?next=/app/")
    runtime = get_runtime(request)
    locale = sso.locale_of(request)
    principal = session.principal
    assert session.patient_id is not None
    async with runtime.pool.connection() as conn:
        rows = await access_log.patient_extract(conn, session.patient_id, limit=PAGE_DEFAULT)
    await access_log.log_access(
        runtime.pool, principal, "read", "app/access-log", [session.patient_id]
    )
    entries = [entry_view(r, principal.subject, locale, runtime.settings.tz) for r in rows]
    return render(
        request,
        "app_home.html",
        session,
        locale=locale,
        page="app",
        entries=entries,
        more=len(rows) == PAGE_DEFAULT,
    )


@router.post("/app/logout")
async def app_logout(request: Request) -> Response:
    sessions = _sessions(request)
    session = await sessions.load(request)
    form = await _form(request)
    if session is not None and not _csrf_ok(session, form, request):
        return _refused(request, session)
    target = await sso.logout_target(
        request, session.id_token if session else None, "/app/login?bye=1"
    )
    response = _redirect(target)
    await sessions.end(request, response)
    return response


@router.post("/app/locale")
async def app_locale(request: Request) -> Response:
    session = await _patient_session(request)
    form = await _form(request)
    if session is None or not _csrf_ok(session, form, request):
        return _refused(request, session)
    locale = form.get("locale") if form.get("locale") in LOCALES else "sv"
    response = _redirect(views.local_path(form.get("next"), "/app/"))
    _remember_locale(request, response, locale or "sv")
    return response


def _page_params(request: Request) -> tuple[int, int | None]:
    q = request.query_params
    try:
        limit = int(q.get("limit") or PAGE_DEFAULT)
    except ValueError:
        raise AuthError(400, "limit must be a whole number") from None
    if not 1 <= limit <= PAGE_MAX:
        raise AuthError(400, f"limit must be 1-{PAGE_MAX}")
    before = q.get("before")
    if before is None:
        return limit, None
    if not before.isdigit() or len(before) > 18:
        raise AuthError(400, "before must be an entry id from a previous page")
    return limit, int(before)


@api.get("/api/v1/me/access-log", tags=["patients"])
async def my_access_log(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep
) -> JSONResponse:
    """The signed-in patient's own access-log extract, newest first (patient token or
    patient session): who, at which care unit, did what with their data and when,
    refused attempts included. Paged with `limit` (1-200) and `before` (the `next` link)."""
    if principal.role != "patient" or principal.patient_id is None:
        raise AuthError(403, "only a patient reads their own access log here")
    limit, before = _page_params(request)
    async with runtime.pool.connection() as conn:
        rows = await access_log.patient_extract(
            conn, principal.patient_id, limit=limit, before_id=before
        )
    await access_log.log_access(
        runtime.pool, principal, "read", "me/access-log", [principal.patient_id]
    )
    return JSONResponse(
        {
            "entries": [_entry_json(r, principal) for r in rows],
            "next": f"/api/v1/me/access-log?limit={limit}&before={rows[-1]['id']}"
            if len(rows) == limit
            else None,
        },
        headers={"Cache-Control": "no-store"},
    )


def _entry_json(row: dict[str, Any], principal: Principal) -> dict[str, Any]:
    at: dt.datetime = row["at"]
    return {
        "id": row["id"],
        "at": at.isoformat(),
        "actor": {
            "id": row["actor"],
            "name": row["actor_name"],
            "hsa_id": row["actor_hsa_id"],
            "role": row["role"],
            "self": row["actor"] == principal.subject,
        },
        "care_unit": {
            "id": str(row["care_unit_id"]) if row["care_unit_id"] else None,
            "name": row["care_unit_name"],
            "hsa_id": row["care_unit_hsa_id"],
        }
        if row["care_unit_name"]
        else None,
        "action": row["action"],
        "resource": row["resource"],
        "refused": row["action"].endswith("-refused"),
    }


__all__ = ["LOCALE_COOKIE", "api", "router"]
