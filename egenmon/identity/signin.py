"""Who signed in through the provider: staff by HSA-id (and the care unit by its
HSA-id), patients by personnummer; and the log of every sign-in, refused ones included.

The personnummer is looked up and forgotten: the log names a patient by egenmon's opaque
id (`patient/<uuid>`) and an unknown one not at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from egenmon.domain.principals import Principal
from egenmon.identity.oidc import (
    LoginRefused,
    RelyingParty,
    claim_text,
    logout_url,
    personnummer_of,
)
from egenmon.identity.provider import Provider, ProviderError
from egenmon.store import access_log, care_units, patients, users

RESOURCE = "login/oidc"


@dataclass
class Attempt:
    """What is known of a sign-in so far (for its log entry), filled in as it goes."""

    audience: str
    actor: str = "(unknown)"
    care_unit_id: uuid.UUID | None = None
    patient_id: uuid.UUID | None = None
    acr: str | None = None

    @property
    def role(self) -> str:
        return "patient" if self.audience == "patient" else "clinician"


async def match_staff(
    conn: Any, claims: dict[str, Any], rp: RelyingParty, attempt: Attempt
) -> dict[str, Any]:
    """The login of the HSA-id the token names, at the care unit it names (a clinician
    signs in for the unit she belongs to; an admin belongs to none)."""
    hsa_id = claim_text(claims, rp.claim_hsa_id)
    if hsa_id is None:
        raise LoginRefused("no_identifier", "the ID token carries no HSA-id")
    attempt.actor = hsa_id
    unit_hsa = claim_text(claims, rp.claim_care_unit)
    unit_id = await care_units.care_unit_by_hsa_id(conn, unit_hsa) if unit_hsa else None
    attempt.care_unit_id = unit_id
    user = await users.find_by_hsa_id(conn, hsa_id)
    if user is None:
        raise LoginRefused("unknown_user", "no login has this HSA-id")
    if user["role"] == "clinician":
        if unit_id is None:
            raise LoginRefused("unknown_unit", "no care unit has the claimed HSA-id")
        if unit_id != user["care_unit_id"]:
            raise LoginRefused("wrong_unit", "the login belongs to another care unit")
    attempt.actor = user["username"]
    return user


async def match_patient(
    conn: Any, claims: dict[str, Any], rp: RelyingParty, attempt: Attempt
) -> uuid.UUID:
    """The patient whose personnummer the token names."""
    number = personnummer_of(claims, rp)
    patient_id = await patients.apatient_id_by_number(conn, number)
    if patient_id is None:
        raise LoginRefused("unknown_patient", "no patient has this personnummer")
    attempt.patient_id = patient_id
    attempt.actor = f"patient/{patient_id}"
    return patient_id


async def log_attempt(
    pool: AsyncConnectionPool, attempt: Attempt, refused: LoginRefused | None
) -> None:
    """The sign-in in the access log: `login` or `login-refused` with the reason."""
    principal = Principal(
        subject=attempt.actor, role=attempt.role, care_unit_id=attempt.care_unit_id
    )
    detail: dict[str, Any] = {"via": "oidc", "audience": attempt.audience}
    if attempt.acr:
        detail["acr"] = attempt.acr
    if refused is not None:
        detail["reason"] = refused.reason
    await access_log.log_access(
        pool,
        principal,
        "login-refused" if refused else "login",
        RESOURCE,
        [attempt.patient_id] if attempt.patient_id else [],
        detail,
    )


async def end_session_url(
    provider: Provider, rp: RelyingParty, id_token: str | None, post_logout: str
) -> str | None:
    """Where the browser goes to end the provider's session too (RP-initiated logout),
    or None when the provider offers no end_session_endpoint or cannot be reached (the
    local session is ended all the same)."""
    try:
        metadata = await provider.metadata()
    except ProviderError:
        return None
    return logout_url(metadata, rp, id_token=id_token, post_logout=post_logout)


async def record_login(conn: Any, user_id: uuid.UUID) -> None:
    await users.record_provider_login(conn, user_id)
