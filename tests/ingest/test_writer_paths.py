"""The writer's three ways in: one INSERT (small), straight COPY, COPY through staging."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid

from egenmon.domain.readings import COLUMNS
from egenmon.ingest.writer import SMALL_BATCH, BatchWriter

T0 = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)


def row(patient: uuid.UUID, i: int, extra: dict | None = None) -> tuple:
    t = T0 + dt.timedelta(minutes=i)
    values = {
        "time": t,
        "patient_id": patient,
        "device_id": "dev-p",
        "type": "heart_rate",
        "code": "8867-4",
        "mdc": "149546",
        "value": 60.0 + i % 50,
        "value2": None,
        "value3": None,
        "unit": "/min",
        "on_oxygen": None,
        "note": None,
        "source": "fhir",
        "dedup_key": f"dev-p|{i}",
        "received_at": T0,
        "message_id": None,
        "extra": extra,
    }
    return tuple(values[c] for c in COLUMNS)


def test_each_way_stores_json_extras_and_counts_duplicates_exactly(database_url, conn):
    patient = uuid.uuid4()
    big = SMALL_BATCH * 3

    async def go():
        w = BatchWriter(database_url, connections=1)
        await w.start()
        try:
            straight = await w.write([row(patient, i, {"n": i}) for i in range(big)])
            # One stored row in a big batch: the straight COPY fails, staging settles it.
            staged = await w.write([row(patient, i, {"n": i}) for i in range(big - 1, 2 * big)])
            small = await w.write(
                [row(patient, i, {"n": i}) for i in range(2 * big - 2, 2 * big + 3)]
            )
            return straight, staged, small
        finally:
            await w.stop()

    straight, staged, small = asyncio.run(go())
    assert (straight.accepted, straight.duplicates) == (big, 0)
    assert (staged.accepted, staged.duplicates) == (big, 1)
    assert (small.accepted, small.duplicates) == (3, 2)
    n, extras_ok = conn.execute(
        "SELECT count(*), bool_and((extra->>'n')::int = (split_part(dedup_key, '|', 2))::int)"
        " FROM readings"
    ).fetchone()
    assert (n, extras_ok) == (2 * big + 3, True)


def test_write_many_answers_each_group_with_its_own_counts(database_url, conn):
    patient = uuid.uuid4()

    async def go():
        w = BatchWriter(database_url, connections=1)
        await w.start()
        try:
            await w.write([row(patient, 0)])
            return await w.write_many(
                [
                    [row(patient, 0), row(patient, 1)],  # one stored before
                    [],  # a message with no good readings
                    [row(patient, 1), row(patient, 2)],  # one in the group before
                    [row(patient, i) for i in range(3, 3 + SMALL_BATCH)],
                ]
            )
        finally:
            await w.stop()

    results = asyncio.run(go())
    assert [(r.accepted, r.duplicates) for r in results] == [(1, 1), (0, 0), (1, 1), (8, 0)]
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 3 + SMALL_BATCH
