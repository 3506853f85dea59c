"""Failed webhook deliveries are logged (ids and reason, no payload, no secret) and counted in
/metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import psycopg
from prometheus_client import REGISTRY, generate_latest

from egenmon.alerts import notify
from egenmon.dev.cluster import free_port
from egenmon.store.db import make_pool

H = dt.timedelta(hours=1)
COUNTER = "egenmon_webhook_deliveries_total"


def deliver(url: str) -> notify.DeliveryReport:
    async def go() -> notify.DeliveryReport:
        pool = make_pool(url, 1, 2)
        await pool.open(wait=True)
        try:
            return await notify.deliver_due(pool, default_secret=None, base_backoff_s=60)
        finally:
            await pool.close()

    return asyncio.run(go())


def counted(outcome: str) -> float:
    return REGISTRY.get_sample_value(COUNTER, {"outcome": outcome}) or 0.0


def warnings_of(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "egenmon.alerts.notify"]


def test_a_failed_attempt_is_logged_and_counted_without_payload_or_secret(
    store, cli, device, now, receiver, caplog
):
    hook = f"{receiver.url}?token=query-credential"
    assert cli("webhook", "add", "--url", hook, "--secret", "hook-secret-123").code == 0
    store.add(device["patient"], device["id"], "blood_glucose", now - H, 2.5)
    [alert] = store.cycle(now).opened
    receiver.script = [503]
    before = counted("retrying")
    caplog.set_level(logging.WARNING, logger="egenmon.alerts.notify")

    assert deliver(store.url).retrying == 1

    assert counted("retrying") == before + 1
    [record] = warnings_of(caplog)
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert "HTTP 503" in text and "next attempt in" in text
    assert str(alert["id"]) in text and "127.0.0.1" in text
    for secret_or_data in ("hook-secret-123", "query-credential", "2.5", device["patient"]):
        assert str(secret_or_data) not in text
    assert f'{COUNTER}{{outcome="retrying"}}' in generate_latest().decode()


def test_a_delivery_given_up_is_an_error_and_counted_as_failed(store, cli, device, now, caplog):
    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    assert cli("webhook", "add", "--url", url, "--secret", "s3cret-s3cret").code == 0
    store.add(device["patient"], device["id"], "blood_glucose", now - H, 2.5)
    store.cycle(now)
    with psycopg.connect(store.url) as conn:
        conn.execute("UPDATE webhook_deliveries SET attempts = %s", (notify.MAX_ATTEMPTS - 1,))
    before = counted("failed")
    caplog.set_level(logging.WARNING, logger="egenmon.alerts.notify")

    assert deliver(store.url).failed == 1

    assert counted("failed") == before + 1
    [record] = warnings_of(caplog)
    assert record.levelno == logging.ERROR
    assert "ConnectError" in record.getMessage() and "given up" in record.getMessage()
    assert "nobody-listens" not in record.getMessage()


def test_a_delivered_attempt_is_counted_and_not_logged(store, cli, device, now, receiver, caplog):
    assert cli("webhook", "add", "--url", receiver.url, "--secret", "s3cret-s3cret").code == 0
    store.add(device["patient"], device["id"], "blood_glucose", now - H, 2.5)
    store.cycle(now)
    before = counted("delivered")
    caplog.set_level(logging.WARNING, logger="egenmon.alerts.notify")
    assert deliver(store.url).delivered == 1
    assert counted("delivered") == before + 1
    assert warnings_of(caplog) == []
