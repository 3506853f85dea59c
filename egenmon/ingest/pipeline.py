"""The ingest pipeline shared by HTTP, MQTT and FHIR ingest.

body → parse → the body's device_id is the authenticated one → bindings (cached) →
normalise → batch writer (COPY, committed) and quarantine of every reject → result.
Transports stay thin: they authenticate, hand over the body and answer with the result.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from egenmon import metrics
from egenmon.devices.cache import Credentials, DeviceCache
from egenmon.devices.health import HealthTracker
from egenmon.domain.readings import COLUMNS, Binding
from egenmon.ingest.message import MessageError, ReadingMessage, parse_message
from egenmon.ingest.normalise import normalise, normalise_entered
from egenmon.ingest.subscribers import ObservationEvents
from egenmon.ingest.translated import Translated
from egenmon.ingest.writer import BatchWriter, WriteError, WriteResult
from egenmon.settings import Settings
from egenmon.store import quarantine as quarantine_store
from egenmon.store.db import POOL_WAIT_S
from egenmon.store.quarantine import QuarantineEntry, safe_text

# Errors that mean the store is away (or too busy), not that it refused what it was given:
# the sender tries again. Any other psycopg.Error (a DataError, say) is a refusal.
OUTAGE = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, OSError, TimeoutError)

log = logging.getLogger("egenmon.ingest")

_DEVICE = COLUMNS.index("device_id")
_MDC = COLUMNS.index("mdc")
_EXTRA = COLUMNS.index("extra")
MAX_BODY = 1024 * 1024  # 1 MiB, the contract's limit; quarantine keeps at most this much


@dataclass
class IngestResult:
    """What became of a message; `body()` is the contract's answer."""

    status: int  # 200, 400, 403 or 422 (401 is decided by authenticate; 422 with an error:
    # the database refused the message)
    accepted: int = 0
    duplicates: int = 0
    rejected: list[dict] = field(default_factory=list)  # [{"index": i, "error": "..."}]
    error: str | None = None  # for 400/403: what is wrong
    message_id: str | None = None

    def body(self) -> dict:
        if self.error is not None:
            return {"error": self.error}
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


@dataclass
class _Prepared:
    """One message checked and normalised: its rows, its quarantine entries, its result
    (accepted and duplicates filled in once the rows are committed)."""

    result: IngestResult
    rows: list[tuple]
    entries: list[QuarantineEntry]


def safe_reason(text: str) -> str:
    """A refusal's reason as it is answered, published and kept: what is not printable in
    it (NUL, lone surrogates, control characters from the input) escaped, at most 1000
    characters. Reasons quote the input they refuse; this keeps that quoting harmless."""
    return safe_text(text) or ""


class StoreRefused(Exception):
    """The database refused what it was given (not an outage): retrying cannot help."""


class TokenBucket:
    """At most `rate` events a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens = burst
        self._at = time.monotonic()
        self._dropped = 0

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            self._dropped = 0
            return True
        return False

    def dropped(self) -> int:
        """Count one event refused since the last one taken; returns the running count."""
        self._dropped += 1
        return self._dropped


class Pipeline:
    """Owns the batch writer, the device caches and the device-health flusher."""

    name = "pipeline"

    def __init__(
        self, settings: Settings, pool: AsyncConnectionPool, *, writer: BatchWriter | None = None
    ) -> None:
        url = settings.require_database()
        self.settings = settings
        self.pool = pool
        self.writer = writer or BatchWriter(
            url, max_rows=settings.batch_max_rows, max_delay_ms=settings.batch_max_delay_ms
        )
        self.writer.on_commit = ObservationEvents().committed
        self.devices = DeviceCache(pool, url)
        self.health = HealthTracker(pool)
        # Requests without valid credentials are quarantined too (a misconfigured device
        # shows up there), but only this many a second: strangers must not fill the store.
        self.anonymous_quarantine = TokenBucket(rate=5.0, burst=50.0)
        self._counters: dict[tuple[str, str], object] = {}
        self._latency: dict[str, object] = {}

    async def start(self) -> None:
        _tune_gc()
        await self.writer.start()
        await self.devices.start()
        await self.health.start()

    async def stop(self) -> None:
        await self.health.stop()
        await self.devices.stop()
        await self.writer.stop()

    # -- devices ----------------------------------------------------------------------

    async def credentials(self, secret: str) -> Credentials | None:
        """The device a secret belongs to, active or revoked; None when unknown."""
        try:
            return await self.devices.credentials(secret)
        except (psycopg.Error, OSError) as e:
            raise WriteError(f"credentials cannot be checked: {type(e).__name__}") from None

    async def authenticate(self, secret: str) -> str | None:
        """The id of the active device this secret belongs to, or None (unknown, revoked)."""
        creds = await self.credentials(secret)
        return creds.device_id if creds is not None and creds.active else None

    async def bindings(self, device_id: str) -> list[Binding]:
        """The device's bindings to patients over time (cached, exact on change)."""
        try:
            return await self.devices.bindings(device_id)
        except (psycopg.Error, OSError) as e:
            raise WriteError(f"bindings cannot be read: {type(e).__name__}") from None

    # -- ingest -----------------------------------------------------------------------

    async def ingest(
        self,
        body: bytes,
        *,
        device_id: str,
        source: str,
        topic: str | None = None,
        received_at: dt.datetime | None = None,
        quarantine: bool = True,
    ) -> IngestResult:
        """Store a Reading message from an authenticated device; raises WriteError.

        Rejects (the whole body, or single readings) go to quarantine unless
        `quarantine` is false (a replay of an entry that is in quarantine already).
        """
        started = time.perf_counter()
        bindings = await self.bindings(device_id)
        prepared = self._prepare(body, device_id, bindings, source, topic, received_at, quarantine)
        try:
            [result] = await self._commit([prepared], source, started)
        except WriteError as e:
            if not e.refused:
                raise  # an outage: the sender tries again
            # The database refused this message's content: sending it again cannot help.
            reason = f"refused by the database: {safe_reason(str(e))[:200]}"
            log.warning("the database refused a message from %s; it goes to quarantine", source)
            if quarantine:
                await self.quarantine(
                    source=source,
                    reason=reason,
                    raw=body,
                    device_id=device_id,
                    topic=topic,
                    received_at=received_at,
                )
            return IngestResult(status=422, error=reason, message_id=prepared.result.message_id)
        return result

    async def ingest_many(
        self, messages: Sequence[tuple[bytes, str, str | None]], *, source: str
    ) -> list[IngestResult | Exception]:
        """Store many Reading messages at once: (body, device id, topic) each.

        What `ingest` does for each, with one hand-over to the writer and one quarantine
        insert for all of them, and without a coroutine per message (MQTT takes what
        arrived together this way). Raises WriteError when the batch is not stored, and
        then nothing of it is; an exception that only one message raised (a bug) is
        returned in its place, and the others are stored.
        """
        started = time.perf_counter()
        bindings = {d: await self.bindings(d) for d in {device for _, device, _ in messages}}
        prepared: list[_Prepared | Exception] = []
        for body, device_id, topic in messages:
            try:
                prepared.append(
                    self._prepare(body, device_id, bindings[device_id], source, topic, None, True)
                )
            except Exception as e:  # noqa: BLE001 (handed back; the caller keeps the message)
                prepared.append(e)
        good = [p for p in prepared if isinstance(p, _Prepared)]
        results = iter(await self._commit(good, source, started))
        return [p if isinstance(p, Exception) else next(results) for p in prepared]

    def _prepare(
        self,
        body: bytes,
        device_id: str,
        bindings: list[Binding],
        source: str,
        topic: str | None,
        received_at: dt.datetime | None,
        quarantine: bool,
    ) -> _Prepared:
        """Parse, check and normalise one message: its rows and quarantine entries."""
        now = dt.datetime.now(dt.UTC)
        received_at = received_at or now
        live = source != "replay"  # a replay says nothing about the device now
        if live:
            self.health.seen(device_id, now)
        try:
            message = parse_message(body)
        except MessageError as e:
            return self._refusal(
                400, str(e), body, device_id, source, topic, received_at, quarantine
            )
        if message.device_id is not None and message.device_id != device_id:
            reason = (
                f"device_id {_short(message.device_id)} is not the authenticated device {device_id}"
            )
            return self._refusal(
                403,
                reason,
                body,
                device_id,
                source,
                topic,
                received_at,
                quarantine,
                message.message_id,
            )
        if live and message.battery is not None:
            self.health.seen(device_id, now, message.battery)
        rows, errors = normalise(message, device_id, bindings, now, source, received_at)
        if errors:
            errors = [(i, safe_reason(reason)) for i, reason in errors]
        entries = (
            [
                QuarantineEntry(
                    received_at,
                    source,
                    reason,
                    orjson.dumps(message.readings[i]),
                    device_id,
                    topic,
                    "reading",
                    message.message_id,
                    i,
                )
                for i, reason in errors
            ]
            if quarantine
            else []
        )
        result = IngestResult(
            status=200 if rows else 422,
            rejected=[{"index": i, "error": reason} for i, reason in errors],
            message_id=message.message_id,
        )
        return _Prepared(result, rows, entries)

    def _refusal(
        self,
        status: int,
        reason: str,
        body: bytes,
        device_id: str,
        source: str,
        topic: str | None,
        received_at: dt.datetime,
        quarantine: bool,
        message_id: str | None = None,
    ) -> _Prepared:
        """The whole body refused: kept in quarantine, whole (up to 1 MiB), with the reason."""
        reason = safe_reason(reason)
        entries = (
            [
                QuarantineEntry(
                    received_at,
                    source,
                    reason,
                    bytes(body[:MAX_BODY]),
                    device_id,
                    topic,
                    message_id=message_id,
                )
            ]
            if quarantine
            else []
        )
        return _Prepared(
            IngestResult(status=status, error=reason, message_id=message_id), [], entries
        )

    async def _commit(
        self, prepared: Sequence[_Prepared], source: str, started: float
    ) -> list[IngestResult]:
        """Write the rows, then keep the rejects; the results once both are committed."""
        written = await self.writer.write_many([p.rows for p in prepared])
        entries = [e for p in prepared for e in p.entries]
        if entries:
            # After the write, not beside it: a failed write is retried by the sender (503,
            # or no MQTT ack), and its rejects must not be quarantined twice. A failed
            # quarantine fails the messages too, so the retry keeps them (the readings
            # written are then duplicates, which dedup absorbs).
            await self.store_quarantine(entries)
        accepted = duplicates = rejected = 0
        for p, w in zip(prepared, written, strict=True):
            p.result.accepted, p.result.duplicates = w.accepted, w.duplicates
            accepted += w.accepted
            duplicates += w.duplicates
            rejected += len(p.result.rejected)
        self._count(source, accepted, duplicates, rejected)
        self._observe(source, started, len(prepared))
        return [p.result for p in prepared]

    async def ingest_translated(
        self,
        items: Sequence[Translated],
        *,
        device_id: str,
        source: str,
        received_at: dt.datetime | None = None,
        quarantine: bool = True,
    ) -> IngestResult:
        """Store the readings a device format was translated into (Open mHealth data
        points, Bluetooth measurements): normalised like any reading, each row with the
        FHIR content its translation kept (`extra`) and MDC code; every refused item is
        kept whole in quarantine with its reason. `rejected` indexes the items."""
        started = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        received_at = received_at or now
        if source != "replay":
            self.health.seen(device_id, now)
        bindings = await self.bindings(device_id)
        readings: list[Any] = []
        owners: list[tuple[int, dict | None, str | None]] = []
        errors: list[tuple[int, str]] = []
        for index, item in enumerate(items):
            errors.extend((index, reason) for reason in item.errors)
            for reading, extra, mdc in zip(item.readings, item.extras, item.mdcs, strict=True):
                readings.append(reading)
                owners.append((index, extra, mdc))
        rows: list[tuple] = []
        if readings:
            message = ReadingMessage.model_construct(
                message_id=None, device_id=None, battery=None, readings=readings
            )
            normalised, refused = normalise(message, device_id, bindings, now, source, received_at)
            refused_at = {i for i, _ in refused}
            for i, reason in refused:
                where = items[owners[i][0]].where
                errors.append((owners[i][0], f"{where}: {reason}" if where else reason))
            kept = (owners[i] for i in range(len(readings)) if i not in refused_at)
            for row, (_index, extra, mdc) in zip(normalised, kept, strict=True):
                # A plain dict for the jsonb column, as FHIR ingest hands it: the store
                # wraps it where it must (a Jsonb made before store.insert_small was
                # stored as NULL there, seen with psycopg 3 on a prepared statement).
                rows.append((*row[:_MDC], mdc or row[_MDC], *row[_MDC + 1 : _EXTRA], extra))
        errors.sort(key=lambda e: e[0])
        errors = [(i, safe_reason(reason)) for i, reason in errors]
        entries = (
            [
                QuarantineEntry(
                    received_at,
                    source,
                    reason,
                    orjson.dumps(items[i].raw, option=orjson.OPT_NON_STR_KEYS),
                    device_id,
                    None,
                    "reading",
                    None,
                    i,
                )
                for i, reason in errors
            ]
            if quarantine
            else []
        )
        result = IngestResult(
            status=200 if rows else 422,
            rejected=[{"index": i, "error": reason} for i, reason in errors],
        )
        try:
            [done] = await self._commit([_Prepared(result, rows, entries)], source, started)
        except WriteError as e:
            if not e.refused:
                raise  # an outage: the sender tries again
            reason = f"refused by the database: {safe_reason(str(e))[:200]}"
            log.warning("the database refused items from %s; they go to quarantine", source)
            if quarantine:
                await self.store_quarantine(
                    [
                        QuarantineEntry(
                            received_at,
                            source,
                            reason,
                            orjson.dumps(item.raw, option=orjson.OPT_NON_STR_KEYS),
                            device_id,
                            None,
                            "reading",
                            None,
                            i,
                        )
                        for i, item in enumerate(items)
                    ]
                )
            return IngestResult(status=422, error=reason)
        return done

    async def ingest_rows(self, rows: Sequence[tuple], *, source: str) -> WriteResult:
        """Store rows normalised elsewhere (FHIR ingest), in writer.COLUMNS order."""
        started = time.perf_counter()
        result = await self.writer.write(rows)
        now = dt.datetime.now(dt.UTC)
        for device_id in {row[_DEVICE] for row in rows}:
            if device_id is not None:  # a reading entered without a device
                self.health.seen(device_id, now)
        self._count(source, result.accepted, result.duplicates, 0)
        self._observe(source, started)
        return result

    async def ingest_entered(
        self,
        readings: Sequence[Any],
        *,
        patient_id: uuid.UUID,
        source: str,
        extra: Sequence[dict[str, Any] | None] | None = None,
    ) -> tuple[IngestResult, list[tuple]]:
        """Store readings entered without a device (patient-entered, staff-entered): the
        same checks, writer, dedup and quarantine as a device's. Returns the result and
        the rows written or found duplicate (in input order of the good readings)."""
        started = time.perf_counter()
        now = dt.datetime.now(dt.UTC)
        message_id = f"{source}:{uuid.uuid4()}"
        rows, errors = normalise_entered(
            readings, patient_id, now, source, now, message_id=message_id, extra=extra
        )
        errors = [(i, safe_reason(reason)) for i, reason in errors]
        entries = [
            QuarantineEntry(
                now, source, reason, orjson.dumps(readings[i]), None, None, "reading", None, i
            )
            for i, reason in errors
        ]
        result = IngestResult(
            status=200 if rows else 422,
            rejected=[{"index": i, "error": reason} for i, reason in errors],
        )
        [result] = await self._commit([_Prepared(result, list(rows), entries)], source, started)
        return result, list(rows)

    async def quarantine(
        self,
        *,
        source: str,
        reason: str,
        raw: bytes,
        device_id: str | None = None,
        topic: str | None = None,
        received_at: dt.datetime | None = None,
    ) -> None:
        """Keep a body the pipeline could not take, whole (up to 1 MiB), with the reason."""
        entry = QuarantineEntry(
            received_at or dt.datetime.now(dt.UTC),
            source,
            reason,
            bytes(raw[:MAX_BODY]),
            device_id,
            topic,
        )
        await self.store_quarantine([entry])

    # -- internals --------------------------------------------------------------------

    async def store_quarantine(self, entries: list[QuarantineEntry]) -> list[int]:
        """Keep entries; raises WriteError in an outage only (the sender tries again).

        The insert cannot fail on content (store.quarantine.insert_quarantine); should the database
        refuse an entry all the same, the entries go in again without anything taken from
        the input but the raw bytes, so that a message is never retried for ever."""
        try:
            ids = await self._insert_quarantine(entries)
        except StoreRefused as e:
            log.error("quarantine refused by the database (%s); kept without its texts", e)
            bare = [
                QuarantineEntry(
                    q.received_at,
                    q.source,
                    f"kept without its reason (the database refused it: {e})",
                    q.raw,
                    kind=q.kind,
                    reading_index=q.reading_index,
                )
                for q in entries
            ]
            ids = await self._insert_quarantine(bare)
        self._quarantined(entries[0].source, len(entries))
        return ids

    async def _insert_quarantine(self, entries: list[QuarantineEntry]) -> list[int]:
        try:
            async with self.pool.connection(timeout=POOL_WAIT_S) as conn:
                return await quarantine_store.insert_quarantine(conn, entries)
        except OUTAGE as e:
            # The caller answers 503 (or does not acknowledge): the sender tries again.
            raise WriteError(f"quarantine not written: {type(e).__name__}") from None
        except psycopg.Error as e:
            raise StoreRefused(f"{type(e).__name__} {e.sqlstate or ''}".strip()) from None

    def _count(self, source: str, accepted: int, duplicates: int, rejected: int) -> None:
        for outcome, n in (
            ("accepted", accepted),
            ("duplicate", duplicates),
            ("rejected", rejected),
        ):
            if n:
                counter = self._counters.get((source, outcome))
                if counter is None:
                    counter = metrics.READINGS.labels(source, outcome)
                    self._counters[(source, outcome)] = counter
                counter.inc(n)  # type: ignore[attr-defined]

    def _quarantined(self, source: str, n: int) -> None:
        metrics.QUARANTINED.labels(source).inc(n)

    def _observe(self, source: str, started: float, messages: int = 1) -> None:
        hist = self._latency.get(source)
        if hist is None:
            hist = self._latency[source] = metrics.INGEST_LATENCY.labels(source)
        took = time.perf_counter() - started
        for _ in range(messages):
            hist.observe(took)  # type: ignore[attr-defined]


_gc_tuned = False


def _tune_gc() -> None:
    """Keep the cyclic garbage collector from costing the ingest path a sixth of its time.

    Ingest allocates a few containers per reading (parsed JSON, rows) and frees them by
    reference counting; none form cycles. With the default threshold of 700 allocations
    the collector ran every few readings and took about 16 % of the serving thread under
    the batch benchmark. Objects alive after start-up are moved out of its sight
    (gc.freeze) and the young generation is collected every 50,000 allocations instead.
    """
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, 50_000), max(gen1, 20), max(gen2, 20))


def _short(text: str) -> str:
    text = repr(text)
    return text if len(text) <= 60 else text[:57] + "..."
