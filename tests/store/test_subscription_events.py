"""Event numbers of FHIR Subscriptions in the outbox: events queued from several
connections while several senders number them at once still get 1..n per subscription,
each once, and the subscription's count says n; only live, matching subscriptions of the
patient's care unit get events."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import psycopg

from egenmon.store import subscriptions
from egenmon.store.db import make_pool


def new(topic: str, **kw: object) -> subscriptions.NewSubscription:
    fields: dict = {
        "topic": topic,
        "patient_id": None,
        "care_unit_id": None,
        "codes": None,
        "scope_unit_id": None,
        "owner": "integrator-1",
        "owner_role": "integrator",
        "endpoint": "http://127.0.0.1:9/x",
        "content": "id-only",
        "headers": [],
        "hmac_secret": None,
        "heartbeat_s": None,
        "timeout_s": None,
        "max_count": None,
        "end_at": None,
        "reason": None,
        "criteria": "https://egenmon.example.org/fhir/SubscriptionTopic/" + topic,
        "fhir_base": "http://127.0.0.1/fhir",
        "filter": None,
    }
    fields.update(kw)
    return subscriptions.NewSubscription(**fields)


def test_concurrent_queueing_and_numbering_give_each_event_one_number(
    database_url, cli, patient, care_unit
):
    pid, unit = uuid.UUID(patient), uuid.UUID(care_unit)
    r = cli("care-unit", "add", "--name", "B", "--hsa-id", "SE2321000016-bbb123", "--json")
    unit_b = uuid.UUID(r.json["id"])

    async def go() -> tuple[list, list]:
        pool = make_pool(database_url, 4, 8)
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                mine = await subscriptions.create(conn, new("observation", patient_id=pid))
                other = await subscriptions.create(conn, new("observation", scope_unit_id=unit_b))
                code = await subscriptions.create(conn, new("observation", codes=["29463-7"]))
                for s in (mine, other, code):
                    await conn.execute(
                        "UPDATE subscriptions SET status = 'active' WHERE id = %s", (s["id"],)
                    )

            async def queue(k: int) -> None:
                async with pool.connection() as conn:
                    for i in range(10):
                        oid = f"obs-{k}-{i}"
                        await subscriptions.enqueue_observations(
                            conn, [(pid, "8867-4", "149546", oid)]
                        )

            async def number() -> None:
                async with pool.connection() as conn:
                    for _ in range(10):
                        await subscriptions.number_events(conn)

            await asyncio.gather(*(queue(k) for k in range(3)), number(), number())
            async with pool.connection() as conn:
                await subscriptions.number_events(conn)
                got = await subscriptions.events(conn, mine["id"], None, None, 100)
                again = await subscriptions.get(conn, mine["id"])
                left = [
                    await subscriptions.events(conn, s["id"], None, None, 100)
                    for s in (other, code)
                ]
            assert again is not None
            return [(e["event_number"], e["focus"]) for e in got], [
                again["events_since_start"],
                *left,
            ]
        finally:
            await pool.close()

    events, (count, other_unit, other_code) = asyncio.run(go())
    assert [n for n, _ in events] == list(range(1, 31))
    assert len({f for _, f in events}) == 30
    assert count == 30
    # Another care unit's subscription and another code's get nothing.
    assert other_unit == [] and other_code == []
    with psycopg.connect(database_url) as conn:
        [(unit_of,)] = conn.execute(
            "SELECT care_unit_id FROM patients WHERE id = %s", (pid,)
        ).fetchall()
    assert unit_of == unit


def test_pruned_notifications_leave_the_count_and_numbers_go_on(database_url, patient):
    pid = uuid.UUID(patient)

    async def go() -> tuple[int, list[int], int]:
        pool = make_pool(database_url, 1, 2)
        await pool.open(wait=True)
        try:
            async with pool.connection() as conn:
                sub = await subscriptions.create(conn, new("observation", patient_id=pid))
                await conn.execute(
                    "UPDATE subscriptions SET status = 'active' WHERE id = %s", (sub["id"],)
                )
                await subscriptions.enqueue_observations(
                    conn, [(pid, "8867-4", "149546", f"o{i}") for i in range(3)]
                )
                await subscriptions.number_events(conn)
                await conn.execute(
                    "UPDATE webhook_deliveries SET status = 'delivered',"
                    " created_at = now() - interval '40 days' WHERE subscription_id = %s",
                    (sub["id"],),
                )
                pruned = await subscriptions.prune(
                    conn, dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
                )
                await subscriptions.enqueue_observations(conn, [(pid, "8867-4", "149546", "o9")])
                await subscriptions.number_events(conn)
                left = await subscriptions.events(conn, sub["id"], None, None, 100)
                again = await subscriptions.get(conn, sub["id"])
            assert again is not None
            return pruned, [e["event_number"] for e in left], again["events_since_start"]
        finally:
            await pool.close()

    pruned, left, count = asyncio.run(go())
    assert pruned == 4  # the three events and the handshake
    assert left == [4] and count == 4
