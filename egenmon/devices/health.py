"""Device health (last seen, battery), noted in memory and written once a second.

A device sending a reading a second must not cost an UPDATE a second: the tracker keeps
the newest note per device and one statement writes them all. A failed flush keeps the
notes for the next one, so only a crash loses up to a second of last-seen times, which
the device's next message restores.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

import psycopg
from psycopg_pool import AsyncConnectionPool

from egenmon.store import devices
from egenmon.store.db import POOL_WAIT_S

log = logging.getLogger("egenmon.devices.health")


class HealthTracker:
    """Collects last-seen times and battery levels; `flush` writes them in one UPDATE."""

    name = "device-health"

    def __init__(self, pool: AsyncConnectionPool, interval: float = 1.0) -> None:
        self.pool = pool
        self.interval = interval
        # device id -> [last seen, battery or None, time of that battery reading or None]
        self._notes: dict[str, list] = {}
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    def seen(self, device_id: str, at: dt.datetime, battery: float | None = None) -> None:
        """Note that a device was heard from at `at`, with its battery level if it said."""
        note = self._notes.get(device_id)
        if note is None:
            self._notes[device_id] = [at, battery, at if battery is not None else None]
            return
        if at > note[0]:
            note[0] = at
        if battery is not None and (note[2] is None or at >= note[2]):
            note[1], note[2] = battery, at

    @property
    def pending(self) -> int:
        return len(self._notes)

    async def flush(self) -> int:
        """Write what was noted; returns how many devices were updated."""
        async with self._lock:
            notes, self._notes = self._notes, {}
            if not notes:
                return 0
            try:
                async with self.pool.connection(timeout=POOL_WAIT_S) as conn:
                    await devices.update_device_health(
                        conn, [(d, n[0], n[1], n[2]) for d, n in notes.items()]
                    )
            except (psycopg.Error, OSError, TimeoutError) as e:
                log.warning(
                    "device health not written (%s); kept for the next flush", type(e).__name__
                )
                for device_id, (at, battery, battery_at) in notes.items():
                    self.seen(device_id, at)
                    if battery is not None:
                        self.seen(device_id, battery_at, battery)
                return 0
            return len(notes)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="device-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
