"""Sign-in through the region's OpenID provider: the start (`/login/sso` for staff,
`/app/login/sso` for patients), the one callback (`/login/callback`), and the page that
says why a sign-in was refused.

The browser keeps the sign-in's `state` in a cookie scoped to the callback; the database
keeps its digest with the nonce and the PKCE verifier, for one use within ten minutes. A
callback whose state matches neither is refused before anything is sent to the provider.
"""

from __future__ import annotations

import datetime as dt
import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse

from egenmon.deps import get_runtime
from egenmon.identity import oidc, signin
from egenmon.identity.oidc import LoginRefused, RelyingParty
from egenmon.identity.provider import Provider, ProviderError, provider_of
from egenmon.runtime import Runtime
from egenmon.store import oidc_logins
from egenmon.web import views
from egenmon.web.i18n import choose_locale, translate
from egenmon.web.routes import LOCALE_COOKIE, UIRoute, _redirect, render
from egenmon.web.sessions import is_https, sessions_of, tokens_match

log = logging.getLogger("egenmon.web")

router = APIRouter(route_class=UIRoute, include_in_schema=False)

STATE_COOKIE = "egenmon_oidc_state"
CALLBACK = "/login/callback"
STATE_TTL = dt.timedelta(minutes=10)
# Where each audience lands by default and signs in again.
HOME = {"staff": "/ui/", "patient": "/app/"}
LOGIN = {"staff": "/login", "patient": "/app/login"}

_RPS: dict[int, RelyingParty] = {}


def relying_party(runtime: Runtime) -> tuple[Provider, RelyingParty] | None:
    """The provider and egenmon's client at it, None when no sign-in is configured."""
    provider = provider_of(runtime.identity)
    if provider is None or not runtime.settings.oidc:
        return None
    rp = _RPS.get(id(runtime.settings))
    if rp is None:
        rp = _RPS[id(runtime.settings)] = RelyingParty.from_settings(runtime.settings)
    return provider, rp


def check_relying_party(runtime: Runtime) -> None:
    """At start: a sign-in configuration egenmon cannot use (an unreadable key file)
    stops the process with the setting named, rather than failing the first sign-in."""
    relying_party(runtime)


def base_url(request: Request) -> str:
    """egenmon's own address (EGENMON_PUBLIC_URL, else the request's)."""
    public = get_runtime(request).settings.public_url
    return public or str(request.base_url).rstrip("/")


def locale_of(request: Request) -> str:
    return choose_locale(request.query_params.get("lang"), request.cookies.get(LOCALE_COOKIE))


def refused_page(
    request: Request, audience: str, reason: str, *, status: int = 403
) -> HTMLResponse:
    locale = locale_of(request)
    response = render(
        request,
        "sso_refused.html",
        None,
        status=status,
        locale=locale,
        reason=reason,
        message=translate(locale, f"sso.refused.{reason}"),
        again=LOGIN.get(audience, "/login"),
    )
    response.delete_cookie(STATE_COOKIE, path=CALLBACK)
    return response


async def start(request: Request, audience: str) -> Response:
    """Send the browser to the provider with a fresh state, nonce and PKCE verifier."""
    runtime = get_runtime(request)
    configured = relying_party(runtime)
    if configured is None:
        return refused_page(request, audience, "not_configured", status=404)
    provider, rp = configured
    next_ = views.local_path(request.query_params.get("next"), HOME[audience])
    state, nonce, verifier = oidc.random_token(), oidc.random_token(), oidc.random_token()
    try:
        metadata = await provider.metadata()
    except ProviderError as e:
        log.warning("the OpenID provider cannot be reached: %s", e)
        return refused_page(request, audience, "unavailable", status=503)
    async with runtime.pool.connection() as conn:
        await oidc_logins.save_login(
            conn, oidc.digest(state), audience, nonce, verifier, next_, STATE_TTL
        )
    url = oidc.authorization_url(
        metadata,
        rp,
        redirect_uri=base_url(request) + CALLBACK,
        state=state,
        nonce=nonce,
        code_verifier=verifier,
        locale=locale_of(request),
    )
    response = _redirect(url)
    response.set_cookie(
        STATE_COOKIE,
        state,
        httponly=True,
        samesite="lax",
        path=CALLBACK,
        max_age=int(STATE_TTL.total_seconds()),
        secure=is_https(request),
    )
    return response


@router.get("/login/sso")
async def staff_start(request: Request) -> Response:
    return await start(request, "staff")


@router.get("/app/login/sso")
async def patient_start(request: Request) -> Response:
    return await start(request, "patient")


@router.get(CALLBACK)
async def callback(request: Request) -> Response:
    """The provider's answer: check state, exchange the code, validate the ID token,
    match the person, check the assurance level, and begin the session."""
    runtime = get_runtime(request)
    configured = relying_party(runtime)
    sessions = sessions_of(runtime)
    if configured is None or sessions is None:
        return refused_page(request, "staff", "not_configured", status=404)
    provider, rp = configured
    q = request.query_params
    state = q.get("state", "")
    cookie = request.cookies.get(STATE_COOKIE)
    pending = None
    if state and len(state) <= 128 and tokens_match(cookie or "", state):
        async with runtime.pool.connection() as conn:
            pending = await oidc_logins.take_login(conn, oidc.digest(state))
    if pending is None:
        # Unknown, used or expired state, or another browser's: nothing to exchange.
        attempt = signin.Attempt(audience="staff")
        await signin.log_attempt(runtime.pool, attempt, LoginRefused("state"))
        return refused_page(request, "staff", "state", status=400)
    audience = pending["audience"]
    attempt = signin.Attempt(audience=audience)
    try:
        if q.get("error") or not q.get("code"):
            raise LoginRefused("provider", (q.get("error") or "no code")[:64])
        tokens = await oidc.exchange_code(
            provider,
            rp,
            code=q["code"],
            redirect_uri=base_url(request) + CALLBACK,
            code_verifier=pending["code_verifier"],
        )
        id_token = tokens["id_token"]
        claims = await oidc.validate(provider, rp, id_token, nonce=pending["nonce"])
        acr = claims.get("acr")
        attempt.acr = acr[:200] if isinstance(acr, str) else None
        async with runtime.pool.connection() as conn:
            if audience == "patient":
                patient_id = await signin.match_patient(conn, claims, rp, attempt)
                user = None
            else:
                user = await signin.match_staff(conn, claims, rp, attempt)
                patient_id = None
        oidc.check_acr(claims, rp)
    except LoginRefused as refusal:
        log.info("sign-in refused (%s): %s", audience, refusal)
        await signin.log_attempt(runtime.pool, attempt, refusal)
        return refused_page(request, audience, refusal.reason)
    response = _redirect(pending["next"])
    if user is not None:
        await sessions.begin(request, response, user["user_id"], id_token=id_token)
        async with runtime.pool.connection() as conn:
            await signin.record_login(conn, user["user_id"])
    else:
        await sessions.begin(request, response, patient_id=patient_id, id_token=id_token)
    await signin.log_attempt(runtime.pool, attempt, None)
    response.delete_cookie(STATE_COOKIE, path=CALLBACK)
    return response


async def logout_target(request: Request, id_token: str | None, post_logout: str) -> str:
    """Where a logout sends the browser: the provider's end-session endpoint when the
    session came from it, else `post_logout` (a local path)."""
    runtime = get_runtime(request)
    configured = relying_party(runtime)
    if configured is None or not id_token:
        return post_logout
    provider, rp = configured
    url = await signin.end_session_url(provider, rp, id_token, base_url(request) + post_logout)
    return url or post_logout
