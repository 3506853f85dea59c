"""Issue 12, finding 1: a device cannot take the consumer's client id (which would kick
the consumer off and, with a clean session, wipe the session holding every device's
readings): the broker binds each device to its own client id."""

import re
import threading

import paho.mqtt.client as mqtt
import pytest
from faultkit import Stream, stored, wait_until
from paho.mqtt.enums import CallbackAPIVersion

N = 300


@pytest.fixture
def attacker(cli, patient) -> dict:
    r = cli(
        "device", "add", "--patient", patient, "--model", "Hijacker", "--since",
        "2020-01-01T00:00:00Z", "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    return r.json


class Hijacker:
    """Connects as `device` with `client_id` and a clean session every 0.3 s, in a thread,
    and notes each CONNACK."""

    def __init__(self, port: int, device: dict, client_id: str) -> None:
        self.port, self.device, self.client_id = port, device, client_id
        self.answers: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Hijacker":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            got = threading.Event()
            c = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv311,
                clean_session=True,
            )
            c.username_pw_set(self.device["id"], self.device["secret"])

            def on_connect(client, userdata, flags, reason, properties, got=got) -> None:
                self.answers.append(str(reason))
                got.set()

            c.on_connect = on_connect
            try:
                c.connect("127.0.0.1", self.port, keepalive=10)
                c.loop_start()
                got.wait(2)
                c.disconnect()
                c.loop_stop()
            except OSError as e:
                self.answers.append(type(e).__name__)
            self._stop.wait(0.3)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_device_taking_the_consumers_client_id_is_refused_and_300_of_300_are_stored(
    broker, device, attacker, consumers, database_url
):
    consumer = consumers()
    [consumer_id] = re.findall(r"MQTT consumer (\S+) connecting", consumer.text())
    hijacker = Hijacker(broker.port, attacker, consumer_id).start()
    try:
        stream = Stream(broker, device, N, per_s=30).start()  # 10 s under attack
        stream.finish()
        wait_until(
            lambda: stored(database_url, device["id"])[0] >= N, 40, "300 readings", interval=0.2
        )
    finally:
        hijacker.stop()
    assert len(hijacker.answers) >= 10
    assert set(hijacker.answers) == {"Not authorized"}, hijacker.answers
    assert stored(database_url, device["id"]) == (N, N)
    consumer.stop()
    received, acknowledged = consumer.counts()
    assert received == acknowledged == N
    assert "disconnected" not in consumer.text()  # never kicked off
    stream.close()


def test_the_simulator_connects_with_its_device_id(broker, device):
    from egenmon.dev.simulate_mqtt import DevicePublisher

    pub = DevicePublisher("127.0.0.1", broker.port, device["id"], device["secret"]).connect()
    assert pub.client._client_id == device["id"].encode()
    pub.close()
