"""A reading sent twice is stored once, and the answer counts it as a duplicate."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import orjson

from tests.ingest.conftest import T0, auth, reading, stored

URL = "/api/v1/readings"


def test_the_same_message_twice_is_stored_once_and_counted(in_app, device, conn):
    message = orjson.dumps(
        {"message_id": "m-7", "readings": [reading(minutes=i) for i in range(5)]}
    )
    # The same instants written with another offset are the same readings.
    plus_two = dt.timezone(dt.timedelta(hours=2))
    shifted = orjson.dumps(
        {
            "readings": [
                {
                    **reading(minutes=i),
                    "time": (T0 + dt.timedelta(minutes=i)).astimezone(plus_two).isoformat(),
                }
                for i in range(3, 7)
            ]
        }
    )

    async def go(client, app):
        first = await client.post(URL, content=message, headers=auth(device["secret"]))
        again = await client.post(URL, content=message, headers=auth(device["secret"]))
        overlap = await client.post(URL, content=shifted, headers=auth(device["secret"]))
        return first, again, overlap

    first, again, overlap = in_app(go)
    assert (first.status_code, first.json()) == (
        200,
        {"accepted": 5, "duplicates": 0, "rejected": []},
    )
    assert (again.status_code, again.json()) == (
        200,
        {"accepted": 0, "duplicates": 5, "rejected": []},
    )
    assert overlap.json() == {"accepted": 2, "duplicates": 2, "rejected": []}
    assert len(stored(conn)) == 7


def test_readings_with_their_own_id_are_deduplicated_by_it(in_app, device, conn):
    one = reading(minutes=1) | {"id": "cuff-seq-1"}
    message = orjson.dumps({"readings": [one, one | {"value": 99}]})

    async def go(client, app):
        return await client.post(URL, content=message, headers=auth(device["secret"]))

    r = in_app(go)
    assert r.json() == {"accepted": 1, "duplicates": 1, "rejected": []}
    [row] = stored(conn)
    assert row["dedup_key"] == f"{device['id']}|id|cuff-seq-1" and row["value"] == 72


def test_twenty_clients_posting_the_same_message_at_once_store_it_once(serve, device, conn):
    base, _ = serve("--no-mqtt", "--no-scheduler")
    message = orjson.dumps(
        {
            "message_id": "storm",
            "battery": 0.4,
            "readings": [reading(minutes=i) for i in range(100)],
        }
    )

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            return await client.post(URL, content=message, headers=auth(device["secret"]))

    async def storm() -> list[httpx.Response]:
        return await asyncio.gather(*(post() for _ in range(20)))

    answers = asyncio.run(storm())
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    assert sum(a.json()["accepted"] for a in answers) == 100
    assert sum(a.json()["duplicates"] for a in answers) == 19 * 100
    assert len(stored(conn)) == 100
    assert conn.execute("SELECT count(DISTINCT dedup_key) FROM readings").fetchone()[0] == 100
