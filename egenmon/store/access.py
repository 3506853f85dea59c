"""The access log, from the service (async): every read of patient data is recorded."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from egenmon.auth import Principal


async def log_access(
    pool: AsyncConnectionPool,
    principal: Principal,
    action: str,
    resource: str,
    patient_ids: Iterable[uuid.UUID],
    detail: Any = None,
) -> None:
    """Append who did what with whose data (patientdatalagen 4:3, HSLF-FS 2016:40 4 kap)."""
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO access_log (actor, role, care_unit_id, action, resource, patient_ids,"
            " detail) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                principal.subject,
                principal.role,
                principal.care_unit_id,
                action,
                resource,
                sorted(set(patient_ids)),
                Jsonb(detail) if detail is not None else None,
            ),
        )
