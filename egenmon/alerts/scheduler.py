"""The rule scheduler: APScheduler inside `egenmon serve`, one leader among all processes.

Leadership is a PostgreSQL session-level advisory lock (`pg_try_advisory_lock`) held on a
dedicated connection. Every process ticks every interval; the one holding the lock runs
the jobs, the others try to take it. A leader that dies loses its connection and with it
the lock, so another process takes over at its next tick: within one interval. The
leader checks at every tick that its session still holds the lock.

Jobs (leader only): the rule cycle every interval (every rule, device inactivity
included, in one set-based pass); webhook deliveries every interval and right after a
cycle that opened or escalated alerts; retention hourly (a TimescaleDB retention policy
where the community edition offers one, else `drop_chunks`). Each run is recorded in
`scheduler_runs` (which process, when, what it did). Should two processes ever run a
cycle at once (a leader cut off mid-cycle), reconciliation is serialised and idempotent
in the database, so no alert is duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import socket
from typing import Any

import psycopg
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from egenmon import metrics
from egenmon.alerts import engine, notify
from egenmon.alerts.instant import RuleWorker
from egenmon.runtime import Runtime
from egenmon.store import scheduler

log = logging.getLogger("egenmon.alerts.scheduler")

RETENTION_EVERY = dt.timedelta(hours=1)
RUN_LOG_DAYS = 30
LOCK_CHECK_TIMEOUT_S = 5.0


class Scheduler:
    """The `scheduler` service of a serve process."""

    name = "scheduler"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.url = self.settings.require_database()
        self.interval = float(self.settings.scheduler_interval_s)
        self.node = f"{socket.gethostname()}:{os.getpid()}"
        self.leader = False
        self._conn: psycopg.AsyncConnection | None = None
        self._lead_lock = asyncio.Lock()
        self._policy_added = False
        self._sched: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task] = set()

    async def start(self) -> None:
        now = dt.datetime.now(dt.UTC)
        every = dt.timedelta(seconds=self.interval)
        sched = AsyncIOScheduler(
            timezone=dt.UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        sched.add_job(
            self._job(self.cycle), "interval", seconds=self.interval, id="cycle", next_run_time=now
        )
        sched.add_job(
            self._job(self.deliver),
            "interval",
            seconds=self.interval,
            id="deliveries",
            next_run_time=now + every / 2,
        )
        sched.add_job(
            self._job(self.retention),
            "interval",
            seconds=RETENTION_EVERY.total_seconds(),
            id="retention",
            next_run_time=now + every,
        )
        sched.start()
        self._sched = sched

    async def stop(self) -> None:
        if self._sched is not None:
            self._sched.shutdown(wait=False)
            self._sched = None
        if self._running:
            # A cycle in its worker thread cannot be interrupted; let it finish its commit.
            await asyncio.wait(self._running, timeout=30)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()  # ends the session: the lock goes with it
            self._conn = None
        self.leader = False

    def _job(self, func):
        async def run() -> None:
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await func()
            except Exception:  # a failed run is recorded; the next tick tries again
                log.exception("scheduler job %s failed", func.__name__)
            finally:
                if task is not None:
                    self._running.discard(task)

        run.__name__ = func.__name__
        return run

    # --- leadership -------------------------------------------------------------------------

    async def lead(self) -> bool:
        """Is this process the leader now? Takes the lock when it is free."""
        async with self._lead_lock:
            was = self.leader
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True, application_name="egenmon-scheduler-leader"
                    )
                    self.leader = False
                async with asyncio.timeout(LOCK_CHECK_TIMEOUT_S):
                    if self.leader:
                        self.leader = await scheduler.holds_leader_lock(self._conn)
                    if not self.leader:
                        self.leader = await scheduler.try_leader_lock(self._conn)
            except (psycopg.Error, OSError, TimeoutError) as e:
                log.warning("scheduler lock connection failed: %s", type(e).__name__)
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        await self._conn.close()
                self._conn = None
                self.leader = False
            if self.leader != was:
                log.info(
                    "scheduler %s leader (%s)",
                    "is now" if self.leader else "is no longer",
                    self.node,
                )
                if self.leader:
                    await self._record("leader", dt.datetime.now(dt.UTC), True, None)
            return self.leader

    # --- jobs ---------------------------------------------------------------------------------

    async def cycle(self) -> None:
        """One rule cycle over every patient (leader only)."""
        if not await self.lead():
            return
        started = dt.datetime.now(dt.UTC)
        run_id = await self._start("cycle", started)
        metrics.SCHEDULER_RUNS.inc()
        result: engine.CycleResult | None = None
        try:
            result = await asyncio.to_thread(engine.run_cycle, self.url, tz=self.settings.tz)
        except Exception as e:
            await self._finish(run_id, False, {"error": type(e).__name__})
            raise
        await self._finish(run_id, result.errors == 0, result.summary())
        if result.opened or result.escalated:
            await self.deliver()

    async def deliver(self) -> None:
        """Send the webhook deliveries that are due (leader only)."""
        if not await self.lead():
            return
        rules = self.runtime.rules
        if isinstance(rules, RuleWorker):
            # Its courier sends them, off this loop (issue 20): two senders here would
            # share the due deliveries, and this one waits behind the ingest it serves.
            rules.send_webhooks()
            return
        started = dt.datetime.now(dt.UTC)
        report = await notify.deliver_due(
            self.runtime.pool,
            default_secret=self.settings.webhook_secret,
            base_backoff_s=self.interval,
        )
        if report.delivered or report.retrying or report.failed:
            await self._record("deliveries", started, report.failed == 0, report.as_dict())

    async def retention(self) -> None:
        """Drop readings older than EGENMON_RETENTION_DAYS (leader only)."""
        if not await self.lead():
            return
        started = dt.datetime.now(dt.UTC)
        days = self.settings.retention_days
        result: dict[str, Any] = {"retention_days": days}
        async with self.runtime.pool.connection() as conn:
            license = await scheduler.timescaledb_license(conn)
            result["license"] = license
            if license == "timescale" and not self._policy_added:
                try:
                    await scheduler.add_retention_policy(conn, days)
                    self._policy_added = True
                except psycopg.Error as e:
                    result["policy_error"] = type(e).__name__
            if self._policy_added:
                result["method"] = "policy"
            else:
                result["method"] = "drop_chunks"
                result["chunks_dropped"] = await scheduler.drop_old_chunks(
                    conn, started - dt.timedelta(days=days)
                )
            result["runs_pruned"] = await scheduler.prune_runs(
                conn, started - dt.timedelta(days=RUN_LOG_DAYS)
            )
        await self._record("retention", started, True, result)

    # --- the run log ----------------------------------------------------------------------------

    async def _start(self, job: str, started: dt.datetime) -> int:
        async with self.runtime.pool.connection() as conn:
            return await scheduler.start_run(conn, job, self.node, started)

    async def _finish(self, run_id: int, ok: bool, result: dict | None) -> None:
        async with self.runtime.pool.connection() as conn:
            await scheduler.finish_run(conn, run_id, ok, result)

    async def _record(self, job: str, started: dt.datetime, ok: bool, result: dict | None) -> None:
        run_id = await self._start(job, started)
        await self._finish(run_id, ok, result)
