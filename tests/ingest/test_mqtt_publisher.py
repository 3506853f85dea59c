"""ResultsPublisher against a real Mosquitto, and its packets checked against the spec.

The platform account may publish results but not subscribe to them, so what arrives is
watched by an observer account of the test's own (dynamic security), allowed to
subscribe to results topics, through a plain paho client. Tests that stop, freeze or
reconfigure the broker use a Mosquitto of their own; the others share the suite's.
"""

from __future__ import annotations

import asyncio
import logging
import mmap
import os
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from egenmon.dev.mosquitto import Mosquitto
from egenmon.devices.dynsec import DynsecClient
from egenmon.ingest.mqtt_publisher import (
    MAX_REMAINING_LENGTH,
    MqttProtocolError,
    PacketReader,
    ResultsPublisher,
    connect_packet,
    decode_remaining_length,
    encode_remaining_length,
    publish_packet,
)
from egenmon.settings import MqttUrl

PREFIX = "egenmon/v1"
pytestmark = pytest.mark.timeout(60)


def results_topic(device_id: str) -> str:
    return f"{PREFIX}/devices/{device_id}/results"


def new_device_id() -> str:
    return f"pubtest-{uuid.uuid4().hex[:10]}"


def add_observer(broker: Mosquitto) -> tuple[str, str]:
    """An account that may subscribe to every device's results: (user name, password)."""
    name, password = f"observer-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    topic = results_topic("+")
    with DynsecClient(MqttUrl(broker.mqtt_url)) as dyn:
        acls = [
            {"acltype": "subscribePattern", "topic": topic, "allow": True},
            {"acltype": "publishClientReceive", "topic": topic, "allow": True},
        ]
        dyn.run({"command": "createRole", "rolename": name, "acls": acls})
        dyn.run(
            {
                "command": "createClient",
                "username": name,
                "password": password,
                "roles": [{"rolename": name}],
            }
        )
    return name, password


class Observer:
    """A paho subscriber (QoS 1) that collects (topic, payload) in its own thread and
    reconnects by itself; with persistent=True its session outlives broker restarts."""

    def __init__(
        self,
        broker: Mosquitto,
        account: tuple[str, str],
        topics: list[str],
        persistent: bool = False,
    ) -> None:
        self.received: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"observer-{uuid.uuid4().hex[:10]}",
            protocol=mqtt.MQTTv311,
            clean_session=not persistent,
        )
        c.username_pw_set(*account)
        c.reconnect_delay_set(0.1, 0.5)

        def on_connect(client, userdata, flags, reason, properties) -> None:
            client.subscribe([(t, 1) for t in topics])

        def on_subscribe(client, userdata, mid, reasons, properties) -> None:
            if all(r.value == 1 for r in reasons):
                self._subscribed.set()

        def on_message(client, userdata, msg) -> None:
            with self._lock:
                self.received.append((msg.topic, msg.payload))

        c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
        c.connect("127.0.0.1", broker.port, keepalive=30)
        c.loop_start()
        self.client = c
        assert self._subscribed.wait(5), "observer not subscribed"

    def messages(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.received)

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run(test: Callable[[], Awaitable[None]], loop_factory: Callable | None = None) -> None:
    """asyncio.run(test()), failing on anything the loop reports (a task's lost exception);
    on the loop loop_factory makes (uvloop's, as `egenmon serve` runs) if given."""
    reported: list[dict] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
        await test()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())
    assert reported == []


async def until(predicate: Callable[[], object], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {limit} s waiting for {what}"
        await asyncio.sleep(0.01)


def wait_for(predicate: Callable[[], object], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {limit} s waiting for {what}"
        time.sleep(0.01)


def publisher(broker: Mosquitto, keepalive: int = 30, max_queued: int = 20_000) -> ResultsPublisher:
    client_id = f"results-{uuid.uuid4().hex[:10]}"
    return ResultsPublisher(
        MqttUrl(broker.mqtt_url), client_id, keepalive=keepalive, max_queued=max_queued
    )


def logged_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "egenmon.mqtt" and r.levelno >= logging.WARNING
    ]


@pytest.fixture(scope="module")
def observer_account(broker: Mosquitto) -> tuple[str, str]:
    return add_observer(broker)


@pytest.fixture
def big_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test's own that takes packets beyond egenmon's 2 MiB limit."""
    m = Mosquitto(tmp_path / "mqtt")
    conf = m.configure().conf
    text = conf.read_text()
    assert "max_packet_size 2097152" in text
    conf.write_text(text.replace("max_packet_size 2097152", "max_packet_size 3000000"))
    m.start()
    yield m
    m.stop()


# -- packets, by the MQTT 3.1.1 specification -------------------------------------------


@pytest.mark.parametrize(
    ("length", "size"),
    [(0, 1), (1, 1), (127, 1), (128, 2), (16383, 2), (16384, 3), (2097151, 3), (2097152, 4)]
    + [(MAX_REMAINING_LENGTH, 4)],
)
def test_remaining_length_round_trips_in_as_many_bytes_as_the_spec_says(
    length: int, size: int
) -> None:
    encoded = encode_remaining_length(length)
    assert len(encoded) == size
    assert decode_remaining_length(b"\x40" + encoded + b"rest", 1) == (length, 1 + size)
    assert decode_remaining_length(b"\x40" + encoded[:-1], 1) is None  # not all there yet


def test_remaining_length_matches_the_spec_example_and_refuses_what_it_cannot_encode() -> None:
    assert encode_remaining_length(321) == b"\xc1\x02"  # the spec's example
    assert encode_remaining_length(MAX_REMAINING_LENGTH) == b"\xff\xff\xff\x7f"
    with pytest.raises(ValueError):
        encode_remaining_length(MAX_REMAINING_LENGTH + 1)
    with pytest.raises(MqttProtocolError):
        decode_remaining_length(b"\xff\xff\xff\xff\x01", 0)


def test_publish_packet_is_the_hand_computed_bytes() -> None:
    # QoS 1 PUBLISH: 0x32, remaining length 2+3 (topic) + 2 (packet id) + 2 (payload) = 9.
    expected = b"\x32\x09" + b"\x00\x03a/b" + b"\x01\x02" + b"hi"
    assert publish_packet(b"a/b", b"hi", 0x0102) == expected
    assert publish_packet(b"a/b", b"hi", 0x0102, dup=True) == b"\x3a" + expected[1:]
    assert publish_packet(b"t", b"", 65535) == b"\x32\x05\x00\x01t\xff\xff"


def test_connect_packet_is_the_hand_computed_bytes() -> None:
    # Protocol name "MQTT", level 4, flags user name + password + clean session, keepalive
    # 30, then client id, user name and password, each with a two-byte length.
    variable = b"\x00\x04MQTT\x04\xc2\x00\x1e"
    payload = b"\x00\x01c" + b"\x00\x01u" + b"\x00\x01p"
    assert connect_packet("c", 30, "u", "p") == b"\x10\x13" + variable + payload
    assert connect_packet("c", 0) == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x00\x00\x01c"


def test_reader_finds_the_same_packets_however_the_stream_is_split() -> None:
    long_body = bytes(range(200))  # a two-byte remaining length
    expected = [
        (0x20, b"\x00\x00"),  # CONNACK
        (0x40, b"\x00\x01"),  # PUBACK 1
        (0xD0, b""),  # PINGRESP
        (0x40, b"\x01\x2c"),  # PUBACK 300
        (0x30, long_body),
        (0x40, b"\xff\xff"),
    ]
    stream = b"".join(bytes([first]) + encode_remaining_length(len(b)) + b for first, b in expected)
    for cut in range(len(stream) + 1):
        reader = PacketReader()
        assert reader.feed(stream[:cut]) + reader.feed(stream[cut:]) == expected, cut
    reader = PacketReader()
    assert [p for i in range(len(stream)) for p in reader.feed(stream[i : i + 1])] == expected


def test_reader_refuses_malformed_or_overlong_packets() -> None:
    with pytest.raises(MqttProtocolError):
        PacketReader().feed(b"\x40\x80\x80\x80\x80\x01")
    reader = PacketReader(max_length=2)
    assert reader.feed(b"\x40\x02\x00\x01") == [(0x40, b"\x00\x01")]
    with pytest.raises(MqttProtocolError):
        reader.feed(b"\x30\x03")  # refused from the header, before its body is buffered


@pytest.mark.parametrize("topic", ["", "+", "#", "a/+/b", "a/#", "a\0b", "x" * 65536])
def test_publish_refuses_a_topic_that_is_not_a_valid_topic_name(topic: str) -> None:
    pub = ResultsPublisher(MqttUrl("mqtt://u:p@127.0.0.1:1"), "c")
    with pytest.raises(ValueError):
        pub.publish(topic, b"x")
    assert pub.published == pub.dropped == pub.in_flight == 0


def test_publish_refuses_a_payload_beyond_the_mqtt_maximum() -> None:
    pub = ResultsPublisher(MqttUrl("mqtt://u:p@127.0.0.1:1"), "c")
    topic = results_topic("d")
    largest = MAX_REMAINING_LENGTH - 4 - len(topic)
    # Anonymous memory the kernel only provides when touched: a length, not 256 MB.
    with mmap.mmap(-1, largest + 1) as too_large, pytest.raises(ValueError):
        pub.publish(topic, too_large)  # type: ignore[arg-type]
    assert pub.in_flight == 0


def test_packet_ids_wrap_after_65535_and_skip_ids_still_held() -> None:
    pub = ResultsPublisher(MqttUrl("mqtt://u:p@127.0.0.1:1"), "c")
    for _ in range(3):
        assert pub.publish(results_topic("d"), b"x")
    pub._next_id = 65534  # as if 65534 messages had gone before
    for _ in range(2):
        assert pub.publish(results_topic("d"), b"x")
    assert list(pub._waiting) == [1, 2, 3, 65535, 4]


# -- against a scripted stand-in, for what Mosquitto will not do on demand -------------


async def scripted_broker(
    answer: Callable[[int, int, bytes], bytes | None],
) -> tuple[asyncio.Server, int, list[list[tuple[int, bytes]]]]:
    """A local server that records each connection's packets and writes what
    answer(connection number, first byte, body) returns; None closes the connection."""
    connections: list[list[tuple[int, bytes]]] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        packets: list[tuple[int, bytes]] = []
        connections.append(packets)
        number, parser = len(connections), PacketReader()
        while data := await reader.read(65536):
            for first, body in parser.feed(data):
                packets.append((first, body))
                reply = answer(number, first, body)
                if reply is None:
                    writer.close()
                    return
                writer.write(reply)
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], connections


def puback(body: bytes) -> bytes:
    """The PUBACK for a PUBLISH body: its packet id follows the topic."""
    topic_length = int.from_bytes(body[:2], "big")
    return b"\x40\x02" + body[2 + topic_length : 4 + topic_length]


def test_after_a_reconnect_unacknowledged_messages_go_first_with_dup_set() -> None:
    def answer(connection: int, first: int, body: bytes) -> bytes | None:
        if first == 0x10:
            return b"\x20\x02\x00\x00"  # CONNACK, accepted
        if connection == 1:  # takes three messages without acknowledging, then fails
            return b"" if body.endswith(b"a") or body.endswith(b"b") else None
        return puback(body)

    async def test() -> None:
        server, port, connections = await scripted_broker(answer)
        pub = ResultsPublisher(MqttUrl(f"mqtt://u:p@127.0.0.1:{port}"), "c")
        pub.start()
        await until(lambda: pub.connected, 5, "CONNACK")
        for payload in (b"a", b"b", b"c"):
            pub.publish("t", payload)
        await until(lambda: not pub.connected, 5, "the connection dropped")
        for payload in (b"d", b"e"):
            pub.publish("t", payload)
        await until(lambda: pub.acknowledged == 5, 5, "every PUBACK on the next connection")
        await pub.stop()
        server.close()
        publishes = [(first, body[3:5], body[5:]) for first, body in connections[1][1:-1]]
        assert publishes == [
            (0x3A, b"\x00\x01", b"a"),
            (0x3A, b"\x00\x02", b"b"),
            (0x3A, b"\x00\x03", b"c"),
            (0x32, b"\x00\x04", b"d"),
            (0x32, b"\x00\x05", b"e"),
        ]
        assert connections[1][-1] == (0xE0, b"")  # DISCONNECT

    run(test)


@pytest.mark.parametrize(
    "bad",
    [
        b"\x50\x02\x00\x01",  # PUBREC: QoS 2, never asked for
        b"\x40\x03\x00\x01\x00",  # PUBACK of the wrong length
        b"\x20\x02\x00\x00",  # a second CONNACK
        b"\x40\xff\xff\xff\xff\x01",  # a remaining length of five bytes
    ],
    ids=["pubrec", "puback-length", "second-connack", "five-byte-length"],
)
def test_an_unexpected_or_malformed_packet_drops_the_connection_and_it_reconnects(
    bad: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    def answer(connection: int, first: int, body: bytes) -> bytes | None:
        if first == 0x10:
            return b"\x20\x02\x00\x00" + (bad if connection == 1 else b"")
        return puback(body) if first == 0x32 else b""

    async def test() -> None:
        server, port, connections = await scripted_broker(answer)
        pub = ResultsPublisher(MqttUrl(f"mqtt://u:p@127.0.0.1:{port}"), "c")
        pub.start()
        await until(lambda: len(connections) == 2 and pub.connected, 5, "a second connection")
        assert pub.publish("t", b"x")
        await until(lambda: pub.acknowledged == 1, 5, "PUBACK")
        await pub.stop()
        server.close()

    run(test)
    assert "dropping the connection" in caplog.text


# -- against the broker -----------------------------------------------------------------


def test_5000_messages_to_several_topics_arrive_byte_identical_and_in_order(
    broker: Mosquitto, observer_account: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    topics = [results_topic(new_device_id()) for _ in range(5)]
    sent = [(topics[i % 5], f"{i}:".encode() + os.urandom(i % 300)) for i in range(5000)]
    observer = Observer(broker, observer_account, topics)

    async def test() -> None:
        pub = publisher(broker)
        pub.start()
        await until(lambda: pub.connected, 5, "CONNACK")
        for start in range(0, len(sent), 500):
            assert all([pub.publish(t, p) for t, p in sent[start : start + 500]])
            await asyncio.sleep(0)
        await until(lambda: pub.acknowledged == 5000, 10, "5000 PUBACKs")
        assert (pub.published, pub.in_flight, pub.dropped) == (5000, 0, 0)
        await pub.stop()

    try:
        run(test)
        wait_for(lambda: observer.count() >= 5000, 10, "5000 messages at the observer")
        got = observer.messages()
    finally:
        observer.close()
    for t in topics:  # one connection, no reconnect: each exactly once, in order
        assert [p for topic, p in got if topic == t] == [p for topic, p in sent if topic == t]
    assert not any(t.split("/")[3] in caplog.text for t in topics)  # no device ids logged


def test_on_uvloop_as_serve_runs_it_every_message_is_published_and_acknowledged(
    broker: Mosquitto, observer_account: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    # uvloop's transport is not an asyncio.Transport: the publisher must not care.
    import uvloop

    topic = results_topic(new_device_id())
    observer = Observer(broker, observer_account, [topic])
    loops: list[str] = []

    async def test() -> None:
        loops.append(type(asyncio.get_running_loop()).__module__)
        pub = publisher(broker)
        pub.start()
        await until(lambda: pub.connected, 5, "CONNACK")
        assert all(pub.publish(topic, f"{i}".encode()) for i in range(200))
        await until(lambda: pub.acknowledged == 200, 10, "200 PUBACKs")
        await pub.stop()

    try:
        run(test, loop_factory=uvloop.new_event_loop)
        wait_for(lambda: observer.count() >= 200, 10, "200 messages at the observer")
        got = observer.messages()
    finally:
        observer.close()
    assert loops[0].startswith("uvloop")
    assert [p for _, p in got] == [f"{i}".encode() for i in range(200)]
    assert "Traceback" not in caplog.text and "stopped by a bug" not in caplog.text


def test_publishes_of_one_loop_iteration_go_out_in_one_write(
    broker: Mosquitto, observer_account: tuple[str, str]
) -> None:
    async def test() -> None:
        pub = publisher(broker)
        pub.start()
        await until(lambda: pub.connected, 5, "CONNACK")
        transport = pub._conn.transport  # type: ignore[union-attr]
        writes: list[int] = []
        write = transport.write

        def counting_write(data: bytes) -> None:
            writes.append(len(data))
            write(data)

        transport.write = counting_write  # type: ignore[method-assign]
        topic = results_topic(new_device_id())
        for i in range(1000):
            pub.publish(topic, b"%d" % i)
        assert writes == []  # nothing written before the loop runs again
        await asyncio.sleep(0)
        assert len(writes) == 1 and writes[0] > 1000 * 4
        await until(lambda: pub.acknowledged == 1000, 5, "1000 PUBACKs")
        await pub.stop()

    run(test)


def test_payloads_around_the_remaining_length_boundaries_arrive_intact(
    big_broker: Mosquitto,
) -> None:
    topic = results_topic(new_device_id())
    header = 2 + len(topic) + 2  # topic length, topic, packet id
    edges = [127, 128, 16383, 16384, 2097151, 2097152]
    sizes = [0, 1, *(e - header for e in edges), 128, 16383, 16384, 2_097_152]
    assert {len(encode_remaining_length(header + s)) for s in sizes} == {1, 2, 3, 4}
    payloads = [os.urandom(s) for s in sizes]
    observer = Observer(big_broker, add_observer(big_broker), [topic])

    async def test() -> None:
        pub = publisher(big_broker)
        pub.start()
        await until(lambda: pub.connected, 5, "CONNACK")
        for p in payloads:
            assert pub.publish(topic, p)
        await until(lambda: pub.acknowledged == len(payloads), 10, "PUBACKs")
        await pub.stop()

    try:
        run(test)
        wait_for(lambda: observer.count() >= len(payloads), 10, "every payload")
        assert [p for _, p in observer.messages()] == payloads
    finally:
        observer.close()


def test_publisher_reconnects_after_a_broker_restart_and_nothing_is_lost(
    own_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    device = new_device_id()
    topic = results_topic(device)
    # A persistent session: what is queued for the observer survives the restart.
    observer = Observer(own_broker, add_observer(own_broker), [topic], persistent=True)
    sent: list[bytes] = []

    async def test() -> None:
        pub = publisher(own_broker)
        pub.start()
        await until(lambda: pub.connected, 5, "CONNACK")

        async def stream(until_: Callable[[], bool]) -> None:
            while not until_():
                payload = b"m-%d" % len(sent)
                assert pub.publish(topic, payload)
                sent.append(payload)
                await asyncio.sleep(0.001)

        await stream(lambda: len(sent) >= 200)
        # Frozen, the broker leaves what is sent now unacknowledged; then it stops while
        # messages keep coming.
        assert own_broker.proc is not None
        own_broker.proc.send_signal(signal.SIGSTOP)
        await stream(lambda: len(sent) >= 300)
        assert pub.in_flight >= 50  # so they must go again after the restart
        own_broker.proc.send_signal(signal.SIGTERM)
        own_broker.proc.send_signal(signal.SIGCONT)
        stopping = asyncio.create_task(asyncio.to_thread(own_broker.stop))
        await stream(stopping.done)
        assert not pub.connected
        await stream(lambda: len(sent) >= 600)  # and while it is away
        starting = asyncio.create_task(asyncio.to_thread(own_broker.start))
        await stream(lambda: starting.done() and pub.connected)
        await stream(lambda: len(sent) >= 1000)
        await until(lambda: pub.acknowledged == len(sent), 10, "every PUBACK")
        assert pub.in_flight == 0
        await pub.stop()

    try:
        run(test)
        wait_for(lambda: set(sent) <= {p for _, p in observer.messages()}, 10, "every message")
    finally:
        observer.close()
    # One warning for the outage, however many attempts it took, and no device id.
    assert len(logged_warnings(caplog)) == 1, logged_warnings(caplog)
    assert device not in caplog.text


def test_wrong_password_keeps_queueing_without_connecting_and_stops_promptly(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    url = MqttUrl(broker.mqtt_url)
    wrong = MqttUrl(f"mqtt://{url.username}:wrong@{url.host}:{url.port}")

    async def test() -> None:
        pub = ResultsPublisher(wrong, f"results-{uuid.uuid4().hex[:10]}")
        pub.start()
        await asyncio.sleep(1.0)  # attempts at 0, ~0.1, ~0.3 and ~0.7 s
        assert not pub.connected
        assert pub.publish(results_topic(new_device_id()), b"x")
        assert pub.in_flight == 1
        began = time.monotonic()
        await pub.stop()
        assert time.monotonic() - began < 0.5
        assert not pub.publish(results_topic("d"), b"x") and pub.dropped == 1

    run(test)
    assert len(logged_warnings(caplog)) == 1 and "not authorised" in logged_warnings(caplog)[0]


def test_beyond_max_queued_while_disconnected_is_dropped_and_the_rest_goes_out_in_order(
    own_broker: Mosquitto,
) -> None:
    topic = results_topic(new_device_id())
    observer = Observer(own_broker, add_observer(own_broker), [topic], persistent=True)
    own_broker.stop()
    payloads = [b"q-%d" % i for i in range(60)]

    async def test() -> None:
        pub = publisher(own_broker, max_queued=50)
        pub.start()
        accepted = [pub.publish(topic, p) for p in payloads]
        assert accepted == [True] * 50 + [False] * 10
        assert (pub.published, pub.dropped, pub.in_flight, pub.connected) == (50, 10, 50, False)
        await asyncio.to_thread(own_broker.start)
        await until(lambda: pub.acknowledged == 50, 10, "the queued messages acknowledged")
        assert pub.in_flight == 0 and pub.publish(topic, b"after")
        await until(lambda: pub.in_flight == 0, 5, "the last PUBACK")
        await pub.stop()

    try:
        run(test)
        wait_for(lambda: observer.count() >= 51, 10, "the queued messages")
        assert [p for _, p in observer.messages()] == [*payloads[:50], b"after"]
    finally:
        observer.close()


def test_keepalive_keeps_an_idle_connection_up(
    broker: Mosquitto, observer_account: tuple[str, str]
) -> None:
    topic = results_topic(new_device_id())
    observer = Observer(broker, observer_account, [topic])

    async def test() -> None:
        pub = publisher(broker, keepalive=1)
        pub.start()
        await until(lambda: pub.connected, 5, "CONNACK")
        conn = pub._conn
        # The broker drops a client silent for 1.5 keepalives; watch for 3.5 s.
        idle_until = time.monotonic() + 3.5
        while time.monotonic() < idle_until:
            assert pub.connected and pub._conn is conn
            await asyncio.sleep(0.02)
        assert pub.publish(topic, b"still here")
        await until(lambda: pub.acknowledged == 1, 5, "PUBACK")
        await pub.stop()

    try:
        run(test)
        wait_for(lambda: observer.count() == 1, 5, "the message")
    finally:
        observer.close()


def test_a_broker_that_stops_answering_is_dropped_and_reconnected(
    own_broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    assert own_broker.proc is not None
    frozen = False

    async def test() -> None:
        nonlocal frozen
        pub = publisher(own_broker, keepalive=1)
        pub.start()
        await until(lambda: pub.connected, 5, "CONNACK")
        own_broker.proc.send_signal(signal.SIGSTOP)  # TCP stays up, nothing answers
        frozen = True
        await until(lambda: not pub.connected, 4, "the dead connection dropped")
        own_broker.proc.send_signal(signal.SIGCONT)
        frozen = False
        await until(lambda: pub.connected, 8, "a new connection")
        assert pub.publish(results_topic(new_device_id()), b"x")
        await until(lambda: pub.acknowledged == 1, 5, "PUBACK")
        await pub.stop()

    try:
        run(test)
    finally:
        if frozen:
            own_broker.proc.send_signal(signal.SIGCONT)
    assert any("PINGRESP" in w for w in logged_warnings(caplog))


def test_stop_waits_for_pubacks_and_leaves_no_connection_behind(
    broker: Mosquitto, observer_account: tuple[str, str]
) -> None:
    topic = results_topic(new_device_id())
    client_id = f"results-{uuid.uuid4().hex[:10]}"
    url = MqttUrl(broker.mqtt_url)
    observer = Observer(broker, observer_account, [topic])

    def same_id_kicked_within(seconds: float) -> bool:
        """Connect under the publisher's id: True if something takes the id back."""
        kicked = threading.Event()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,  # no fight for the id
        )
        c.username_pw_set(url.username, url.password)
        c.on_disconnect = lambda *a: kicked.set()
        c.connect(url.host, url.port)
        c.loop_start()
        try:
            return kicked.wait(seconds)
        finally:
            c.disconnect()
            c.loop_stop()

    async def test() -> None:
        pub = ResultsPublisher(url, client_id)
        pub.start()
        await until(lambda: pub.connected, 5, "CONNACK")
        # While it runs, the publisher takes its id back from an intruder...
        assert await asyncio.to_thread(same_id_kicked_within, 3.0)
        await until(lambda: pub.connected, 5, "the publisher back")
        for i in range(2000):
            pub.publish(topic, b"s-%d" % i)
        began = time.monotonic()
        await pub.stop()
        assert pub.acknowledged == 2000 and pub.in_flight == 0 and not pub.connected
        assert time.monotonic() - began < 1.0  # as soon as the last PUBACK is in
        # ...and after stop() nothing does.
        assert not await asyncio.to_thread(same_id_kicked_within, 1.0)
        await pub.stop()  # again: nothing to do

    try:
        run(test)
        wait_for(lambda: observer.count() >= 2000, 10, "2000 messages")
    finally:
        observer.close()


def test_stop_is_safe_when_never_started_or_connected() -> None:
    async def test() -> None:
        never = ResultsPublisher(MqttUrl("mqtt://u:p@127.0.0.1:1"), "c")
        await never.stop()
        unreachable = ResultsPublisher(MqttUrl("mqtt://u:p@127.0.0.1:1"), "c")
        unreachable.start()
        await asyncio.sleep(0.05)
        await unreachable.stop()
        await unreachable.stop()
        assert not unreachable.connected

    run(test)
