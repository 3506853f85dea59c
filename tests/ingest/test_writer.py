import asyncio
import datetime as dt
import uuid

import psycopg
import pytest

from egenmon.domain.readings import COLUMNS
from egenmon.ingest.writer import BatchWriter, WriteError

T0 = dt.datetime(2026, 11, 24, 7, 0, tzinfo=dt.UTC)


def row(patient, i: int, *, key: str | None = None, extra=None) -> tuple:
    t = T0 + dt.timedelta(minutes=i)
    values = {
        "time": t,
        "patient_id": patient,
        "device_id": "dev-1",
        "type": "heart_rate",
        "code": "8867-4",
        "mdc": "149546",
        "value": 60.0 + i,
        "value2": None,
        "value3": None,
        "unit": "/min",
        "on_oxygen": None,
        "note": None,
        "source": "http",
        "dedup_key": key or f"dev-1|heart_rate|{t.isoformat()}",
        "received_at": T0,
        "message_id": None,
        "extra": extra,
    }
    return tuple(values[c] for c in COLUMNS)


@pytest.fixture
def stored(conn):
    def count() -> int:
        return conn.execute("SELECT count(*) FROM readings").fetchone()[0]

    return count


def run(coro):
    return asyncio.run(coro)


def test_rows_are_committed_before_write_returns(database_url, stored):
    patient = uuid.uuid4()

    async def go():
        w = BatchWriter(database_url)
        await w.start()
        try:
            r = await w.write([row(patient, i) for i in range(10)])
            # Committed: another connection sees them now.
            with psycopg.connect(database_url) as c:
                n = c.execute("SELECT count(*) FROM readings").fetchone()[0]
            return r, n
        finally:
            await w.stop()

    r, n = run(go())
    assert (r.accepted, r.duplicates, n) == (10, 0, 10)


def test_duplicates_within_a_request_across_requests_and_in_store(database_url, stored):
    patient = uuid.uuid4()

    async def go():
        w = BatchWriter(database_url, max_delay_ms=20)
        await w.start()
        try:
            first = await w.write([row(patient, 0), row(patient, 0), row(patient, 1)])
            again = await w.write([row(patient, 1), row(patient, 2)])
            return first, again
        finally:
            await w.stop()

    first, again = run(go())
    assert (first.accepted, first.duplicates) == (2, 1)
    assert (again.accepted, again.duplicates) == (1, 1)
    assert stored() == 3


def test_twenty_concurrent_writers_of_the_same_rows_store_them_once(database_url, stored):
    patient = uuid.uuid4()
    rows = [row(patient, i) for i in range(50)]

    async def go():
        w = BatchWriter(database_url, max_delay_ms=2, connections=2)
        await w.start()
        try:
            return await asyncio.gather(*(w.write(rows) for _ in range(20)))
        finally:
            await w.stop()

    results = run(go())
    assert sum(r.accepted for r in results) == 50
    assert sum(r.duplicates for r in results) == 19 * 50
    assert stored() == 50


def test_extra_json_is_stored(database_url, conn):
    patient = uuid.uuid4()

    async def go():
        w = BatchWriter(database_url)
        await w.start()
        try:
            return await w.write([row(patient, 0, extra={"interpretation": [{"text": "H"}]})])
        finally:
            await w.stop()

    assert run(go()).accepted == 1
    assert conn.execute("SELECT extra FROM readings").fetchone()[0] == {
        "interpretation": [{"text": "H"}]
    }


def test_a_database_error_fails_the_batch_and_stores_nothing(database_url, stored):
    patient = uuid.uuid4()
    bad = list(row(patient, 1))
    bad[COLUMNS.index("source")] = "carrier-pigeon"  # violates the CHECK constraint

    async def go():
        w = BatchWriter(database_url, max_delay_ms=50, connections=1)
        await w.start()
        try:
            results = await asyncio.gather(
                w.write([row(patient, 0)]), w.write([tuple(bad)]), return_exceptions=True
            )
            later = await w.write([row(patient, 2)])  # the writer recovers
            return results, later
        finally:
            await w.stop()

    results, later = run(go())
    assert all(isinstance(r, WriteError) for r in results)
    assert later.accepted == 1
    assert stored() == 1


def test_write_after_stop_is_refused(database_url):
    async def go():
        w = BatchWriter(database_url)
        await w.start()
        await w.stop()
        with pytest.raises(WriteError):
            await w.write([row(uuid.uuid4(), 0)])

    run(go())
