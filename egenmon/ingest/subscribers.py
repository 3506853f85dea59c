"""New-Observation events for FHIR Subscriptions, raised as readings commit.

The batch writer calls `ObservationEvents.committed` with the rows a batch stored, on its
own connection right after the commit. It costs nothing while nobody subscribes: whose
Observations some live subscription may want (everyone, or a set of patients) is cached
for `TTL_S`, so a batch of readings of patients nobody follows makes no query. A new
subscription is served from the next refresh (at most `TTL_S` later; its handshake takes
about as long).

The event rows are written after the readings' commit, not in its transaction (a straight
COPY commits on its own): a process that dies between the two loses those events, never
readings. Alert events are transactional (queued with the alert change).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

import psycopg

from egenmon.domain.ids import observation_id
from egenmon.domain.readings import COLUMNS
from egenmon.store import subscriptions

log = logging.getLogger("egenmon.ingest.subscribers")

TTL_S = 1.0
_TIME = COLUMNS.index("time")
_PATIENT = COLUMNS.index("patient_id")
_CODE = COLUMNS.index("code")
_MDC = COLUMNS.index("mdc")
_DEDUP = COLUMNS.index("dedup_key")


class ObservationEvents:
    """The writer's after-commit hook (one per process, shared by its connections)."""

    def __init__(self) -> None:
        self._everyone = False
        self._patients: frozenset[uuid.UUID] = frozenset()
        self._fresh_until = 0.0

    async def _refresh(self, conn: psycopg.AsyncConnection) -> None:
        everyone, patients = await subscriptions.observation_interest(conn)
        self._everyone, self._patients = everyone, frozenset(patients)
        self._fresh_until = time.monotonic() + TTL_S

    async def committed(self, conn: psycopg.AsyncConnection, rows: Sequence[tuple]) -> None:
        """Queue events for the stored rows some subscription may want. Never raises: the
        readings are committed whatever happens here."""
        try:
            if time.monotonic() >= self._fresh_until:
                await self._refresh(conn)
            if not self._everyone and not self._patients:
                return
            wanted = [
                (r[_PATIENT], r[_CODE], r[_MDC], observation_id(r[_TIME], r[_DEDUP]))
                for r in rows
                if self._everyone or r[_PATIENT] in self._patients
            ]
            if wanted:
                await subscriptions.enqueue_observations(conn, wanted)
        except Exception as e:  # noqa: BLE001  the readings are stored: never fail their batch
            log.warning(
                "new-Observation events of %d rows not queued: %s", len(rows), type(e).__name__
            )
