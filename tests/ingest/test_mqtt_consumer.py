"""The consumer's flow control and acknowledgement rules, with a stand-in pipeline.

The broker is a real Mosquitto of this test's own (a shared subscription's members would
otherwise outlive the test); only the pipeline, which has its own tests, is a fake here.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

import pytest

from egenmon.dev.mosquitto import Mosquitto
from egenmon.dev.simulate_mqtt import DevicePublisher
from egenmon.devices.dynsec import DynsecClient
from egenmon.ingest.mqtt import MqttConsumer, device_from_topic, result_payload
from egenmon.ingest.mqtt_loop import ClientIdLock
from egenmon.ingest.writer import WriteError
from egenmon.settings import MqttUrl, load_settings

PREFIX = "egenmon/v1"


@pytest.fixture
def broker(own_broker: Mosquitto) -> Mosquitto:
    """A Mosquitto of this test's own (overrides the suite's)."""
    return own_broker


@pytest.fixture
def device(broker: Mosquitto) -> tuple[str, str]:
    device_id, secret = f"dev-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    with DynsecClient(MqttUrl(broker.mqtt_url)) as dyn:
        dyn.add_device(device_id, secret, PREFIX)
    return device_id, secret


@dataclass
class Result:
    status: int = 200
    accepted: int = 1
    duplicates: int = 0
    rejected: list = field(default_factory=list)
    error: str | None = None
    message_id: str | None = None

    def body(self) -> dict:
        return {"accepted": self.accepted, "duplicates": self.duplicates, "rejected": self.rejected}


class FakePipeline:
    """Counts calls; can hold them at a gate or fail the first `failures` of them."""

    def __init__(self, failures: int = 0, always_fail: bool = False) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls: list[bytes] = []
        self.batches: list[int] = []  # messages per pipeline call
        self.committed: list[bytes] = []
        self.active = 0
        self.peak = 0
        self.failures = failures
        self.always_fail = always_fail

    async def ingest_many(
        self, messages: list[tuple[bytes, str, str]], *, source: str
    ) -> list[Result | Exception]:
        bodies = []
        for body, device_id, topic in messages:
            assert source == "mqtt" and topic == f"{PREFIX}/devices/{device_id}/readings"
            bodies.append(body)
        self.calls.extend(bodies)
        self.batches.append(len(bodies))
        self.active += len(bodies)
        self.peak = max(self.peak, self.active)
        try:
            await self.gate.wait()
            if self.always_fail or self.failures > 0:
                self.failures -= 1
                raise WriteError("database down")
            return [self.commit(body) for body in bodies]
        finally:
            self.active -= len(bodies)

    def commit(self, body: bytes) -> Result | Exception:
        self.committed.append(body)
        return Result(message_id=body.decode())

    async def quarantine(self, **kw: object) -> None:
        raise AssertionError("nothing here should be quarantined")


def consumer(
    broker: Mosquitto, pipeline: FakePipeline, client_id: str, inflight: int = 100
) -> MqttConsumer:
    settings = load_settings(mqtt_url=broker.mqtt_url, environment="test")
    return MqttConsumer(settings, pipeline, inflight=inflight, client_id=client_id)


async def until(predicate, limit: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def nothing_left(broker: Mosquitto, client_id: str) -> None:
    """The session of `client_id` holds no message: a consumer taking it over gets none."""
    again = FakePipeline()
    c = consumer(broker, again, client_id)
    await c.start()
    await until(c.is_connected)
    await asyncio.sleep(0.5)
    assert again.calls == []
    await c.stop()


async def publish(
    broker: Mosquitto, device: tuple[str, str], payloads: list[bytes], results: bool = False
) -> DevicePublisher:
    pub = DevicePublisher("127.0.0.1", broker.port, *device, results=results)
    await asyncio.to_thread(pub.connect)
    for p in payloads:
        pub.publish(p)
    assert await asyncio.to_thread(pub.wait_published, 10)
    return pub


def test_device_from_topic_takes_the_id_from_a_readings_topic_only():
    assert device_from_topic("egenmon/v1/devices/omron-1/readings", PREFIX) == "omron-1"
    assert device_from_topic("egenmon/v1/devices/omron-1/results", PREFIX) is None
    assert device_from_topic("egenmon/v1/devices//readings", PREFIX) is None
    assert device_from_topic("egenmon/v1/devices/a/b/readings", PREFIX) is None
    assert device_from_topic("other/v1/devices/omron-1/readings", PREFIX) is None


def test_result_payload_is_the_http_body_plus_the_message_id():
    r = Result(accepted=2, duplicates=1, rejected=[{"index": 2, "error": "x"}], message_id="m-1")
    assert result_payload(r) == (
        b'{"accepted":2,"duplicates":1,"rejected":[{"index":2,"error":"x"}],"message_id":"m-1"}'
    )


def test_a_waiting_pipeline_holds_messages_back_in_the_broker(broker, device):
    async def run() -> None:
        pipeline = FakePipeline()
        pipeline.gate.clear()
        c = consumer(broker, pipeline, "c-flow", inflight=5)
        await c.start()
        await until(c.is_connected)
        pub = await publish(broker, device, [str(i).encode() for i in range(40)])
        await until(lambda: len(pipeline.calls) == 5)
        await asyncio.sleep(0.5)  # give the broker every chance to overrun the bound
        assert len(pipeline.calls) == 5 and c.received == 5 and pipeline.peak == 5
        pipeline.gate.set()
        await until(lambda: len(pipeline.committed) == 40)
        assert sorted(int(b) for b in pipeline.committed) == list(range(40))
        assert pipeline.peak <= 5
        await until(lambda: c.acknowledged == 40)
        await c.stop()
        pub.close()

    asyncio.run(run())


def test_a_failed_write_is_retried_and_acknowledged_only_after_commit(broker, device):
    async def run() -> None:
        pipeline = FakePipeline(failures=3)
        c = consumer(broker, pipeline, "c-retry")
        await c.start()
        await until(c.is_connected)
        pub = await publish(broker, device, [b"only"], results=True)
        await until(lambda: len(pipeline.committed) == 1)
        assert len(pipeline.calls) == 4
        await until(lambda: len(pub.results) == 1)
        assert pub.results == [
            {"accepted": 1, "duplicates": 0, "rejected": [], "message_id": "only"}
        ]
        await until(lambda: c.acknowledged == 1)
        await c.stop()
        # The same session again: the broker has nothing left to hand over.
        await nothing_left(broker, "c-retry")
        pub.close()

    asyncio.run(run())


def test_a_message_not_committed_when_the_consumer_stops_is_handed_over_again(broker, device):
    async def run() -> None:
        down = FakePipeline(always_fail=True)
        c = consumer(broker, down, "c-redeliver")
        await c.start()
        await until(c.is_connected)
        pub = await publish(broker, device, [b"a", b"b", b"c"])
        await until(lambda: len(down.calls) >= 3)
        await c.stop()
        assert c.acknowledged == 0
        up = FakePipeline()
        c2 = consumer(broker, up, "c-redeliver")
        await c2.start()
        await until(lambda: len(up.committed) == 3)
        assert sorted(up.committed) == [b"a", b"b", b"c"]
        await until(lambda: c2.acknowledged == 3)
        await c2.stop()
        pub.close()

    asyncio.run(run())


def test_two_consumers_share_the_subscription(broker, device):
    async def run() -> None:
        p1, p2 = FakePipeline(), FakePipeline()
        c1, c2 = consumer(broker, p1, "c-share-1"), consumer(broker, p2, "c-share-2")
        await c1.start()
        await c2.start()
        await until(lambda: c1.is_connected() and c2.is_connected())
        pub = await publish(broker, device, [str(i).encode() for i in range(20)])
        await until(lambda: len(p1.committed) + len(p2.committed) == 20)
        assert p1.committed and p2.committed
        assert sorted(int(b) for b in p1.committed + p2.committed) == list(range(20))
        await c1.stop()
        await c2.stop()
        pub.close()

    asyncio.run(run())


def test_derived_client_ids_are_stable_slots_per_host_and_broker(broker):
    settings = load_settings(mqtt_url=broker.mqtt_url, environment="test")
    a, b = ClientIdLock(settings), ClientIdLock(settings)
    first, second = a.acquire(), b.acquire()
    assert first.startswith("egenmon-consumer-") and first.endswith("-0")
    assert second.endswith("-1")
    a.release()
    c = ClientIdLock(settings)
    assert c.acquire() == first  # a restarted consumer resumes the same session
    b.release()
    c.release()


def test_a_configured_client_id_outside_the_platforms_prefix_is_warned_about(broker, caplog):
    # Only ids starting with "egenmon" are kept from devices (issue 12, finding 1).
    for configured, warned in (("consumer-1", True), ("egenmon-eu-1", False)):
        caplog.clear()
        settings = load_settings(
            mqtt_url=broker.mqtt_url, environment="test", mqtt_client_id=configured
        )
        lock = ClientIdLock(settings)
        assert lock.acquire() == configured
        lock.release()
        assert ("could take the consumer's client id" in caplog.text) is warned


def test_read_ahead_socket_hands_out_small_pieces_of_one_large_read():
    import socket

    from egenmon.ingest.mqtt_loop import ReadAheadSocket

    a, b = socket.socketpair()
    try:
        b.setblocking(False)
        sock = ReadAheadSocket(b)
        a.sendall(b"\x30\x05hello\x40\x02\x00\x01")
        # paho's way: one byte of header, then the rest in pieces.
        assert sock.recv(1) == b"\x30"
        assert sock.pending() == 10
        assert sock.recv(1) == b"\x05"
        assert sock.recv(5) == b"hello"
        assert sock.recv(1) == b"\x40" and sock.recv(3) == b"\x02\x00\x01"
        assert sock.pending() == 0
        with pytest.raises(BlockingIOError):
            sock.recv(1)  # nothing buffered, nothing on the socket
        a.close()
        assert sock.recv(1) == b""  # the peer closed
        assert sock.fileno() == b.fileno()
    finally:
        b.close()


class BuggyPipeline(FakePipeline):
    """Fails with a bug (not an outage) on every message; keeps what is quarantined."""

    def __init__(self) -> None:
        super().__init__()
        self.quarantined: list[dict] = []

    async def ingest_many(self, messages: list, *, source: str) -> list:
        self.batches.append(len(messages))
        raise ValueError("a bug")

    async def quarantine(self, **kw: object) -> None:
        self.quarantined.append(kw)


def test_a_message_the_pipeline_fails_on_is_quarantined_and_acknowledged(broker, device, caplog):
    async def run() -> None:
        buggy = BuggyPipeline()
        c = consumer(broker, buggy, "c-bug")
        await c.start()
        await until(c.is_connected)
        pub = await publish(broker, device, [b"poison", b"poison 2", b"poison 3"])
        await until(lambda: c.acknowledged == 3)
        assert [e["raw"] for e in buggy.quarantined] == [b"poison", b"poison 2", b"poison 3"]
        for entry in buggy.quarantined:
            assert entry["reason"] == "internal error: ValueError"
            assert entry["device_id"] == device[0] and entry["source"] == "mqtt"
        # A batch failed as a whole is tried again message by message (one message can
        # make the store refuse a batch); one error in the log for each message that
        # failed alone, none for the batch.
        logged = [r for r in caplog.records if r.getMessage().startswith("ingest raised")]
        assert len(logged) == buggy.batches.count(1) >= 1
        assert sum(buggy.batches) == 3 + sum(n for n in buggy.batches if n > 1)
        await c.stop()
        # Acknowledged, so it does not come back to loop again.
        await nothing_left(broker, "c-bug")
        pub.close()

    asyncio.run(run())


class OneBadMessage(FakePipeline):
    """Stores every message but `poison`, for which it hands back the exception it raised."""

    def __init__(self) -> None:
        super().__init__()
        self.quarantined: list[dict] = []

    def commit(self, body: bytes) -> Result | Exception:
        if body == b"poison":
            return KeyError("a bug for this message only")
        return super().commit(body)

    async def quarantine(self, **kw: object) -> None:
        self.quarantined.append(kw)


def test_a_bug_in_one_message_of_a_batch_quarantines_that_one_and_stores_the_rest(broker, device):
    async def run() -> None:
        pipeline = OneBadMessage()
        pipeline.gate.clear()  # held until all three are in (one batch or more)
        c = consumer(broker, pipeline, "c-batch-bug")
        await c.start()
        await until(c.is_connected)
        pub = await publish(broker, device, [b"1", b"poison", b"2"])
        await until(lambda: len(pipeline.calls) == 3)
        pipeline.gate.set()
        await until(lambda: c.acknowledged == 3)
        assert sorted(pipeline.committed) == [b"1", b"2"]
        [entry] = pipeline.quarantined
        assert entry["raw"] == b"poison" and entry["reason"] == "internal error: KeyError"
        await c.stop()
        pub.close()

    asyncio.run(run())


def test_messages_that_arrive_together_go_to_the_pipeline_in_batches(broker, device):
    async def run() -> None:
        # Queued in the consumer's session while it is away, so they arrive in a stream.
        first = FakePipeline()
        c = consumer(broker, first, "c-batches", inflight=1000)
        await c.start()
        await until(c.is_connected)
        await c.stop()
        pub = await publish(broker, device, [str(i).encode() for i in range(300)])
        pipeline = FakePipeline()
        c = consumer(broker, pipeline, "c-batches", inflight=1000)
        await c.start()
        await until(lambda: c.acknowledged == 300)
        assert sorted(int(b) for b in pipeline.committed) == list(range(300))
        assert len(pipeline.batches) <= 30, pipeline.batches  # 10 or more a batch on average
        assert max(pipeline.batches) <= 500
        # A message on its own is not held back for long.
        await publish(broker, device, [b"300"])
        await until(lambda: c.acknowledged == 301, limit=2.0)
        await c.stop()
        pub.close()

    asyncio.run(run())
