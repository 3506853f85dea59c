"""Device credentials and bindings, cached so ingest costs no query per request.

Entries are dropped the moment a device changes: a trigger (migration 0002) announces
every change of a device's status, secret or bindings on a PostgreSQL channel, and each
process listens to it. While the listener is connected an entry may live for minutes;
while it is not (the database restarting, a network cut), entries live at most one
second, so a revoked device is refused within a second whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool

from egenmon.devices.credentials import secret_digest, secret_matches
from egenmon.domain.readings import Binding
from egenmon.store import db, devices
from egenmon.store.db import POOL_WAIT_S

log = logging.getLogger("egenmon.devices.cache")

_EPOCH_START = dt.datetime(1, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Credentials:
    device_id: str
    active: bool


@dataclass(slots=True)
class _Entry:
    value: object
    fetched: float  # time.monotonic()
    epoch: int  # the listener session it was fetched under


class DeviceCache:
    """Credentials by secret and bindings by device, invalidated by change notifications."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        database_url: str,
        *,
        fallback_ttl: float = 1.0,
        watched_ttl: float = 300.0,
        negative_ttl: float = 1.0,
        max_entries: int = 200_000,
    ) -> None:
        self.pool = pool
        self.url = database_url
        self.fallback_ttl = fallback_ttl
        self.watched_ttl = watched_ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._creds: dict[bytes, _Entry] = {}
        self._digests: dict[str, set[bytes]] = {}
        self._bindings: dict[str, _Entry] = {}
        self._inflight: dict[object, asyncio.Future] = {}
        self._changes = 0  # notifications seen; a look-up spanning one is not cached
        self._epoch = 0
        self._listening = False
        self._ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.notifications = 0

    @property
    def listening(self) -> bool:
        return self._listening

    async def start(self, wait: float = 5.0) -> None:
        self._task = asyncio.create_task(self._listen(), name="device-cache-listener")
        # Start watched when the database is up; otherwise run on the short TTL.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), wait)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._listening = False

    # -- look-ups -------------------------------------------------------------------

    async def credentials(self, secret: str) -> Credentials | None:
        """The device a secret belongs to (active or revoked), or None if unknown."""
        digest = secret_digest(secret)
        entry = self._creds.get(digest)
        now = time.monotonic()
        if entry is not None and self._fresh(entry, now, entry.value is None):
            return entry.value  # type: ignore[return-value]
        return await self._single_flight(("c", digest), self._load_credentials, secret, digest)

    async def bindings(self, device_id: str) -> list[Binding]:
        """The device's bindings to patients, newest first."""
        entry = self._bindings.get(device_id)
        if entry is not None and self._fresh(entry, time.monotonic(), False):
            return entry.value  # type: ignore[return-value]
        return await self._single_flight(("b", device_id), self._load_bindings, device_id)

    def invalidate(self, device_id: str | None = None) -> None:
        """Forget one device, or everything."""
        if device_id is None:
            self._creds.clear()
            self._digests.clear()
            self._bindings.clear()
            return
        for digest in self._digests.pop(device_id, ()):
            self._creds.pop(digest, None)
        self._bindings.pop(device_id, None)

    # -- internals --------------------------------------------------------------------

    def _fresh(self, entry: _Entry, now: float, negative: bool) -> bool:
        age = now - entry.fetched
        if negative or not self._listening or entry.epoch != self._epoch:
            return age < (self.negative_ttl if negative else self.fallback_ttl)
        return age < self.watched_ttl

    async def _single_flight(self, key: object, load, *args):
        # Concurrent requests of one device share one query.
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            value = await load(*args)
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: no "never retrieved" warning if nobody waits
            raise
        else:
            fut.set_result(value)
            return value
        finally:
            del self._inflight[key]

    async def _load_credentials(self, secret: str, digest: bytes) -> Credentials | None:
        changes, epoch = self._changes, self._epoch
        async with self.pool.connection(timeout=POOL_WAIT_S) as conn:
            row = await devices.device_by_digest(conn, digest)
        # The index found the digest; compare once more in constant time all the same.
        value = None
        if row is not None and secret_matches(secret, bytes(row[2])):
            value = Credentials(row[0], row[1] == "active")
        if changes == self._changes:
            self._trim(self._creds)
            self._creds[digest] = _Entry(value, time.monotonic(), epoch)
            if value is not None:
                self._digests.setdefault(value.device_id, set()).add(digest)
        return value

    async def _load_bindings(self, device_id: str) -> list[Binding]:
        changes, epoch = self._changes, self._epoch
        async with self.pool.connection(timeout=POOL_WAIT_S) as conn:
            rows = await devices.device_bindings(conn, device_id)
        value = [Binding(p, start or _EPOCH_START, end) for p, start, end in rows]
        if changes == self._changes:
            self._trim(self._bindings)
            self._bindings[device_id] = _Entry(value, time.monotonic(), epoch)
        return value

    def _trim(self, table: dict) -> None:
        if len(table) >= self.max_entries:
            self.invalidate()

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            conn: psycopg.AsyncConnection | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                await devices.listen_device_changes(conn)
                # Changes made while not listening are unknown: a new epoch makes every
                # older entry fall back to the short TTL.
                self._epoch += 1
                self._changes += 1
                self._listening = True
                self._ready.set()
                backoff = 0.2
                while True:
                    async for note in conn.notifies(timeout=20.0):
                        self._changes += 1
                        self.notifications += 1
                        self.invalidate(note.payload)
                    await db.ping(conn)  # a dead connection shows itself here
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as e:
                if self._listening:
                    log.warning(
                        "device change listener lost: %s; caching for %.0f s only",
                        type(e).__name__,
                        self.fallback_ttl,
                    )
            finally:
                self._listening = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
