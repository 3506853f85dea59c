"""The outbox sender: delivers webhook and FHIR Subscription notifications promptly.

Each serve process that runs the scheduler runs one. It LISTENs on the outbox channel (a
change that queues a delivery NOTIFYs at its commit, whichever process made it), so a
notification leaves within milliseconds of the commit, not at the next scheduler tick;
without a wake-up it still looks every `POLL_S` (retries falling due), and at the moment
the next heartbeat falls due. Several
senders are safe: deliveries are claimed with SKIP LOCKED and a lease, event numbers given
under an advisory lock, and a heartbeat queued by one process only. Hourly, it prunes
subscriptions' notifications sent more than KEEP_EVENTS ago (`$events` replays the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time

import psycopg

from egenmon.alerts import notify
from egenmon.runtime import Runtime
from egenmon.store import subscriptions

log = logging.getLogger("egenmon.alerts.outbox")

POLL_S = 1.0
MIN_WAIT_S = 0.02
# Sent notifications of subscriptions are kept this long for `$events`, then pruned.
KEEP_EVENTS = dt.timedelta(days=30)
PRUNE_EVERY_S = 3600.0


class OutboxSender:
    """The `outbox` service of a serve process."""

    name = "outbox"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._pruned_at = 0.0

    async def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def once(self) -> tuple[notify.DeliveryReport, float]:
        """Queue due heartbeats, send everything due; how long to wait for the next round
        (at most POLL_S, less when a heartbeat falls due sooner)."""
        async with self.runtime.pool.connection() as conn:
            await subscriptions.queue_heartbeats(conn)
            if time.monotonic() - self._pruned_at >= PRUNE_EVERY_S:
                self._pruned_at = time.monotonic()
                await subscriptions.prune(conn, dt.datetime.now(dt.UTC) - KEEP_EVENTS)
        report = await notify.deliver_due(
            self.runtime.pool,
            default_secret=self.settings.webhook_secret,
            base_backoff_s=float(self.settings.scheduler_interval_s),
        )
        async with self.runtime.pool.connection() as conn:
            heartbeat = await subscriptions.next_heartbeat_in(conn)
        wait = POLL_S if heartbeat is None else min(POLL_S, max(heartbeat, MIN_WAIT_S))
        return report, wait

    async def _run(self) -> None:
        url = self.settings.require_database()
        listener: psycopg.AsyncConnection | None = None
        while not self._stopping:
            try:
                if listener is None or listener.closed:
                    listener = await psycopg.AsyncConnection.connect(
                        url, autocommit=True, application_name="egenmon-outbox"
                    )
                    await subscriptions.listen(listener)
                report, wait = await self.once()
                if report.delivered + report.retrying + report.failed >= 200:
                    continue  # more may be due at once
                async for _ in listener.notifies(timeout=wait, stop_after=1):
                    break
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as e:
                log.warning("outbox sender: %s; retrying", type(e).__name__)
                if listener is not None:
                    with contextlib.suppress(Exception):
                        await listener.close()
                listener = None
                await asyncio.sleep(POLL_S)
            except Exception:  # a failed round is logged; the next one tries again
                log.exception("outbox sender round failed")
                await asyncio.sleep(POLL_S)
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close()
