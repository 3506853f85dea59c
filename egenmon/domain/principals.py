"""Who is asking, as plain values: roles, SMART v2 scopes and the principal a token names.

Token decoding stays in `egenmon.auth` (it needs the settings and the JWT library); the
store's access log, the ingest pipeline and the FHIR and alerts wings use these values
without importing FastAPI.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_SCOPES",
    "ROLES",
    "AuthError",
    "Principal",
    "Scope",
    "parse_scopes",
    "roles_allowed",
]

ROLES = ("clinician", "integrator", "admin", "patient")
DEFAULT_SCOPES = {
    # A clinician reads, acts on alerts (Task.u) and sets monitoring plans (CarePlan.u).
    # Clinicians and patients add readings entered by hand (Observation.c; issue 15).
    "clinician": "user/*.rs user/Flag.rs user/Task.rus user/CarePlan.rus user/Observation.c",
    "integrator": "system/*.rs system/Observation.c",
    "admin": "system/*.cruds",
    "patient": "patient/*.rs patient/Observation.c",
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
            if self.patient_id is not None and patient_id != self.patient_id:
                return False  # a launch context (SMART EHR launch) narrows to one patient
            return self.care_unit_id is not None and care_unit_id == self.care_unit_id
        if self.role == "patient":
            return self.patient_id == patient_id
        return False

    @property
    def patient_filter(self) -> tuple[str, uuid.UUID] | None:
        """The restriction searches must apply: ('care_unit', id), ('patient', id) or None."""
        if self.role == "clinician":
            if self.care_unit_id and self.patient_id:  # a launch context: one patient
                return ("patient", self.patient_id)
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


def roles_allowed(principal: Principal, roles: Iterable[str]) -> None:
    if principal.role not in roles:
        raise AuthError(403, f"the role {principal.role} may not do this")
