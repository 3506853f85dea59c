"""A database outage mid-stream: 503 while it lasts, and nothing acknowledged is lost.

The outage is real but confined to this test's database: new connections are refused
(ALLOW_CONNECTIONS false) and every open one is terminated, which is what a serve
process sees when its database goes away.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time

import httpx
import orjson
import psycopg

from tests.ingest.conftest import auth

URL = "/api/v1/readings"
T0 = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)


def _cut(cluster, name: str, allow: bool) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {str(allow).lower()}")
        if not allow:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )


def test_an_outage_answers_503_and_loses_nothing_acknowledged(
    serve, device, pg_cluster, database_url
):
    base, _ = serve("--no-mqtt", "--no-scheduler")
    name = database_url.rsplit("/", 1)[1]
    acknowledged: list[int] = []  # message numbers answered 200
    statuses: list[int] = []
    counter = iter(range(1_000_000))
    phase = {"cut": False, "restored": False, "503_after_cut": 0, "200_after_restore": 0}

    def message(n: int) -> bytes:
        return orjson.dumps(
            {
                "message_id": f"m{n}",
                "readings": [
                    {
                        "type": "heart_rate",
                        "time": (T0 + dt.timedelta(minutes=n * 3 + i)).isoformat(),
                        "value": 70,
                        "unit": "/min",
                    }
                    for i in range(3)
                ],
            }
        )

    async def sender(client: httpx.AsyncClient) -> None:
        while not (phase["restored"] and phase["200_after_restore"] >= 20):
            n = next(counter)
            try:
                r = await client.post(URL, content=message(n), headers=auth(device["secret"]))
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            statuses.append(status)
            if status == 200:
                assert r.json()["accepted"] + r.json()["duplicates"] == 3
                acknowledged.append(n)
                if phase["restored"]:
                    phase["200_after_restore"] += 1
            else:
                assert status == 503, status
                assert "try again" in r.json()["error"]
                assert r.headers["retry-after"] == "1"
                if phase["cut"]:
                    phase["503_after_cut"] += 1
                await asyncio.sleep(0.05)

    async def run() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            senders = [asyncio.create_task(sender(client)) for _ in range(4)]
            await asyncio.sleep(0.5)
            await asyncio.to_thread(_cut, pg_cluster, name, False)
            phase["cut"] = True
            deadline = time.monotonic() + 15
            while phase["503_after_cut"] < 10:
                assert time.monotonic() < deadline, "no 503 during the outage"
                await asyncio.sleep(0.05)
            await asyncio.to_thread(_cut, pg_cluster, name, True)
            phase["restored"] = True
            await asyncio.wait_for(asyncio.gather(*senders), 30)

    asyncio.run(run())
    # Under load a sender's last request may still have been answered 503 while the others
    # reached 20 answers of 200 after the restore: recovery is those 20, not the last status.
    assert 503 in statuses and phase["200_after_restore"] >= 20
    with psycopg.connect(database_url) as conn:
        ids = {r[0] for r in conn.execute("SELECT DISTINCT message_id FROM readings")}
        total = conn.execute("SELECT count(*), count(DISTINCT dedup_key) FROM readings").fetchone()
    missing = [n for n in acknowledged if f"m{n}" not in ids]
    assert missing == []  # every reading acknowledged is stored
    assert total[0] == total[1]  # and none twice


def test_a_message_retried_after_an_outage_quarantines_its_rejects_once(
    serve, device, pg_cluster, database_url
):
    base, _ = serve("--no-mqtt", "--no-scheduler")
    name = database_url.rsplit("/", 1)[1]
    body = orjson.dumps(
        {
            "message_id": "retry-me",
            "readings": [
                {"type": "heart_rate", "time": T0.isoformat(), "value": 70, "unit": "/min"},
                {"type": "heart_rate", "time": T0.isoformat(), "value": 999, "unit": "/min"},
            ],
        }
    )
    with httpx.Client(base_url=base, timeout=10) as client:
        # Warm the device caches, then cut the database away.
        assert client.post(URL, content=b"{}", headers=auth(device["secret"])).status_code == 400
        _cut(pg_cluster, name, allow=False)
        try:
            refused = client.post(URL, content=body, headers=auth(device["secret"]))
            assert refused.status_code == 503
        finally:
            _cut(pg_cluster, name, allow=True)
        deadline = time.monotonic() + 20
        while True:
            r = client.post(URL, content=body, headers=auth(device["secret"]))
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert r.status_code == 200, r.text
    # The good reading may have been committed by an attempt whose quarantine insert
    # failed (that attempt answered 503): the retry then counts it as a duplicate.
    answer = r.json()
    assert answer["accepted"] + answer["duplicates"] == 1 and len(answer["rejected"]) == 1
    with psycopg.connect(database_url) as conn:  # the outage ended earlier connections
        rows = conn.execute(
            "SELECT reading_index FROM quarantine WHERE message_id = 'retry-me'"
        ).fetchall()
        stored = conn.execute(
            "SELECT count(*) FROM readings WHERE message_id = 'retry-me'"
        ).fetchone()[0]
    assert rows == [(1,)]
    assert stored == 1
