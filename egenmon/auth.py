"""Who is asking: access tokens (JWT with SMART v2 scopes) and the patients they may see.

Tokens come from `egenmon token issue` (HS256, signed with EGENMON_AUTH_SECRET) or, in
production, from the region's identity provider (RS256/ES256, verified with the keys in
EGENMON_AUTH_JWKS_FILE, issuer EGENMON_AUTH_ISSUER, audience EGENMON_AUTH_AUDIENCE). Roles:
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
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import jwt
from fastapi import Request

from egenmon.settings import Settings

ROLES = ("clinician", "integrator", "admin", "patient")
ISSUER = "egenmon"
AUDIENCE = "egenmon"
# Clock skew allowed on exp, nbf and iat (seconds).
LEEWAY = 30

DEFAULT_SCOPES = {
    # A clinician reads, acts on alerts (Task.u) and sets monitoring plans (CarePlan.u).
    "clinician": "user/*.rs user/Flag.rs user/Task.rus user/CarePlan.rus",
    "integrator": "system/*.rs system/Observation.c",
    "admin": "system/*.cruds",
    "patient": "patient/*.rs",
}

_SCOPE = re.compile(r"^(patient|user|system)/([A-Za-z]+|\*)\.([cruds]+|read|write|\*)$")


class AuthError(Exception):
    """401 (no or bad credentials) or 403 (not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Scope:
    context: str  # patient, user or system
    resource: str  # a FHIR resource type or *
    actions: frozenset[str]  # subset of c r u d s

    @classmethod
    def parse(cls, text: str) -> Scope | None:
        m = _SCOPE.match(text)
        if not m:
            return None
        ctx, res, acts = m.groups()
        # SMART v1 forms map onto v2 letters.
        letters = {"read": "rs", "write": "cud", "*": "cruds"}.get(acts, acts)
        return cls(ctx, res, frozenset(letters))


@dataclass(frozen=True)
class Principal:
    subject: str
    role: str
    care_unit_id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None
    scopes: tuple[Scope, ...] = field(default=())

    def allows(self, resource: str, action: str) -> bool:
        """Does a scope grant `action` (c, r, u, d or s) on `resource`?"""
        return any((s.resource in ("*", resource)) and action in s.actions for s in self.scopes)

    def require(self, resource: str, action: str) -> None:
        if not self.allows(resource, action):
            raise AuthError(403, f"the token's scopes do not allow '{action}' on {resource}")

    def may_see(self, patient_id: uuid.UUID, care_unit_id: uuid.UUID | None) -> bool:
        """May this principal see this patient's data at all?"""
        if self.role in ("admin", "integrator"):
            return True
        if self.role == "clinician":
            return self.care_unit_id is not None and care_unit_id == self.care_unit_id
        if self.role == "patient":
            return self.patient_id == patient_id
        return False

    @property
    def patient_filter(self) -> tuple[str, uuid.UUID] | None:
        """The restriction searches must apply: ('care_unit', id), ('patient', id) or None."""
        if self.role == "clinician":
            return (
                ("care_unit", self.care_unit_id)
                if self.care_unit_id
                else ("none", uuid.UUID(int=0))
            )
        if self.role == "patient":
            return ("patient", self.patient_id) if self.patient_id else ("none", uuid.UUID(int=0))
        return None


def parse_scopes(text: str) -> tuple[Scope, ...]:
    out = []
    for part in text.split():
        s = Scope.parse(part)
        if s:
            out.append(s)
    return tuple(out)


def issue_token(
    settings: Settings,
    *,
    role: str,
    subject: str | None = None,
    care_unit_id: uuid.UUID | None = None,
    patient_id: uuid.UUID | None = None,
    scope: str | None = None,
    ttl_seconds: int | None = None,
) -> str:
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


async def authenticate(request: Request) -> Principal:
    """The principal of a request: a Bearer token, or the UI's session cookie."""
    runtime = request.app.state.runtime
    token = bearer(request)
    if token:
        return decode_token(runtime.settings, token)
    resolver = runtime.services.get("sessions")
    if resolver is not None:
        principal = await resolver.principal(request)
        if principal is not None:
            return principal
    raise AuthError(401, "authentication required: send Authorization: Bearer <token>")


def roles_allowed(principal: Principal, roles: Iterable[str]) -> None:
    if principal.role not in roles:
        raise AuthError(403, f"the role {principal.role} may not do this")
