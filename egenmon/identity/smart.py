"""SMART on FHIR authorization server, the pure parts: what egenmon advertises, how a
request to the authorize and token endpoints is read, which scopes are granted, PKCE, the
client assertion of SMART Backend Services, and the signed one-time values (codes,
launch contexts) it hands out.

Nothing here does I/O; the routes (`egenmon.web.oauth`) fetch the client and its keys,
record the one-time values and issue the access token.

Decisions:

- Authorization codes and EHR launch contexts are short JWTs signed with a key derived
  from EGENMON_AUTH_SECRET for that use alone; a code is used once (the route records
  its jti until it expires) and lives `CODE_TTL` seconds.
- PKCE with S256 is required of every client, public or confidential.
- Granted scopes are the intersection of what was asked, what the client is registered
  for and what the user's role allows; a wildcard never grants AuditEvent (the log is
  read only with a scope that names it).
- A client assertion (RFC 7523, SMART Backend Services) must be signed with RS384,
  ES384, RS256 or ES256 by a key of the client's JWKS, name the client as iss and sub,
  the token endpoint as aud, carry a jti and expire at most `MAX_ASSERTION_LIFETIME`
  seconds ahead.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt

from egenmon.domain.principals import DEFAULT_SCOPES, Scope

__all__ = [
    "ASSERTION_ALGS",
    "ASSERTION_TYPE",
    "AUDIT_RESOURCE",
    "CAPABILITIES",
    "CODE_TTL",
    "LAUNCH_TTL",
    "MAX_ASSERTION_LIFETIME",
    "AuthorizeRequest",
    "OAuthError",
    "check_assertion",
    "check_jwks",
    "grant_scopes",
    "parse_authorize",
    "parse_form",
    "pkce_challenge",
    "pkce_ok",
    "redirect_with",
    "sign",
    "smart_configuration",
    "unsign",
    "unverified_issuer",
]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("RS384", "ES384", "RS256", "ES256")
MAX_ASSERTION_LIFETIME = 300  # seconds: SMART Backend Services' limit on exp
LEEWAY = 30  # seconds of clock skew, as egenmon.auth allows
CODE_TTL = 60
LAUNCH_TTL = 600
AUDIT_RESOURCE = "AuditEvent"
MAX_FORM_BYTES = 16 * 1024
MAX_FIELDS = 32
MAX_VALUE = 8 * 1024
MAX_SCOPES = 64

CAPABILITIES = (
    "launch-standalone",
    "launch-ehr",
    "context-standalone-patient",
    "context-ehr-patient",
    "client-public",
    "client-confidential-asymmetric",
    "permission-v1",
    "permission-v2",
    "permission-patient",
    "permission-user",
)
# The scopes a client may be registered for and ask for (resource scopes also name one
# resource, e.g. patient/Observation.rs).
SCOPES_SUPPORTED = (
    "launch",
    "launch/patient",
    "patient/*.rs",
    "user/*.rs",
    "user/Task.rus",
    "user/CarePlan.rus",
    "user/AuditEvent.rs",
    "system/*.rs",
    "system/Observation.c",
    "system/AuditEvent.rs",
)
LAUNCH_SCOPES = frozenset({"launch", "launch/patient"})
# What each role may be granted through the authorize flow (a user) or client
# credentials (a system); a clinician with an EHR launch context gets patient/ scopes for
# that patient too.
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "patient": ("patient/*.rs",),
    "clinician": tuple(DEFAULT_SCOPES["clinician"].split()),
    "clinician+patient": (*DEFAULT_SCOPES["clinician"].split(), "patient/*.rs"),
}
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]{1,128}$")  # RFC 6749 scope-token
_STATE = re.compile(r"^[\x20-\x7e]{1,512}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")


class OAuthError(Exception):
    """An OAuth 2.0 error answer: `error` is the RFC 6749 code, `description` says what is
    wrong; `status` 400, or 401 for a client that failed to authenticate."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


# --- what egenmon advertises ----------------------------------------------------------


def smart_configuration(root: str) -> dict[str, Any]:
    """The SMART configuration (`.well-known/smart-configuration`) of egenmon at `root`
    (its public URL, no trailing slash)."""
    return {
        "authorization_endpoint": f"{root}/oauth/authorize",
        "token_endpoint": f"{root}/oauth/token",
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGS),
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "response_types_supported": ["code"],
        "scopes_supported": list(SCOPES_SUPPORTED),
        "capabilities": list(CAPABILITIES),
        "code_challenge_methods_supported": ["S256"],
    }


# --- reading requests -----------------------------------------------------------------


def parse_form(body: bytes, content_type: str) -> dict[str, str]:
    """A token request's form: application/x-www-form-urlencoded, UTF-8, each parameter
    at most once (RFC 6749 3.2), within size limits; an OAuthError names what is wrong."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    if len(body) > MAX_FORM_BYTES:
        raise OAuthError("invalid_request", f"the body is over {MAX_FORM_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise OAuthError("invalid_request", "the body is not UTF-8") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise OAuthError(
            "invalid_request", f"the body is not a form of at most {MAX_FIELDS} fields"
        ) from None
    return _single_values(pairs)


def _single_values(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs:
        label = name if _CLIENT_ID.match(name) else "(a parameter)"
        if name in out:
            raise OAuthError("invalid_request", f"{label}: given more than once")
        if len(value) > MAX_VALUE:
            raise OAuthError("invalid_request", f"{label}: longer than {MAX_VALUE} characters")
        if "\x00" in value:
            raise OAuthError("invalid_request", f"{label}: holds a NUL character")
        if value != "":
            out[name] = value
    return out


def required(form: dict[str, str], name: str) -> str:
    value = form.get(name)
    if not value:
        raise OAuthError("invalid_request", f"{name} is missing")
    return value


@dataclass(frozen=True)
class AuthorizeRequest:
    client_id: str
    redirect_uri: str
    scope: str
    state: str
    aud: str
    code_challenge: str
    launch: str | None = None


def parse_authorize(
    pairs: Iterable[tuple[str, str]],
) -> tuple[str, str, dict[str, str]]:
    """The client id and redirect URI of an authorize request (checked before anything
    may be redirected), and all its parameters; errors here are shown, never redirected."""
    params = _single_values(pairs)
    client_id = required(params, "client_id")
    if not _CLIENT_ID.match(client_id):
        raise OAuthError("invalid_request", "client_id is not a client id")
    redirect_uri = required(params, "redirect_uri")
    return client_id, redirect_uri, params


def check_authorize(params: dict[str, str], fhir_base: str) -> AuthorizeRequest:
    """The rest of an authorize request, once the client and redirect URI are known good;
    an OAuthError here is redirected to the client."""
    if params.get("response_type") != "code":
        raise OAuthError("unsupported_response_type", "response_type must be code")
    state = required(params, "state")
    if not _STATE.match(state):
        raise OAuthError("invalid_request", "state must be printable ASCII, 1 to 512 characters")
    aud = required(params, "aud")
    if aud.rstrip("/") != fhir_base:
        raise OAuthError("invalid_request", f"aud must be this server's FHIR base, {fhir_base}")
    challenge = required(params, "code_challenge")
    if params.get("code_challenge_method") != "S256":
        raise OAuthError("invalid_request", "code_challenge_method must be S256 (PKCE)")
    if not _CHALLENGE.match(challenge):
        raise OAuthError("invalid_request", "code_challenge is not a base64url SHA-256")
    scope = required(params, "scope")
    scope_tokens(scope)
    return AuthorizeRequest(
        client_id=params["client_id"],
        redirect_uri=params["redirect_uri"],
        scope=scope,
        state=state,
        aud=aud,
        code_challenge=challenge,
        launch=params.get("launch"),
    )


def scope_tokens(scope: str) -> list[str]:
    tokens = scope.split(" ")
    tokens = [t for t in tokens if t]
    if len(tokens) > MAX_SCOPES:
        raise OAuthError("invalid_scope", f"more than {MAX_SCOPES} scopes")
    for t in tokens:
        if not _SCOPE_TOKEN.match(t):
            raise OAuthError("invalid_scope", "a scope holds characters scopes cannot hold")
    return tokens


def redirect_with(uri: str, params: dict[str, str]) -> str:
    """`uri` with `params` added to its query (keeping what it has)."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- scopes ---------------------------------------------------------------------------


def _actions_for(
    scopes: Sequence[Scope], context: str, resource: str, *, exact: bool
) -> frozenset[str]:
    found: set[str] = set()
    for s in scopes:
        if s.context != context:
            continue
        if s.resource == resource or (s.resource == "*" and not exact):
            found |= s.actions
    return frozenset(found)


def _text(context: str, resource: str, actions: frozenset[str]) -> str:
    return f"{context}/{resource}." + "".join(a for a in "cruds" if a in actions)


def grant_scopes(
    requested: Sequence[str], registered: Sequence[str], allowed: Sequence[str]
) -> list[str]:
    """The resource scopes to grant: each asked-for scope narrowed to what both the
    client's registration and the role allow (`allowed`); scopes that are not resource
    scopes are left out (the caller decides launch scopes). AuditEvent is granted only
    where both name it (a wildcard never reaches the access log)."""
    reg = [s for s in (Scope.parse(t) for t in registered) if s]
    role = [s for s in (Scope.parse(t) for t in allowed) if s]
    out: list[str] = []
    for text in requested:
        asked = Scope.parse(text)
        if asked is None:
            continue
        resources = [asked.resource]
        if asked.resource == "*":  # a wildcard narrows to the resources registered by name
            resources += sorted({s.resource for s in reg if s.resource not in ("*",)})
        for resource in resources:
            exact = resource == AUDIT_RESOURCE
            acts = (
                asked.actions
                & _actions_for(reg, asked.context, resource, exact=exact)
                & _actions_for(role, asked.context, resource, exact=exact)
            )
            if acts:
                scope = _text(asked.context, resource, acts)
                if scope not in out:
                    out.append(scope)
    return out


# --- PKCE -----------------------------------------------------------------------------


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def pkce_ok(verifier: str | None, challenge: str) -> bool:
    """Does the code_verifier match the S256 challenge (RFC 7636)?"""
    if not verifier or not _VERIFIER.match(verifier):
        return False
    return hmac.compare_digest(pkce_challenge(verifier), challenge)


# --- signed one-time values -----------------------------------------------------------


def _key(secret: str, purpose: str) -> bytes:
    return hashlib.sha256(f"egenmon smart {purpose}\x00{secret}".encode()).digest()


def sign(secret: str, purpose: str, claims: dict[str, Any], ttl: int, now: dt.datetime) -> str:
    """A signed value for one purpose (`code`, `launch`) that expires after `ttl` s."""
    body = {
        **claims,
        "aud": f"egenmon:{purpose}",
        "iat": now,
        "exp": now + dt.timedelta(seconds=ttl),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(body, _key(secret, purpose), algorithm="HS256")


def unsign(secret: str, purpose: str, token: str, error: str = "invalid_grant") -> dict[str, Any]:
    """The claims of a value `sign` made for `purpose`; an OAuthError if it is not one,
    or has expired."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            _key(secret, purpose),
            algorithms=["HS256"],
            audience=f"egenmon:{purpose}",
            options={"require": ["exp", "aud", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise OAuthError(error, f"the {purpose} has expired") from None
    except jwt.PyJWTError:
        raise OAuthError(error, f"the {purpose} is not valid") from None
    return claims


# --- client assertions (SMART Backend Services) ---------------------------------------


def check_jwks(jwks: Any) -> list[dict[str, Any]]:
    """A client's public JWKS, its keys checked: RSA or EC keys only, without private
    parts, each usable; a ValueError says what is wrong."""
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ValueError("a JWKS is a JSON object with a non-empty 'keys' list")
    for key in jwks["keys"]:
        if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC"):
            raise ValueError("only RSA and EC keys are accepted (kty)")
        if any(p in key for p in ("d", "p", "q", "dp", "dq", "qi")):
            raise ValueError("the JWKS holds a private key: register the public keys only")
        if key.get("alg") not in (None, *ASSERTION_ALGS):
            raise ValueError(f"alg must be one of {', '.join(ASSERTION_ALGS)}")
        try:
            jwt.PyJWK(key)
        except jwt.PyJWTError as e:
            raise ValueError(f"not a usable key: {e}") from None
    return list(jwks["keys"])


def unverified_issuer(assertion: str) -> str:
    """The client an assertion says it comes from (checked by `check_assertion`)."""
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise OAuthError("invalid_client", "client_assertion is not a JWT", 401) from None
    iss = claims.get("iss")
    if not isinstance(iss, str) or not _CLIENT_ID.match(iss):
        raise OAuthError("invalid_client", "client_assertion names no client (iss)", 401)
    return iss


def assertion_kid(assertion: str) -> str | None:
    try:
        kid = jwt.get_unverified_header(assertion).get("kid")
    except jwt.PyJWTError:
        return None
    return kid if isinstance(kid, str) else None


def check_assertion(
    assertion: str,
    client_id: str,
    keys: Sequence[dict[str, Any]],
    token_url: str,
    now: dt.datetime,
) -> dict[str, Any]:
    """The verified claims of a client assertion, or an OAuthError (invalid_client)."""

    def refuse(why: str) -> OAuthError:
        return OAuthError("invalid_client", why, 401)

    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        raise refuse("client_assertion is not a JWT") from None
    alg = header.get("alg")
    if alg not in ASSERTION_ALGS:
        raise refuse(f"client_assertion must be signed with {', '.join(ASSERTION_ALGS)}")
    kid = header.get("kid")
    family = "RSA" if str(alg).startswith("RS") else "EC"
    candidates = [
        jwt.PyJWK(k, algorithm=alg)
        for k in keys
        if k.get("kty") == family
        and (kid is None or k.get("kid") == kid)
        and k.get("alg") in (None, alg)
    ]
    if not candidates:
        raise refuse("client_assertion is signed with a key the client has not registered")
    claims: dict[str, Any] | None = None
    for key in candidates:
        try:
            claims = jwt.decode(
                assertion,
                key.key,
                algorithms=[alg],
                audience=token_url,
                issuer=client_id,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "sub", "aud", "jti"]},
            )
            break
        except jwt.InvalidSignatureError:
            continue
        except jwt.ExpiredSignatureError:
            raise refuse("client_assertion has expired") from None
        except jwt.MissingRequiredClaimError as e:
            raise refuse(f"client_assertion has no '{e.claim}' claim") from None
        except jwt.InvalidAudienceError:
            raise refuse(
                f"client_assertion's aud must be the token endpoint, {token_url}"
            ) from None
        except jwt.InvalidIssuerError:
            raise refuse("client_assertion's iss must be the client id") from None
        except jwt.ImmatureSignatureError:
            raise refuse("client_assertion is not valid yet (nbf or iat)") from None
        except jwt.PyJWTError as e:
            raise refuse(f"client_assertion is not valid: {e}") from None
    if claims is None:
        raise refuse("client_assertion's signature does not verify with the client's keys")
    if claims.get("sub") != client_id:
        raise refuse("client_assertion's sub must be the client id")
    exp = claims["exp"]
    if not isinstance(exp, int | float) or exp > now.timestamp() + MAX_ASSERTION_LIFETIME + LEEWAY:
        raise refuse(f"client_assertion must expire within {MAX_ASSERTION_LIFETIME} s")
    jti = claims["jti"]
    if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
        raise refuse("client_assertion's jti must be a string of 1 to 256 characters")
    return claims
