"""paho on asyncio: the MQTT client's socket watched by the service's loop, no network thread.

What the consumer (`egenmon.ingest.mqtt`) builds on and no reading passes through
unaided: the consumer's client id, held by one process at a time (`ClientIdLock`);
`LoopConnection`, which drives a paho client from the asyncio loop (add_reader and
add_writer on its socket, reconnects with backoff, reading paused and resumed for flow
control, writes corked together); and a socket that reads ahead (`ReadAheadSocket`), so
paho's many small reads of a burst become one system call.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import random
import socket
import tempfile
import threading
from collections.abc import Iterator
from typing import IO, Any

import paho.mqtt.client as mqtt

from egenmon.devices.broker import RESERVED_PREFIX, reserved_device_id
from egenmon.settings import MqttUrl, Settings

__all__ = ["ClientIdLock", "LoopConnection", "ReadAheadClient", "ReadAheadSocket"]

log = logging.getLogger("egenmon.mqtt")

# First reconnect soon: after a broker restart the platform must subscribe again before
# devices come back (see the consumer's _on_connect); then back off to RECONNECT_MAX_S.
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 30.0
READS_PER_WAKEUP = 200
READ_AHEAD = 65536
CORK = hasattr(socket, "TCP_CORK")  # Linux


class ClientIdLock:
    """A fixed client id for this consumer, stable across restarts of the same process role.

    A configured id (settings.mqtt_client_id, EGENMON_MQTT_CLIENT_ID) wins. Otherwise
    `egenmon-consumer-<host>-<n>`, where n is the lowest slot that no other consumer on
    this host (for the same broker) holds; a file lock marks the slot and the kernel frees
    it when the process dies, even by kill -9, so a restarted consumer takes the same id
    back and resumes its session.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._file: IO[bytes] | None = None
        self.client_id = ""

    def acquire(self) -> str:
        fixed = self.settings.mqtt_client_id
        if fixed:
            if not reserved_device_id(fixed):
                # Devices are bound to their device ids, and only ids starting with
                # "egenmon" are kept from them: a device registered as `fixed` could take
                # this consumer's id (and its session).
                log.warning(
                    "EGENMON_MQTT_CLIENT_ID does not start with %r: a device registered "
                    "with that id could take the consumer's client id",
                    RESERVED_PREFIX,
                )
            self.client_id = fixed
            return fixed
        url = self.settings.mqtt
        assert url is not None
        host = socket.gethostname().split(".")[0] or "host"
        folder = os.path.join(tempfile.gettempdir(), "egenmon-mqtt-consumers")
        os.makedirs(folder, exist_ok=True)
        broker = f"{url.host}_{url.port}".replace("/", "_")
        for n in range(1000):
            f = open(os.path.join(folder, f"{broker}_{n}.lock"), "ab")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            self._file = f
            self.client_id = f"egenmon-consumer-{host}-{n}"
            return self.client_id
        raise RuntimeError("no free MQTT consumer slot on this host (1000 consumers?)")

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class LoopConnection:
    """One paho client driven by the running asyncio loop: socket readiness through
    add_reader/add_writer, keepalive, and reconnection with backoff."""

    def __init__(self, client: mqtt.Client, label: str, url: MqttUrl) -> None:
        self.client = client
        self.label = label
        self.url = url
        self.connected = False  # CONNACK received on the current socket
        self.reading = False
        self._deferred = False  # inside writing_together()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._sock: Any = None
        self._closing = False
        self._wake = asyncio.Event()
        self._gone = asyncio.Event()
        self._runner: asyncio.Task | None = None
        self.packets = 0  # bumped by the owner's callbacks: packets seen so far
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write

    def start(self) -> None:
        self._runner = self._loop.create_task(self._keep_connected(), name=self.label)

    async def stop(self) -> None:
        """DISCONNECT (a persistent session stays in the broker) and close."""
        self._closing = True
        self._wake.set()
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._sock is not None:
            self._gone.clear()
            self.client.disconnect()  # paho closes the socket once the packet is written
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gone.wait(), 2.0)
            sock = self._sock
            if sock is not None:
                self._forget_socket(sock)
                sock.close()

    def lost(self) -> None:
        """The owner's on_disconnect: reconnect soon."""
        self.connected = False
        self._wake.set()

    def pause_reading(self) -> None:
        if self._sock is not None and self.reading:
            self._loop.remove_reader(self._sock)
            self.reading = False

    def resume_reading(self) -> None:
        if self._sock is not None and not self.reading:
            self._loop.add_reader(self._sock, self._readable)
            self.reading = True
            pending = getattr(self._sock, "pending", None)
            if pending and pending():
                self._loop.call_soon(self._readable)

    async def _keep_connected(self) -> None:
        c = self.client
        delay = 0.0  # the first attempt at once; then RECONNECT_MIN_S, doubling
        while not self._closing:
            if c.socket() is None:
                if delay:
                    await self._sleep(delay * (0.8 + 0.4 * random.random()))  # noqa: S311
                    if self._closing:
                        break
                delay = min(max(delay * 2, RECONNECT_MIN_S), RECONNECT_MAX_S)
                try:
                    # The TCP connect blocks: off the loop. paho's socket callbacks from
                    # that thread come back through call_soon_threadsafe.
                    await asyncio.to_thread(c.reconnect)
                except (OSError, mqtt.WebsocketConnectionError) as e:
                    if delay >= 1:
                        log.warning(
                            "%s: broker unreachable at %s:%d (%s); retrying",
                            self.label,
                            self.url.host,
                            self.url.port,
                            type(e).__name__,
                        )
                    continue
            await self._sleep(1.0)
            if self.connected:
                delay = RECONNECT_MIN_S  # a good connection: come back quickly next time
            if c.socket() is not None:
                c.loop_misc()  # PINGREQ when due; drops a connection whose PINGRESP is late

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _in_loop(self, fn: Any, *args: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._watch_socket, sock)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._forget_socket, sock)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._want_write, sock)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._done_writing, sock)

    def _watch_socket(self, sock: Any) -> None:
        self._sock = sock
        self.reading = False
        self.resume_reading()
        # A write registration paho made before this ran (CONNECT, or a publish from this
        # loop while the connect ran in its thread) found no socket here: catch up.
        if self.client.want_write():
            self._loop.add_writer(sock, self._writable)

    def _forget_socket(self, sock: Any) -> None:
        if self._sock is sock:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(sock)
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(sock)
            self._sock = None
            self.reading = False
            self.connected = False
            self._wake.set()
            self._gone.set()

    @contextlib.contextmanager
    def writing_together(self) -> Iterator[None]:
        """Packets queued inside (a batch's PUBACKs) are written together at the end."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False
            sock = self._sock
            if sock is not None and self.client.want_write():
                self._writable()
                if self._sock is sock and self.client.want_write():
                    self._loop.add_writer(sock, self._writable)  # the rest when it drains

    def _want_write(self, sock: Any) -> None:
        if self._sock is sock and not self._deferred:
            self._loop.add_writer(sock, self._writable)

    def _writable(self) -> None:
        # paho sends each queued packet (a PUBACK per message) with its own send(); corked,
        # the kernel sends them as one segment when uncorked, and the broker wakes once.
        sock = self._sock
        if sock is None or not CORK:
            self.client.loop_write()
            return
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        try:
            self.client.loop_write()
        finally:
            if self._sock is sock:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)

    def _done_writing(self, sock: Any) -> None:
        if self._sock is sock:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_writer(sock)

    def _readable(self) -> None:
        c = self.client
        sock = self._sock
        # Bytes read ahead (or decrypted by TLS) that the socket's readiness no longer shows.
        pending = getattr(sock, "pending", None)
        # A call reads one packet, or as many as messages are in flight; read on while
        # packets keep coming, unless the owner paused reading meanwhile.
        for _ in range(READS_PER_WAKEUP):
            before = self.packets
            if c.loop_read() != mqtt.MQTT_ERR_SUCCESS or self._sock is not sock:
                return
            if not self.reading:
                return  # resume_reading() picks up what is buffered
            if self.packets == before and not (pending and pending()):
                return
        if pending and pending():
            self._loop.call_soon(self._readable)  # the rest after other callbacks


class ReadAheadSocket:
    """A socket whose recv() serves from a read-ahead buffer: paho reads each packet's
    fixed header a byte at a time, a system call per byte; this takes up to 64 KiB per
    call and hands it out in the small pieces paho asks for."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._data = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        if self._pos >= len(self._data):
            data = self._sock.recv(READ_AHEAD)  # raises BlockingIOError when empty
            if len(data) <= size:
                return data
            self._data, self._pos = data, 0
        out = self._data[self._pos : self._pos + size]
        self._pos += len(out)
        return out

    def pending(self) -> int:
        inner = getattr(self._sock, "pending", None)
        return len(self._data) - self._pos + (inner() if inner else 0)

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class ReadAheadClient(mqtt.Client):
    """paho's client on a ReadAheadSocket (it creates its socket in `_create_socket`; a
    paho without that method simply reads unbuffered)."""

    def _create_socket(self) -> Any:
        return ReadAheadSocket(super()._create_socket())
