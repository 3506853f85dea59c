"""The batch writer: readings from concurrent requests and messages, one COPY per batch.

Callers hand over rows and await the result; each connection takes what is queued (up to
a row limit, and under load what arrives within a few milliseconds more), writes it,
commits, and only then answers every caller of the batch. The unique index decides
duplicates, whatever the races:

- most batches hold no row stored already, so a batch is first copied straight into the
  hypertable (one COPY statement on an autocommit connection); a duplicate fails that
  COPY with a unique violation and the batch goes the staging way. Copying through the
  staging table cost the database about 1.6 times the work of a straight COPY here; after
  a failure the writer goes the staging way for a second, so a stream of re-sent
  messages (MQTT redelivery) does not pay twice;
- the staging way: COPY into a temporary table, then INSERT ... SELECT ... ON CONFLICT DO
  NOTHING into the hypertable, in one transaction;
- a small batch (single readings at a steady pace) is one INSERT ... ON CONFLICT DO
  NOTHING statement: one round trip with its commit.

A database error fails the callers of that batch (they answer 503 or do not acknowledge);
nothing a caller was told is stored can be lost, because the answer follows the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import psycopg

from egenmon import metrics
from egenmon.domain.readings import COLUMNS
from egenmon.store import readings

log = logging.getLogger("egenmon.writer")

_DEDUP = COLUMNS.index("dedup_key")
_TIME = COLUMNS.index("time")

# After a straight COPY met a duplicate, go the staging way for this long.
_DIRECT_BACKOFF_S = 1.0
# A batch this small goes in one INSERT statement: one round trip with its commit. Larger
# ones go by COPY, which costs less per row: MQTT messages of one reading come in batches
# of tens of rows, and through INSERT (seventeen array parameters) those took about a
# fifth of the consumer's time and half again the database's.
SMALL_BATCH = 8
# Linger for more rows after a batch this big: there is a steady stream to wait for.
LINGER_FROM = 32


class WriteError(Exception):
    """The batch could not be committed; nothing of it is stored. `refused`: the database
    refused its content (a DataError), so sending the same again cannot help."""

    refused = False


@dataclass(frozen=True)
class WriteResult:
    accepted: int
    duplicates: int


@dataclass
class _Pending:
    """One caller's rows in one or more groups, a result for each, answered together."""

    groups: Sequence[Sequence[tuple]]
    future: asyncio.Future
    rows: int


class BatchWriter:
    """Groups rows from many callers into COPY batches on a few dedicated connections."""

    name = "writer"

    def __init__(
        self,
        database_url: str,
        *,
        max_rows: int = 5000,
        max_delay_ms: float = 10.0,
        connections: int = 2,
    ) -> None:
        self.url = database_url
        self.max_rows = max_rows
        self.max_delay = max_delay_ms / 1000.0
        self.connections = connections
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        self._direct_after = 0.0  # time.monotonic() from which a straight COPY is tried
        # Called with the rows a batch stored, after its commit (FHIR Subscriptions' events).
        self.on_commit: Callable[[psycopg.AsyncConnection, list[tuple]], Awaitable[None]] | None = (
            None
        )
        # Called with the rows each batch stored, right after its commit (the instant
        # rules, egenmon.alerts.instant.RuleFeed); each must be quick and must not raise.
        self.committed: list[Callable[[Sequence[tuple]], None]] = []

    async def start(self) -> None:
        self._stopping = False
        self._tasks = [
            asyncio.create_task(self._run(i), name=f"writer-{i}") for i in range(self.connections)
        ]

    async def stop(self) -> None:
        """Write what is queued, then close."""
        self._stopping = True
        for _ in self._tasks:
            self._queue.put_nowait(_Pending((), asyncio.get_running_loop().create_future(), 0))
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def write(self, rows: Sequence[tuple]) -> WriteResult:
        """Store rows (in COLUMNS order); returns once they are committed."""
        [result] = await self.write_many([rows])
        return result

    async def write_many(self, groups: Sequence[Sequence[tuple]]) -> list[WriteResult]:
        """Store the rows of several groups at once (the messages MQTT took in together);
        a result for each group, in order, once all of them are committed."""
        live = [rows for rows in groups if rows]
        if not live:
            return [WriteResult(0, 0) for _ in groups]
        if self._stopping or not self._tasks:
            raise WriteError("the writer is not running")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(live, fut, sum(len(rows) for rows in live)))
        done = iter(await fut)
        return [next(done) if rows else WriteResult(0, 0) for rows in groups]

    async def _collect(self, linger: bool) -> list[_Pending]:
        first = await self._queue.get()
        batch = [first]
        count = first.rows
        deadline = time.monotonic() + (self.max_delay if linger else 0.0)
        while count < self.max_rows and batch[-1].groups:
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
            count += item.rows
        return batch

    async def _connect(self) -> psycopg.AsyncConnection:
        return await readings.connect_writer(self.url)

    async def _run(self, index: int) -> None:
        conn: psycopg.AsyncConnection | None = None
        backoff = 0.1
        last = 0
        while True:
            # Lingering for more rows pays only under load, when the last batch was big
            # (fewer, larger batches: less work per row here and in the database); a
            # trickle of single readings is written at once (batches still form from
            # whatever arrived while the connections were busy).
            batch = await self._collect(linger=last >= LINGER_FROM)
            live = [p for p in batch if p.groups]
            last = sum(p.rows for p in live)
            if live:
                try:
                    if conn is None or conn.closed:
                        conn = await self._connect()
                    results = await self._flush(conn, [g for p in live for g in p.groups])
                    backoff = 0.1
                except (psycopg.Error, OSError) as e:
                    log.warning(
                        "batch of %d rows failed: %s",
                        sum(p.rows for p in live),
                        type(e).__name__,
                    )
                    for p in live:
                        if not p.future.done():
                            err = WriteError(str(e).splitlines()[0] if str(e) else repr(e))
                            err.refused = isinstance(e, psycopg.DataError)
                            p.future.set_exception(err)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            await conn.close()
                    conn = None
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                else:
                    answers = iter(results)
                    for p in live:
                        mine = [next(answers) for _ in p.groups]
                        if not p.future.done():
                            p.future.set_result(mine)
            if self._stopping and any(not p.groups for p in batch):
                break
        if conn is not None:
            await conn.close()

    async def _flush(
        self, conn: psycopg.AsyncConnection, groups: list[Sequence[tuple]]
    ) -> list[WriteResult]:
        # Duplicates inside the batch are settled here (first one wins), so each caller's
        # count is exact; duplicates of stored rows are settled by the unique index.
        # A repeated dedup key is the only sign of a possible duplicate, and str hashes are
        # cached: (key, time) pairs are only built when a key repeats.
        seen_keys: set[str] = set()
        seen_pairs: set[tuple] | None = None
        owners: list[Sequence[tuple]] = []
        rows_out: list[tuple] = []
        dup_in_batch = []
        for group in groups:
            keys = [row[_DEDUP] for row in group]
            distinct = set(keys)
            if len(distinct) == len(keys) and seen_keys.isdisjoint(distinct):
                seen_keys |= distinct  # the usual case, settled for the whole request
                owners.append(group)
                dup_in_batch.append(0)
                rows_out.extend(group)
                continue
            if seen_pairs is None:
                seen_pairs = {(row[_DEDUP], row[_TIME]) for row in rows_out}
            mine: list[tuple] = []
            dups = 0
            for row in group:
                pair = (row[_DEDUP], row[_TIME])
                if pair in seen_pairs:
                    dups += 1
                    continue
                seen_pairs.add(pair)
                seen_keys.add(row[_DEDUP])
                mine.append(row)
                rows_out.append(row)
            owners.append(mine)
            dup_in_batch.append(dups)
        metrics.BATCH_ROWS.observe(len(rows_out))
        if len(rows_out) > SMALL_BATCH and time.monotonic() >= self._direct_after:
            if await self._copy_direct(conn, rows_out):
                self._tell(rows_out)
                if self.on_commit is not None:
                    await self.on_commit(conn, rows_out)
                return [
                    WriteResult(len(mine), dups)
                    for mine, dups in zip(owners, dup_in_batch, strict=True)
                ]
            self._direct_after = time.monotonic() + _DIRECT_BACKOFF_S
        for attempt in range(3):
            try:
                inserted = await self._insert_new(conn, rows_out)
                break
            except psycopg.errors.DeadlockDetected:
                # Only against a straight COPY of another connection (everything else
                # takes rows in index order); the next try wins.
                if attempt == 2:
                    raise
        results = []
        all_inserted = len(inserted) == len(rows_out)
        if inserted:
            stored = (
                rows_out
                if all_inserted
                else [r for r in rows_out if (r[_DEDUP], r[_TIME]) in inserted]
            )
            self._tell(stored)
            if self.on_commit is not None:
                await self.on_commit(conn, stored)
        for owned, dups in zip(owners, dup_in_batch, strict=True):
            ok = (
                len(owned)
                if all_inserted
                else sum(1 for row in owned if (row[_DEDUP], row[_TIME]) in inserted)
            )
            results.append(WriteResult(ok, dups + len(owned) - ok))
        return results

    def _tell(self, rows: Sequence[tuple]) -> None:
        for listener in self.committed:
            try:
                listener(rows)
            except Exception:  # the rows are stored; the scan judges what this missed
                log.exception("a commit listener failed")

    async def _copy_direct(self, conn: psycopg.AsyncConnection, rows: list[tuple]) -> bool:
        """COPY straight into the hypertable; False if a row was there already."""
        return await readings.copy_direct(conn, rows)

    async def _insert_new(self, conn: psycopg.AsyncConnection, rows: list[tuple]) -> set[tuple]:
        """Insert the rows not stored yet; returns the (dedup key, time) of those."""
        if len(rows) == 1:
            return await readings.insert_one(conn, rows[0])
        if len(rows) <= SMALL_BATCH:
            return await readings.insert_small(conn, rows)
        return await readings.insert_staged(conn, rows)
