"""Helpers of the fault tests: consumer processes, a device's message stream, counts."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg

from egenmon.dev.cluster import free_port
from egenmon.dev.mosquitto import Mosquitto
from egenmon.dev.simulate_mqtt import DevicePublisher
from tests.conftest import stop_process

BASE_TIME = dt.datetime(2026, 1, 15, 8, 0, tzinfo=dt.UTC)


def wait_until(
    predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def message(device_id: str, i: int) -> dict:
    """Message i of a stream: one reading, its own time, so each is one stored row."""
    return {
        "message_id": f"m-{i}",
        "device_id": device_id,
        "readings": [
            {
                "type": "heart_rate",
                "time": (BASE_TIME + dt.timedelta(seconds=i)).isoformat(),
                "value": 55 + i % 40,
                "unit": "/min",
            }
        ],
    }


def stored(database_url: str, device_id: str) -> tuple[int, int]:
    """(rows, distinct dedup keys) stored for the device."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT dedup_key) FROM readings WHERE device_id = %s",
            (device_id,),
        ).fetchone()
    assert row
    return row[0], row[1]


def try_stored(database_url: str, device_id: str) -> int | None:
    try:
        return stored(database_url, device_id)[0]
    except psycopg.OperationalError:
        return None


def quarantined(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute("SELECT device_id, topic, reason FROM quarantine").fetchall()


class Consumer:
    """One `egenmon serve` process running the MQTT consumer, with its log in a file."""

    def __init__(self, workdir: Path, index: int, http: bool) -> None:
        self.log = workdir / f"consumer-{index}.log"
        self.port = free_port() if http else None
        cmd = [sys.executable, "-m", "egenmon", "serve", "--no-scheduler"]
        cmd += ["--port", str(self.port)] if http else ["--no-http"]
        env = {**os.environ, "EGENMON_LOG_LEVEL": "INFO"}
        self._out = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._out, stderr=subprocess.STDOUT)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_subscribed(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"consumer exited ({self.proc.returncode}):\n{self.text()}")
            return "subscribed" in self.text()

        wait_until(ready, timeout, "the consumer to subscribe")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc, grace=20)
        self._out.close()

    def counts(self) -> tuple[int, int]:
        """(received, acknowledged), from the line a cleanly stopped consumer logs."""
        found = re.findall(r"stopped \((\d+) received, (\d+) acknowledged\)", self.text())
        assert found, self.text()
        return int(found[-1][0]), int(found[-1][1])

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()


class Stream:
    """A device publishing messages 0..n-1 at a steady pace from a thread, QoS 1, through
    its persistent session, reconnecting and resending like a real device."""

    def __init__(self, broker: Mosquitto, device: dict, n: int, per_s: float) -> None:
        self.n = n
        self.per_s = per_s
        self.device_id = device["id"]
        self.pub = DevicePublisher(
            "127.0.0.1",
            broker.port,
            device["id"],
            device["secret"],
            client_id=device["id"],
        ).connect()
        self.sent = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Stream:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            t0 = time.monotonic()
            for i in range(self.n):
                self.pub.publish(message(self.device_id, i))
                self.sent = i + 1
                ahead = t0 + (i + 1) / self.per_s - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as e:  # noqa: BLE001 (reported by finish())
            self.error = e

    def finish(self, timeout: float = 40) -> None:
        """Wait until every message is published and acknowledged by the broker."""
        self._thread.join(timeout)
        assert self.error is None, self.error
        assert self.sent == self.n
        assert self.pub.wait_published(timeout), "the broker did not take every message"

    def close(self) -> None:
        self.pub.close()
