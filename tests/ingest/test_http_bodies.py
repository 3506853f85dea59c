"""Hostile JSON over HTTP ingest: deep nesting and repeated keys are 400s, kept in quarantine."""

from __future__ import annotations

import orjson

from tests.ingest.conftest import auth, quarantine_rows, reading, stored

URL = "/api/v1/readings"


def test_a_reading_nested_300_levels_deep_is_400_and_quarantined(in_app, device, conn):
    raw = (
        b'{"readings": [{"type": "heart_rate", "value": 72, "unit": "/min", "note": '
        + b"[" * 300
        + b"]" * 300
        + b"}]}"
    )

    async def go(client, app):
        return await client.post(URL, content=raw, headers=auth(device["secret"]))

    r = in_app(go)
    assert r.status_code == 400
    assert "nested 303 levels deep" in r.json()["error"]
    [q] = quarantine_rows(conn)
    assert bytes(q["raw"]) == raw and "levels deep" in q["reason"]
    assert q["device_id"] == device["id"]


def test_a_repeated_key_is_400_naming_it_and_nothing_is_stored(in_app, device, conn):
    one = orjson.dumps(reading()).decode()
    raw = ('{"readings": [' + one[:-1] + ', "value": 400}]}').encode()

    async def go(client, app):
        return await client.post(URL, content=raw, headers=auth(device["secret"]))

    r = in_app(go)
    assert r.status_code == 400
    assert 'the key "value" twice' in r.json()["error"]
    assert stored(conn, device["id"]) == []
    [q] = quarantine_rows(conn)
    assert bytes(q["raw"]) == raw and '"value"' in q["reason"]


def test_a_repeated_key_with_nul_is_quarantined_with_the_nul_escaped(in_app, device, conn):
    raw = b'{"readings": [{"type": "heart_rate"}], "x\\u0000y": 1, "x\\u0000y": 2}'

    async def go(client, app):
        return await client.post(URL, content=raw, headers=auth(device["secret"]))

    r = in_app(go)
    assert r.status_code == 400
    [q] = quarantine_rows(conn)
    assert "\x00" not in q["reason"] and "x\\u0000y" in q["reason"]


def test_mqtt_messages_go_through_the_same_parser(in_app, device, conn):
    from tests.ingest.conftest import pipeline_of

    topic = f"egenmon/v1/devices/{device['id']}/readings"
    deep = b'{"readings": [{"note": ' + b"[" * 400 + b"]" * 400 + b"}]}"
    repeated = b'{"readings": [{"type": "heart_rate", "value": 400, "value": 72}]}'
    good = orjson.dumps({"message_id": "ok", "readings": [reading()]})

    async def go(client, app):
        batch = [(deep, device["id"], topic), (repeated, device["id"], topic)]
        batch.append((good, device["id"], topic))
        return await pipeline_of(app).ingest_many(batch, source="mqtt")

    deep_result, repeated_result, good_result = in_app(go)
    assert deep_result.status == 400 and "levels deep" in deep_result.error
    assert repeated_result.status == 400 and '"value" twice' in repeated_result.error
    assert good_result.status == 200 and good_result.accepted == 1
    kept = [(bytes(q["raw"]), q["source"], q["topic"]) for q in quarantine_rows(conn)]
    assert kept == [(deep, "mqtt", topic), (repeated, "mqtt", topic)]
