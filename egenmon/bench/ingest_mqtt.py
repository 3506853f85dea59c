"""ingest-mqtt: readings published over MQTT, committed, beside the broker's own ceiling.

Starts a throwaway PostgreSQL+TimescaleDB cluster with fsync on (an honest durability
figure) unless EGENMON_DATABASE_URL is given, and a private Mosquitto with egenmon's
configuration unless EGENMON_MQTT_URL is given, registers devices (each with its own
broker credentials), and then, for each readings-per-message size:

1. the ceiling: publisher processes, each a device with its own credentials, publish the
   messages with QoS 1 while one plain paho subscriber (QoS 1, acknowledging on receipt,
   no ingest) takes them through the same broker; readings from the first publish to the
   last message received. It runs twice and the better run counts
   (`ceiling_runs_per_s` shows both): the speed of this machine wanders by a tenth or
   more between runs. The ceilings run before any consumer has joined the shared
   subscription, so nothing else takes the messages.
2. ingest: a real `egenmon serve --no-http --no-scheduler` consumer (on uvloop, the loop
   every serve process runs, as in production); the same publishers
   publish the same number of messages (other devices, so nothing is a duplicate);
   `seconds` runs from the first publish until the commit of the last reading (commit
   timestamps of the throwaway cluster; the poll that sees every reading stored, with
   another database), so `readings_per_s` is readings committed a second;
3. `lost` (sent minus stored) and `duplicates_stored` (rows sharing a dedup key), by
   querying the store.

By default it reports one message per reading (the goal: at least 70% of the ceiling)
and then 50 readings per message; `--per-message K` runs only K. `--consumers N` runs N
consumer processes on the shared subscription (scaling out, as in production).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import multiprocessing as mp
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from egenmon.bench import one
from egenmon.dev.cluster import throwaway_database
from egenmon.dev.mosquitto import Mosquitto
from egenmon.dev.simulate_mqtt import DevicePublisher
from egenmon.devices.registry import add_device
from egenmon.domain.identifiers import luhn_digit
from egenmon.ingest.mqtt import SUBSCRIBER_PROTOCOL
from egenmon.settings import MqttUrl, Settings, load_settings
from egenmon.store import care_units, db, patients
from egenmon.store.migrate import migrate

DB_NAME = "egenmon_bench"
BASE = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
BATCHED = 50
# Publisher flow: PUBLISH packets in flight per device connection.
PUBLISH_INFLIGHT = 200
CEILING_RUNS = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--readings", type=int, default=100_000, help="readings published per run (default 100000)"
    )
    parser.add_argument(
        "--per-message",
        type=int,
        default=None,
        help=f"readings per message (default: a run with 1, then {BATCHED})",
    )
    parser.add_argument(
        "--batched-readings",
        type=int,
        default=150_000,
        help=f"readings of the {BATCHED}-per-message run when --per-message "
        "is not given (default 150000)",
    )
    parser.add_argument(
        "--consumers",
        type=int,
        default=1,
        help="consumer processes on the shared subscription (default 1)",
    )
    parser.add_argument(
        "--publishers",
        type=int,
        default=2,
        help="publishing processes, one device each (default 2)",
    )


@dataclass(frozen=True)
class Device:
    id: str
    secret: str


@dataclass(frozen=True)
class Run:
    readings: int
    per_message: int

    @property
    def messages(self) -> int:
        return -(-self.readings // self.per_message)


def run(args: argparse.Namespace, settings: Settings) -> Iterator[dict]:
    if args.readings < 1 or args.publishers < 1 or args.consumers < 1:
        raise ValueError("--readings, --publishers and --consumers must be positive")
    if args.per_message is not None and not 1 <= args.per_message <= 1000:
        raise ValueError("--per-message must be 1 to 1000 (a message holds 1000 readings)")
    runs = (
        [Run(args.readings, args.per_message)]
        if args.per_message
        else [Run(args.readings, 1), Run(args.batched_readings, BATCHED)]
    )
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="egenmon-bench-mqtt-"))
        os.chmod(workdir, 0o755)  # noqa: S103 (the postgres user must reach its data folder)
        stack.callback(shutil.rmtree, workdir, True)
        db_url = settings.database_url or stack.enter_context(
            # Commit times, so that the end of a run is the last commit, not the poll
            # that saw it.
            throwaway_database(
                "egenmon-bench-mqtt-", dbname=DB_NAME, conf={"track_commit_timestamp": "on"}
            )
        )
        mqtt_url = settings.mqtt_url or stack.enter_context(_private_broker(workdir))
        # Signs nothing itself: its consumers get a secret of their own (_consumer).
        bench_settings = load_settings(
            secrets_required=False,
            database_url=db_url,
            mqtt_url=mqtt_url,
            mqtt_topic_prefix=settings.mqtt_topic_prefix,
        )
        with psycopg.connect(db_url, autocommit=True) as conn:
            migrate(conn)
            # Two sets of devices per run: the ceiling's and the consumer's.
            plans = [
                (
                    r,
                    _register(conn, bench_settings, args.publishers),
                    _register(conn, bench_settings, args.publishers),
                )
                for r in runs
            ]
        prefix = bench_settings.mqtt_topic_prefix
        # Each ceiling twice, the better counting (the machine's speed wanders).
        ceilings = [
            [_ceiling(bench_settings.mqtt, prefix, r, devs) for _ in range(CEILING_RUNS)]
            for r, devs, _ in plans
        ]
        consumers = [
            stack.enter_context(_consumer(db_url, mqtt_url, workdir, i))
            for i in range(args.consumers)
        ]
        for (r, _, devices), tries in zip(plans, ceilings, strict=True):
            result = _ingest(bench_settings.mqtt, prefix, db_url, r, devices, consumers)
            rate = r.readings / result["seconds"]
            ceiling = max(tries)
            yield {
                "readings": r.readings,
                "per_message": r.per_message,
                "messages": r.messages,
                "publishers": len(devices),
                "consumers": len(consumers),
                "seconds": round(result["seconds"], 3),
                "ended_by": result["ended_by"],
                "readings_per_s": round(rate),
                "ceiling_broker_per_s": round(ceiling),
                "ceiling_runs_per_s": [round(c) for c in tries],
                "ratio_to_ceiling": round(rate / ceiling, 3),
                "lost": result["lost"],
                "duplicates_stored": result["duplicates"],
            }


# -- environment ----------------------------------------------------------------------


@contextlib.contextmanager
def _private_broker(workdir: Path) -> Iterator[str]:
    broker = Mosquitto(workdir / "mqtt")
    try:
        broker.start()
        yield broker.mqtt_url
    finally:
        broker.stop()


def _register(conn: psycopg.Connection, settings: Settings, n: int) -> list[Device]:
    """n devices, each bound to a patient of its own since 2020, with broker credentials."""
    unit = care_units.add_care_unit(conn, "Bench", f"SE2321000016-M{secrets.token_hex(4)}")
    since = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    devices: list[Device] = []
    while len(devices) < n:
        nine = f"{secrets.randbelow(60) + 30:02d}{secrets.randbelow(12) + 1:02d}"
        nine += f"{secrets.randbelow(28) + 1:02d}{secrets.randbelow(1000):03d}"
        try:
            patient = patients.add_patient(
                conn, "19" + nine + str(luhn_digit(nine)), "personnummer", unit
            )
        except db.Conflict:
            continue
        added = add_device(
            conn,
            settings,
            patient_id=str(patient),
            model="Bench",
            device_id=f"bench-{secrets.token_hex(5)}",
            since=since,
        )
        devices.append(Device(added.device_id, added.secret))
    return devices


@contextlib.contextmanager
def _consumer(
    db_url: str, mqtt_url: str, workdir: Path, index: int = 0
) -> Iterator[subprocess.Popen]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    env.update(
        {
            "EGENMON_DATABASE_URL": db_url,
            "EGENMON_MQTT_URL": mqtt_url,
            "EGENMON_LOG_LEVEL": "INFO",
            "EGENMON_AUTH_SECRET": secrets.token_urlsafe(32),
        }
    )
    log = workdir / f"consumer-{index}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "egenmon", "serve", "--no-http", "--no-scheduler"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "subscribed" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "the consumer did not start: " + log.read_text(errors="replace")[-2000:]
                )
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- messages and publishers ------------------------------------------------------------


def _messages(device_id: str, start: int, count: int, per_message: int) -> list[bytes]:
    """Reading messages of `per_message` heart rates, reading i at BASE + i seconds."""
    out = []
    for first in range(start, start + count, per_message):
        readings = [
            {
                "type": "heart_rate",
                "time": (BASE + dt.timedelta(seconds=i)).isoformat(),
                "value": 55 + i % 40,
                "unit": "/min",
            }
            for i in range(first, min(first + per_message, start + count))
        ]
        out.append(orjson.dumps({"message_id": f"{device_id}-{first}", "readings": readings}))
    return out


def _publisher(
    host: str,
    port: int,
    prefix: str,
    device: Device,
    readings: int,
    per_message: int,
    ready: mp.Queue,
    go: threading.Event,  # a multiprocessing context's Event: the same interface
    done: mp.Queue,
) -> None:
    """One device's process: connect, prepare, wait for the start, publish, wait for acks."""
    payloads = _messages(device.id, 0, readings, per_message)
    pub = DevicePublisher(
        host,
        port,
        device.id,
        device.secret,
        prefix=prefix,
        client_id=device.id,
        inflight=PUBLISH_INFLIGHT,
    ).connect()
    ready.put(device.id)
    go.wait()
    started = time.time()
    for p in payloads:
        pub.publish(p)
    ok = pub.wait_published(600)
    done.put((device.id, started, time.time(), ok))
    pub.close()


def _publish_all(
    url: MqttUrl,
    prefix: str,
    run: Run,
    devices: list[Device],
    on_ready: threading.Event | None = None,
) -> tuple[float, float]:
    """Run the publisher processes; returns (first publish, last PUBACK) wall times."""
    ctx = mp.get_context("spawn")
    ready, done = ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    shares = _split(run, len(devices))
    procs = [
        ctx.Process(
            target=_publisher,
            args=(url.host, url.port, prefix, d, n, run.per_message, ready, go, done),
        )
        for d, n in zip(devices, shares, strict=True)
    ]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        if on_ready is not None:
            on_ready.wait(60)
        go.set()
        results = [done.get(timeout=900) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    if not all(ok for *_, ok in results):
        raise RuntimeError("a publisher's messages were not all acknowledged by the broker")
    return min(r[1] for r in results), max(r[2] for r in results)


def _split(run: Run, n: int) -> list[int]:
    """Readings per device, in whole messages."""
    messages = [run.messages // n + (1 if i < run.messages % n else 0) for i in range(n)]
    readings = [m * run.per_message for m in messages]
    readings[-1] -= sum(readings) - run.readings
    return readings


# -- the two measurements ---------------------------------------------------------------


def _ceiling(url: MqttUrl | None, prefix: str, run: Run, devices: list[Device]) -> float:
    """Readings a second through the broker alone: publish → plain QoS 1 subscriber."""
    assert url is not None
    ctx = mp.get_context("spawn")
    ready, result = ctx.Queue(), ctx.Queue()
    sub = ctx.Process(target=_subscriber, args=(url.url, prefix, run.messages, ready, result))
    sub.start()
    try:
        ready.get(timeout=60)
        first, _ = _publish_all(url, prefix, run, devices)
        try:
            last, received = result.get(timeout=900)
        except queue.Empty:
            raise RuntimeError("the ceiling subscriber did not receive every message") from None
    finally:
        sub.join(10)
        if sub.is_alive():
            sub.kill()
    if received < run.messages:
        raise RuntimeError(f"the ceiling subscriber got {received} of {run.messages} messages")
    return run.readings / (last - first)


def _subscriber(
    url_text: str, prefix: str, expected: int, ready: mp.Queue, result: mp.Queue
) -> None:
    url = MqttUrl(url_text)
    count = 0
    done = threading.Event()

    def on_message(client, userdata, msg):
        nonlocal count
        count += 1
        if count >= expected:
            result.put((time.time(), count))
            done.set()

    subscribed = threading.Event()
    # The protocol the consumer subscribes with, so that both measure the same decoding.
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-ceiling-{os.getpid()}",
        protocol=SUBSCRIBER_PROTOCOL,
    )
    c.username_pw_set(url.username, url.password)
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_connect = lambda client, *a: client.subscribe(f"{prefix}/devices/+/readings", qos=1)
    c.connect(url.host, url.port, keepalive=60)
    c.loop_start()
    if not subscribed.wait(30):
        raise RuntimeError("the ceiling subscriber could not subscribe")
    ready.put(True)
    if not done.wait(900):
        result.put((time.time(), count))
    c.disconnect()
    c.loop_stop()


def _ingest(
    url: MqttUrl | None,
    prefix: str,
    db_url: str,
    run: Run,
    devices: list[Device],
    consumers: list[subprocess.Popen],
) -> dict:
    """Publish to the consumer; time until every reading is committed; count the store."""
    assert url is not None
    ids = [d.id for d in devices]
    box: dict = {}

    def publish() -> None:
        try:
            box["times"] = _publish_all(url, prefix, run, devices)
        except BaseException as e:  # noqa: BLE001 (raised below, in the caller's thread)
            box["error"] = e

    t = threading.Thread(target=publish)
    t.start()
    with psycopg.connect(db_url, autocommit=True) as conn:
        stamped = one(conn.execute("SHOW track_commit_timestamp"))[0] == "on"
        deadline = time.monotonic() + 900
        stored = 0
        while stored < run.readings:
            exited = any(c.poll() is not None for c in consumers)
            if "error" in box or exited or time.monotonic() > deadline:
                break
            # Counting scans what is stored and takes CPU from the run it measures: seldom,
            # when the commit times give the end; else often near the end, which the poll
            # that sees everything stored then decides.
            time.sleep(0.5 if stamped else 0.02 if stored >= run.readings * 0.9 else 0.25)
            stored = one(
                conn.execute("SELECT count(*) FROM readings WHERE device_id = ANY(%s)", (ids,))
            )[0]
        end = time.time()
        t.join()
        if "error" in box:
            raise box["error"]
        for c in consumers:
            if c.poll() is not None:
                raise RuntimeError(f"a consumer exited with {c.returncode}")
        # Whatever was still to come has had its chance: count what is stored now.
        time.sleep(1.0)
        total, distinct, last_commit = one(
            conn.execute(
                "SELECT count(*), count(DISTINCT dedup_key), "
                + ("max(pg_xact_commit_timestamp(xmin))" if stamped else "NULL::timestamptz")
                + " FROM readings WHERE device_id = ANY(%s)",
                (ids,),
            )
        )
    ended_by = "poll"
    if last_commit is not None and stored >= run.readings:
        end, ended_by = last_commit.timestamp(), "last commit"
    first, _ = box["times"]
    return {
        "seconds": end - first,
        "ended_by": ended_by,
        "lost": run.readings - distinct,
        "duplicates": total - distinct,
    }
