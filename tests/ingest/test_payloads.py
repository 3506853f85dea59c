"""Vendor payloads over HTTP and MQTT, mapped by the device model's templates, for real.

The app's services (pipeline, MQTT consumer) run in-process on the suite's database and a
Mosquitto of the test's own; the device publishes with its own credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from template_sets import PAYLOAD, VENDOR, with_connector_bp

from egenmon.app import Roles, create_app
from egenmon.dev.mosquitto import Mosquitto
from egenmon.dev.simulate_mqtt import DevicePublisher
from egenmon.settings import Settings


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own (overrides the suite's shared one)."""
    m = Mosquitto(tmp_path / "mqtt")
    m.start()
    yield m
    m.stop()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, Roles(http=True, mqtt=True, scheduler=False))
    async with app.router.lifespan_context(app):
        await until(app.state.runtime.mqtt.is_connected)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://egenmon") as http:
            yield http


async def until(predicate, limit: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def rows(conn: psycopg.Connection, device_id: str) -> list[tuple]:
    return conn.execute(
        "SELECT type, value, value2, unit, source FROM readings WHERE device_id = %s"
        " ORDER BY time, type",
        (device_id,),
    ).fetchall()


def write(path: Path, value: object) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def test_template_commands_add_list_test_and_refuse_a_wrong_code(cli, tmp_path: Path) -> None:
    vendor = write(tmp_path / "vendor.json", VENDOR)
    sample = write(tmp_path / "sample.json", PAYLOAD)
    r = cli("template", "add", vendor, "--model", "Acme BP-9", "--json")
    assert r.code == 0, r.err
    assert r.json["types"] == {
        "bloodpressure": "blood_pressure",
        "heartrate": "heart_rate",
        "weight": "body_weight",
    }
    assert r.json["ignored"] == ["steps"] and r.json["replaced"] is False
    listed = cli("template", "list", "--json")
    assert [t["model"] for t in listed.json["templates"]] == ["Acme BP-9"]
    # The connector's two files work as they are, beside the one-object form.
    content = write(tmp_path / "devicecontent.json", VENDOR["devicecontent"])
    fhir = write(tmp_path / "fhirmapping.json", VENDOR["fhirmapping"])
    shown = cli("template", "test", content, fhir, "--sample", sample, "--json")
    assert shown.code == 0, shown.err
    assert shown.json["readings"][0] == {
        "type": "blood_pressure",
        "systolic": 142,
        "diastolic": 91,
        "time": "2026-11-24T07:31:00+01:00",
        "unit": "mm[Hg]",
    }
    text = cli("template", "test", vendor, "--sample", sample)
    assert text.out.splitlines() == [
        "bloodpressure -> blood_pressure systolic 142, diastolic 91 mm[Hg] at "
        "2026-11-24T07:31:00+01:00",
        "heartrate -> heart_rate value 72 /min at 2026-11-24T07:31:00+01:00",
        "weight -> body_weight value 179.5 [lb_av] at 2026-11-24T07:40:00+01:00",
    ]
    wrong = write(tmp_path / "wrong.json", with_connector_bp())
    refused = cli("template", "add", wrong, "--model", "Acme BP-9")
    assert refused.code == 2
    assert "template refused" in refused.err and "8867-4" in refused.err
    # The refused set replaced nothing.
    assert cli("template", "list", "--json").json["templates"][0]["types"]["bloodpressure"]


def test_a_vendor_payload_over_http_and_mqtt_is_stored_once(
    cli, settings: Settings, broker: Mosquitto, device: dict, conn: psycopg.Connection, tmp_path
) -> None:
    auth = {"Authorization": f"Bearer {device['secret']}"}
    path = f"/api/v1/devices/{device['id']}/payloads"

    async def before_the_templates() -> None:
        async with running(settings) as http:
            r = await http.post(path, content=json.dumps(PAYLOAD), headers=auth)
            assert r.status_code == 422 and "no templates for device model" in r.json()["error"]

    asyncio.run(before_the_templates())
    vendor = write(tmp_path / "vendor.json", VENDOR)
    assert cli("template", "add", vendor, "--model", "Omron M7").code == 0
    # The payload kept in quarantine goes in once its model has templates.
    [(entry_id,)] = conn.execute("SELECT id FROM quarantine WHERE source = 'template'").fetchall()
    replayed = cli("quarantine", "replay", str(entry_id), "--json")
    assert replayed.code == 0, replayed.out + replayed.err
    assert "accepted 3, duplicates 0" in replayed.json["replayed"][0]["note"]
    conn.execute("DELETE FROM readings WHERE device_id = %s", (device["id"],))

    async def run() -> None:
        async with running(settings) as http:
            r = await http.post(path, content=json.dumps(PAYLOAD), headers=auth)
            assert r.status_code == 200, r.text
            assert r.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
            r = await http.post("/api/v1/devices/someone-else/payloads", json=PAYLOAD, headers=auth)
            assert r.status_code == 403
            r = await http.post(path, content=b'{"nothing": "known"}', headers=auth)
            assert r.status_code == 422 and "no template" in r.json()["error"]
            r = await http.post(path, content=b"{not json", headers=auth)
            assert r.status_code == 400
            # The same measurements, published: duplicates, and three new ones stored.
            pub = DevicePublisher(
                "127.0.0.1", broker.port, device["id"], device["secret"], results=True
            )
            await asyncio.to_thread(pub.connect)
            topic = f"egenmon/v1/devices/{device['id']}/payloads"
            pub.publish(PAYLOAD, topic=topic)
            later = json.loads(json.dumps(PAYLOAD).replace("2026-11-24", "2026-11-25"))
            pub.publish(later, topic=topic)
            await until(lambda: len(pub.results) == 2)
            assert [(r["accepted"], r["duplicates"]) for r in pub.results] == [(0, 3), (3, 0)]
            pub.close()

    asyncio.run(run())
    stored = rows(conn, device["id"])
    assert len(stored) == 6
    assert stored[:3] == [
        ("blood_pressure", 142.0, 91.0, "mm[Hg]", "template"),
        ("heart_rate", 72.0, None, "/min", "template"),
        ("body_weight", 81.42, None, "kg", "template"),
    ]
    kept = conn.execute(
        "SELECT reason FROM quarantine WHERE source = 'template' AND resolved_at IS NULL"
        " ORDER BY id"
    ).fetchall()
    assert [k[0].split(":")[0] for k in kept] == [
        "no template of device model 'Omron M7' matches the payload",
        "the payload is not JSON",
    ]
