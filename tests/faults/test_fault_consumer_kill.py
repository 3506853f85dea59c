"""Fault 1: the consumer process is killed (SIGKILL) mid-stream and started again."""

from faultkit import Stream, quarantined, stored, try_stored, wait_until

N = 1500


def test_a_consumer_killed_mid_stream_loses_nothing_and_stores_nothing_twice(
    broker, device, consumers, database_url
):
    first = consumers()
    stream = Stream(broker, device, N, per_s=600).start()
    wait_until(
        lambda: (try_stored(database_url, device["id"]) or 0) >= N // 4,
        30,
        "a quarter of the stream stored",
    )
    first.kill9()
    at_kill = stored(database_url, device["id"])[0]
    assert at_kill < N, "the kill must land mid-stream"
    second = consumers()
    stream.finish()
    wait_until(
        lambda: stored(database_url, device["id"])[0] >= N, 40, "every reading stored", interval=0.2
    )
    assert stored(database_url, device["id"]) == (N, N)
    assert quarantined(database_url) == []
    second.stop()
    received, acknowledged = second.counts()
    assert received == acknowledged
    stream.close()
