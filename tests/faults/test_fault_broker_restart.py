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


def test_readyz_reports_a_frozen_broker_within_seconds_and_recovers(broker, consumers):
    """A frozen broker keeps its TCP connections open, so keepalive notices it only after
    30 s or more; /readyz asks the broker (a PINGREQ on the results connection) instead."""
    import json
    import signal

    consumer = consumers(http=True)
    wait_until(lambda: consumer.get("/readyz")[0] == 200, 15, "/readyz 200")
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGSTOP)
    try:
        # Well inside the keepalive (30 s) that would notice it otherwise.
        wait_until(lambda: consumer.get("/readyz")[0] == 503, 10, "/readyz to say 503")
        status, body = consumer.get("/readyz")
        assert status == 503 and json.loads(body)["down"] == ["broker"], body
    finally:
        broker.proc.send_signal(signal.SIGCONT)
    wait_until(lambda: consumer.get("/readyz")[0] == 200, 15, "/readyz 200 again")
