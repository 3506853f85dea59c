"""Fault 3: PostgreSQL stops mid-stream and starts again.

This test stops its database, so it runs on a throwaway cluster of its own, not on the
suite's. The consumer runs with HTTP here (`serve --no-scheduler`) so that its own
/readyz and /metrics can be read during the outage.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from faultkit import Stream, quarantined, stored, try_stored, wait_until

from egenmon.dev.cluster import Cluster
from egenmon.ingest.mqtt import INFLIGHT
from egenmon.store.migrate import migrate

N = 2500


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    # As root PostgreSQL runs as `postgres`, which must reach the folder (pytest's tmp_path
    # is private to root).
    base = Path(tempfile.mkdtemp(prefix="egenmon-fault-pg-"))
    os.chmod(base, 0o755)  # noqa: S103
    c = Cluster(base / "pg", fsync=False, extra_conf={"timescaledb.max_background_workers": "0"})
    c.start()
    with psycopg.connect(c.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE egenmon")
    with psycopg.connect(c.url("egenmon")) as conn:
        migrate(conn)
    yield c
    c.destroy()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def database_url(cluster: Cluster) -> str:
    """The throwaway cluster's database (overrides the suite's)."""
    return cluster.url("egenmon")


def backlog(text: str) -> float:
    for line in text.splitlines():
        if line.startswith("egenmon_mqtt_backlog "):
            return float(line.split()[1])
    raise AssertionError("no egenmon_mqtt_backlog in /metrics")


def test_a_database_outage_mid_stream_holds_messages_back_and_loses_nothing(
    broker, device, consumers, cluster, database_url
):
    consumer = consumers(http=True)
    assert consumer.get("/readyz")[0] == 200
    stream = Stream(broker, device, N, per_s=600).start()
    wait_until(
        lambda: (try_stored(database_url, device["id"]) or 0) >= N // 4,
        30,
        "a quarter of the stream stored",
    )
    cluster.stop("fast")
    # Down: not ready, and the messages in hand stay unacknowledged (the rest wait in the
    # broker, held back by Receive Maximum).
    wait_until(lambda: consumer.get("/readyz")[0] == 503, 15, "/readyz to say 503")
    status, body = consumer.get("/readyz")
    assert status == 503 and "database" in body
    # The whole stream reaches the broker meanwhile; the consumer holds at most INFLIGHT
    # of it, unacknowledged, and the broker keeps the rest.
    stream.finish()
    wait_until(
        lambda: backlog(consumer.get("/metrics")[1]) == INFLIGHT,
        15,
        "the consumer to hold as many messages as Receive Maximum allows",
    )
    cluster.start()
    wait_until(
        lambda: (try_stored(database_url, device["id"]) or 0) >= N,
        45,
        "every reading stored",
        interval=0.2,
    )
    assert stored(database_url, device["id"]) == (N, N)
    assert quarantined(database_url) == []
    wait_until(lambda: consumer.get("/readyz")[0] == 200, 15, "/readyz to say 200 again")
    wait_until(lambda: backlog(consumer.get("/metrics")[1]) == 0, 15, "the backlog to drain")
    stream.close()
