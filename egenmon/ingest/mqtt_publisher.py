"""The results connection: a minimal MQTT 3.1.1 client that only publishes, QoS 1, on asyncio.

Why not paho: publishing the consumer's results through paho cost ~22% of its CPU
(profiled): an MQTTMessageInfo with a threading.Condition per message, and ReasonCode
and Properties objects per PUBACK even on MQTT 3.1.1. Here a publish encodes one packet
and appends it to a buffer that goes out in one write per loop iteration (many results,
one send system call), and a PUBACK is one dict removal.

Written from the MQTT 3.1.1 specification (OASIS Standard, 2014). It does not subscribe,
does not do QoS 0 or 2 or MQTT 5, and keeps no session: it connects with a clean session
and, after a reconnect, sends what was not acknowledged again with the DUP flag set (at
least once, which is what results need).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from typing import Any

from egenmon.settings import MqttUrl

log = logging.getLogger("egenmon.mqtt")

MAX_REMAINING_LENGTH = 268_435_455  # four bytes of the variable-length encoding
CONNECT_TIMEOUT_S = 5.0  # TCP (and TLS) connect plus CONNACK
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 30.0
STABLE_S = 10.0  # a connection that lasted this long restarts the backoff at its minimum
WARN_EVERY_S = 30.0
CONNACK, PUBACK, PINGRESP = 0x20, 0x40, 0xD0
PINGREQ_PACKET, DISCONNECT_PACKET = b"\xc0\x00", b"\xe0\x00"
REFUSALS = {  # CONNACK return codes
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MqttProtocolError(Exception):
    """The broker sent something this client does not expect, or a malformed packet."""


def encode_remaining_length(n: int) -> bytes:
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {n} out of range")
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def decode_remaining_length(buf: bytes, pos: int) -> tuple[int, int] | None:
    """(length, position after it) of the encoding at buf[pos:], or None if incomplete."""
    value = 0
    for i in range(4):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        value += (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            return value, pos + i + 1
    raise MqttProtocolError("remaining length longer than four bytes")


def _string(s: str) -> bytes:
    data = s.encode()
    if len(data) > 0xFFFF:
        raise ValueError("MQTT strings are at most 65535 bytes")
    return len(data).to_bytes(2, "big") + data


def connect_packet(
    client_id: str, keepalive: int, username: str | None = None, password: str | None = None
) -> bytes:
    """CONNECT, MQTT 3.1.1 (level 4), clean session."""
    if password is not None and username is None:
        username = ""  # 3.1.1 allows a password only after a user name
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + keepalive.to_bytes(2, "big")
    body += b"".join(_string(s) for s in (client_id, username, password) if s is not None)
    return b"\x10" + encode_remaining_length(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, packet_id: int, dup: bool = False) -> bytes:
    """PUBLISH, QoS 1, not retained; `topic` already validated and encoded."""
    length = 4 + len(topic) + len(payload)
    if length > MAX_REMAINING_LENGTH:
        raise ValueError("payload too large for MQTT")
    head = (b"\x3a" if dup else b"\x32") + encode_remaining_length(length)
    return b"".join(
        (head, len(topic).to_bytes(2, "big"), topic, packet_id.to_bytes(2, "big"), payload)
    )


class PacketReader:
    """Splits a byte stream into packets, (first byte, body), however the reads cut it."""

    def __init__(self, max_length: int = MAX_REMAINING_LENGTH) -> None:
        self.max_length = max_length
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf + data if self._buf else data
        packets, pos = [], 0
        while len(buf) - pos >= 2:
            header = decode_remaining_length(buf, pos + 1)
            if header is None:
                break
            length, start = header
            if length > self.max_length:
                raise MqttProtocolError(f"packet of {length} bytes")
            if start + length > len(buf):
                break
            packets.append((buf[pos], buf[start : start + length]))
            pos = start + length
        self._buf = buf[pos:]
        return packets


class _Connection(asyncio.Protocol):
    """One TCP connection; the publisher ignores the callbacks of any but its current one."""

    def __init__(self, owner: ResultsPublisher, now: float) -> None:
        loop = asyncio.get_running_loop()
        self.owner = owner
        # Whatever transport the running loop makes (asyncio's, uvloop's, TLS): only
        # write, is_closing, close and abort are used, which every loop's transports have.
        self.transport: Any = None
        # Broker packets are 2-byte bodies at most: anything longer is an error anyway.
        self.reader = PacketReader(max_length=2)
        self.connack: asyncio.Future[int | None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.last_sent = now
        self.ping_sent: float | None = None  # an unanswered PINGREQ

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not `isinstance(transport, asyncio.Transport)`: uvloop's TCPTransport is not one,
        # and `egenmon serve` runs on uvloop.
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.owner._received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.connack.done():
            self.connack.set_result(None)
        if not self.lost.done():
            self.lost.set_result(None)
        self.owner._lost(self)

    def write(self, data: bytes, now: float) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_sent = now


class ResultsPublisher:
    """Publishes QoS 1 messages on its own connection, reconnecting for as long as it runs.

    publish() is for the loop's thread only, and drops everything after stop().
    `in_flight` counts the messages published and not yet acknowledged, whether sent or
    waiting for a connection, so at any time published == acknowledged + in_flight.
    """

    def __init__(
        self,
        url: MqttUrl,
        client_id: str,
        *,
        keepalive: int = 30,
        max_queued: int = 20_000,
        label: str = "mqtt-results",
    ) -> None:
        if not 0 <= keepalive <= 0xFFFF:
            raise ValueError("keepalive must be 0..65535 seconds")
        # Every held message has a packet id of its own, so there is always a free one.
        if not 1 <= max_queued <= 0xFFFF:
            raise ValueError("max_queued must be 1..65535")
        self.url, self.keepalive, self.max_queued, self.label = url, keepalive, max_queued, label
        self._connect = connect_packet(client_id, keepalive, url.username, url.password)
        self._ssl = ssl.create_default_context() if url.tls else None
        self.connected = False  # CONNACK accepted on the current connection
        self.published = self.acknowledged = self.dropped = 0
        self._inflight: dict[int, bytes] = {}  # sent at least once; in publish order
        self._waiting: dict[int, bytes] = {}  # never sent; go out after the next CONNACK
        self._next_id = 0
        self._out: list[bytes] = []
        self._flush_due = False
        self._conn: _Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._drained: asyncio.Future[None] | None = None
        self._warned_at = float("-inf")
        self._failures = 0
        self._probe: asyncio.Future[bool] | None = None  # a PINGREQ of probe() in flight

    @property
    def in_flight(self) -> int:
        return len(self._inflight) + len(self._waiting)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._keep_connected(), name=self.label)
        self._task.add_done_callback(self._ended)

    def publish(self, topic: str, payload: bytes) -> bool:
        """Queue a message; False (and counted as dropped) when max_queued are held."""
        data = topic.encode()
        if not data or len(data) > 0xFFFF or "+" in topic or "#" in topic or "\0" in topic:
            raise ValueError("an MQTT topic name is 1..65535 bytes without + # or NUL")
        if 4 + len(data) + len(payload) > MAX_REMAINING_LENGTH:
            raise ValueError("payload too large for MQTT")
        if self._stopping or self.in_flight >= self.max_queued:
            self.dropped += 1
            return False
        pid = self._next_id
        while True:
            pid = pid % 0xFFFF + 1
            if pid not in self._inflight and pid not in self._waiting:
                break
        self._next_id = pid
        packet = publish_packet(data, payload, pid)
        self.published += 1
        if self.connected:
            self._inflight[pid] = packet
            self._send(packet)
        else:
            self._waiting[pid] = packet
        return True

    async def probe(self, timeout: float = 1.0) -> bool:  # noqa: ASYNC109
        """Whether the broker answers now: a PINGREQ on the current connection and its
        PINGRESP within `timeout` s. A frozen broker keeps its TCP connections open and
        is noticed by keepalive only after 30 s or more; this notices it at once (for
        /readyz). Concurrent callers share one PINGREQ."""
        conn = self._conn
        if conn is None or not self.connected:
            return False
        probe = self._probe
        if probe is None or probe.done():
            probe = self._probe = self._loop.create_future()
            conn.write(PINGREQ_PACKET, self._loop.time())
        try:
            return await asyncio.wait_for(asyncio.shield(probe), timeout)
        except TimeoutError:
            return False

    # `timeout` bounds the wait for PUBACKs only; closing after it is quick.
    async def stop(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109
        """Wait (bounded) for outstanding PUBACKs if connected, DISCONNECT, close."""
        self._stopping = True
        self._wake.set()
        conn = self._conn
        if conn is not None and self.connected and self._inflight:
            self._drained = self._loop.create_future()
            await asyncio.wait(
                {self._drained, conn.lost}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
            self._task = None
        conn, self._conn = self._conn, None
        if conn is not None and conn.transport is not None:
            if self.connected:  # what was published went out while draining
                conn.write(DISCONNECT_PACKET, self._loop.time())
            conn.transport.close()  # after writing what is buffered
            await asyncio.wait({conn.lost}, timeout=1.0)
        self.connected = False

    # -- the connection -----------------------------------------------------------------

    async def _keep_connected(self) -> None:
        delay = 0.0
        while not self._stopping:
            if delay:
                jittered = min(delay * random.uniform(0.8, 1.2), RECONNECT_MAX_S)  # noqa: S311
                try:
                    await asyncio.wait_for(self._wake.wait(), jittered)
                    return  # stopping
                except TimeoutError:
                    pass
            conn = await self._open()
            if conn is not None:
                since = self._loop.time()
                await self._serve(conn)
                if self._loop.time() - since >= STABLE_S:
                    delay = 0.0
            delay = min(max(delay * 2, RECONNECT_MIN_S), RECONNECT_MAX_S)

    async def _open(self) -> _Connection | None:
        """A connection whose CONNACK accepted us, with everything held sent on it."""
        url, conn = self.url, None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                _, conn = await self._loop.create_connection(
                    lambda: _Connection(self, self._loop.time()), url.host, url.port, ssl=self._ssl
                )
                self._conn = conn
                conn.write(self._connect, self._loop.time())
                code = await conn.connack
        except (OSError, TimeoutError) as e:
            code, reason = None, type(e).__name__
        else:
            reason = (
                "closed before CONNACK" if code is None else f"refused: {REFUSALS.get(code, code)}"
            )
        if code != 0:
            self._failures += 1
            self._warn(
                "%s: no connection to the broker at %s:%d (%s); attempt %d, retrying",
                self.label,
                url.host,
                url.port,
                reason,
                self._failures,
            )
            if conn is not None and conn.transport is not None:
                conn.transport.abort()
            return None
        if self._failures:
            log.info("%s: connected after %d failed attempts", self.label, self._failures)
            self._failures = 0
        self.connected = True
        self._out = [bytes([p[0] | 0x08]) + p[1:] for p in self._inflight.values()]
        self._inflight.update(self._waiting)
        self._out += self._waiting.values()
        self._waiting.clear()
        self._flush()
        return conn

    async def _serve(self, conn: _Connection) -> None:
        """Until the connection is gone. PINGREQ after keepalive/2 s without sending, and
        checked every keepalive/2 s, so the gap never reaches the keepalive; no answer to
        it within keepalive s drops the connection."""
        if not self.keepalive:
            await conn.lost
            return
        interval = self.keepalive / 2
        while not conn.lost.done():
            await asyncio.wait({conn.lost}, timeout=interval)
            now = self._loop.time()
            if conn.lost.done():
                break
            if conn.ping_sent is not None and now - conn.ping_sent >= self.keepalive:
                self._drop(conn, f"no PINGRESP within {self.keepalive} s")
                await conn.lost
            elif now - conn.last_sent >= interval:
                conn.write(PINGREQ_PACKET, now)
                if conn.ping_sent is None:
                    conn.ping_sent = now

    def _received(self, conn: _Connection, data: bytes) -> None:
        if conn is not self._conn:
            return
        try:
            packets = conn.reader.feed(data)
        except MqttProtocolError as e:
            return self._drop(conn, str(e))
        conn.ping_sent = None  # any packet shows the broker is there
        for first, body in packets:
            if first == PUBACK and len(body) == 2 and self.connected:
                if self._inflight.pop(int.from_bytes(body, "big"), None) is not None:
                    self.acknowledged += 1
            elif first == PINGRESP and not body:
                if self._probe is not None and not self._probe.done():
                    self._probe.set_result(True)
            elif first == CONNACK and len(body) == 2 and not conn.connack.done():
                conn.connack.set_result(body[1])
            else:
                return self._drop(conn, f"unexpected packet 0x{first:02x} ({len(body)} bytes)")
        if self._drained is not None and not self._inflight and not self._drained.done():
            self._drained.set_result(None)

    def _lost(self, conn: _Connection) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._out.clear()  # written again from _inflight after the next CONNACK
        if self._probe is not None and not self._probe.done():
            self._probe.set_result(False)
        if self.connected and not self._stopping:
            held = self.in_flight
            self._warn("%s: connection lost, %d messages unacknowledged", self.label, held)
        self.connected = False

    def _drop(self, conn: _Connection, why: str) -> None:
        log.warning("%s: %s; dropping the connection", self.label, why)
        if conn.transport is not None:
            conn.transport.abort()

    def _send(self, packet: bytes) -> None:
        self._out.append(packet)
        if not self._flush_due:
            self._flush_due = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Everything published since the last flush in one write (one send system call)."""
        self._flush_due = False
        out, self._out = self._out, []
        if out and self._conn is not None and self.connected:
            self._conn.write(out[0] if len(out) == 1 else b"".join(out), self._loop.time())

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: stopped by a bug", self.label, exc_info=task.exception())

    def _warn(self, msg: str, *args: object) -> None:
        """Trouble, once at first and then at most every WARN_EVERY_S, not per attempt."""
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(msg, *args)
