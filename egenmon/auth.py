"""Who is asking: access tokens (JWT with SMART v2 scopes) and the patients they may see.

Tokens come from `egenmon token issue` (HS256, signed with EGENMON_AUTH_SECRET) or, in
production, from the region's identity provider (RS256/PS256/ES256, issuer
EGENMON_AUTH_ISSUER, audience EGENMON_AUTH_AUDIENCE), verified with the provider's keys
from its JWKS URI (EGENMON_AUTH_JWKS_URI or its discovery document; cached, fetched again
for an unknown `kid` at most every 30 s: `Runtime.token_keys`), or, offline, from the
file EGENMON_AUTH_JWKS_FILE. A provider's token names its care unit by HSA-id and its
patient by personnummer (the claims of EGENMON_OIDC_CLAIM_CARE_UNIT and
EGENMON_OIDC_CLAIM_PERSONNUMMER), which egenmon maps to its own records. Roles:
clinician (sees the patients of one care unit), patient (sees themself), integrator
(system access, read and create), admin (everything, including quarantine).

Every token must carry `exp`; `nbf` and `iat` are checked when present, with `LEEWAY` for
clock skew. The role comes from the `role` claim only: scopes say what a role may do with
a resource, never who the caller is (a `system/*.rs` scope alone is refused, not taken for
an integrator that sees every patient).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from functools import lru_cache
from typing import Any

import jwt
from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from egenmon.domain.identifiers import IdentifierError, parse_personal_identity
from egenmon.domain.principals import (
    DEFAULT_SCOPES,
    ROLES,
    AuthError,
    Principal,
    Scope,
    parse_scopes,
)
from egenmon.settings import Settings
from egenmon.store import care_units, patients

ISSUER = "egenmon"
AUDIENCE = "egenmon"
# Clock skew allowed on exp, nbf and iat (seconds).
LEEWAY = 30


def issue_token(
    settings: Settings,
    *,
    role: str,
    subject: str | None = None,
    care_unit_id: uuid.UUID | None = None,
    patient_id: uuid.UUID | None = None,
    scope: str | None = None,
    ttl_seconds: int | None = None,
    client_id: str | None = None,
) -> str:
    """A signed access token; `client_id` names the SMART client it was issued to."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if role == "clinician" and not care_unit_id:
        raise ValueError("a clinician token needs --care-unit")
    if role == "patient" and not patient_id:
        raise ValueError("a patient token needs --patient")
    scope = scope or DEFAULT_SCOPES[role]
    bad = [s for s in scope.split() if Scope.parse(s) is None]
    if bad:
        raise ValueError(f"not SMART scopes: {' '.join(bad)}")
    now = dt.datetime.now(dt.UTC)
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject or f"{role}-{uuid.uuid4().hex[:8]}",
        "role": role,
        "scope": scope,
        "iat": now,
        "nbf": now - dt.timedelta(seconds=5),
        "exp": now + dt.timedelta(seconds=ttl_seconds or settings.token_ttl_seconds),
        "jti": uuid.uuid4().hex,
    }
    if care_unit_id:
        claims["care_unit"] = str(care_unit_id)
    if patient_id:
        claims["patient"] = str(patient_id)
    if client_id:
        claims["client_id"] = client_id
    return jwt.encode(claims, settings.signing_secret, algorithm="HS256")


@lru_cache(maxsize=4)
def _jwks(path: str) -> jwt.PyJWKSet:
    with open(path) as f:
        return jwt.PyJWKSet.from_dict(json.load(f))


def decode_token(settings: Settings, token: str) -> Principal:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError(401, "the access token is malformed") from None
    try:
        if header.get("alg") == "HS256":
            claims = jwt.decode(
                token,
                settings.signing_secret,
                algorithms=["HS256"],
                audience=AUDIENCE,
                issuer=ISSUER,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        elif settings.auth_jwks_file and settings.auth_issuer and settings.auth_audience:
            keys = _jwks(settings.auth_jwks_file)
            kid = header.get("kid")
            key = next((k for k in keys.keys if kid is None or k.key_id == kid), None)
            if key is None:
                raise AuthError(401, "the access token's key is unknown")
            claims = jwt.decode(
                token,
                key.key,
                algorithms=["RS256", "ES256"],
                issuer=settings.auth_issuer,
                audience=settings.auth_audience,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        else:
            raise AuthError(401, "the access token's algorithm is not accepted")
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "the access token has expired") from None
    except jwt.MissingRequiredClaimError as e:
        raise AuthError(401, f"the access token has no '{e.claim}' claim") from None
    except jwt.InvalidAudienceError:
        raise AuthError(401, "the access token is not meant for egenmon (aud)") from None
    except jwt.ImmatureSignatureError:
        raise AuthError(401, "the access token is not valid yet (nbf or iat)") from None
    except jwt.PyJWTError as e:
        raise AuthError(401, f"the access token is not valid: {e}") from None
    return principal_from_claims(claims)


def principal_from_claims(claims: dict) -> Principal:
    """The principal a verified token names. The role is the `role` claim, never a guess
    from the scopes."""
    role = claims.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise AuthError(401, "the access token names no known role (claim 'role')")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise AuthError(401, "the access token's scope is not a string")
    try:
        unit = uuid.UUID(claims["care_unit"]) if claims.get("care_unit") else None
        patient = uuid.UUID(claims["patient"]) if claims.get("patient") else None
    except ValueError:
        raise AuthError(401, "the access token's care_unit or patient is not an id") from None
    return Principal(
        subject=str(claims.get("sub", "?")),
        role=role,
        care_unit_id=unit,
        patient_id=patient,
        scopes=parse_scopes(scope),
    )


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


async def decode_bearer(runtime: Any, token: str) -> Principal:
    """The principal of a Bearer token: egenmon's own (HS256), or one of the region's
    provider checked with its keys from the JWKS URI (`runtime`: an `egenmon.runtime.
    Runtime`, whose `token_keys` hold them; auth sits beside runtime, not above it)."""
    keys = runtime.token_keys
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise AuthError(401, "the access token is malformed") from None
    if header.get("alg") == "HS256" or keys is None:
        return decode_token(runtime.settings, token)
    if header.get("alg") not in PROVIDER_ALGORITHMS:
        raise AuthError(401, "the access token's algorithm is not accepted")
    kid = header.get("kid")
    try:
        key = await keys.key(kid if isinstance(kid, str) else None)
    except LookupError:
        raise AuthError(401, "the access token's key is unknown") from None
    except RuntimeError:
        raise AuthError(503, "the identity provider's keys cannot be fetched now") from None
    claims = verify_provider_token(runtime.settings, token, key.key)
    return await provider_principal(runtime.pool, runtime.settings, claims)


PROVIDER_ALGORITHMS = ("RS256", "PS256", "ES256")


def verify_provider_token(settings: Settings, token: str, key: Any) -> dict[str, Any]:
    """The claims of a provider's token: signature, iss, aud, exp required, nbf and iat
    with LEEWAY."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=list(PROVIDER_ALGORITHMS),
            issuer=settings.auth_issuer,
            audience=settings.auth_audience,
            leeway=LEEWAY,
            options={"require": ["exp", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError(401, "the access token has expired") from None
    except jwt.MissingRequiredClaimError as e:
        raise AuthError(401, f"the access token has no '{e.claim}' claim") from None
    except jwt.InvalidAudienceError:
        raise AuthError(401, "the access token is not meant for egenmon (aud)") from None
    except jwt.ImmatureSignatureError:
        raise AuthError(401, "the access token is not valid yet (nbf or iat)") from None
    except jwt.PyJWTError as e:
        raise AuthError(401, f"the access token is not valid: {e}") from None
    return claims


async def provider_principal(
    pool: AsyncConnectionPool, settings: Settings, claims: dict[str, Any]
) -> Principal:
    """The principal of a provider's verified token: the `role` claim; a clinician's care
    unit by the HSA-id in EGENMON_OIDC_CLAIM_CARE_UNIT (or `care_unit`), a patient by the
    personnummer in EGENMON_OIDC_CLAIM_PERSONNUMMER, both mapped to egenmon's records."""
    role = claims.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise AuthError(401, "the access token names no known role (claim 'role')")
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise AuthError(401, "the access token's scope is not a string")
    unit_id = patient_id = None
    async with pool.connection() as conn:
        if role == "clinician":
            hsa = claims.get(settings.oidc_claim_care_unit) or claims.get("care_unit")
            if not isinstance(hsa, str) or not hsa or len(hsa) > 64:
                raise AuthError(
                    401,
                    f"the access token names no care unit HSA-id "
                    f"(claim '{settings.oidc_claim_care_unit}')",
                )
            unit_id = await care_units.care_unit_by_hsa_id(conn, hsa)
            if unit_id is None:
                raise AuthError(401, "the access token's care unit (HSA-id) is unknown to egenmon")
        if role == "patient":
            text = claims.get(settings.oidc_claim_personnummer)
            try:
                number = parse_personal_identity(text if isinstance(text, str) else "").number
            except IdentifierError:
                raise AuthError(
                    401,
                    f"the access token names no valid personnummer "
                    f"(claim '{settings.oidc_claim_personnummer}')",
                ) from None
            patient_id = await patients.apatient_id_by_number(conn, number)
            if patient_id is None:
                raise AuthError(401, "the access token's patient is unknown to egenmon")
    return Principal(
        subject=str(claims["sub"]),
        role=role,
        care_unit_id=unit_id,
        patient_id=patient_id,
        scopes=parse_scopes(scope),
    )


async def authenticate(request: Request) -> Principal:
    """The principal of a request: a Bearer token, or the UI's session cookie."""
    runtime = request.app.state.runtime
    token = bearer(request)
    if token:
        return await decode_bearer(runtime, token)
    resolver = runtime.sessions
    if resolver is not None:
        principal = await resolver.principal(request)
        if principal is not None:
            return principal
    raise AuthError(401, "authentication required: send Authorization: Bearer <token>")
