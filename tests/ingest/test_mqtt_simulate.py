"""`egenmon simulate --via mqtt`: simulated devices publish with their own credentials."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Iterator

import pytest

from egenmon.app import Roles, create_app
from egenmon.dev.mosquitto import Mosquitto
from egenmon.dev.simulate import SimDevice, generate, messages
from egenmon.dev.simulate_mqtt import MqttTransport
from egenmon.dev.simulate_run import TransportError, backfill


@pytest.fixture
def broker(tmp_path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own (overrides the suite's shared one)."""
    m = Mosquitto(tmp_path / "mqtt")
    m.start()
    yield m
    m.stop()


def test_the_mqtt_transport_backfills_a_device_and_gets_each_result(settings, device, conn):
    sim = SimDevice(device["id"], device["secret"], device["patient"], "stable")
    end = dt.datetime(2026, 2, 3, tzinfo=dt.UTC)
    start = end - dt.timedelta(days=2)

    async def run() -> tuple:
        app = create_app(settings, Roles(http=False, mqtt=True, scheduler=False))
        async with app.router.lifespan_context(app):
            transport = MqttTransport(settings)
            try:
                summary = await backfill(
                    [sim], transport, start=start, end=end, scenario=lambda d: "stable", batch=20
                )
                # The same messages again: the platform answers "duplicate" for each.
                again = await backfill(
                    [sim], transport, start=start, end=end, scenario=lambda d: "stable", batch=20
                )
            finally:
                await transport.close()
        return summary, again

    summary, again = asyncio.run(run())
    expected = list(
        generate(
            sim,
            "stable",
            start,
            end,
            random.Random(f"0|{sim.device_id}"),
            every=dt.timedelta(hours=12),
        )
    )
    assert summary.readings == len(expected) > 0
    assert summary.messages == len(list(messages(sim, expected, 20)))
    assert summary.accepted == summary.readings and summary.failed_messages == 0
    assert (again.accepted, again.duplicates) == (0, summary.readings)
    (stored,) = conn.execute(
        "SELECT count(*) FROM readings WHERE device_id = %s AND source = 'mqtt'", (device["id"],)
    ).fetchone()
    assert stored == summary.readings


def test_the_mqtt_transport_reports_a_device_the_broker_refuses(settings, device):
    async def run() -> None:
        transport = MqttTransport(settings, timeout=5)
        try:
            bad = SimDevice(device["id"], "not-the-secret")
            with pytest.raises(TransportError, match="Not authorized|Bad user name"):
                await transport.send(bad, {"readings": []})
        finally:
            await transport.close()

    asyncio.run(run())
