"""Webhook notifications: signed payloads from an outbox, retried with backoff.

An alert change and its delivery rows commit together (the outbox); the scheduler's
delivery job sends them outside any evaluation transaction, so a slow or dead subscriber
never holds up the rules. The body is JSON; the header
``X-Egenmon-Signature: sha256=<hex>`` is the HMAC-SHA256 of the exact body bytes under the
webhook's secret (or EGENMON_WEBHOOK_SECRET). The payload names the patient only by its
opaque id and carries no measured values: a subscriber fetches those through the
authenticated APIs.

Retries: a non-2xx answer or a connection error schedules the next attempt after
``base × 2^(attempt-1)`` seconds (base: the scheduler interval, so the first retry comes
at the next tick; at most one hour between attempts), up to MAX_ATTEMPTS attempts; then
the delivery is `failed`, kept in the log.

Every failed attempt is logged (WARNING while it will be retried, ERROR when the delivery
is given up) with the delivery's and alert's ids, the event, the receiver's host and the
reason; never the payload, the URL's path or query, nor the secret. Attempts are counted in
``egenmon_webhook_deliveries_total{outcome="delivered"|"retrying"|"failed"}``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from psycopg_pool import AsyncConnectionPool

from egenmon.domain.principals import Principal
from egenmon.fhir import notifications
from egenmon.metrics import WEBHOOK_DELIVERIES
from egenmon.store import subscriptions, webhooks
from egenmon.store.access_log import log_access

log = logging.getLogger("egenmon.alerts.notify")

SIGNATURE_HEADER = "X-Egenmon-Signature"
EVENT_HEADER = "X-Egenmon-Event"
DELIVERY_HEADER = "X-Egenmon-Delivery"
FHIR_JSON = "application/fhir+json"
MAX_ATTEMPTS = 12
MAX_BACKOFF = dt.timedelta(hours=1)
TIMEOUT_S = 10.0
LEASE = dt.timedelta(seconds=60)  # longer than TIMEOUT_S: a claimed row is not sent twice
CONCURRENCY = 8


def payload(event: str, alert: Mapping[str, Any]) -> dict[str, Any]:
    """What a subscriber is told: which alert, of which patient (opaque id), what happened."""
    return {
        "event": f"alert.{event}",
        "alert": {
            "id": str(alert["id"]),
            "patient_id": str(alert["patient_id"]),
            "rule": alert["rule"],
            "key": alert["key"],
            "category": alert["category"],
            "severity": alert["severity"],
            "status": alert["status"],
            "opened_at": _iso(alert["opened_at"]),
            "updated_at": _iso(alert["updated_at"]),
            "due_at": _iso(alert["due_at"]),
        },
    }


def _iso(t: dt.datetime | None) -> str | None:
    return t.astimezone(dt.UTC).isoformat() if t is not None else None


def body(data: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed."""
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def sign(secret: str | bytes, data: bytes) -> str:
    """The signature header value: ``sha256=<hex HMAC-SHA256 of data>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, data, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, data: bytes, header: str) -> bool:
    """Does `header` sign `data` under `secret`? (For receivers and tests.)"""
    return hmac.compare_digest(sign(secret, data), header)


def backoff(attempts: int, base: float) -> dt.timedelta:
    """How long to wait after the `attempts`-th failed attempt."""
    seconds = base * 2 ** max(0, attempts - 1)
    return min(dt.timedelta(seconds=seconds), MAX_BACKOFF)


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"delivered": self.delivered, "retrying": self.retrying, "failed": self.failed}


async def deliver_due(
    pool: AsyncConnectionPool,
    *,
    default_secret: str | None,
    base_backoff_s: float,
    limit: int = 200,
    client: httpx.AsyncClient | None = None,
) -> DeliveryReport:
    """Send every due delivery (up to `limit`), recording each attempt."""
    report = DeliveryReport()
    bodies: dict[int, bytes] = {}
    async with pool.connection() as conn:
        await subscriptions.number_events(conn)
        due = await webhooks.claim_deliveries(conn, limit, LEASE)
        for d in due:
            if d["subscription_id"] is not None and d["active"]:
                bodies[d["id"]] = orjson.dumps(await notifications.notification(conn, d))
    if not due:
        return report
    own = client is None
    http = client or httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
    gate = asyncio.Semaphore(CONCURRENCY)
    try:
        outcomes = await asyncio.gather(
            *(_send(http, gate, d, default_secret, bodies.get(d["id"])) for d in due)
        )
    finally:
        if own:
            await http.aclose()
    async with pool.connection() as conn:
        for d, (http_status, error, ms) in zip(due, outcomes, strict=True):
            if error is None:
                status, next_at = "delivered", None
                report.delivered += 1
            elif d["attempts"] >= MAX_ATTEMPTS or not d["active"]:
                status, next_at = "failed", None
                report.failed += 1
            else:
                status = "pending"
                next_at = dt.datetime.now(dt.UTC) + backoff(d["attempts"], base_backoff_s)
                report.retrying += 1
            WEBHOOK_DELIVERIES.labels(status if status != "pending" else "retrying").inc()
            if error is not None:
                _log_failure(d, status, error, next_at)
            await webhooks.finish_delivery(
                conn,
                d["id"],
                status=status,
                http_status=http_status,
                error=error,
                next_attempt_at=next_at,
                duration_ms=ms,
            )
            if d["subscription_id"] is not None and d["active"]:
                await subscriptions.set_status(
                    conn,
                    d["subscription_id"],
                    "active" if error is None else "error",
                    None if error is None else _public_error(d, error),
                )
    for d, (http_status, error, _ms) in zip(due, outcomes, strict=True):
        # The receiver got the body (an answer), or may have (no answer after sending it):
        # a disclosure, logged.
        if http_status is not None or (error or "").startswith(_MAY_HAVE_ARRIVED):
            await _log_disclosure(pool, d)
    return report


# Errors raised after the request was sent: the receiver may have the body.
_MAY_HAVE_ARRIVED = ("ReadTimeout", "ReadError", "RemoteProtocolError")


def _public_error(d: Mapping[str, Any], error: str) -> str:
    """A failure as the subscriber may read it in its Subscription: host, no path."""
    return error.replace(str(d["url"]), _host(str(d["url"])))[:300]


async def _log_disclosure(pool: AsyncConnectionPool, d: Mapping[str, Any]) -> None:
    """The access log's line for a notification that named a patient (PDL 4:3)."""
    patient = d.get("patient_id")
    if not isinstance(patient, uuid.UUID):
        return
    if d["subscription_id"] is not None:
        who = Principal(str(d["owner"]), str(d["owner_role"]), d["scope_unit_id"])
        resource = str(d["focus"]).partition("/")[0]
        detail: dict[str, Any] = {
            "subscription": str(d["subscription_id"]),
            "event_number": d["event_number"],
            "content": d["content"],
        }
    else:
        who = Principal(str(d["hook_owner"]), str(d["hook_role"]), d["hook_unit"])
        resource = "Flag"
        detail = {"webhook": str(d["webhook_id"]), "event": d["event"]}
    await log_access(pool, who, "notify", resource, [patient], detail)


def _host(url: str) -> str:
    """The receiver's host[:port] only: a URL's path or query may carry a credential."""
    try:
        parts = urlsplit(url)
        return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "?"
    except ValueError:
        return "?"


def _log_failure(
    d: Mapping[str, Any], status: str, error: str, next_at: dt.datetime | None
) -> None:
    """One line per failed attempt: ids, event, host and reason; no payload, no secret."""
    alert = d["payload"].get("alert", {}) if isinstance(d["payload"], Mapping) else {}
    host = _host(str(d["url"]))
    error = error.replace(str(d["url"]), host)
    kind = "subscription" if d.get("subscription_id") is not None else "webhook"
    where = (
        f"{kind} delivery {d['id']} (alert {alert.get('id', '?')}, event {d['event']}, "
        f"to {host}) attempt {d['attempts']}"
    )
    if status == "failed":
        log.error("%s failed: %s; given up, kept in the delivery log", where, error)
    else:
        wait = (next_at - dt.datetime.now(dt.UTC)).total_seconds() if next_at else 0.0
        log.warning("%s failed: %s; next attempt in %.0f s", where, error, max(wait, 0.0))


async def _send(
    http: httpx.AsyncClient,
    gate: asyncio.Semaphore,
    d: Mapping[str, Any],
    default_secret: str | None,
    fhir_body: bytes | None = None,
) -> tuple[int | None, str | None, float]:
    """(HTTP status, error or None, milliseconds) of one attempt."""
    if not d["active"]:
        what = "subscription is off" if d["subscription_id"] is not None else "webhook is inactive"
        return None, what, 0.0
    timeout: float = TIMEOUT_S
    if d["subscription_id"] is not None:
        assert fhir_body is not None
        data = fhir_body
        headers = {"Content-Type": FHIR_JSON, "User-Agent": "egenmon-subscription/1"}
        for line in d["headers"] or ():
            name, _, value = line.partition(":")
            headers[name.strip()] = value.strip()
        if d["hmac_secret"]:
            headers[SIGNATURE_HEADER] = sign(d["hmac_secret"], data)
        timeout = float(d["timeout_s"] or TIMEOUT_S)
    else:
        secret = d["secret"] or default_secret
        if not secret:
            return None, "no secret: the webhook has none and EGENMON_WEBHOOK_SECRET is unset", 0.0
        data = body(d["payload"])
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, data),
            EVENT_HEADER: str(d["event"]),
            DELIVERY_HEADER: str(d["id"]),
            "User-Agent": "egenmon-webhook/1",
        }
    start = time.perf_counter()
    async with gate:
        try:
            r = await http.post(d["url"], content=data, headers=headers, timeout=timeout)
        except httpx.HTTPError as e:
            ms = (time.perf_counter() - start) * 1000
            return None, f"{type(e).__name__}: {e}"[:500], ms
    ms = (time.perf_counter() - start) * 1000
    if 200 <= r.status_code < 300:
        return r.status_code, None, ms
    return r.status_code, f"HTTP {r.status_code}", ms
