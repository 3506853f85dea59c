"""The batch writer: readings from concurrent requests and messages, one COPY per batch.

Callers hand over rows and await the result; the writer groups what arrives within a few
milliseconds (or up to a row limit), copies it into a temporary staging table, moves it
into the hypertable with ON CONFLICT DO NOTHING (so the unique index decides duplicates,
whatever the races), commits, and only then answers every caller of the batch. A database
error fails the callers of that batch (they answer 503 or do not acknowledge); nothing a
caller was told is stored can be lost, because the answer follows the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
from psycopg.types.json import Jsonb

from egenmon import metrics

log = logging.getLogger("egenmon.writer")

COLUMNS = (
    "time", "patient_id", "device_id", "type", "code", "mdc", "value", "value2", "value3",
    "unit", "on_oxygen", "note", "source", "dedup_key", "received_at", "message_id", "extra",
)
_TYPES = (
    "timestamptz", "uuid", "text", "text", "text", "text", "float8", "float8", "float8",
    "text", "bool", "text", "text", "text", "timestamptz", "text", "jsonb",
)
_DEDUP = COLUMNS.index("dedup_key")
_TIME = COLUMNS.index("time")
_EXTRA = COLUMNS.index("extra")
_COLS = ", ".join(COLUMNS)

_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS readings_staging "
    "(LIKE readings INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_MOVE = (
    f"INSERT INTO readings ({_COLS}) SELECT {_COLS} FROM readings_staging "
    "ON CONFLICT DO NOTHING RETURNING dedup_key, time"
)


class WriteError(Exception):
    """The batch could not be committed; nothing of it is stored."""


@dataclass(frozen=True)
class WriteResult:
    accepted: int
    duplicates: int


@dataclass
class _Pending:
    rows: Sequence[tuple]
    future: asyncio.Future


class BatchWriter:
    """Groups rows from many callers into COPY batches on a few dedicated connections."""

    name = "writer"

    def __init__(self, database_url: str, *, max_rows: int = 5000, max_delay_ms: float = 5.0,
                 connections: int = 2) -> None:
        self.url = database_url
        self.max_rows = max_rows
        self.max_delay = max_delay_ms / 1000.0
        self.connections = connections
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._stopping = False

    async def start(self) -> None:
        self._stopping = False
        self._tasks = [asyncio.create_task(self._run(i), name=f"writer-{i}")
                       for i in range(self.connections)]

    async def stop(self) -> None:
        """Write what is queued, then close."""
        self._stopping = True
        for _ in self._tasks:
            self._queue.put_nowait(_Pending((), asyncio.get_running_loop().create_future()))
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def write(self, rows: Sequence[tuple]) -> WriteResult:
        """Store rows (in COLUMNS order); returns once they are committed."""
        if not rows:
            return WriteResult(0, 0)
        if self._stopping or not self._tasks:
            raise WriteError("the writer is not running")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(rows, fut))
        return await fut

    async def _collect(self) -> list[_Pending]:
        first = await self._queue.get()
        batch = [first]
        count = len(first.rows)
        deadline = time.monotonic() + self.max_delay
        while count < self.max_rows and batch[-1].rows:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            batch.append(item)
            count += len(item.rows)
        return batch

    async def _connect(self) -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(self.url)
        await conn.execute(_STAGING)
        await conn.commit()
        return conn

    async def _run(self, index: int) -> None:
        conn: psycopg.AsyncConnection | None = None
        backoff = 0.1
        while True:
            batch = await self._collect()
            live = [p for p in batch if p.rows]
            if live:
                try:
                    if conn is None or conn.closed:
                        conn = await self._connect()
                    results = await self._flush(conn, live)
                    backoff = 0.1
                except (psycopg.Error, OSError) as e:
                    log.warning("batch of %d rows failed: %s", sum(len(p.rows) for p in live),
                                type(e).__name__)
                    for p in live:
                        if not p.future.done():
                            p.future.set_exception(WriteError(str(e).splitlines()[0]
                                                              if str(e) else repr(e)))
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                    conn = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                else:
                    for p, r in zip(live, results, strict=True):
                        if not p.future.done():
                            p.future.set_result(r)
            if self._stopping and any(not p.rows for p in batch):
                break
        if conn is not None:
            await conn.close()

    async def _flush(self, conn: psycopg.AsyncConnection,
                     batch: list[_Pending]) -> list[WriteResult]:
        # Duplicates inside the batch are settled here (first one wins), so each caller's
        # count is exact; duplicates of stored rows are settled by the unique index.
        seen: set[tuple] = set()
        owners: list[list[tuple]] = []
        rows_out: list[tuple] = []
        dup_in_batch = []
        for p in batch:
            mine = []
            dups = 0
            for row in p.rows:
                key = (row[_DEDUP], row[_TIME])
                if key in seen:
                    dups += 1
                    continue
                seen.add(key)
                mine.append(key)
                if row[_EXTRA] is not None and not isinstance(row[_EXTRA], Jsonb):
                    row = (*row[:_EXTRA], Jsonb(row[_EXTRA]), *row[_EXTRA + 1:])
                rows_out.append(row)
            owners.append(mine)
            dup_in_batch.append(dups)
        async with conn.transaction():
            async with conn.cursor() as cur:
                async with cur.copy(
                    f"COPY readings_staging ({_COLS}) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(_TYPES)
                    for row in rows_out:
                        await copy.write_row(row)
                await cur.execute(_MOVE)
                inserted = {(k, t) for k, t in await cur.fetchall()}
        metrics.BATCH_ROWS.observe(len(rows_out))
        results = []
        all_inserted = len(inserted) == len(rows_out)
        for mine, dups in zip(owners, dup_in_batch, strict=True):
            ok = len(mine) if all_inserted else sum(1 for key in mine if key in inserted)
            results.append(WriteResult(ok, dups + len(mine) - ok))
        return results
