"""Readings in over MQTT through the real pipeline, database and broker, in-process.

Each test runs the app's services (pipeline + MQTT consumer) on a Mosquitto of its own and
publishes as the device does, with the device's own credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Iterator

import httpx
import orjson
import psycopg
import pytest

from egenmon.app import Roles, create_app
from egenmon.dev.mosquitto import Mosquitto
from egenmon.dev.simulate_mqtt import DevicePublisher, readings_topic
from egenmon.devices.reconcile import missing_acls, required_platform_acls
from egenmon.settings import Settings

T0 = dt.datetime(2026, 3, 2, 7, 30, tzinfo=dt.UTC)


@pytest.fixture
def broker(tmp_path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own (overrides the suite's shared one)."""
    m = Mosquitto(tmp_path / "mqtt")
    m.start()
    yield m
    m.stop()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    app = create_app(settings, Roles(http=True, mqtt=True, scheduler=False))
    async with app.router.lifespan_context(app):
        consumer = app.state.runtime.mqtt
        await until(consumer.is_connected)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://egenmon") as http:
            yield http, consumer


async def until(predicate, limit: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def device_client(broker: Mosquitto, device: dict) -> DevicePublisher:
    pub = DevicePublisher("127.0.0.1", broker.port, device["id"], device["secret"], results=True)
    return await asyncio.to_thread(pub.connect)


def reading(i: int = 0, **extra: object) -> dict:
    return {
        "type": "heart_rate",
        "time": (T0 + dt.timedelta(minutes=i)).isoformat(),
        "value": 64 + i,
        "unit": "/min",
        **extra,
    }


def rows(conn: psycopg.Connection, device_id: str) -> list[tuple]:
    return conn.execute(
        "SELECT value, unit, source, message_id FROM readings WHERE device_id = %s ORDER BY time",
        (device_id,),
    ).fetchall()


def quarantine(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT source, device_id, topic, reason, raw FROM quarantine ORDER BY id"
    ).fetchall()


def test_a_reading_over_mqtt_is_stored_and_the_device_gets_the_result(
    settings, broker, device, conn
):
    async def run() -> None:
        async with running(settings):
            pub = await device_client(broker, device)
            pub.publish(
                {
                    "message_id": "msg-1",
                    "device_id": device["id"],
                    "readings": [reading(0), reading(1, unit="bpm")],
                }
            )
            await until(lambda: len(pub.results) == 1)
            assert pub.results == [
                {"accepted": 2, "duplicates": 0, "rejected": [], "message_id": "msg-1"}
            ]
            pub.close()

    asyncio.run(run())
    assert rows(conn, device["id"]) == [
        (64.0, "/min", "mqtt", "msg-1"),
        (65.0, "/min", "mqtt", "msg-1"),
    ]
    assert quarantine(conn) == []


def test_the_same_message_twice_is_stored_once_and_reported_duplicate(
    settings, broker, device, conn
):
    async def run() -> None:
        async with running(settings):
            pub = await device_client(broker, device)
            msg = {"message_id": "again", "readings": [reading(0)]}
            pub.publish(msg)
            await until(lambda: len(pub.results) == 1)
            pub.publish(msg)
            await until(lambda: len(pub.results) == 2)
            assert [(r["accepted"], r["duplicates"]) for r in pub.results] == [(1, 0), (0, 1)]
            pub.close()

    asyncio.run(run())
    assert len(rows(conn, device["id"])) == 1


def test_an_unparseable_payload_is_quarantined_raw_with_its_topic_and_not_redelivered(
    settings, broker, device, conn
):
    async def run() -> None:
        async with running(settings) as (_, consumer):
            pub = await device_client(broker, device)
            pub.publish(b"\x00not json{")
            await until(lambda: len(pub.results) == 1)
            assert pub.results[0]["error"].startswith("body is not JSON")
            assert pub.results[0]["message_id"] is None
            await until(lambda: consumer.acknowledged == 1)
            pub.close()
        # Acknowledged: the next session of the same consumer gets nothing back.
        async with running(settings) as (_, consumer):
            await asyncio.sleep(0.5)
            assert consumer.received == 0

    asyncio.run(run())
    [(source, device_id, topic, reason, raw)] = quarantine(conn)
    assert (source, device_id, raw) == ("mqtt", device["id"], b"\x00not json{")
    assert topic == readings_topic("egenmon/v1", device["id"])
    assert reason.startswith("body is not JSON")


def test_a_payload_naming_another_device_is_refused_and_quarantined(settings, broker, device, conn):
    async def run() -> None:
        async with running(settings):
            pub = await device_client(broker, device)
            pub.publish({"device_id": "someone-else", "readings": [reading(0)]})
            await until(lambda: len(pub.results) == 1)
            assert "is not the authenticated device" in pub.results[0]["error"]
            pub.close()

    asyncio.run(run())
    assert rows(conn, device["id"]) == []
    [(source, device_id, topic, reason, _)] = quarantine(conn)
    assert (source, device_id) == ("mqtt", device["id"])
    assert "someone-else" in reason and topic.endswith(f"/{device['id']}/readings")


def test_partial_acceptance_stores_the_good_reading_and_quarantines_the_bad_one(
    settings, broker, device, conn
):
    async def run() -> None:
        async with running(settings):
            pub = await device_client(broker, device)
            pub.publish({"message_id": "mixed", "readings": [reading(0), reading(1, value=400)]})
            await until(lambda: len(pub.results) == 1)
            [result] = pub.results
            assert (result["accepted"], result["message_id"]) == (1, "mixed")
            assert [r["index"] for r in result["rejected"]] == [1]
            pub.close()

    asyncio.run(run())
    assert len(rows(conn, device["id"])) == 1
    [(source, _, _, reason, raw)] = quarantine(conn)
    assert source == "mqtt" and orjson.loads(raw)["value"] == 400 and reason


def test_readyz_reports_the_broker_and_metrics_count_mqtt_readings(settings, broker, device, conn):
    async def run() -> None:
        async with running(settings) as (http, consumer):
            assert (await http.get("/readyz")).status_code == 200
            pub = await device_client(broker, device)
            pub.publish({"readings": [reading(0)]})
            await until(lambda: len(pub.results) == 1)
            pub.close()
            text = (await http.get("/metrics")).text
            assert 'egenmon_readings_total{outcome="accepted",source="mqtt"}' in text
            assert "egenmon_mqtt_backlog 0.0" in text
            broker.stop()
            await until(lambda: not consumer.is_connected())
            r = await http.get("/readyz")
            assert r.status_code == 503 and r.json()["down"] == ["broker"]
            broker.start()
            await until(consumer.is_connected)
            assert (await http.get("/readyz")).status_code == 200

    asyncio.run(run())


def test_the_platform_role_gets_the_shared_subscription_it_lacks():
    required = required_platform_acls("egenmon/v1")
    share = {
        "acltype": "subscribePattern",
        "topic": "$share/egenmon/egenmon/v1/devices/+/readings",
        "allow": True,
    }
    assert share in required
    assert missing_acls(required, required) == []
    have = [{**a, "priority": 0} for a in required if a != share]
    assert missing_acls(have, required) == [share]
