"""The MQTT consumer: readings from the broker into the pipeline, acknowledged after commit.

paho runs on the service's asyncio loop (its socket is watched with add_reader, no network
thread), so receiving, ingesting and acknowledging share one thread without hand-offs.
What arrives within a few milliseconds goes to the pipeline as one batch (one hand-over to
the batch writer, one quarantine insert), and the batch's PUBACKs go out together. Results go
out on a second connection (mqtt_publisher says why that one is not paho). A message is
acknowledged (PUBACK) only after its readings are committed, and only on the connection
it came in on: a consumer that dies, or loses its connection, before that leaves the message in its
persistent session, the broker hands it over again, and the dedup key absorbs the repeat
(at least once + dedup = exactly once in the store).

Flow control: at most `inflight` messages are unacknowledged. The broker holds back
beyond its in-flight limit (max_inflight_messages, or an MQTT 5 client's Receive
Maximum), and the consumer also stops reading its socket at its own bound, so TCP pushes
back whatever the broker does. (Mosquitto 2.0.11 miscounts the in-flight messages of a
connection that also publishes QoS 1, which is why results go out on a second
connection.) A slow or stopped database thus keeps readings in the broker, which
persists them, instead of in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
import traceback
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from psycopg_pool import PoolTimeout

from egenmon import metrics
from egenmon.devices import reconcile
from egenmon.devices.dynsec import DynsecClient
from egenmon.devices.reconcile import SHARE_GROUP
from egenmon.ingest.mqtt_loop import ClientIdLock, LoopConnection, ReadAheadClient
from egenmon.ingest.mqtt_publisher import ResultsPublisher
from egenmon.ingest.payloads import ingest_payload
from egenmon.ingest.pipeline import IngestResult, Pipeline
from egenmon.ingest.writer import WriteError
from egenmon.settings import MqttUrl, Settings

log = logging.getLogger("egenmon.mqtt")

# Messages this consumer holds unacknowledged at most.
INFLIGHT = 1000
# MQTT 3.1.1 for the readings connection: paho decodes the properties of every MQTT 5
# PUBLISH (a fifth to a quarter of the consumer's time, measured), and 3.1.1 has all the
# consumer needs from Mosquitto (persistent session, shared subscription, manual PUBACK).
# With MQTT 5 the session expiry and Receive Maximum below are sent.
SUBSCRIBER_PROTOCOL = mqtt.MQTTv311
# The session, and the readings queued in it while the consumer is away, must outlive any
# outage: an MQTT 3.1.1 session with clean_session=false never expires in Mosquitto
# (unless persistent_client_expiration is set), and 0xFFFFFFFF means the same in MQTT 5.
# A consumer id that is retired for good should be drained first (run it once more), or
# its share of the shared subscription's messages waits in its session.
SESSION_EXPIRY = 0xFFFFFFFF
RETRY_MIN_S = 0.2
RETRY_MAX_S = 2.0
STOP_TIMEOUT_S = 10.0
KEEPALIVE_S = 30
# Messages are handed to the pipeline in batches of what arrived within BATCH_WAIT_S, at
# most BATCH_MAX.
BATCH_WAIT_S = 0.003
BATCH_MAX = 500
RESULTS_QUEUED = 20_000
# The batch did not commit, or the database is unreachable: keep the message
# unacknowledged and try again. Not retried: what the database refused (a WriteError with
# `refused`, the pipeline's StoreRefused, a psycopg.DataError): it goes to quarantine and
# is acknowledged, or it would block the consumer's in-flight window for ever.
RETRYABLE = (
    WriteError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    PoolTimeout,
    OSError,
    TimeoutError,
)


def shared_subscription(prefix: str) -> str:
    return f"$share/{SHARE_GROUP}/{prefix}/devices/+/readings"


def device_from_topic(topic: str, prefix: str) -> str | None:
    """The device id in `{prefix}/devices/{id}/readings`, or None for any other topic."""
    head = f"{prefix}/devices/"
    if not topic.startswith(head) or not topic.endswith("/readings"):
        return None
    device = topic[len(head) : -len("/readings")]
    return device if device and "/" not in device else None


def payloads_subscription(prefix: str) -> str:
    """Vendor payloads, mapped by the device model's templates (egenmon.ingest.payloads)."""
    return f"$share/{SHARE_GROUP}/{prefix}/devices/+/payloads"


def payload_device_from_topic(topic: str, prefix: str) -> str | None:
    """The device id in `{prefix}/devices/{id}/payloads`, or None for any other topic."""
    head = f"{prefix}/devices/"
    if not topic.startswith(head) or not topic.endswith("/payloads"):
        return None
    device = topic[len(head) : -len("/payloads")]
    return device if device and "/" not in device else None


def result_payload(result: Any) -> bytes:
    """The contract's result object: the HTTP body plus the message_id."""
    body = result.body()  # a new dict each time
    if "message_id" not in body:
        body["message_id"] = result.message_id
    return orjson.dumps(body)


class ReadingSink(Protocol):
    """What the consumer hands messages to: the ingest pipeline
    (`egenmon.ingest.pipeline.Pipeline`), or a fake of it in a test."""

    async def ingest_many(
        self, messages: Sequence[tuple[bytes, str, str | None]], *, source: str
    ) -> list[IngestResult | Exception]: ...

    async def quarantine(
        self,
        *,
        source: str,
        reason: str,
        raw: bytes,
        device_id: str | None = None,
        topic: str | None = None,
        received_at: dt.datetime | None = None,
    ) -> None: ...


class MqttConsumer:
    """The service named "mqtt": subscribes, ingests, publishes results, acknowledges."""

    name = "mqtt"

    def __init__(
        self,
        settings: Settings,
        pipeline: ReadingSink,
        *,
        pool: Any = None,
        inflight: int = INFLIGHT,
        client_id: str | None = None,
    ) -> None:
        if settings.mqtt is None:
            raise ValueError("EGENMON_MQTT_URL is not set")
        self.settings = settings
        self.url: MqttUrl = settings.mqtt
        self.prefix = settings.mqtt_topic_prefix
        self.pipeline = pipeline
        self.pool = pool
        self.inflight = inflight
        self._id_lock = ClientIdLock(settings)
        self._fixed_id = client_id
        self.client_id = client_id or ""
        self._sub: LoopConnection | None = None
        self._pub: ResultsPublisher | None = None
        # Bumped on every connect and disconnect: an acknowledgement is only valid on the
        # connection its message came in on (packet ids are reused by the next one).
        self._generation = 0
        self._subscribed = False
        self._closing = False
        self._backlog = 0
        self._tasks: set[asyncio.Task] = set()
        # Messages read since the loop last handed them to the pipeline, each with the
        # generation of the connection it came on.
        self._arrived: list[tuple[int, mqtt.MQTTMessage]] = []
        self._take_timer: asyncio.TimerHandle | None = None
        self._reconcile_task: asyncio.Task | None = None
        self._down_since: float | None = None
        self._down_logged = 0.0
        self._recovered = asyncio.Event()
        self.received = 0
        self.acknowledged = 0

    # -- service ------------------------------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        try:
            # Before connecting: adding an ACL disconnects every platform client.
            await asyncio.wait_for(
                asyncio.to_thread(reconcile.ensure_platform_acls, self.url, self.prefix, 2.0), 5.0
            )
        except Exception as e:  # noqa: BLE001 (the broker may be down: retried on connect)
            log.warning("could not check the broker's platform ACLs: %s", e)
        try:
            bound = await asyncio.wait_for(asyncio.to_thread(_bind_client_ids, self.url), 10.0)
            if bound:
                log.warning("bound %d device clients to their own client ids", bound)
        except Exception as e:  # noqa: BLE001 (retried at the next start)
            log.warning("could not bind device clients to their client ids: %s", e)
        if not self._fixed_id:
            self.client_id = self._id_lock.acquire()
        # Read when scraped, not counted per message (one consumer per process).
        metrics.MQTT_BACKLOG.set_function(lambda: self._backlog)
        self._sub = LoopConnection(self._subscriber(), "mqtt-consumer", self.url)
        self._pub = ResultsPublisher(
            self.url, f"{self.client_id}-results", keepalive=KEEPALIVE_S, max_queued=RESULTS_QUEUED
        )
        self._sub.start()
        self._pub.start()
        log.info(
            "MQTT consumer %s connecting to %s:%d", self.client_id, self.url.host, self.url.port
        )

    def _client(
        self, client_id: str, protocol: mqtt.MQTTProtocolVersion = mqtt.MQTTv5, **kw: Any
    ) -> mqtt.Client:
        c = ReadAheadClient(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, **kw
        )
        c.username_pw_set(self.url.username, self.url.password)
        if self.url.tls:
            c.tls_set()
        return c

    def _subscriber(self) -> mqtt.Client:
        """The readings connection: a persistent session under the fixed client id."""
        if SUBSCRIBER_PROTOCOL == mqtt.MQTTv5:
            c = self._client(self.client_id, manual_ack=True)
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY
            props.ReceiveMaximum = self.inflight
            c.connect_async(
                self.url.host,
                self.url.port,
                keepalive=KEEPALIVE_S,
                clean_start=False,
                properties=props,
            )
        else:
            # clean_session=false: the session, and what is queued in it, never expires
            # (Mosquitto without persistent_client_expiration); the broker's
            # max_inflight_messages bounds what it sends unacknowledged.
            c = self._client(
                self.client_id, protocol=SUBSCRIBER_PROTOCOL, manual_ack=True, clean_session=False
            )
            c.connect_async(self.url.host, self.url.port, keepalive=KEEPALIVE_S)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        return c

    async def stop(self) -> None:
        """Finish what is being ingested (bounded), then disconnect; the rest waits in the
        broker for the next start."""
        self._closing = True
        self._recovered.set()  # wakes the messages waiting to retry: they stop now
        if self._take_timer is not None:
            # Read but not yet ingested: unacknowledged, so the broker hands them over again.
            self._take_timer.cancel()
            self._take_timer = None
            self._backlog -= len(self._arrived)
            self._arrived = []
        if self._reconcile_task:
            self._reconcile_task.cancel()
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=STOP_TIMEOUT_S)
            for task in pending:
                task.cancel()
        if self._pub is not None:
            await self._pub.stop()
        if self._sub is not None:
            await self._sub.stop()
        self._subscribed = False
        metrics.MQTT_BACKLOG.set_function(lambda: 0)
        self._id_lock.release()
        log.info(
            "MQTT consumer %s stopped (%d received, %d acknowledged)",
            self.client_id,
            self.received,
            self.acknowledged,
        )

    def is_connected(self) -> bool:
        """Connected and subscribed: what /readyz reports for the broker."""
        return self._sub is not None and self._sub.connected and self._subscribed

    def results_connected(self) -> bool:
        """The results connection is up (CONNACK accepted): what /readyz reports."""
        return self._pub is not None and self._pub.connected

    async def broker_answers(self, timeout: float = 1.0) -> bool:  # noqa: ASYNC109
        """The broker answers a PINGREQ now (a frozen broker keeps the TCP connection up
        and is noticed by keepalive only after 30 s or more)."""
        return self._pub is not None and await self._pub.probe(timeout)

    # -- paho callbacks (on this loop) --------------------------------------------------

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning("broker refused the consumer: %s", reason)
            return
        assert self._sub is not None
        self._generation += 1
        self._sub.connected = True
        self._subscribed = False
        # Always, even when the session is present: Mosquitto 2.0 restores shared
        # subscriptions from persistence in a state that delivers nothing.
        client.subscribe(
            [(shared_subscription(self.prefix), 1), (payloads_subscription(self.prefix), 1)]
        )
        if not self._closing:
            self._schedule_reconcile()

    def _on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list, properties: Any
    ) -> None:
        if reasons and not any(r.is_failure for r in reasons):
            self._subscribed = True
            log.info("MQTT consumer %s subscribed", self.client_id)
        else:
            log.error(
                "broker refused the subscription %s: %s (the platform role needs "
                "subscribePattern on it)",
                shared_subscription(self.prefix),
                reasons[0] if reasons else "?",
            )
            if not self._closing:
                self._schedule_reconcile(True)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._generation += 1
        self._subscribed = False
        if self._sub is not None:
            self._sub.lost()
        if not self._closing:
            log.warning("MQTT consumer %s disconnected (%s); reconnecting", self.client_id, reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        sub = self._sub
        assert sub is not None
        sub.packets += 1
        if self._closing:
            return  # left unacknowledged: the broker hands it over next session
        self.received += 1
        self._backlog += 1
        if self._backlog >= self.inflight:
            sub.pause_reading()
        arrived = self._arrived
        arrived.append((self._generation, msg))
        if len(arrived) == 1:
            # What arrives within BATCH_WAIT_S goes to the pipeline as one batch: each
            # batch costs a task, a hand-over to the writer, a write of results and one
            # of PUBACKs, and a steady stream came in batches of 15 messages without it.
            self._take_timer = asyncio.get_running_loop().call_later(
                BATCH_WAIT_S, self._take_arrived
            )
        elif len(arrived) >= BATCH_MAX or not sub.reading:
            self._take_arrived()

    def _take_arrived(self) -> None:
        if self._take_timer is not None:
            self._take_timer.cancel()
            self._take_timer = None
        batch, self._arrived = self._arrived, []
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._handle(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- messages -----------------------------------------------------------------------

    async def _handle(self, batch: list[tuple[int, mqtt.MQTTMessage]]) -> None:
        """Ingest a batch, then publish each message's result and acknowledge it."""
        try:
            if self._closing:
                return
            messages = []
            for generation, msg in batch:
                try:
                    topic = msg.topic
                except UnicodeDecodeError:
                    topic = ""
                messages.append((generation, msg, topic, device_from_topic(topic, self.prefix)))
            # paho types a payload bytes or bytearray; it is bytes (then no copy is made)
            readings = [(bytes(m.payload), d, t) for _, m, t, d in messages if d is not None]
            outcomes = await self._ingest(readings) if readings else []
            if len(outcomes) < len(readings):  # stopping: all wait for the next session
                return
            results = iter(outcomes)
            bugs: dict[int, str] = {}  # one log line for a bug that failed the whole batch
            done: list[tuple[int, int, str | None, Any]] = []
            for generation, msg, topic, device_id in messages:
                vendor = None if device_id else payload_device_from_topic(topic, self.prefix)
                if vendor is not None:
                    result = await self._payload(bytes(msg.payload), vendor, topic)
                    if result is None:
                        break
                    done.append((generation, msg.mid, vendor, result))
                    continue
                if device_id is None:
                    # The subscriptions match readings and payloads topics; anything else is kept.
                    reason = f"not a readings topic: {topic[:200]!r}"
                    result = await self._keep(reason, bytes(msg.payload), None, topic)
                else:
                    result = next(results)
                    if isinstance(result, Exception):
                        if id(result) not in bugs:
                            bugs[id(result)] = self._bug(result)
                        reason = bugs[id(result)]
                        result = await self._keep(reason, bytes(msg.payload), device_id, topic)
                if result is None:  # stopping: this and the rest wait for the next session
                    break
                done.append((generation, msg.mid, device_id, result))
            sub = self._sub
            with sub.writing_together() if sub is not None else contextlib.nullcontext():
                for generation, mid, device_id, result in done:
                    if device_id is not None:
                        self._publish_result(device_id, result)
                    self._ack(generation, mid)
        finally:
            self._backlog -= len(batch)
            sub = self._sub
            if sub is not None and not sub.reading and self._backlog < self.inflight:
                sub.resume_reading()

    async def _ingest(self, readings: list[tuple[bytes, str, str]]) -> list[Any]:
        """Each message's result (or the exception only it raised) once committed; an empty
        list when stopping first. A batch the pipeline fails as a whole for a reason other
        than an outage gives that exception for each message."""
        try:
            results = await self._until_done(
                lambda: self.pipeline.ingest_many(readings, source="mqtt")
            )
        except Exception as e:  # noqa: BLE001 (refused, or a bug: not retried as it is)
            if len(readings) == 1:
                return [e]
            # One message may have made the store refuse the whole batch: each alone, so
            # that only what is refused goes to quarantine and the rest is stored.
            out: list[Any] = []
            for one in readings:
                got = await self._ingest([one])
                if not got:
                    return []  # stopping
                out += got
            return out
        return [] if results is None else results

    async def _payload(self, body: bytes, device_id: str, topic: str) -> Any:
        """A vendor payload through its model's templates (`egenmon.ingest.payloads`): its
        result once committed; None if stopping first."""
        pipeline = self.pipeline
        if not isinstance(pipeline, Pipeline):
            return await self._keep("vendor payloads need the ingest pipeline", body, None, topic)
        try:
            return await self._until_done(
                lambda: ingest_payload(pipeline, body, device_id=device_id, topic=topic)
            )
        except Exception as e:  # noqa: BLE001 (refused, or a bug: kept, not retried)
            return await self._keep(self._bug(e), body, device_id, topic)

    async def _until_done(self, attempt: Any) -> Any:
        """attempt()'s result, retried while the database is away; None if stopping first.
        Exceptions other than an outage's are raised."""
        delay = RETRY_MIN_S
        while not self._closing:
            try:
                result = await attempt()
            except Exception as e:
                if not self._retryable(e):
                    raise
                self._outage(e)
            else:
                if self._down_since is not None:
                    self._back()
                return result
            # Wait, but wake at once when another message gets through.
            recovered = self._recovered
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(recovered.wait(), delay * (0.5 + random.random()))  # noqa: S311
            delay = min(delay * 2, RETRY_MAX_S)
        return None

    def _outage(self, error: Exception) -> None:
        """Log an outage once when it starts and then every half minute, not per message."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = self._down_logged = now
            log.warning(
                "ingest failing (%s: %s): messages stay unacknowledged and are retried",
                type(error).__name__,
                str(error)[:200],
            )
        elif now - self._down_logged > 30:
            self._down_logged = now
            log.warning(
                "ingest failing for %.0f s; %d messages unacknowledged",
                now - self._down_since,
                len(self._tasks),
            )

    def _back(self) -> None:
        assert self._down_since is not None
        log.warning("ingest works again after %.1f s", time.monotonic() - self._down_since)
        self._down_since = None
        self._recovered.set()
        self._recovered = asyncio.Event()

    @staticmethod
    def _retryable(e: Exception) -> bool:
        """An outage (retry, no ack), not a message the store refused (quarantine, ack)."""
        return isinstance(e, RETRYABLE) and not getattr(e, "refused", False)

    async def _keep(
        self, reason: str, payload: bytes, device_id: str | None, topic: str
    ) -> _Quarantined | None:
        """Keep a message in quarantine so it does not loop; None if stopping first."""

        async def quarantine() -> _Quarantined:
            await self.pipeline.quarantine(
                source="mqtt", reason=reason, raw=payload, device_id=device_id, topic=topic or None
            )
            return _Quarantined()

        while True:
            try:
                return await self._until_done(quarantine)
            except Exception as e:  # noqa: BLE001 (not an outage, but try again)
                log.warning("quarantine failed, retry in %.1f s: %s", RETRY_MAX_S, type(e).__name__)
                await asyncio.sleep(RETRY_MAX_S)

    @staticmethod
    def _bug(error: Exception) -> str:
        """Log an exception ingest raised (a bug, not an outage); the quarantine reason."""
        if getattr(error, "refused", False) or type(error).__name__ == "StoreRefused":
            log.warning("the database refused a message; it goes to quarantine")
            return f"refused by the database ({type(error).__name__})"
        # Where it failed, but not the exception's text, which may quote the reading.
        where = "".join(traceback.format_tb(error.__traceback__)[-3:])
        log.error(
            "ingest raised %s; the message goes to quarantine\n%s", type(error).__name__, where
        )
        return f"internal error: {type(error).__name__}"

    def _publish_result(self, device_id: str, result: Any) -> None:
        pub = self._pub
        if isinstance(result, _Quarantined) or pub is None:
            return
        topic = f"{self.prefix}/devices/{device_id}/results"
        if not pub.publish(topic, result_payload(result)):
            # The broker has been away long enough to fill the queue: the readings are
            # stored; only their results are not sent.
            if pub.dropped in (1, 10, 100) or pub.dropped % 10000 == 0:
                log.warning("%d results not sent: the results connection is backed up", pub.dropped)

    def _ack(self, generation: int, mid: int) -> None:
        if generation != self._generation or self._sub is None:
            # The connection it came on is gone: the broker hands it over again and the
            # dedup key absorbs the repeat.
            return
        self._sub.client.ack(mid, 1)
        self.acknowledged += 1

    def _schedule_reconcile(self, acls: bool = False) -> None:
        if self._closing or (self._reconcile_task and not self._reconcile_task.done()):
            return
        self._reconcile_task = asyncio.get_running_loop().create_task(self._reconcile(acls))

    async def _reconcile(self, acls: bool) -> None:
        try:
            if acls:
                await asyncio.to_thread(reconcile.ensure_platform_acls, self.url, self.prefix)
            if self.pool is not None:
                await reconcile.disable_revoked(self.pool, self.url)
        except Exception as e:  # noqa: BLE001 (retried at the next connect)
            log.warning("broker reconcile failed: %s", e)


def _bind_client_ids(url: MqttUrl) -> int:
    """Devices registered before client ids were bound get bound in the running broker."""
    with DynsecClient(url, timeout=5.0) as dyn:
        return dyn.bind_client_ids()


class _Quarantined:
    """Stands for a message kept in quarantine by the consumer itself: ack, no result."""
