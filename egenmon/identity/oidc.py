"""The relying party: authorization code flow with PKCE, `state` and `nonce` (OpenID
Connect Core 1.0, RFC 7636), for the clinician UI (staff) and the patient app (patients).

The pure parts (the authorization URL, the ID token check, the assurance level, the
logout URL) take plain values; `exchange_code` talks to the token endpoint, and
`match_staff` / `match_patient` find who signed in. Each refusal is a `LoginRefused` with
a reason code (the page's message and the access log's entry), never the token's text.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from egenmon.domain.identifiers import IdentifierError, parse_personal_identity
from egenmon.identity.provider import ALGORITHMS, Provider, ProviderError, UnknownKey
from egenmon.settings import Settings, SettingsError

# Clock skew allowed on exp, iat and nbf of an ID token (seconds).
LEEWAY = 60
# An ID token issued longer ago than this is refused (iat), whatever its exp says.
MAX_AGE = 600
AUDIENCES = ("staff", "patient")
# Reasons a sign-in is refused (the page's message key is "sso.refused.<reason>").
REASONS = (
    "state",  # unknown, used or expired state: the login took too long or was replayed
    "provider",  # the provider answered with an error (the user cancelled, say)
    "exchange",  # the token endpoint refused the code
    "id_token",  # signature, issuer, expiry or form of the ID token
    "aud",  # the ID token is meant for another client
    "nonce",  # the ID token belongs to another sign-in
    "acr",  # the assurance level is below the required one
    "no_identifier",  # the ID token has no HSA-id or personnummer claim
    "unknown_user",  # no login has that HSA-id
    "unknown_unit",  # no care unit has the claimed HSA-id
    "wrong_unit",  # the login belongs to another care unit
    "unknown_patient",  # no patient has that personnummer
)


class LoginRefused(Exception):
    """A sign-in that must not go through; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class RelyingParty:
    """egenmon as the provider's client, from the settings."""

    issuer: str
    client_id: str
    client_secret: str | None
    private_key: str | None  # PEM, for private_key_jwt
    scopes: str
    claim_hsa_id: str
    claim_care_unit: str
    claim_personnummer: str
    acr_levels: tuple[str, ...]
    acr_required: str

    @classmethod
    def from_settings(cls, settings: Settings) -> RelyingParty:
        assert settings.oidc_issuer and settings.oidc_client_id
        key = None
        if settings.oidc_private_key_file:
            try:
                with open(settings.oidc_private_key_file) as f:
                    key = f.read()
                load_pem_private_key(key.encode(), None)
            except (OSError, ValueError, TypeError) as e:
                raise SettingsError(
                    "EGENMON_OIDC_PRIVATE_KEY_FILE: not a readable PEM private key "
                    f"without a passphrase ({type(e).__name__})"
                ) from None
        return cls(
            issuer=settings.oidc_issuer,
            client_id=settings.oidc_client_id,
            client_secret=settings.oidc_client_secret,
            private_key=key,
            scopes=settings.oidc_scopes,
            claim_hsa_id=settings.oidc_claim_hsa_id,
            claim_care_unit=settings.oidc_claim_care_unit,
            claim_personnummer=settings.oidc_claim_personnummer,
            acr_levels=tuple(settings.oidc_acr_levels.split()),
            acr_required=settings.oidc_acr_required,
        )


def random_token() -> str:
    return secrets.token_urlsafe(32)


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def pkce_challenge(verifier: str) -> str:
    """S256 code challenge of a PKCE verifier (RFC 7636, 4.2)."""
    raw = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def authorization_url(
    metadata: dict[str, Any],
    rp: RelyingParty,
    *,
    redirect_uri: str,
    state: str,
    nonce: str,
    code_verifier: str,
    locale: str = "sv",
) -> str:
    """Where the browser goes to sign in: code flow, PKCE S256, state, nonce, and the
    required assurance level asked for (and checked again on return)."""
    params = {
        "response_type": "code",
        "client_id": rp.client_id,
        "redirect_uri": redirect_uri,
        "scope": rp.scopes,
        "state": state,
        "nonce": nonce,
        "code_challenge": pkce_challenge(code_verifier),
        "code_challenge_method": "S256",
        "acr_values": " ".join(rp.acr_levels[rp.acr_levels.index(rp.acr_required) :]),
        "ui_locales": locale,
    }
    endpoint = str(metadata["authorization_endpoint"])
    return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)


def client_assertion(rp: RelyingParty, token_endpoint: str) -> str:
    """A private_key_jwt client assertion (OpenID Connect Core 9; RFC 7523)."""
    assert rp.private_key
    now = int(time.time())
    key = load_pem_private_key(rp.private_key.encode(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise LoginRefused("exchange", "the client's private key is neither RSA nor EC")
    alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
    claims = {
        "iss": rp.client_id,
        "sub": rp.client_id,
        "aud": token_endpoint,
        "jti": random_token(),
        "iat": now,
        "exp": now + 60,
    }
    return jwt.encode(claims, key, algorithm=alg)


async def exchange_code(
    provider: Provider, rp: RelyingParty, *, code: str, redirect_uri: str, code_verifier: str
) -> dict[str, Any]:
    """The token endpoint's answer to the code (with the PKCE verifier); LoginRefused
    ("exchange") when it refuses or answers something else."""
    metadata = await provider.metadata()
    endpoint = str(metadata["token_endpoint"])
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    auth: httpx.Auth | None = None
    if rp.private_key:
        form["client_id"] = rp.client_id
        form["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        form["client_assertion"] = client_assertion(rp, endpoint)
    else:
        assert rp.client_secret is not None
        auth = httpx.BasicAuth(rp.client_id, rp.client_secret)
    try:
        if auth is None:
            r = await provider.client.post(endpoint, data=form)
        else:
            r = await provider.client.post(endpoint, data=form, auth=auth)
    except httpx.HTTPError as e:
        raise LoginRefused("exchange", f"token endpoint unreachable: {type(e).__name__}") from None
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code != 200 or not isinstance(body, dict):
        error = body.get("error") if isinstance(body, dict) else None
        raise LoginRefused("exchange", f"token endpoint answered {r.status_code} {error or ''}")
    if not isinstance(body.get("id_token"), str):
        raise LoginRefused("exchange", "the token endpoint sent no id_token")
    return body


def check_id_token(
    token: str, key: Any, rp: RelyingParty, *, nonce: str, now: float | None = None
) -> dict[str, Any]:
    """The ID token's claims if it is valid for this sign-in (Core 3.1.3.7): signature,
    `iss`, `aud` (and `azp`), `exp`, `iat` (not in the future, not older than MAX_AGE),
    `nbf`, `nonce`, all with LEEWAY; LoginRefused naming the first gap."""
    now = time.time() if now is None else now
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=list(ALGORITHMS),
            issuer=rp.issuer,
            audience=rp.client_id,
            leeway=LEEWAY,
            options={"require": ["iss", "aud", "sub", "exp", "iat"], "verify_iat": True},
        )
    except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as e:
        if isinstance(e, jwt.InvalidAudienceError) or e.claim == "aud":
            raise LoginRefused("aud", "the ID token is meant for another client") from None
        raise LoginRefused("id_token", f"the ID token has no {e.claim}") from None
    except jwt.PyJWTError as e:
        raise LoginRefused("id_token", type(e).__name__) from None
    aud = claims["aud"]
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != rp.client_id:
        raise LoginRefused("aud", "the ID token names several audiences but not us as azp")
    iat = claims["iat"]
    if not isinstance(iat, int | float) or iat > now + LEEWAY or iat < now - MAX_AGE - LEEWAY:
        raise LoginRefused("id_token", "the ID token's iat is out of range")
    given = claims.get("nonce")
    if not isinstance(given, str) or not secrets.compare_digest(given, nonce):
        raise LoginRefused("nonce", "the ID token belongs to another sign-in")
    return claims


def check_acr(claims: dict[str, Any], rp: RelyingParty) -> str:
    """The sign-in's assurance level if it is the required one or higher."""
    acr = claims.get("acr")
    if not isinstance(acr, str) or acr not in rp.acr_levels:
        raise LoginRefused("acr", "the sign-in names no known assurance level")
    if rp.acr_levels.index(acr) < rp.acr_levels.index(rp.acr_required):
        raise LoginRefused("acr", "the sign-in's assurance level is too low")
    return acr


async def validate(
    provider: Provider, rp: RelyingParty, id_token: str, *, nonce: str
) -> dict[str, Any]:
    """check_id_token with the provider's key named in the token's header (the caller
    checks the assurance level once it knows who signed in, so that a refusal is logged
    under the right person)."""
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError:
        raise LoginRefused("id_token", "the ID token is malformed") from None
    if header.get("alg") not in ALGORITHMS:
        raise LoginRefused("id_token", "the ID token's algorithm is not accepted")
    try:
        key = await provider.key(header.get("kid"))
    except UnknownKey:
        raise LoginRefused("id_token", "the ID token's key is unknown") from None
    except ProviderError as e:
        raise LoginRefused("id_token", str(e)) from None
    return check_id_token(id_token, key.key, rp, nonce=nonce)


def claim_text(claims: dict[str, Any], name: str, limit: int = 64) -> str | None:
    value = claims.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        return None
    return value.strip()


def personnummer_of(claims: dict[str, Any], rp: RelyingParty) -> str:
    """The twelve-digit personnummer (or samordningsnummer) the token names."""
    text = claim_text(claims, rp.claim_personnummer, 16)
    if text is None:
        raise LoginRefused("no_identifier", "the ID token carries no personnummer")
    try:
        return parse_personal_identity(text).number
    except IdentifierError:
        raise LoginRefused("no_identifier", "the ID token's personnummer is not valid") from None


def logout_url(
    metadata: dict[str, Any], rp: RelyingParty, *, id_token: str | None, post_logout: str
) -> str | None:
    """RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): the provider's
    end_session_endpoint with id_token_hint, or None when it offers none."""
    endpoint = metadata.get("end_session_endpoint")
    if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
        return None
    params = {"client_id": rp.client_id, "post_logout_redirect_uri": post_logout}
    if id_token:
        params["id_token_hint"] = id_token
    return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)


__all__ = [
    "AUDIENCES",
    "REASONS",
    "LoginRefused",
    "RelyingParty",
    "authorization_url",
    "check_acr",
    "check_id_token",
    "exchange_code",
    "logout_url",
    "personnummer_of",
    "pkce_challenge",
    "validate",
]
