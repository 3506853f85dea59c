"""Fault 2: Mosquitto restarts mid-stream (persistence on)."""

from faultkit import Stream, quarantined, stored, try_stored, wait_until

N = 1500


def test_a_broker_restart_mid_stream_loses_nothing_and_stores_nothing_twice(
    broker, device, consumers, database_url
):
    consumer = consumers()
    stream = Stream(broker, device, N, per_s=600).start()
    wait_until(
        lambda: (try_stored(database_url, device["id"]) or 0) >= N // 4,
        30,
        "a quarter of the stream stored",
    )
    broker.restart()
    assert stored(database_url, device["id"])[0] < N, "the restart must land mid-stream"
    stream.finish()
    wait_until(
        lambda: stored(database_url, device["id"])[0] >= N, 40, "every reading stored", interval=0.2
    )
    assert stored(database_url, device["id"]) == (N, N)
    assert quarantined(database_url) == []
    assert "disconnected" in consumer.text()  # it did lose the broker, and came back
    stream.close()
