"""Webhook deliveries from the outbox to a real HTTP receiver: signatures, retries with
backoff, the delivery log, and what a payload may carry."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import psycopg
import pytest

from egenmon.alerts import notify
from egenmon.dev.cluster import free_port
from egenmon.store.db import make_pool
from tests.alerts.conftest import hmac_hex

H = dt.timedelta(hours=1)


def deliver(url: str, default_secret: str | None = None, base: float = 60.0):
    async def go() -> notify.DeliveryReport:
        pool = make_pool(url, 1, 2)
        await pool.open(wait=True)
        try:
            return await notify.deliver_due(
                pool, default_secret=default_secret, base_backoff_s=base
            )
        finally:
            await pool.close()

    return asyncio.run(go())


def deliveries(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT status, attempts, last_status, last_error, next_attempt_at - now()"
            " FROM webhook_deliveries ORDER BY id"
        ).fetchall()


@pytest.fixture
def alert_with_hook(store, cli, device, now, receiver):
    """One open alert whose opening is queued for the receiver (secret 'hook-secret')."""
    r = cli("webhook", "add", "--url", receiver.url, "--secret", "hook-secret", "--json")
    assert r.code == 0, r.err
    store.add(device["patient"], device["id"], "blood_glucose", now - H, 2.5)
    assert len(store.cycle(now).opened) == 1
    return store.alerts(device["patient"])[0]


def test_signature_is_hmac_sha256_of_the_body():
    body = notify.body({"b": 1, "a": "å"})
    assert body == '{"a":"å","b":1}'.encode()
    sig = notify.sign("k", body)
    assert sig == hmac_hex("k", body)
    assert notify.verify("k", body, sig) and not notify.verify("other", body, sig)


def test_backoff_doubles_from_the_base_up_to_an_hour():
    assert [notify.backoff(n, 60).total_seconds() for n in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert notify.backoff(30, 60) == dt.timedelta(hours=1)


def test_delivered_signed_with_the_webhooks_secret(store, alert_with_hook, receiver):
    report = deliver(store.url, default_secret="not-this-one")
    assert report.as_dict() == {"delivered": 1, "retrying": 0, "failed": 0}
    [req] = receiver.requests
    assert req.headers["X-Egenmon-Signature"] == hmac_hex("hook-secret", req.body)
    assert req.headers["X-Egenmon-Event"] == "opened"
    payload = json.loads(req.body)
    alert = alert_with_hook
    assert payload == {
        "event": "alert.opened",
        "alert": {
            "id": str(alert["id"]),
            "patient_id": str(alert["patient_id"]),
            "rule": "threshold",
            "key": "threshold:blood_glucose",
            "category": "clinical",
            "severity": "high",
            "status": "open",
            "opened_at": alert["opened_at"].isoformat(),
            "updated_at": alert["updated_at"].isoformat(),
            "due_at": alert["due_at"].isoformat(),
        },
    }
    # Nothing measured and no identity number travels: only opaque ids.
    assert "2.5" not in req.body.decode() and "personnummer" not in req.body.decode()
    assert deliveries(store.url)[0][:3] == ("delivered", 1, 200)
    assert deliver(store.url).as_dict() == {"delivered": 0, "retrying": 0, "failed": 0}


def test_a_failed_delivery_waits_its_backoff_then_succeeds(store, alert_with_hook, receiver):
    receiver.script = [503]
    assert deliver(store.url, base=60).retrying == 1
    [(status, attempts, code, error, wait)] = deliveries(store.url)
    assert (status, attempts, code, error) == ("pending", 1, 503, "HTTP 503")
    assert dt.timedelta(seconds=50) < wait <= dt.timedelta(seconds=60)
    assert deliver(store.url).as_dict()["delivered"] == 0  # not due yet
    with psycopg.connect(store.url) as conn:
        conn.execute("UPDATE webhook_deliveries SET next_attempt_at = now()")
    assert deliver(store.url).delivered == 1
    assert [r.status for r in receiver.requests] == [503, 200]
    with psycopg.connect(store.url) as conn:
        log = conn.execute("SELECT status, error FROM webhook_attempts ORDER BY id").fetchall()
    assert log == [(503, "HTTP 503"), (200, None)]


def test_connection_errors_are_retried_and_logged(store, cli, device, now):
    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    assert cli("webhook", "add", "--url", url, "--secret", "s").code == 0
    store.add(device["patient"], device["id"], "blood_glucose", now - H, 2.5)
    store.cycle(now)
    assert deliver(store.url).retrying == 1
    [(status, attempts, code, error, _)] = deliveries(store.url)
    assert (status, attempts, code) == ("pending", 1, None)
    assert error.startswith("ConnectError")


def test_a_delivery_gives_up_after_the_last_attempt(store, alert_with_hook, receiver):
    receiver.script = [500]
    with psycopg.connect(store.url) as conn:
        conn.execute("UPDATE webhook_deliveries SET attempts = %s", (notify.MAX_ATTEMPTS - 1,))
    assert deliver(store.url).failed == 1
    assert deliveries(store.url)[0][:3] == ("failed", notify.MAX_ATTEMPTS, 500)


def test_settings_secret_signs_hooks_without_their_own(
    store, cli, device, now, receiver, monkeypatch
):
    monkeypatch.setenv("EGENMON_WEBHOOK_SECRET", "from-settings")
    r = cli("webhook", "add", "--url", receiver.url, "--json")
    assert r.code == 0 and "secret" not in r.json
    store.add(device["patient"], device["id"], "blood_glucose", now - H, 2.5)
    store.cycle(now)
    assert deliver(store.url, default_secret="from-settings").delivered == 1
    req = receiver.requests[0]
    assert req.headers["X-Egenmon-Signature"] == hmac_hex("from-settings", req.body)


def test_webhook_cli_generates_a_secret_and_disables(cli, store, receiver):
    r = cli("webhook", "add", "--url", receiver.url, "--json")
    assert r.code == 0 and len(r.json["secret"]) >= 32  # shown once
    hooks = cli("webhook", "list", "--json").json["webhooks"]
    assert [(h["id"], h["active"], h["has_secret"]) for h in hooks] == [(r.json["id"], True, True)]
    assert cli("webhook", "disable", r.json["id"]).code == 0
    assert cli("webhook", "list", "--json").json["webhooks"][0]["active"] is False
    bad = cli("webhook", "add", "--url", "ftp://example.invalid/x")
    assert bad.code == 2 and "http" in bad.err


def test_disabled_webhooks_get_nothing_new(store, cli, device, now, receiver):
    r = cli("webhook", "add", "--url", receiver.url, "--secret", "s", "--json")
    cli("webhook", "disable", r.json["id"])
    store.add(device["patient"], device["id"], "blood_glucose", now - H, 2.5)
    store.cycle(now)
    assert deliveries(store.url) == []
