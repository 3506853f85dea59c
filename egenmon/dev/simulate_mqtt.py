"""Publishing as a device over MQTT: the simulator's MQTT transport (`egenmon simulate
--via mqtt`), also used by the fault tests and the benchmark.

Each device connects with its own credentials (username = device id, password = its
secret) and a persistent session under a fixed client id, publishes Reading messages v1
with QoS 1 to its own readings topic, and lets paho resend what the broker has not
acknowledged after a reconnect, as a real device would. Being an MQTT 5 client, it also
sends again, a little later, a message the broker acknowledged with "no matching
subscribers" (nobody received it); the dedup key absorbs any repeat.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from egenmon.dev.simulate import SimDevice
from egenmon.dev.simulate_run import TransportError
from egenmon.settings import MqttUrl, Settings

DEVICE_SESSION_S = 24 * 3600
# PUBACK reason 0x10: the broker took the message but no subscriber matched, so nobody got
# it. egenmon always subscribes to readings topics; this only happens while the platform
# is (re)subscribing, for example just after a broker restart (Mosquitto 2.0 forgets
# shared subscriptions restored from persistence until the subscriber subscribes again).
NO_MATCHING_SUBSCRIBERS = 0x10
UNROUTED_RETRY_S = 0.5


class PublishRefused(RuntimeError):
    """The broker refused the device's connection (bad or revoked credentials)."""


def readings_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/devices/{device_id}/readings"


def results_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/devices/{device_id}/results"


class DevicePublisher:
    """One device's MQTT connection: publish QoS 1, resend after reconnects, see results."""

    def __init__(
        self,
        host: str,
        port: int,
        device_id: str,
        secret: str,
        *,
        prefix: str = "egenmon/v1",
        tls: bool = False,
        client_id: str | None = None,
        inflight: int = 100,
        results: bool = False,
        retry_unrouted: bool = True,
        on_result: Callable[[dict], None] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.device_id = device_id
        self.prefix = prefix
        self.topic = readings_topic(prefix, device_id)
        self.results: list[dict] = []
        # (packet id, reason) of every publish the broker refused, e.g. "Not authorized".
        self.refused: list[tuple[int, str]] = []
        self._want_results = results or on_result is not None
        self._on_result = on_result
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._refused: Any = None
        self._results_lock = threading.Lock()
        # Packet ids sent and not yet waited for; the broker's PUBACKs, by packet id. (paho's
        # MQTTMessageInfo keeps the error of a publish made while disconnected even after
        # it resends the message successfully, so acknowledgements are counted here.)
        self._pending: collections.deque[int] = collections.deque()
        self._acked: set[int] = set()
        self._acked_cond = threading.Condition()
        # An MQTT 5 device can tell that nobody received a message (reason 0x10) and send
        # it again a little later; the dedup key absorbs a repeat. Packet id -> its message,
        # and packet id -> the id of the copy sent again.
        self.retry_unrouted = retry_unrouted
        self.unrouted_retries = 0
        self._sent: dict[int, tuple[str, bytes]] = {}
        self._unrouted_early: set[int] = set()  # PUBACK 0x10 before _sent knew the id
        self._sent_lock = threading.Lock()  # never held while calling into paho
        self._replaced: dict[int, int] = {}
        # Messages queued in paho at most: packet ids are 16 bits, and a real device has
        # little memory.
        self.window = max(inflight * 4, 1000)
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or device_id,  # the broker binds a device to its id
            protocol=mqtt.MQTTv5,
        )
        c.username_pw_set(device_id, secret)
        if tls:
            c.tls_set()
        c.max_inflight_messages_set(inflight)
        c.reconnect_delay_set(1, 4)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._subscribed.set()
        c.on_publish = self._on_publish
        self.client = c

    @classmethod
    def from_url(cls, url: MqttUrl, device_id: str, secret: str, **kw: Any) -> DevicePublisher:
        return cls(url.host, url.port, device_id, secret, tls=url.tls, **kw)

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._refused = reason
            self._connected.set()
            return
        self._refused = None
        if self._want_results:
            client.subscribe(results_topic(self.prefix, self.device_id), qos=1)
        self._connected.set()

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        unrouted = reason.value == NO_MATCHING_SUBSCRIBERS and self.retry_unrouted
        with self._sent_lock:
            sent = self._sent.pop(mid, None)
            if unrouted and sent is None:
                self._unrouted_early.add(mid)  # publish() sends it again
                return
        if reason.is_failure:
            self.refused.append((mid, str(reason)))
        elif unrouted and sent is not None:
            self._retry_later(mid, *sent)
            return
        with self._acked_cond:
            self._acked.add(mid)
            self._acked_cond.notify_all()

    def _retry_later(self, mid: int, topic: str, payload: bytes) -> None:
        self.unrouted_retries += 1
        timer = threading.Timer(UNROUTED_RETRY_S, self._send_again, (mid, topic, payload))
        timer.daemon = True
        timer.start()

    def _send_again(self, mid: int, topic: str, payload: bytes) -> None:
        info = self.client.publish(topic, payload, qos=1)
        self._remember(info.mid, topic, payload)
        with self._acked_cond:
            self._replaced[mid] = info.mid
            self._acked_cond.notify_all()

    def _on_disconnect(self, *args: Any) -> None:
        self._connected.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            result = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            return
        if self._on_result is not None:
            self._on_result(result)
            return
        with self._results_lock:
            self.results.append(result)

    def connect(self, timeout: float = 10.0) -> DevicePublisher:
        """Connect (persistent session); raises PublishRefused if the broker says no."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = DEVICE_SESSION_S
        self.client.connect_async(
            self.host, self.port, keepalive=30, clean_start=False, properties=props
        )
        self.client.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise PublishRefused(f"{self.device_id}: no answer from the broker")
        if self._refused is not None:
            reason = self._refused
            self.close()
            raise PublishRefused(f"{self.device_id}: {reason}")
        if self._want_results and not self._subscribed.wait(timeout):
            raise PublishRefused(f"{self.device_id}: results subscription not granted")
        return self

    def publish(self, message: dict | bytes, topic: str | None = None) -> int:
        """Queue a message with QoS 1 (paho sends it, and resends it until the broker
        acknowledges it); returns its packet id."""
        payload = message if isinstance(message, bytes) else orjson.dumps(message)
        while len(self._pending) >= self.window:
            if not self._wait_acked(self._pending[0], time.monotonic() + 60):
                raise PublishRefused(f"{self.device_id}: the broker took nothing for 60 s")
            self._pending.popleft()
        topic = topic or self.topic
        info = self.client.publish(topic, payload, qos=1)
        self._remember(info.mid, topic, payload)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            raise PublishRefused(f"{self.device_id}: paho's queue is full")
        self._pending.append(info.mid)
        return info.mid

    def _remember(self, mid: int, topic: str, payload: bytes) -> None:
        """Keep a message until its PUBACK, to send it again if nobody received it."""
        if not self.retry_unrouted:
            return
        with self._sent_lock:
            early = mid in self._unrouted_early
            if early:
                self._unrouted_early.discard(mid)
            else:
                self._sent[mid] = (topic, payload)
        if early:
            self._retry_later(mid, topic, payload)

    def publish_many(self, messages: Iterable[dict | bytes]) -> int:
        n = 0
        for m in messages:
            self.publish(m)
            n += 1
        return n

    def wait_published(self, timeout: float = 30.0) -> bool:
        """True once the broker has acknowledged everything published so far."""
        deadline = time.monotonic() + timeout
        while self._pending:
            if not self._wait_acked(self._pending[0], deadline):
                return False
            self._pending.popleft()
        return True

    def _wait_acked(self, mid: int, deadline: float) -> bool:
        with self._acked_cond:
            while mid not in self._acked:
                if mid in self._replaced:  # sent again: wait for the copy
                    mid = self._replaced.pop(mid)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._acked_cond.wait(min(remaining, 1.0))
            self._acked.discard(mid)
        return True

    def is_connected(self) -> bool:
        return self.client.is_connected()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class MqttTransport:
    """The simulator's MQTT transport (simulate_run.Transport): each simulated device
    publishes with its own credentials over its own connection and waits for the
    platform's result object on its results topic, matched by message_id."""

    def __init__(self, settings: Settings, timeout: float = 30.0) -> None:
        if settings.mqtt is None:
            raise ValueError("EGENMON_MQTT_URL is not set")
        self.url = settings.mqtt
        self.prefix = settings.mqtt_topic_prefix
        self.timeout = timeout
        self._devices: dict[str, DevicePublisher] = {}
        self._connecting: dict[str, asyncio.Task] = {}
        self._waiting: dict[str, asyncio.Future] = {}

    async def _device(self, device: SimDevice) -> DevicePublisher:
        pub = self._devices.get(device.device_id)
        if pub is not None:
            return pub
        task = self._connecting.get(device.device_id)
        if task is None:
            task = asyncio.ensure_future(self._connect(device))
            self._connecting[device.device_id] = task
        try:
            return await asyncio.shield(task)
        finally:
            if task.done():
                self._connecting.pop(device.device_id, None)

    async def _connect(self, device: SimDevice) -> DevicePublisher:
        loop = asyncio.get_running_loop()

        def on_result(result: dict) -> None:  # paho's thread
            loop.call_soon_threadsafe(self._resolve, result)

        pub = DevicePublisher.from_url(
            self.url,
            device.device_id,
            device.secret,
            prefix=self.prefix,
            client_id=device.device_id,
            on_result=on_result,
        )
        try:
            await asyncio.to_thread(pub.connect)
        except PublishRefused as e:
            raise TransportError(str(e)) from None
        self._devices[device.device_id] = pub
        return pub

    def _resolve(self, result: dict) -> None:
        fut = self._waiting.pop(str(result.get("message_id")), None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    async def send(self, device: SimDevice, message: dict) -> dict:
        """Publish the message as the device (QoS 1) and return the platform's result."""
        pub = await self._device(device)
        message_id = message.get("message_id") or str(uuid.uuid4())
        message = {**message, "message_id": message_id}
        fut = asyncio.get_running_loop().create_future()
        self._waiting[message_id] = fut
        try:
            pub.publish(message)
            return await asyncio.wait_for(fut, self.timeout)
        except TimeoutError:
            raise TransportError(f"no result within {self.timeout:.0f} s") from None
        except PublishRefused as e:
            raise TransportError(str(e)) from None
        finally:
            self._waiting.pop(message_id, None)

    async def close(self) -> None:
        pubs, self._devices = list(self._devices.values()), {}
        for pub in pubs:
            await asyncio.to_thread(pub.wait_published, 5.0)
            await asyncio.to_thread(pub.close)
