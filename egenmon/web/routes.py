"""The clinician UI: login, the worklist, the patient view, and their form actions.

Thin edges: each route parses, calls the store or the alerts lifecycle, and renders a
server-side template. Every page is sent with a strict Content-Security-Policy (scripts and
styles only from egenmon itself, no inline script), every POST checks the session's CSRF
token, and every patient view writes the access log.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import uuid
from collections.abc import Callable, Coroutine, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from egenmon.alerts import lifecycle, monitoring
from egenmon.alerts.plans import QUANTITIES, Plan
from egenmon.deps import get_runtime, patient_access
from egenmon.domain.measurements import TYPES
from egenmon.domain.principals import AuthError
from egenmon.runtime import Runtime
from egenmon.store import access_log, plans, users
from egenmon.store import alerts as alerts_store
from egenmon.store import patients as patients_store
from egenmon.web import accounts, views
from egenmon.web.i18n import (
    DEFAULT_LOCALE,
    LOCALE_NAMES,
    LOCALES,
    UNIT_DISPLAY,
    choose_locale,
    local_time,
    number,
    translate,
)
from egenmon.web.patient_page import load as load_patient_page
from egenmon.web.sessions import (
    CSRF_FIELD,
    Sessions,
    UISession,
    new_token,
    sessions_of,
    tokens_match,
)

HERE = Path(__file__).parent
STATIC = HERE / "static"
LOGIN_CSRF_COOKIE = "egenmon_login_csrf"
LOCALE_COOKIE = "egenmon_locale"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def _csp(request: Request) -> str:
    """CSP, letting a logout form's redirect reach the OpenID provider's end-session
    endpoint (form-action governs where a submitted form may be redirected)."""
    runtime = getattr(request.app.state, "runtime", None)
    issuer = runtime.settings.oidc_issuer if runtime is not None else None
    if not issuer:
        return CSP
    parts = urlsplit(issuer)
    return CSP.replace("form-action 'self'", f"form-action 'self' {parts.scheme}://{parts.netloc}")


class UIRoute(APIRoute):
    """Adds the security headers to every response of the UI (pages, fragments, assets)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_headers(request: Request) -> Response:
            response = await handler(request)
            response.headers.setdefault("Content-Security-Policy", _csp(request))
            for k, v in SECURITY_HEADERS.items():
                response.headers.setdefault(k, v)
            # Pages hold patient data: never kept in a shared tablet's cache.
            response.headers.setdefault("Cache-Control", "no-store")
            return response

        return with_headers


router = APIRouter(route_class=UIRoute, include_in_schema=False)


# --- templates and static files -----------------------------------------------------------


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["static"] = static_url
    return env


@lru_cache(maxsize=64)
def _file_version(path: Path, mtime_ns: int, size: int) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def _version(name: str) -> str:
    path = STATIC / name
    st = path.stat()
    return _file_version(path, st.st_mtime_ns, st.st_size)


def static_url(name: str) -> str:
    """The URL of a static file, versioned by its content so it can be cached for long."""
    return f"/ui/static/{name}?v={_version(name)}"


def _json_script(data: Any) -> str:
    """JSON safe inside <script type="application/json"> (no "</script>" can close it)."""
    text = orjson.dumps(data).decode()
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(
    request: Request,
    name: str,
    session: UISession | None,
    *,
    status: int = 200,
    locale: str | None = None,
    flash: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    loc = locale or (session.locale if session else DEFAULT_LOCALE)
    html = (
        environment()
        .get_template(name)
        .render(
            _=lambda key, **kw: translate(loc, key, **kw),
            locale=loc,
            other_locale="en" if loc == "sv" else "sv",
            locale_names=LOCALE_NAMES,
            user=session,
            csrf_token=session.csrf_token if session else "",
            request_path=_request_path(request),
            flash=flash,
            page=context.pop("page", ""),
            **context,
        )
    )
    return HTMLResponse(html, status_code=status)


def _request_path(request: Request) -> str:
    q = request.url.query
    return request.url.path + (f"?{q}" if q else "")


def _runtime(request: Request) -> Runtime:
    return get_runtime(request)


def _sessions(request: Request) -> Sessions:
    service = sessions_of(_runtime(request))
    if service is None:
        raise AuthError(401, "this process serves no UI sessions")
    return service


async def _session(request: Request) -> UISession:
    """The signed-in user; a 401 (the app sends /ui requests to the login page). A
    patient's session is no clinician's: the UI answers it as not signed in."""
    session = await _sessions(request).load(request)
    if session is None or session.is_patient:
        raise AuthError(401, "log in first")
    return session


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _csrf_ok(session: UISession, form: dict[str, str], request: Request) -> bool:
    given = form.get(CSRF_FIELD) or request.headers.get("x-csrf-token")
    return tokens_match(session.csrf_token, given)


def _refused(request: Request, session: UISession | None) -> HTMLResponse:
    loc = session.locale if session else DEFAULT_LOCALE
    return render(
        request, "error.html", session, status=403, message=translate(loc, "error.forbidden")
    )


def _not_found(request: Request, session: UISession) -> HTMLResponse:
    return render(
        request,
        "error.html",
        session,
        status=404,
        message=translate(session.locale, "error.not_found"),
    )


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _with_query(path: str, **params: str) -> str:
    sep = "&" if "?" in path else "?"
    return path + sep + urlencode(params)


# --- login and logout ---------------------------------------------------------------------


@router.get("/")
async def root() -> RedirectResponse:
    return _redirect("/ui/")


def _login_page(
    request: Request,
    *,
    locale: str,
    next_: str,
    token: str,
    status: int = 200,
    error: str = "",
    username: str = "",
) -> HTMLResponse:
    response = render(
        request,
        "login.html",
        None,
        status=status,
        locale=locale,
        next=next_,
        login_csrf=token,
        error=error,
        username=username,
        sso=_runtime(request).settings.oidc,
        local_accounts=_runtime(request).settings.local_accounts,
        max_attempts=accounts.MAX_FAILED_ATTEMPTS,
        lockout_minutes=int(accounts.LOCKOUT.total_seconds() // 60),
        flash={"kind": "info", "text": translate(locale, "login.logged_out")}
        if request.query_params.get("bye")
        else None,
    )
    # Login CSRF: a double-submit token (the browser has no session yet).
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        path="/login",
        max_age=3600,
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/login")
async def login_form(request: Request) -> Response:
    next_ = views.local_path(request.query_params.get("next"))
    current = await _sessions(request).load(request)
    if current is not None and not current.is_patient:
        return _redirect(next_)
    lang = request.query_params.get("lang")
    locale = choose_locale(lang, request.cookies.get(LOCALE_COOKIE))
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_token()
    response = _login_page(request, locale=locale, next_=next_, token=token)
    if lang in LOCALES:
        _remember_locale(request, response, locale)
    return response


def client_address(request: Request) -> str:
    """The client's address (uvicorn sets it from X-Forwarded-For of a trusted proxy)."""
    return request.client.host if request.client else "unknown"


@router.post("/login")
async def login(request: Request) -> Response:
    form = await _form(request)
    locale = choose_locale(request.cookies.get(LOCALE_COOKIE))
    next_ = views.local_path(form.get("next"))
    cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE)
    if not cookie_token or not tokens_match(cookie_token, form.get(CSRF_FIELD)):
        return _login_page(
            request,
            locale=locale,
            next_=next_,
            token=new_token(),
            status=403,
            error=translate(locale, "login.expired_form"),
        )
    if not _runtime(request).settings.local_accounts:
        # Local passwords are switched off: everyone signs in through the provider.
        return _login_page(
            request,
            locale=locale,
            next_=next_,
            token=new_token(),
            status=403,
            error=translate(locale, "login.local_off"),
        )
    username = form.get("username", "")
    result = await accounts.authenticate(
        _runtime(request).pool, username, form.get("password", ""), client_address(request)
    )
    if result.retry_after is not None:
        # This address has failed too often: the same answer whatever the username.
        throttled = _login_page(
            request,
            locale=locale,
            next_=next_,
            token=new_token(),
            status=429,
            error=translate(locale, "login.throttled", seconds=result.retry_after),
            username=username[:64],
        )
        throttled.headers["Retry-After"] = str(result.retry_after)
        return throttled
    if not result.ok or result.user is None:
        # Wrong password, unknown name, or a name paused for this address: one answer.
        return _login_page(
            request,
            locale=locale,
            next_=next_,
            token=new_token(),
            status=401,
            error=translate(locale, "login.failed"),
            username=username[:64],
        )
    response = _redirect(next_)
    await _sessions(request).begin(request, response, result.user["user_id"])
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    chosen = request.cookies.get(LOCALE_COOKIE)
    if chosen in LOCALES and chosen != result.user["locale"]:
        # A language picked on the login page becomes the user's choice.
        async with _runtime(request).pool.connection() as conn:
            await users.set_locale(conn, result.user["user_id"], chosen)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    sessions = _sessions(request)
    session = await sessions.load(request)
    form = await _form(request)
    if session is not None and not _csrf_ok(session, form, request):
        return _refused(request, session)
    # A session from the OpenID provider ends there too (RP-initiated logout).
    from egenmon.web.sso import logout_target

    target = await logout_target(request, session.id_token if session else None, "/login?bye=1")
    response = _redirect(target)
    await sessions.end(request, response)
    return response


def _remember_locale(request: Request, response: Response, locale: str) -> None:
    response.set_cookie(
        LOCALE_COOKIE,
        locale,
        max_age=365 * 86400,
        samesite="lax",
        path="/",
        secure=request.url.scheme == "https",
    )


@router.post("/ui/locale")
async def set_locale(request: Request) -> Response:
    session = await _session(request)
    form = await _form(request)
    if not _csrf_ok(session, form, request):
        return _refused(request, session)
    locale = choose_locale(form.get("locale"))
    async with _runtime(request).pool.connection() as conn:
        assert session.user_id is not None
        await users.set_locale(conn, session.user_id, locale)
    response = _redirect(views.local_path(form.get("next")))
    _remember_locale(request, response, locale)
    return response


# --- the worklist -------------------------------------------------------------------------


async def _worklist(
    request: Request, session: UISession, filters: views.Filters
) -> tuple[dict[str, Any], list[uuid.UUID]]:
    runtime = _runtime(request)
    tz = runtime.settings.tz
    async with runtime.pool.connection() as conn:
        alerts = await alerts_store.list_alerts(
            conn,
            care_unit_id=session.care_unit_id if session.role != "admin" else None,
            statuses=views.ACTIVE_STATUSES,
            limit=10_000,
        )
        rows, counts = views.worklist(alerts, filters, session.username)
        patients = await patients_store.patient_names(conn, list({a["patient_id"] for a in rows}))
    now = dt.datetime.now(dt.UTC)
    shown = [
        views.alert_row(a, patients.get(a["patient_id"]), session.locale, tz, now) for a in rows
    ]
    context = {
        "rows": shown,
        "counts": counts,
        "filters": filters,
        "severities": views.SEVERITIES,
        "next": "/ui/?" + filters.query(),
    }
    return context, [a["patient_id"] for a in rows]


def _etag(context: dict[str, Any], locale: str) -> str:
    data = json.dumps([context["rows"], context["counts"], locale], default=str, sort_keys=True)
    return '"' + hashlib.sha256(data.encode()).hexdigest()[:20] + '"'


@router.get("/ui/")
async def worklist_page(request: Request) -> Response:
    session = await _session(request)
    filters = views.Filters.parse(request.query_params)
    context, patient_ids = await _worklist(request, session, filters)
    await access_log.log_access(
        _runtime(request).pool,
        session.principal,
        "read",
        "ui/worklist",
        patient_ids,
        {"tab": filters.tab},
    )
    done = request.query_params.get("done")
    flash = _flash(session.locale, done, request.query_params.get("failed"))
    return render(
        request,
        "worklist.html",
        session,
        page="worklist",
        flash=flash,
        etag=_etag(context, session.locale),
        updated=local_time(dt.datetime.now(dt.UTC), _runtime(request).settings.tz),
        **context,
    )


@router.get("/ui/worklist/table")
async def worklist_table(request: Request) -> Response:
    """The worklist's live part, for the page's polling; 304 when nothing changed."""
    session = await _session(request)
    filters = views.Filters.parse(request.query_params)
    context, patient_ids = await _worklist(request, session, filters)
    etag = _etag(context, session.locale)
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    # New content is a new disclosure of these patients' data: log it (unchanged is not).
    await access_log.log_access(
        _runtime(request).pool,
        session.principal,
        "read",
        "ui/worklist",
        patient_ids,
        {"tab": filters.tab, "poll": True},
    )
    response = render(
        request,
        "_worklist_table.html",
        session,
        **context,
        updated=local_time(dt.datetime.now(dt.UTC), _runtime(request).settings.tz),
    )
    response.headers["ETag"] = etag
    return response


# Why an action failed, as a message key in the redirect (never text: a link anyone can
# make must not put their words on a clinician's screen as egenmon's).


def _flash(locale: str, done: str | None, failed: str | None) -> dict[str, str] | None:
    if done in views.ACTIONS:
        return {"kind": "ok", "text": translate(locale, f"action.done.{done}")}
    if done == "thresholds":
        return {"kind": "ok", "text": translate(locale, "patient.thresholds_saved")}
    if failed in ACTION_FAILURES:
        # Only a known code picks a message; any other text in the URL shows nothing.
        return {
            "kind": "error",
            "text": translate(locale, f"action.failed.{failed}", n=lifecycle.MAX_NOTE),
        }
    return None


# Why an alert action failed, as the `failed` query parameter carries it (i18n action.failed.*).
ACTION_FAILURES = ("transition", "note_too_long", "invalid")


def _action_failure(e: ValueError, note: str | None) -> str:
    if isinstance(e, lifecycle.TransitionError):
        return "transition"
    if note is not None and len(note) > lifecycle.MAX_NOTE:
        return "note_too_long"
    return "invalid"


# --- alert actions ------------------------------------------------------------------------


@router.post("/ui/alerts/{alert_id}/action")
async def alert_action(request: Request, alert_id: str) -> Response:
    session = await _session(request)
    form = await _form(request)
    if not _csrf_ok(session, form, request):
        return _refused(request, session)
    next_ = views.local_path(form.get("next"))
    action = form.get("action", "")
    note = (form.get("note") or "").strip() or None
    try:
        aid = uuid.UUID(alert_id)
    except ValueError:
        return _not_found(request, session)
    if action not in views.ACTIONS:
        return render(
            request,
            "error.html",
            session,
            status=400,
            message=translate(session.locale, "error.bad_action"),
        )
    pool = _runtime(request).pool
    try:
        result = await lifecycle.act(pool, session.principal, aid, action, note)
    except (lifecycle.AlertNotFound, AuthError):
        # Another unit's alert is "not found" too: its existence is not disclosed.
        return _not_found(request, session)
    except (lifecycle.TransitionError, ValueError) as e:
        return _redirect(_with_query(_strip_flash(next_), failed=_action_failure(e, note)))
    await access_log.log_access(
        pool,
        session.principal,
        "update",
        "Alert",
        [result.patient_id],
        {"alert": str(aid), "action": action, "via": "ui"},
    )
    return _redirect(_with_query(_strip_flash(next_), done=action))


def _strip_flash(path: str) -> str:
    parts = urlsplit(path)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("done", "failed")]
    return parts.path + ("?" + urlencode(query) if query else "")


# --- the patient view ---------------------------------------------------------------------


async def _visible_patient(
    request: Request, session: UISession, patient_id: str
) -> dict[str, Any] | None:
    """The patient if this user may see them; a refusal is logged and answered as absent."""
    try:
        pid = uuid.UUID(patient_id)
    except ValueError:
        return None
    async with _runtime(request).pool.connection() as conn:
        check = await patient_access(conn, session.principal, pid)
        header = await patients_store.patient_header(conn, pid) if check.granted else None
    if not check.exists:
        return None
    if not check.visible:
        await access_log.log_access(
            _runtime(request).pool,
            session.principal,
            "read-refused",
            "ui/patient",
            [pid],
            {"reason": "another care unit"},
        )
        return None
    return header


def _days(value: str | None) -> int:
    try:
        days = int(value or views.DEFAULT_RANGE)
    except ValueError:
        return views.DEFAULT_RANGE
    return days if days in views.RANGES else views.DEFAULT_RANGE


@router.get("/ui/patients/{patient_id}")
async def patient_page(request: Request, patient_id: str) -> Response:
    session = await _session(request)
    header = await _visible_patient(request, session, patient_id)
    if header is None:
        return _not_found(request, session)
    days = _days(request.query_params.get("range"))
    flash = _flash(
        session.locale, request.query_params.get("done"), request.query_params.get("failed")
    )
    return await _patient_response(request, session, header, days, flash)


async def _patient_response(
    request: Request,
    session: UISession,
    header: dict[str, Any],
    days: int,
    flash: dict[str, str] | None,
    *,
    status: int = 200,
    thresholds_open: bool = False,
    form_plan: Plan | None = None,
) -> Response:
    page = await load_patient_page(
        _runtime(request), session.principal, header, days, session.locale, form_plan=form_plan
    )
    return render(
        request,
        "patient.html",
        session,
        status=status,
        page="patient",
        flash=flash,
        chart_json=_json_script(page["charts"]),
        thresholds_open=thresholds_open,
        **page,
    )


def _form_number(text: str) -> float | None:
    """A limit as typed: empty is None; a decimal comma and a minus sign are accepted;
    ValueError when it is not a finite number."""
    text = text.strip().replace(",", ".").replace("−", "-")
    if not text:
        return None
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def threshold_problem(form: Mapping[str, str], locale: str) -> str | None:
    """What is wrong with the thresholds form, in `locale`'s words (None when nothing is):
    a limit that is not a number, outside the plausible range, or a low not below its high."""
    for quantity, (type_name, column) in QUANTITIES.items():
        name = translate(locale, "quantity." + quantity)
        mtype = TYPES[type_name]
        component = mtype.components[0] if column == "value" else mtype.components[1]
        unit = UNIT_DISPLAY.get(mtype.unit, mtype.unit)
        limits = {}
        for side in ("low", "high"):
            raw = form.get(f"{side}_{quantity}") or ""
            limit = translate(locale, f"thresholds.limit_{side}")
            try:
                value = _form_number(raw)
            except ValueError:
                shown = raw.strip()[:20]
                return translate(
                    locale, "thresholds.not_a_number", quantity=name, limit=limit, value=shown
                )
            if value is not None and not component.low <= value <= component.high:
                return translate(
                    locale,
                    "thresholds.implausible",
                    quantity=name,
                    limit=limit,
                    value=number(value, locale, 2),
                    low=number(component.low, locale, 2),
                    high=number(component.high, locale, 2),
                    unit=unit,
                )
            limits[side] = value
        low, high = limits["low"], limits["high"]
        if low is not None and high is not None and low >= high:
            return translate(
                locale,
                "thresholds.low_not_below_high",
                quantity=name,
                low=number(low, locale, 2),
                high=number(high, locale, 2),
            )
    return None


@router.post("/ui/patients/{patient_id}/thresholds")
async def save_thresholds(request: Request, patient_id: str) -> Response:
    session = await _session(request)
    form = await _form(request)
    if not _csrf_ok(session, form, request):
        return _refused(request, session)
    header = await _visible_patient(request, session, patient_id)
    if header is None:
        return _not_found(request, session)
    if not session.principal.allows("CarePlan", "u"):
        return _refused(request, session)
    days = _days(form.get("range"))
    pid = header["id"]
    pool = _runtime(request).pool
    async with pool.connection() as conn:
        plan = monitoring.from_row(await plans.aget_plan(conn, pid))
    try:
        problem = threshold_problem(form, session.locale)
        if problem:
            raise ValueError(problem)
        thresholds = views.thresholds_from_form(form)
        # Only the individual limits change; protocol, windows and SpO2 scale stay.
        new_plan = Plan(
            protocol=plan.protocol,
            expected=plan.expected,
            thresholds=thresholds,
            news2_scale2=plan.news2_scale2,
            spo2_target=plan.spo2_target,
            started_at=plan.started_at,
        )
    except ValueError:
        # The reason in the clinician's language; a rule of the shared plan validation
        # without words here says "check the values" rather than show English.
        reason = problem or translate(session.locale, "thresholds.invalid")
        flash = {
            "kind": "error",
            "text": translate(session.locale, "patient.thresholds_error", reason=reason),
        }
        return await _patient_response(
            request, session, header, days, flash, status=400, thresholds_open=True
        )
    doc = new_plan.to_dict()
    doc.pop("set_by", None)
    doc.pop("set_at", None)
    async with pool.connection() as conn:
        await plans.aset_plan(conn, pid, new_plan.protocol, doc, session.username)
    await access_log.log_access(
        pool,
        session.principal,
        "update",
        "MonitoringPlan",
        [pid],
        {"thresholds": sorted(thresholds), "via": "ui"},
    )
    return _redirect(f"/ui/patients/{pid}?range={days}&done=thresholds")


# --- static files -------------------------------------------------------------------------

_TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".map": "application/json",
}


@router.get("/ui/static/{path:path}")
async def static_file(path: str, request: Request) -> Response:
    """egenmon's own assets and vendored libraries (never a CDN)."""
    target = (STATIC / path).resolve()
    if (
        not target.is_relative_to(STATIC.resolve())
        or not target.is_file()
        or any(part.startswith(".") for part in Path(path).parts)
        or target.suffix not in _TYPES
    ):
        return Response("not found", status_code=404, media_type="text/plain")
    versioned = request.query_params.get("v") == _version(path)
    headers = {"Cache-Control": "public, max-age=31536000, immutable" if versioned else "no-cache"}
    media = _TYPES[target.suffix]
    return FileResponse(target, media_type=media, headers=headers)
