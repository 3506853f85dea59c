"""alert-latency: seconds from a critical reading's commit to its open alert and webhook.

Starts a throwaway PostgreSQL+TimescaleDB cluster with fsync on (unless
EGENMON_DATABASE_URL is given), registers --devices devices (one patient each), a webhook
to a real little HTTP receiver in this process, and a real `egenmon serve --no-mqtt`
(HTTP, the rule worker and the scheduler, its scan at the default interval). Then, open
loop for --seconds: Reading messages of --batch normal readings (heart rate, SpO2,
respiration, temperature, at fresh times) at --rate readings a second over keep-alive
HTTP; --criticals-per-s of them carry an SpO2 of 85 % for a patient that had none yet.

For each critical reading: `commit` is when the answer to its message arrived (the
answer follows the commit); `open` is when a poller (every POLL_S) first saw its
threshold alert; `delivery` is when the receiver got the alert's webhook. p50/p99 are
over the criticals; `missed` counts those with no alert GRACE_S after the last message.

`--scan-only` runs the same with the instant rules off (EGENMON_INSTANT_RULES=false): the
scan alone, at --scan-interval, as before issue 20.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import http.server
import multiprocessing
import os
import queue as queue_module
import random
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg

from egenmon.bench.ingest_http import (
    Device,
    _Conn,
    _cpu_seconds,
    _max_rss_mb,
    _register,
    _wait_ready,
)
from egenmon.dev.cluster import free_port, throwaway_database
from egenmon.settings import Settings
from egenmon.store import alerts as alerts_store
from egenmon.store import readings as readings_store
from egenmon.store import webhooks
from egenmon.store.migrate import migrate

DB_NAME = "egenmon_bench"
POLL_S = 0.02
KEY = "threshold:spo2"  # the alert a critical reading (SpO2 85 %) opens
GRACE_S = 15.0
GOAL_P99_S = 2.0
NORMAL = (
    ("heart_rate", "/min", lambda r: r.randrange(60, 85)),
    ("spo2", "%", lambda r: r.randrange(96, 100)),
    ("respiratory_rate", "/min", lambda r: r.randrange(13, 19)),
    ("body_temperature", "Cel", lambda r: round(r.uniform(36.4, 37.3), 1)),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rate", type=float, default=10_000.0, help="readings a second")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to send")
    parser.add_argument("--batch", type=int, default=100, help="readings per message")
    parser.add_argument("--devices", type=int, default=1000, help="devices (one patient each)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent HTTP connections")
    parser.add_argument(
        "--criticals-per-s", type=float, default=10.0, help="critical readings a second"
    )
    parser.add_argument(
        "--scan-only", action="store_true", help="instant rules off: the scan alone (before)"
    )
    parser.add_argument(
        "--scan-interval", type=float, default=60.0, help="the scheduler's interval, seconds"
    )
    parser.add_argument(
        "--readings", type=int, default=None, help="readings in all (sets --seconds from --rate)"
    )


def run(args: argparse.Namespace, settings: Settings) -> Iterator[dict]:
    if args.readings is not None:
        args.seconds = args.readings / args.rate
    if args.rate <= 0 or args.seconds <= 0 or not 1 <= args.batch <= 1000 or args.devices < 1:
        raise ValueError("--rate and --seconds must be positive, --batch 1 to 1000")
    with contextlib.ExitStack() as stack:
        url = settings.database_url or stack.enter_context(
            throwaway_database("egenmon-bench-alerts-", dbname=DB_NAME)
        )
        receiver = stack.enter_context(_receiver())
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            devices = _register(conn, args.devices)
            webhooks.add_webhook(conn, receiver.url, None, "bench alert-latency", "bench")
        base, serve = stack.enter_context(_serve(url, args))
        yield _bench(args, url, base, serve, devices, receiver)


# -- the webhook receiver ------------------------------------------------------------------


class Receiver:
    """The webhook receiver: a process of its own (this one's GIL is busy sending), which
    reports (patient, key, CLOCK_MONOTONIC time) of each first delivery."""

    def __init__(self, url: str, queue: Any) -> None:
        self.url = url
        self.queue = queue
        self.first: dict[tuple[str, str], float] = {}

    def drain(self) -> None:
        while True:
            try:
                pid, key, at = self.queue.get_nowait()
            except queue_module.Empty:
                return
            self.first.setdefault((pid, key), at)


def _receive(port: int, out: Any) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            at = time.monotonic()
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with contextlib.suppress(ValueError, KeyError, TypeError):
                alert = orjson.loads(body)["alert"]
                out.put((alert["patient_id"], alert["key"], at))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        # The default backlog of 5 refused connections in bursts (the platform then
        # retries after its backoff, a minute): a receiver this bench measures must not.
        request_queue_size = 256

    Server(("127.0.0.1", port), Handler).serve_forever()


@contextlib.contextmanager
def _receiver() -> Iterator[Receiver]:
    port = free_port()
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_receive, args=(port, results), daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline or not proc.is_alive():
                raise RuntimeError("the webhook receiver did not start")
            time.sleep(0.05)
        yield Receiver(f"http://127.0.0.1:{port}/hook", results)
    finally:
        proc.terminate()
        proc.join(5)


@contextlib.contextmanager
def _serve(url: str, args: argparse.Namespace) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    env.update(
        {
            "EGENMON_DATABASE_URL": url,
            "EGENMON_LOG_LEVEL": os.environ.get("EGENMON_LOG_LEVEL", "WARNING"),
            "EGENMON_AUTH_SECRET": secrets.token_urlsafe(32),
            "EGENMON_SCHEDULER_INTERVAL_S": str(args.scan_interval),
            "EGENMON_INSTANT_RULES": "false" if args.scan_only else "true",
            "EGENMON_WEBHOOK_SECRET": secrets.token_urlsafe(32),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "egenmon", "serve", "--no-mqtt", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ready(port, proc)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


# -- the workload ----------------------------------------------------------------------------


def _bench(
    args: argparse.Namespace,
    url: str,
    base: str,
    serve: subprocess.Popen,
    devices: list[Device],
    receiver: Receiver,
) -> dict:
    port = int(base.rsplit(":", 1)[1])
    started_at = dt.datetime.now(dt.UTC)
    seen: dict[str, float] = {}  # patient → monotonic time its threshold alert was seen
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(url, started_at, seen, stop), daemon=True)
    poller.start()
    cpu_before = _cpu_seconds(serve.pid)
    try:
        sent = asyncio.run(_send(port, devices, args))
        # Wait for every critical's alert (and webhook), GRACE_S at most (scan-only: two
        # intervals more, as the scan may just have begun when the last one committed).
        grace = GRACE_S + (2 * args.scan_interval if args.scan_only else 0.0)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            receiver.drain()
            delivered = sum(1 for p in sent["commits"] if (p, KEY) in receiver.first)
            if all(p in seen for p in sent["commits"]) and delivered == len(sent["commits"]):
                break
            time.sleep(0.1)
    finally:
        stop.set()
        poller.join(5)
    cpu = _cpu_seconds(serve.pid) - cpu_before
    commits: dict[str, float] = sent["commits"]
    opened = sorted(max(0.0, seen[p] - t) for p, t in commits.items() if p in seen)
    receiver.drain()
    delivered_at = {p: receiver.first.get((p, KEY)) for p in commits}
    delivery = sorted(max(0.0, d - commits[p]) for p, d in delivered_at.items() if d is not None)
    ids = [d.id for d in devices]
    with psycopg.connect(url, autocommit=True) as conn:
        stored = readings_store.count_received(conn, ids, started_at)
        by_actor = alerts_store.openers(conn, KEY)
    return {
        "rate": args.rate,
        "p50_s": _pct(opened, 0.50),
        "p99_s": _pct(opened, 0.99),
        "delivery_p99_s": _pct(delivery, 0.99),
        "readings": sent["readings"],
        "criticals": len(commits),
        "missed": len(commits) - len(opened),
        "mode": "scan-only" if args.scan_only else "instant",
        "goal_p99_s": GOAL_P99_S,
        "max_s": round(opened[-1], 3) if opened else None,
        "delivery_p50_s": _pct(delivery, 0.50),
        "deliveries_missed": len(commits) - len(delivery),
        "rate_achieved": round(sent["readings"] / sent["seconds"]),
        "seconds": round(sent["seconds"], 3),
        "lost": sent["readings"] - stored,
        "failed_requests": sent["failed"],
        "opened_by": by_actor,
        "scan_interval_s": args.scan_interval,
        "batch": args.batch,
        "devices": len(devices),
        "serve_cpu_s": round(cpu, 2),
        "serve_max_rss_mb": _max_rss_mb(serve.pid),
    }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(len(values) * q))], 3)


def _poll(url: str, since: dt.datetime, seen: dict[str, float], stop: threading.Event) -> None:
    """Record when each threshold:spo2 alert is first visible (every POLL_S)."""
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            rows = alerts_store.opened_since(conn, KEY, since)
            at = time.monotonic()
            for pid in rows:
                seen.setdefault(pid, at)
            stop.wait(POLL_S)


async def _send(port: int, devices: list[Device], args: argparse.Namespace) -> dict:
    rng = random.Random(20)  # noqa: S311  a workload, not a secret
    total = int(args.rate * args.seconds)
    messages = max(1, total // args.batch)
    every = args.batch / args.rate  # seconds between messages
    critical_every = max(1, round(args.rate / args.batch / args.criticals_per_s))
    fresh = list(devices)
    rng.shuffle(fresh)
    queue: asyncio.Queue[tuple[int, Device, bool] | None] = asyncio.Queue()
    commits: dict[str, float] = {}
    readings = 0
    failed = 0

    def body(device: Device, critical: bool) -> tuple[bytes, int]:
        now = dt.datetime.now(dt.UTC)
        out = []
        for j in range(args.batch):
            type_, unit, value = NORMAL[j % len(NORMAL)]
            # Distinct times (microseconds apart) keep every reading's dedup key fresh; a
            # device's next message comes seconds later.
            t = now - dt.timedelta(microseconds=j)
            out.append({"type": type_, "time": t.isoformat(), "value": value(rng), "unit": unit})
        if critical:
            out[1] = {"type": "spo2", "time": now.isoformat(), "value": 85, "unit": "%"}
        return orjson.dumps({"device_id": device.id, "readings": out}), len(out)

    async def client() -> None:
        nonlocal readings, failed
        conn = _Conn(port)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                _, device, critical = item
                data, n = body(device, critical)
                try:
                    status, _ = await conn.post("/api/v1/readings", device.secret, data)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    status = 0
                    conn = _Conn(port)
                if status == 200:
                    readings += n
                    if critical:
                        commits[str(device.patient_id)] = time.monotonic()
                else:
                    failed += 1
        finally:
            conn.close()

    tasks = [asyncio.create_task(client()) for _ in range(args.clients)]
    judged: set[str] = set()
    rotation = 0
    t0 = time.monotonic() + 0.05
    for k in range(messages):
        delay = t0 + k * every - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        critical = k % critical_every == critical_every // 2 and bool(fresh)
        if critical:
            device = fresh.pop()
            judged.add(device.id)
        else:
            # Not a patient with a critical reading: their next normal SpO2 (a re-measure)
            # would be the newest before the rules judged the critical one.
            device = devices[rotation % len(devices)]
            while device.id in judged and len(judged) < len(devices):
                rotation += 1
                device = devices[rotation % len(devices)]
            rotation += 1
        queue.put_nowait((k, device, critical))
    for _ in tasks:
        queue.put_nowait(None)
    await asyncio.gather(*tasks)
    return {
        "readings": readings,
        "seconds": time.monotonic() - t0,
        "commits": commits,
        "failed": failed,
    }
