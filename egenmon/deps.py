"""The typed FastAPI dependencies every HTTP edge uses, and the one patient-access check.

A route declares what it needs in its signature (`runtime: RuntimeDep`, `principal:
PrincipalDep`) instead of digging in `request.app.state`. `patient_access` is the single
answer to "may this caller see this patient?", used by FHIR reads and searches, the
Alerts API and the clinician UI; each edge answers a refusal in its own shape (FHIR 403
OperationOutcome, the API's 404, the UI's absent page) and logs it, but none decides it
on its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from egenmon.auth import authenticate
from egenmon.domain.principals import Principal
from egenmon.runtime import Runtime
from egenmon.store import patients

__all__ = ["PatientAccess", "PrincipalDep", "RuntimeDep", "get_runtime", "patient_access"]


def get_runtime(request: Request) -> Runtime:
    """The running process's Runtime (set by egenmon.app's lifespan)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
PrincipalDep = Annotated[Principal, Depends(authenticate)]


@dataclass(frozen=True)
class PatientAccess:
    """What the check found: whether the patient exists, and whether the caller may see
    them. An edge answers an unknown patient and an invisible one alike (no existence
    leak); `exists` only says whether the access log may name the patient."""

    patient_id: uuid.UUID
    exists: bool
    visible: bool

    @property
    def granted(self) -> bool:
        return self.exists and self.visible


async def patient_access(conn: Any, principal: Principal, patient_id: uuid.UUID) -> PatientAccess:
    """May `principal` see `patient_id`'s data? Clinicians see their care unit's
    patients, a patient only themself, integrators and admins everyone
    (`Principal.may_see`); the patient's care unit comes from the store."""
    unit = await patients.patient_care_unit(conn, patient_id)  # None: no such patient
    return PatientAccess(patient_id, unit is not None, principal.may_see(patient_id, unit))
