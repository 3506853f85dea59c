"""The shared pipeline: bindings over time, device health, the calls MQTT and FHIR use."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid

import orjson

from egenmon.domain.readings import COLUMNS, Binding
from egenmon.store import devices
from tests.ingest.conftest import T0, auth, pipeline_of, quarantine_rows, reading, stored

URL = "/api/v1/readings"


async def _notified(pipeline, before: int) -> None:
    """Wait for the change notification the database sends at commit."""
    deadline = time.monotonic() + 2
    while pipeline.devices.notifications == before:
        assert time.monotonic() < deadline, "no change notification within 2 s"
        await asyncio.sleep(0.01)


def test_a_device_moved_between_patients_keeps_history_straight(
    in_app, device, conn, second_patient
):
    moved = T0
    before, after = -90, 60  # minutes from the move

    async def go(client, app):
        pipeline = pipeline_of(app)
        early = await client.post(
            URL,
            content=orjson.dumps({"readings": [reading(minutes=before)]}),
            headers=auth(device["secret"]),
        )
        seen = pipeline.devices.notifications

        def move() -> None:
            with conn.transaction():
                devices.end_binding(conn, device["id"], moved)
                devices.bind_device(conn, device["id"], uuid.UUID(second_patient), moved)

        await asyncio.to_thread(move)
        await _notified(pipeline, seen)
        late = await client.post(
            URL,
            content=orjson.dumps(
                {"readings": [reading(minutes=before + 1), reading(minutes=after)]}
            ),
            headers=auth(device["secret"]),
        )
        return early, late, await pipeline.bindings(device["id"])

    early, late, bindings = in_app(go)
    assert early.json()["accepted"] == 1 and late.json()["accepted"] == 2
    assert bindings == [
        Binding(uuid.UUID(second_patient), moved, None),
        Binding(uuid.UUID(device["patient"]), dt.datetime(2020, 1, 1, tzinfo=dt.UTC), moved),
    ]
    owners = {row["time"]: str(row["patient_id"]) for row in stored(conn)}
    assert owners == {
        T0 + dt.timedelta(minutes=before): device["patient"],
        T0 + dt.timedelta(minutes=before + 1): device["patient"],
        T0 + dt.timedelta(minutes=after): second_patient,
    }


def test_device_health_is_written_once_for_many_messages(in_app, device, conn):
    # Count the UPDATEs the devices table gets (a trigger of this test's own).
    conn.execute("CREATE TABLE device_updates (n int)")
    conn.execute(
        "CREATE FUNCTION count_update() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN INSERT INTO device_updates VALUES (1); RETURN NULL; END $$"
    )
    conn.execute(
        "CREATE TRIGGER counted AFTER UPDATE ON devices FOR EACH STATEMENT"
        " EXECUTE FUNCTION count_update()"
    )

    async def go(client, app):
        pipeline = pipeline_of(app)
        await pipeline.health.stop()  # no flush of its own in between; flushed by hand below
        conn.execute("DELETE FROM device_updates")
        started = dt.datetime.now(dt.UTC)
        for i, battery in enumerate((0.9, 0.8, 0.7, 0.65)):
            r = await client.post(
                URL,
                content=orjson.dumps({"battery": battery, "readings": [reading(minutes=i)]}),
                headers=auth(device["secret"]),
            )
            assert r.status_code == 200
        # A message without battery still counts as seen, and keeps the last battery.
        await client.post(
            URL,
            content=orjson.dumps({"readings": [reading(minutes=9)]}),
            headers=auth(device["secret"]),
        )
        before = devices.get_device(conn, device["id"])
        await pipeline.health.flush()
        return started, before

    started, before = in_app(go)
    assert before["last_seen"] is None  # nothing written per message
    after = devices.get_device(conn, device["id"])
    assert after["battery"] == 0.65
    assert after["last_seen"] >= started
    assert conn.execute("SELECT count(*) FROM device_updates").fetchone()[0] == 1


def test_authenticate_knows_active_devices_only(in_app, device, conn):
    async def go(client, app):
        pipeline = pipeline_of(app)
        known = await pipeline.authenticate(device["secret"])
        unknown = await pipeline.authenticate("not-a-secret")
        seen = pipeline.devices.notifications
        await asyncio.to_thread(devices.revoke_device, conn, device["id"])
        await _notified(pipeline, seen)
        return known, unknown, await pipeline.authenticate(device["secret"])

    assert in_app(go) == (device["id"], None, None)


def test_ingest_rows_and_quarantine_serve_other_transports(in_app, device, conn):
    patient = uuid.UUID(device["patient"])
    now = dt.datetime.now(dt.UTC)

    def row(i: int) -> tuple:
        t = T0 + dt.timedelta(hours=i)
        values = {
            "time": t,
            "patient_id": patient,
            "device_id": device["id"],
            "type": "body_weight",
            "code": "29463-7",
            "mdc": "188736",
            "value": 80.0 + i,
            "value2": None,
            "value3": None,
            "unit": "kg",
            "on_oxygen": None,
            "note": None,
            "source": "fhir",
            "dedup_key": f"fhir|{i}",
            "received_at": now,
            "message_id": None,
            "extra": {"interpretation": "N"} if i == 0 else None,
        }
        return tuple(values[c] for c in COLUMNS)

    async def go(client, app):
        pipeline = pipeline_of(app)
        first = await pipeline.ingest_rows([row(0), row(1)], source="fhir")
        again = await pipeline.ingest_rows([row(1), row(2)], source="fhir")
        await pipeline.quarantine(
            source="mqtt",
            reason="not a readings topic",
            raw=b"\x00x",
            topic="egenmon/v1/devices/x/other",
        )
        body = orjson.dumps({"readings": [reading()]})
        result = await pipeline.ingest(
            body,
            device_id=device["id"],
            source="mqtt",
            topic=f"egenmon/v1/devices/{device['id']}/readings",
        )
        return first, again, result

    first, again, result = in_app(go)
    assert (first.accepted, first.duplicates, again.accepted, again.duplicates) == (2, 0, 1, 1)
    assert (result.status, result.body()) == (200, {"accepted": 1, "duplicates": 0, "rejected": []})
    assert len(stored(conn)) == 4
    [q] = quarantine_rows(conn)
    assert (bytes(q["raw"]), q["source"], q["topic"], q["device_id"]) == (
        b"\x00x",
        "mqtt",
        "egenmon/v1/devices/x/other",
        None,
    )


def test_ingest_many_answers_each_message_as_ingest_would(in_app, device, conn, cli, patient):
    since = ("--since", "2020-01-01T00:00:00Z")
    added = cli("device", "add", "--patient", patient, "--model", "Nonin", *since, "--json")
    other = added.json["id"]
    topic = "egenmon/v1/devices/{}/readings".format

    def message(mid: str, *readings: dict, **extra: object) -> bytes:
        return orjson.dumps({"message_id": mid, "readings": list(readings), **extra})

    batch = [
        (message("a", reading(minutes=1)), device["id"], topic(device["id"])),
        (b"{not json", device["id"], topic(device["id"])),
        (message("c", reading(minutes=2), device_id=other), device["id"], topic(device["id"])),
        (
            message("d", reading(minutes=3), reading(minutes=4, value=999, unit="/min")),
            device["id"],
            topic(device["id"]),
        ),
        (message("e", reading(minutes=1)), other, topic(other)),  # another device, same time
        (message("a", reading(minutes=1)), device["id"], topic(device["id"])),  # "a" again
    ]

    async def go(client, app):
        return await pipeline_of(app).ingest_many(batch, source="mqtt")

    results = in_app(go)
    got = [(r.status, r.message_id, r.body()) for r in results]
    assert got[0] == (200, "a", {"accepted": 1, "duplicates": 0, "rejected": []})
    assert got[1][0] == 400 and "not JSON" in got[1][2]["error"]
    assert got[2][0] == 403 and "is not the authenticated device" in got[2][2]["error"]
    assert got[3][0] == 200 and got[3][2]["accepted"] == 1
    assert [r["index"] for r in got[3][2]["rejected"]] == [1]
    assert got[4] == (200, "e", {"accepted": 1, "duplicates": 0, "rejected": []})
    assert got[5] == (200, "a", {"accepted": 0, "duplicates": 1, "rejected": []})
    assert len(stored(conn, device["id"])) == 2 and len(stored(conn, other)) == 1
    kept = [(q["reading_index"], q["message_id"], q["topic"]) for q in quarantine_rows(conn)]
    # The body that is not JSON, the one from the wrong device (its message_id kept), and
    # the one bad reading of "d"; all with their topic.
    assert kept == [
        (None, None, topic(device["id"])),
        (None, "c", topic(device["id"])),
        (1, "d", topic(device["id"])),
    ]
