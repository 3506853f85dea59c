"""Fault 4: two consumer processes on the shared subscription."""

from faultkit import Stream, quarantined, stored, wait_until

N = 1500


def test_two_consumers_split_the_stream_and_store_each_reading_once(
    broker, device, consumers, database_url
):
    first, second = consumers(), consumers()
    stream = Stream(broker, device, N, per_s=1000).start()
    stream.finish()
    wait_until(
        lambda: stored(database_url, device["id"])[0] >= N, 40, "every reading stored", interval=0.2
    )
    first.stop()
    second.stop()
    (r1, a1), (r2, a2) = first.counts(), second.counts()
    assert r1 > 0 and r2 > 0, "both consumers must take part"
    assert (r1, r2) == (a1, a2)
    assert r1 + r2 == N  # each message went to one of them, once
    assert stored(database_url, device["id"]) == (N, N)
    assert quarantined(database_url) == []
    stream.close()
