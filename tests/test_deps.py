"""The one patient-access check (egenmon.deps.patient_access) that FHIR, the Alerts API
and the UI share, against a real database."""

from __future__ import annotations

import asyncio
import uuid

import psycopg

from egenmon.deps import patient_access
from egenmon.domain.principals import Principal


def check(database_url: str, principal: Principal, patient_id: uuid.UUID):
    async def run():
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            return await patient_access(conn, principal, patient_id)

    return asyncio.run(run())


def test_a_clinician_sees_their_units_patients_only(database_url, care_unit, patient):
    pid, unit = uuid.UUID(patient), uuid.UUID(care_unit)
    own = check(database_url, Principal("n1", "clinician", care_unit_id=unit), pid)
    assert (own.exists, own.visible, own.granted) == (True, True, True)
    other = check(database_url, Principal("n2", "clinician", care_unit_id=uuid.uuid4()), pid)
    assert (other.exists, other.visible, other.granted) == (True, False, False)
    no_unit = check(database_url, Principal("n3", "clinician"), pid)
    assert not no_unit.visible


def test_a_patient_sees_only_themself(database_url, patient):
    pid = uuid.UUID(patient)
    assert check(database_url, Principal("p", "patient", patient_id=pid), pid).granted
    other = check(database_url, Principal("q", "patient", patient_id=uuid.uuid4()), pid)
    assert other.exists and not other.visible


def test_an_unknown_patient_is_never_granted_not_even_to_an_admin(database_url, patient):
    unknown = uuid.uuid4()
    for principal in (
        Principal("a", "admin"),
        Principal("i", "integrator"),
        Principal("n", "clinician", care_unit_id=uuid.uuid4()),
    ):
        access = check(database_url, principal, unknown)
        assert not access.exists and not access.granted
    assert check(database_url, Principal("a", "admin"), uuid.UUID(patient)).granted
