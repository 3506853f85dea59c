"""The instant rules (threshold, NEWS2; later `answer_*`), evaluated as readings commit.

After the batch writer commits, the patients it touched (with the earliest and latest
measurement time of what was stored) go to the rule worker owning their shard: straight
into its queue when it runs in this process, otherwise by NOTIFY on `egenmon_rules`
(coalesced, each payload within NOTIFY's limit). The worker evaluates the instant rules
at each new reading's measurement time (the windows ending there, as the scan does for
its anchors) and reconciles the findings as the scan does, but partially: they open,
update and escalate alerts; clearing stays the scan's word. Windowed and missing-data
rules stay with the scan, which also catches anything this path missed.

Shards: patients hash into `store.shards.SHARDS` shards, each leased to one worker (see
`RuleWorker`). A worker that takes shards over (at start, or from a dead worker once its
lease ran out) first evaluates the patients of those shards with readings received in the
last CATCH_UP, so nothing the dead worker had queued is left to the next scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg_pool import PoolTimeout

from egenmon import metrics
from egenmon.alerts import engine, lifecycle, notify
from egenmon.alerts.plans import QUANTITIES, Plan
from egenmon.alerts.rules import Finding, Reading, check_news2, check_threshold, merge_findings
from egenmon.alerts.rules.findings import CLOCK_SKEW
from egenmon.alerts.rules.news2 import FRESHNESS
from egenmon.alerts.rules.threshold import THRESHOLD_WINDOW
from egenmon.domain.measurements import TYPES
from egenmon.domain.readings import COLUMNS
from egenmon.runtime import Runtime
from egenmon.settings import Settings
from egenmon.store import alerts as alerts_store
from egenmon.store import plans as plans_store
from egenmon.store import readings as readings_store
from egenmon.store import shards as shards_store
from egenmon.store.db import make_pool

log = logging.getLogger("egenmon.alerts.instant")

# The rules judged as readings commit; the scan judges the rest (answer_* rules join here).
INSTANT_RULES = frozenset({"threshold", "news2"})
INSTANT_TYPES = frozenset(t for t, _ in QUANTITIES.values()) | engine.NEWS2_TYPES
INSTANT_CODES = sorted({TYPES[t].loinc for t in INSTANT_TYPES})
# Before a round's window only NEWS2 reads other readings: threshold judges the newest
# reading of a new reading's type, which is in the window.
CONTEXT_CODES = sorted({TYPES[t].loinc for t in engine.NEWS2_TYPES})
LOOKBACK = max(THRESHOLD_WINDOW, FRESHNESS)
ACTOR = "rules"  # alert events of this path name it (the scan's name "scheduler")
# A patient with more new measurement times than this in one round (a week's upload) is
# judged at the newest ones here; the scan judges every one of them as its anchors.
MAX_ANCHORS = 200
# Patients evaluated per database round trip.
CHUNK = 2000

LEASE_TTL = dt.timedelta(seconds=10)
RENEW_EVERY_S = 1.0
# Readings received this long before a takeover are evaluated by the new owner: a lease
# runs out LEASE_TTL after its last renewal, is claimed within RENEW_EVERY_S, and the dead
# owner may have been behind by a few seconds.
CATCH_UP = LEASE_TTL + dt.timedelta(seconds=3 * RENEW_EVERY_S + 10)

_PATIENT = COLUMNS.index("patient_id")
_TIME = COLUMNS.index("time")
_TYPE = COLUMNS.index("type")

Window = tuple[dt.datetime, dt.datetime]  # earliest, latest measurement time (UTC)


def add_window(into: dict[uuid.UUID, list[dt.datetime]], pid: uuid.UUID, lo: Any, hi: Any) -> None:
    w = into.get(pid)
    if w is None:
        into[pid] = [lo, hi]
    else:
        if lo < w[0]:
            w[0] = lo
        if hi > w[1]:
            w[1] = hi


# --- the NOTIFY payload: "r1" then ";<patient hex>:<lo ms>:<hi ms>" per patient ------------

PAYLOAD_LIMIT = 7900  # NOTIFY takes at most 8000 bytes
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
# times go as whole milliseconds since _EPOCH (integers: exact)


def encode(windows: dict[uuid.UUID, list[dt.datetime]]) -> list[str]:
    """Payloads naming every patient and window, each within PAYLOAD_LIMIT."""
    out: list[str] = []
    parts = ["r1"]
    size = 2
    for pid, (lo, hi) in windows.items():
        part = f"{pid.hex}:{(lo - _EPOCH) // _MS}:{-((_EPOCH - hi) // _MS)}"
        if size + 1 + len(part) > PAYLOAD_LIMIT:
            out.append(";".join(parts))
            parts, size = ["r1"], 2
        parts.append(part)
        size += 1 + len(part)
    if len(parts) > 1:
        out.append(";".join(parts))
    return out


_EPOCH_MS_MAX = 253402300799999  # 9999-12-31T23:59:59.999Z


def decode(payload: str) -> dict[uuid.UUID, Window]:
    """The patients and windows of a payload; what does not parse is skipped."""
    out: dict[uuid.UUID, Window] = {}
    parts = payload.split(";")
    if not parts or parts[0] != "r1":
        return out
    for part in parts[1:]:
        fields = part.split(":")
        if len(fields) != 3 or len(fields[0]) != 32:
            continue
        try:
            pid = uuid.UUID(hex=fields[0])
            lo_ms, hi_ms = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if not (0 <= lo_ms <= hi_ms <= _EPOCH_MS_MAX):
            continue
        lo = _EPOCH + lo_ms * _MS
        hi = _EPOCH + hi_ms * _MS
        old = out.get(pid)
        out[pid] = (min(lo, old[0]), max(hi, old[1])) if old else (lo, hi)
    return out


# --- evaluation -------------------------------------------------------------------------------


@dataclass
class Round:
    """What one evaluation round did."""

    patients: int = 0
    anchors: int = 0
    findings: int = 0
    errors: int = 0
    opened: list[dict[str, Any]] = field(default_factory=list)
    escalated: list[dict[str, Any]] = field(default_factory=list)
    updated: int = 0


def findings_for(
    stored: list[tuple],
    plan: Plan,
    lo: dt.datetime,
    hi: dt.datetime,
) -> tuple[list[Finding], int]:
    """The instant findings of one patient at each measurement time in [lo, hi] (pure):
    (findings with observation ids, how many times were evaluated).

    `stored`: rows as `readings.instant_rows` gives them, oldest first. Threshold and
    NEWS2 at a time `at` read only the newest reading of each type measured up to
    `at` + CLOCK_SKEW (within their windows), exactly as `evaluate_at` does in the scan;
    so one sweep keeps those newest readings, and of consecutive times that see the same
    ones only the first (the widest windows: the worst finding) and the last (the
    freshest ages) are evaluated. A live stream's round is one or two evaluations however
    many readings it brought.
    """
    anchors: dict[dt.datetime, set[str]] = defaultdict(set)
    for r in stored:
        if r[7] and lo <= r[1] <= hi:
            anchors[r[1]].add(r[2])
    times = sorted(anchors)[-MAX_ANCHORS:]
    newest: dict[str, list[int]] = {}  # type → indexes of its newest rows (ties kept)
    i = 0
    groups: list[tuple[tuple[int, ...], list[dt.datetime], set[str]]] = []
    for at in times:
        until = at + CLOCK_SKEW
        moved = False
        while i < len(stored) and stored[i][1] <= until:
            kept = newest.get(stored[i][2])
            if kept is None or stored[kept[0]][1] < stored[i][1]:
                newest[stored[i][2]] = [i]
            else:
                kept.append(i)
            i += 1
            moved = True
        if groups and not moved:  # the same newest readings as the time before
            groups[-1][1].append(at)
            groups[-1][2].update(anchors[at])
        else:
            seen = tuple(ix for indexes in newest.values() for ix in indexes)
            groups.append((seen, [at], set(anchors[at])))
    pairs: list[tuple[Finding, dt.datetime]] = []
    evaluated = 0
    for seen, ats, kinds in groups:
        readings = [Reading(engine._stand_in(ix), stored[ix][1], *stored[ix][2:6]) for ix in seen]
        for at in {ats[0], ats[-1]}:
            evaluated += 1
            found = [
                f for f in check_threshold(readings, plan, at) if f.details.get("type") in kinds
            ]
            if kinds & engine.NEWS2_TYPES:
                found += check_news2(readings, plan, at)
            pairs += [(f, at) for f in found]
    return [engine._with_ids(f, stored) for f in merge_findings(pairs)], evaluated


def evaluate(
    conn: psycopg.Connection,
    windows: dict[uuid.UUID, Window] | dict[uuid.UUID, list[dt.datetime]],
    tz: dt.tzinfo,
    now: dt.datetime | None = None,
) -> Round:
    """Evaluate the instant rules for these patients at their new readings' times and
    reconcile the findings (partially: nothing is cleared). Idempotent."""
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    result = Round()
    items = list(windows.items())
    for start in range(0, len(items), CHUNK):
        _evaluate_chunk(conn, items[start : start + CHUNK], tz, now, result)
    return result


def _evaluate_chunk(
    conn: psycopg.Connection,
    items: Sequence[tuple[uuid.UUID, Any]],
    tz: dt.tzinfo,
    now: dt.datetime,
    result: Round,
) -> None:
    ids = [pid for pid, _ in items]
    cache = engine.PlanCache()
    plans = {pid: doc for pid, doc, _, _ in plans_store.plans_for(conn, ids)}
    spans = {str(pid): (w[0], w[1]) for pid, w in items}
    rows = readings_store.instant_rows(
        conn,
        [(pid, w[0], w[1] + CLOCK_SKEW) for pid, w in items],
        INSTANT_CODES,
        LOOKBACK,
        CONTEXT_CODES,
    )
    grouped: dict[str, list[tuple]] = defaultdict(list)
    for row in rows:
        grouped[row[0]].append(row)
    found: list[tuple[uuid.UUID, Finding]] = []
    for pid, stored in grouped.items():
        result.patients += 1
        doc = plans.get(pid)
        plan = cache.plan(doc) if doc is not None else cache.general
        lo, hi = spans[pid]
        try:
            fs, n = findings_for(stored, plan, lo, hi)
        except Exception as e:  # noqa: BLE001  one patient's bad data must not hide the rest
            result.errors += 1
            log.error("instant rules failed for patient %s: %s", pid, type(e).__name__)
            continue
        result.anchors += n
        patient = uuid.UUID(pid)
        found += [(patient, f) for f in fs]
    if not found:
        return
    result.findings += len(found)
    # Findings at a reading's time are not the scan's word on the present: never `current`.
    past = {(pid, f.key) for pid, f in found}
    rows_ = engine.finding_rows(found, now, tz, past)
    changes = alerts_store.reconcile(
        conn, rows_, now, notify.payload, lifecycle.EPISODE_GAPS, partial=True, actor=ACTOR
    )
    result.opened += changes["opened"]
    result.escalated += changes["escalated"]
    result.updated += len(changes["updated"])
    for r in changes["opened"]:
        metrics.ALERTS_OPENED.labels(rule=r["rule"]).inc()
        event = "reopened" if r.get("previous_id") else "opened"
        metrics.ALERT_CHANGES.labels(rule=r["rule"], event=event).inc()
        log.info(
            "alert %s on commit rule=%s severity=%s alert=%s patient=%s",
            event,
            r["rule"],
            r["severity"],
            r["id"],
            r["patient_id"],
        )
    for r in changes["escalated"]:
        metrics.ALERT_CHANGES.labels(rule=r["rule"], event="escalated").inc()


# --- the feed: from the writer's commit to the worker that owns the patient -----------------


class RuleFeed:
    """Listens to the batch writer's commits; hands each touched patient to the local
    worker when it owns the patient's shard, else to the others by NOTIFY."""

    name = "rule-feed"

    def __init__(self, url: str) -> None:
        self.url = url
        self.worker: RuleWorker | None = None
        self._out: dict[uuid.UUID, list[dt.datetime]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._conn: psycopg.AsyncConnection | None = None

    def committed(self, rows: Sequence[tuple]) -> None:
        """The writer committed these rows (called in the event loop, cheap)."""
        worker = self.worker
        local = worker.owned if worker is not None else frozenset()
        mine: dict[uuid.UUID, list[dt.datetime]] = {}
        for row in rows:
            if row[_TYPE] not in INSTANT_TYPES:
                continue
            pid = row[_PATIENT]
            t = row[_TIME]
            target = mine if shards_store.shard_of(pid) in local else self._out
            add_window(target, pid, t, t)
        if mine and worker is not None:
            worker.take(mine.items())
        if self._out:
            self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._send(), name="rule-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()

    async def _send(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            out, self._out = self._out, {}
            if not out:
                continue
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True, application_name="egenmon-rule-feed"
                    )
                await shards_store.notify(self._conn, encode(out))
            except (psycopg.Error, OSError) as e:
                # The scan (and a takeover's catch-up) judges these patients instead.
                log.warning("rule notification failed: %s", type(e).__name__)
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        await self._conn.close()
                self._conn = None
                await asyncio.sleep(0.5)


# --- webhooks of what the rounds opened ---------------------------------------------------


class Courier:
    """Sends the webhooks of alerts the rounds opened, at once, in a thread of its own with
    its own event loop, pool and HTTP client: on the serve loop, behind the ingest it
    serves, each round of deliveries took seconds under load (bench alert-latency)."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="rule-courier", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def wake(self) -> None:
        if self._loop is not None and self._wake is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(15)

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        self._ready.set()
        pool = make_pool(self.url, 1, 2)
        # One client for the thread's life: a new one per round costs a TLS context.
        http = httpx.AsyncClient(timeout=notify.TIMEOUT_S, follow_redirects=False)
        try:
            await pool.open(wait=False)
            while not self._stop.is_set():
                waiters = {asyncio.ensure_future(e.wait()) for e in (self._wake, self._stop)}
                _, left = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                for w in left:
                    w.cancel()
                if self._stop.is_set():
                    break
                self._wake.clear()
                try:
                    await notify.deliver_due(
                        pool,
                        default_secret=self.settings.webhook_secret,
                        base_backoff_s=self.settings.scheduler_interval_s,
                        client=http,
                    )
                except (psycopg.Error, OSError, PoolTimeout) as e:  # the scheduler sends them
                    log.warning("webhook delivery after instant rules failed: %s", type(e).__name__)
        finally:
            await http.aclose()
            await pool.close()


# --- the worker: shard leases, the queue, evaluation -------------------------------------------


class RuleWorker:
    """Owns a share of the shards through leases and evaluates their patients' new
    readings. Every live worker takes an equal share (by its place among the live ones);
    one with too many gives the excess up, one with too few claims free or expired ones."""

    name = "rules"

    def __init__(
        self,
        runtime: Runtime,
        feed: RuleFeed | None = None,
        *,
        ttl: dt.timedelta = LEASE_TTL,
        renew_every_s: float = RENEW_EVERY_S,
    ) -> None:
        self.runtime = runtime
        self.url = runtime.settings.require_database()
        self.tz = runtime.settings.tz
        self.ttl = ttl
        self.renew_every = renew_every_s
        self.node = f"{socket.gethostname()}:{os.getpid()}"
        self.owned: frozenset[int] = frozenset()
        self.feed = feed
        self._pending: dict[uuid.UUID, list[dt.datetime]] = {}
        self._wake = asyncio.Event()
        self._courier = Courier(self.url, runtime.settings)
        self._tasks: list[asyncio.Task] = []
        self._lease_conn: psycopg.AsyncConnection | None = None
        self._listen_conn: psycopg.AsyncConnection | None = None
        self._eval_conn: psycopg.Connection | None = None
        self._leased = asyncio.Event()

    def send_webhooks(self) -> None:
        """Have the courier send the due webhook deliveries now."""
        self._courier.wake()

    def take(self, windows: Iterable[tuple[uuid.UUID, Any]]) -> None:
        for pid, (lo, hi) in windows:
            add_window(self._pending, pid, lo, hi)
        self._wake.set()

    async def start(self) -> None:
        if self.feed is not None:
            self.feed.worker = self
        self._courier.start()
        self._tasks = [
            asyncio.create_task(self._leases(), name="rule-leases"),
            asyncio.create_task(self._listen(), name="rule-listen"),
            asyncio.create_task(self._evaluate(), name="rule-evaluate"),
        ]
        # The first leases before serving, so a single process owns every shard at once.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._leased.wait(), 10)

    async def stop(self) -> None:
        if self.feed is not None:
            self.feed.worker = None
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks = []
        if self._lease_conn is not None and not self._lease_conn.closed:
            with contextlib.suppress(Exception):
                await shards_store.leave(self._lease_conn, self.node)
        await asyncio.to_thread(self._courier.stop)
        for c in (self._lease_conn, self._listen_conn):
            if c is not None:
                with contextlib.suppress(Exception):
                    await c.close()
        if self._eval_conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._eval_conn.close)
        self.owned = frozenset()

    # --- leases -------------------------------------------------------------------------

    async def _leases(self) -> None:
        while True:
            try:
                await self.lease_once()
            except (psycopg.Error, OSError, TimeoutError) as e:
                log.warning("rule shard leases failed: %s", type(e).__name__)
                self.owned = frozenset()  # not sure of any lease any more
                if self._lease_conn is not None:
                    with contextlib.suppress(Exception):
                        await self._lease_conn.close()
                self._lease_conn = None
            self._leased.set()
            await asyncio.sleep(self.renew_every)

    async def lease_once(self) -> None:
        """Heartbeat, renew, give up or claim to reach this worker's share."""
        if self._lease_conn is None or self._lease_conn.closed:
            self._lease_conn = await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, application_name="egenmon-rule-leases"
            )
        conn = self._lease_conn
        async with asyncio.timeout(self.ttl.total_seconds() / 2):
            live = await shards_store.heartbeat(conn, self.node, self.ttl)
            owned = await shards_store.renew(conn, self.node, self.ttl)
            n = max(1, len(live))
            i = live.index(self.node) if self.node in live else 0
            share = shards_store.SHARDS // n + (1 if i < shards_store.SHARDS % n else 0)
            if len(owned) > share:
                extra = owned[share:]
                await shards_store.release(conn, self.node, extra)
                owned = owned[:share]
            claimed: list[int] = []
            if len(owned) < share:
                claimed = await shards_store.claim(conn, self.node, self.ttl, share - len(owned))
        if set(owned) != set(self.owned) - set(claimed) or claimed:
            log.info("rule worker %s owns %d shards", self.node, len(owned) + len(claimed))
        self.owned = frozenset(owned) | frozenset(claimed)
        if claimed:
            await self._catch_up(claimed)

    async def _catch_up(self, shards: list[int]) -> None:
        since = dt.datetime.now(dt.UTC) - CATCH_UP

        def find() -> list[tuple[uuid.UUID, dt.datetime, dt.datetime]]:
            with engine._connect(self.url) as conn:
                return readings_store.received_in_shards(conn, since, shards)

        found = await asyncio.to_thread(find)
        if found:
            self.take((pid, (lo, hi)) for pid, lo, hi in found)

    # --- notifications from other processes ------------------------------------------------

    async def _listen(self) -> None:
        while True:
            try:
                self._listen_conn = await psycopg.AsyncConnection.connect(
                    self.url, autocommit=True, application_name="egenmon-rule-listen"
                )
                await shards_store.listen(self._listen_conn, shards_store.CHANNEL)
                async for n in self._listen_conn.notifies():
                    owned = self.owned
                    windows = decode(n.payload)
                    mine = [
                        (pid, w)
                        for pid, w in windows.items()
                        if shards_store.shard_of(pid) in owned
                    ]
                    if mine:
                        self.take(mine)
            except (psycopg.Error, OSError) as e:
                log.warning("rule notifications lost their connection: %s", type(e).__name__)
            finally:
                if self._listen_conn is not None:
                    with contextlib.suppress(Exception):
                        await self._listen_conn.close()
            # What was notified meanwhile is lost here; the scan (and a takeover's catch-up)
            # judges it.
            await asyncio.sleep(1.0)

    # --- evaluation -----------------------------------------------------------------------

    async def _evaluate(self) -> None:
        backoff = 0.2
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, {}
            owned = self.owned
            batch = {p: w for p, w in batch.items() if shards_store.shard_of(p) in owned}
            if not batch:
                continue
            try:
                started = time.perf_counter()
                result = await asyncio.to_thread(self._run, batch)
                backoff = 0.2
            except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as e:
                log.warning(
                    "instant rules for %d patients failed: %s", len(batch), type(e).__name__
                )
                self.take(batch.items())  # tried again (the scan is the last resort)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            except psycopg.Error as e:  # refused, not away: trying again cannot help
                log.error("instant rules for %d patients refused: %s", len(batch), type(e).__name__)
                continue
            log.debug(
                "instant rules: %d patients, %d opened in %.3f s",
                result.patients,
                len(result.opened),
                time.perf_counter() - started,
            )
            if result.opened or result.escalated:
                self._courier.wake()

    def _run(self, batch: dict[uuid.UUID, list[dt.datetime]]) -> Round:
        if self._eval_conn is None or self._eval_conn.closed:
            self._eval_conn = engine._connect(self.url)
        try:
            return evaluate(self._eval_conn, batch, self.tz)
        except (psycopg.OperationalError, psycopg.InterfaceError):
            with contextlib.suppress(Exception):
                self._eval_conn.close()
            self._eval_conn = None
            raise
