"""SMART on FHIR authorization server routes: authorize, token, EHR launch, configuration.

Thin edges over `egenmon.identity.smart` (the rules) and `egenmon.store.clients` (the
registered clients and the one-time values). The user of the authorize endpoint is the
one signed in with a browser session (a clinician, or a patient of the patient app);
nobody signed in is sent to the login page with the authorize URL as `next`. Registered
apps are pre-approved by the region (an administrator registered them), so a signed-in
user is not asked again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from egenmon.auth import issue_token
from egenmon.deps import PrincipalDep, RuntimeDep, get_runtime, patient_access
from egenmon.domain.principals import AuthError, Principal
from egenmon.fhir.api import public_base
from egenmon.fhir.outcome import FhirError
from egenmon.identity import smart
from egenmon.identity.smart import OAuthError
from egenmon.store import clients
from egenmon.store.access_log import log_access

__all__ = ["router", "smart_configuration"]

log = logging.getLogger("egenmon.oauth")
router = APIRouter(tags=["smart"])

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_JWKS_TTL = 300.0
_JWKS_MAX_BYTES = 64 * 1024
_JWKS_MIN_REFRESH = 1.0  # at most one fetch a second per client for unknown kids
_jwks_cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}
_jwks_lock = asyncio.Lock()


def _json(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


def _oauth_error(exc: OAuthError) -> Response:
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="egenmon", error="invalid_client"'
    return _json(exc.body(), exc.status, headers)


def _root(request: Request) -> str:
    """egenmon's public URL (EGENMON_PUBLIC_URL, or a loopback request's own address)."""
    try:
        return public_base(request).removesuffix("/fhir")
    except FhirError as exc:
        raise OAuthError("invalid_request", exc.diagnostics) from None


def _ttl(request: Request) -> int:
    return int(get_runtime(request).settings.smart_token_ttl_seconds)


async def smart_configuration(request: Request) -> Response:
    """GET .well-known/smart-configuration (at the root and under /fhir)."""
    try:
        body = smart.smart_configuration(_root(request))
    except OAuthError as exc:
        return _oauth_error(exc)
    return _json(body, headers={"Cache-Control": "max-age=300"})


router.add_api_route("/.well-known/smart-configuration", smart_configuration, methods=["GET"])


# --- authorize ------------------------------------------------------------------------


def _login_url(request: Request, params: dict[str, str]) -> str:
    """Staff sign in at /login (an EHR launch or user/ scopes), patients at /app/login."""
    target = request.url.path + ("?" + request.url.query if request.url.query else "")
    staff = "launch" in params or any(
        s.startswith("user/") for s in params.get("scope", "").split()
    )
    return ("/login" if staff else "/app/login") + "?next=" + quote(target, safe="")


@router.get("/oauth/authorize")
async def authorize(request: Request, runtime: RuntimeDep) -> Response:
    try:
        client_id, redirect_uri, params = smart.parse_authorize(request.query_params.multi_items())
        async with runtime.pool.connection() as conn:
            client = await clients.get_client(conn, client_id)
        if client is None:
            raise OAuthError("invalid_client", f"no registered client {client_id}")
        if redirect_uri not in client["redirect_uris"]:
            raise OAuthError("invalid_request", "redirect_uri is not registered for this client")
    except OAuthError as exc:  # never redirected: the redirect URI is not known good
        return _json(exc.body(), 400, _NO_STORE)
    state = params.get("state")

    def back(values: dict[str, str]) -> RedirectResponse:
        if state is not None and "state" not in values:
            values["state"] = state
        return RedirectResponse(
            smart.redirect_with(redirect_uri, values), status_code=302, headers=_NO_STORE
        )

    try:
        req = smart.check_authorize(params, _root(request) + "/fhir")
        principal = await runtime.sessions.principal(request) if runtime.sessions else None
        if principal is None:
            return RedirectResponse(_login_url(request, params), status_code=303)
        grant = await _grant(request, runtime, principal, client, req)
    except OAuthError as exc:
        return back(exc.body())
    now = dt.datetime.now(dt.UTC)
    code = smart.sign(
        runtime.settings.signing_secret,
        "code",
        {
            "cid": client_id,
            "ruri": redirect_uri,
            "cc": req.code_challenge,
            "sub": principal.subject,
            "role": principal.role,
            "cu": str(principal.care_unit_id) if principal.care_unit_id else None,
            **grant,
        },
        smart.CODE_TTL,
        now,
    )
    patients = [uuid.UUID(grant["pt"])] if grant.get("pt") else []
    await log_access(
        runtime.pool,
        principal,
        "authorize",
        f"oauth/{client_id}",
        patients,
        {"scope": grant["scope"]},
    )
    return back({"code": code})


async def _grant(
    request: Request,
    runtime: Any,
    principal: Principal,
    client: dict[str, Any],
    req: smart.AuthorizeRequest,
) -> dict[str, Any]:
    """What the code will carry: the granted scope, the principal's patient (`pt`) and
    the launch context returned with the token (`ctx`)."""
    requested = smart.scope_tokens(req.scope)
    registered = list(client["scopes"])
    context: uuid.UUID | None = None
    own: uuid.UUID | None = None
    launch_granted: list[str] = []
    if principal.role == "patient" and principal.patient_id:
        own = principal.patient_id
        allowed = smart.ROLE_SCOPES["patient"]
        if "launch/patient" in requested and "launch/patient" in registered:
            context = own
            launch_granted.append("launch/patient")
    elif principal.role == "clinician":
        allowed = smart.ROLE_SCOPES["clinician"]
        if req.launch:
            claims = smart.unsign(
                runtime.settings.signing_secret, "launch", req.launch, error="invalid_request"
            )
            if claims.get("sub") != principal.subject:
                raise OAuthError("invalid_request", "the launch was made for another user")
            if claims.get("cid") not in (None, client["id"]):
                raise OAuthError("invalid_request", "the launch was made for another app")
            try:
                context = uuid.UUID(str(claims.get("patient")))
            except ValueError:
                raise OAuthError("invalid_request", "the launch names no patient") from None
            async with runtime.pool.connection() as conn:
                access = await patient_access(conn, principal, context)
            if not access.granted:
                raise OAuthError("access_denied", "the launch's patient is not yours to see")
            own = context
            allowed = smart.ROLE_SCOPES["clinician+patient"]
            launch_granted += [s for s in ("launch",) if s in requested and s in registered]
    else:
        raise OAuthError("access_denied", "apps are for signed-in clinicians and patients")
    scopes = smart.grant_scopes(requested, registered, allowed)
    if not scopes:
        raise OAuthError("invalid_scope", "none of the scopes asked for may be granted")
    return {
        "scope": " ".join(scopes),
        "launch_scope": " ".join(launch_granted),
        "pt": str(own) if own else None,
        "ctx": str(context) if context else None,
    }


# --- EHR launch -----------------------------------------------------------------------


@router.post("/api/v1/smart/launch")
async def launch(request: Request, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    """A launch context for an EHR launch: `{"patient": id, "client_id": optional}` →
    `{"launch": ..., "launch_url": ...}`, for a clinician who may see the patient. With a
    client_id the launch is for that app only, and `launch_url` is its launch URL with
    `iss` and `launch` added (where the app registered one)."""
    if principal.role != "clinician":
        raise AuthError(403, "only clinicians launch apps with a patient context")
    usage = 'the body must be {"patient": "<patient id>", "client_id": "<optional app>"}'
    try:
        body = orjson.loads(await request.body())
        patient = uuid.UUID(str(body["patient"]))
        client_id = body.get("client_id")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return _json({"error": usage}, 400)
    if client_id is not None and not isinstance(client_id, str):
        return _json({"error": usage}, 400)
    async with runtime.pool.connection() as conn:
        access = await patient_access(conn, principal, patient)
        client = await clients.get_client(conn, client_id) if client_id else None
    if not access.granted:
        return _json({"error": "no such patient"}, 404)
    if client_id and client is None:
        return _json({"error": f"no registered app {client_id[:128]}"}, 404)
    claims: dict[str, Any] = {"sub": principal.subject, "patient": str(patient)}
    if client is not None:
        claims["cid"] = client["id"]
    value = smart.sign(
        runtime.settings.signing_secret, "launch", claims, smart.LAUNCH_TTL, dt.datetime.now(dt.UTC)
    )
    answer: dict[str, Any] = {"launch": value, "expires_in": smart.LAUNCH_TTL}
    if client is not None and client["launch_uri"]:
        try:
            iss = _root(request) + "/fhir"
        except OAuthError as exc:
            return _oauth_error(exc)
        answer["launch_url"] = smart.redirect_with(
            client["launch_uri"], {"iss": iss, "launch": value}
        )
    return _json(answer, headers=_NO_STORE)


# --- token ----------------------------------------------------------------------------


@router.post("/oauth/token")
async def token(request: Request, runtime: RuntimeDep) -> Response:
    try:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > smart.MAX_FORM_BYTES:
            raise OAuthError("invalid_request", f"the body is over {smart.MAX_FORM_BYTES} bytes")
        form = smart.parse_form(await request.body(), request.headers.get("content-type", ""))
        grant_type = smart.required(form, "grant_type")
        if grant_type == "client_credentials":
            body = await _client_credentials(request, runtime, form)
        elif grant_type == "authorization_code":
            body = await _authorization_code(request, runtime, form)
        else:
            raise OAuthError(
                "unsupported_grant_type",
                "grant_type must be authorization_code or client_credentials",
            )
    except OAuthError as exc:
        return _oauth_error(exc)
    return _json(body, headers=_NO_STORE)


async def _client(
    request: Request, runtime: Any, form: dict[str, str]
) -> tuple[dict[str, Any], bool]:
    """The client of a token request and whether it proved who it is (a client assertion);
    a client with registered keys must."""
    assertion = form.get("client_assertion")
    if assertion is None:
        client_id = form.get("client_id")
        if not client_id:
            raise OAuthError("invalid_client", "no client_id and no client_assertion", 401)
        async with runtime.pool.connection() as conn:
            client = await clients.get_client(conn, client_id)
        if client is None:
            raise OAuthError("invalid_client", "unknown client", 401)
        if client["jwks"] is not None or client["jwks_uri"] is not None:
            raise OAuthError(
                "invalid_client", "this client authenticates with a client_assertion", 401
            )
        return client, False
    if form.get("client_assertion_type") != smart.ASSERTION_TYPE:
        raise OAuthError(
            "invalid_client", f"client_assertion_type must be {smart.ASSERTION_TYPE}", 401
        )
    client_id = smart.unverified_issuer(assertion)
    if form.get("client_id") not in (None, client_id):
        raise OAuthError("invalid_client", "client_id and the assertion's iss differ", 401)
    async with runtime.pool.connection() as conn:
        client = await clients.get_client(conn, client_id)
    if client is None:
        raise OAuthError("invalid_client", "unknown client", 401)
    keys = await _keys(client, smart.assertion_kid(assertion))
    token_url = _root(request) + "/oauth/token"
    claims = smart.check_assertion(assertion, client_id, keys, token_url, dt.datetime.now(dt.UTC))
    expires = dt.datetime.fromtimestamp(claims["exp"], dt.UTC)
    async with runtime.pool.connection() as conn:
        fresh = await clients.seen_once(conn, client_id, "jti", claims["jti"], expires)
    if not fresh:
        raise OAuthError("invalid_client", "client_assertion's jti was used already", 401)
    return client, True


async def _keys(client: dict[str, Any], kid: str | None) -> list[dict[str, Any]]:
    """The client's public keys: registered, or from its JWKS URI (cached, fetched again
    for an unknown kid at most every few seconds)."""
    if client["jwks"] is not None:
        return list(client["jwks"].get("keys", []))
    uri = client["jwks_uri"]
    if uri is None:
        raise OAuthError("invalid_client", "this client has no registered keys", 401)
    now = time.monotonic()
    cached = _jwks_cache.get(uri)
    if cached is not None:
        age = now - cached[0]
        known = kid is None or any(k.get("kid") == kid for k in cached[1])
        if age < _JWKS_TTL and (known or age < _JWKS_MIN_REFRESH):
            return cached[1]
    async with _jwks_lock:
        try:
            async with httpx.AsyncClient(timeout=5, follow_redirects=False) as http:
                answer = await http.get(uri)
            answer.raise_for_status()
            if len(answer.content) > _JWKS_MAX_BYTES:
                raise ValueError("the JWKS is too large")
            keys = smart.check_jwks(answer.json())
        except (httpx.HTTPError, ValueError):
            log.warning("the JWKS of client %s could not be fetched", client["id"])
            if cached is not None:
                return cached[1]
            raise OAuthError(
                "invalid_client", "the client's JWKS could not be fetched", 401
            ) from None
        _jwks_cache[uri] = (now, keys)
        return keys


async def _client_credentials(
    request: Request, runtime: Any, form: dict[str, str]
) -> dict[str, Any]:
    client, authenticated = await _client(request, runtime, form)
    if not authenticated:
        raise OAuthError("invalid_client", "client_credentials needs a client_assertion", 401)
    requested = [s for s in smart.scope_tokens(smart.required(form, "scope"))]
    registered = [s for s in client["scopes"] if s.startswith("system/")]
    scopes = smart.grant_scopes(
        [s for s in requested if s.startswith("system/")], registered, registered
    )
    if not scopes:
        raise OAuthError("invalid_scope", "none of the system/ scopes asked for is registered")
    ttl = _ttl(request)
    access = issue_token(
        runtime.settings,
        role="integrator",
        subject=client["id"],
        scope=" ".join(scopes),
        ttl_seconds=ttl,
        client_id=client["id"],
    )
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": " ".join(scopes),
    }


async def _authorization_code(
    request: Request, runtime: Any, form: dict[str, str]
) -> dict[str, Any]:
    client, _ = await _client(request, runtime, form)
    code = smart.unsign(runtime.settings.signing_secret, "code", smart.required(form, "code"))
    if code.get("cid") != client["id"]:
        raise OAuthError("invalid_grant", "the code was issued to another client")
    if form.get("redirect_uri") != code.get("ruri"):
        raise OAuthError("invalid_grant", "redirect_uri differs from the authorize request's")
    if not smart.pkce_ok(form.get("code_verifier"), str(code.get("cc"))):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
    expires = dt.datetime.fromtimestamp(code["exp"], dt.UTC)
    async with runtime.pool.connection() as conn:
        fresh = await clients.seen_once(conn, client["id"], "code", code["jti"], expires)
    if not fresh:
        raise OAuthError("invalid_grant", "the code was used already")
    ttl = _ttl(request)
    try:
        access = issue_token(
            runtime.settings,
            role=str(code["role"]),
            subject=str(code["sub"]),
            care_unit_id=uuid.UUID(code["cu"]) if code.get("cu") else None,
            patient_id=uuid.UUID(code["pt"]) if code.get("pt") else None,
            scope=code["scope"],
            ttl_seconds=ttl,
            client_id=client["id"],
        )
    except (ValueError, KeyError):
        raise OAuthError("invalid_grant", "the code is not usable") from None
    scope = " ".join(s for s in (code.get("launch_scope"), code["scope"]) if s)
    body: dict[str, Any] = {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl,
        "scope": scope,
    }
    if code.get("ctx"):
        body["patient"] = code["ctx"]
        body["need_patient_banner"] = code.get("role") == "patient"
    return body
