"""ingest-http: readings posted over HTTP, committed, beside a plain COPY ceiling.

Starts a throwaway PostgreSQL+TimescaleDB cluster with fsync on (an honest durability
figure) unless EGENMON_DATABASE_URL is given, registers devices, starts a real `egenmon
serve --no-mqtt --no-scheduler`, and then:

1. the ceiling: the same readings, normalised outside the clock, written with one plain
   psycopg COPY into a table of the readings hypertable's layout (same indexes, same
   chunking) in the same cluster; measured before and after step 2, the higher kept;
2. batch ingest: many concurrent clients post Reading messages of --batch readings each
   (keep-alive HTTP/1.1 with a small raw client, so the clients, which share the two
   cores, cost little); `seconds` runs from the first request to the last answer, and
   every answer comes after its readings were committed;
3. `lost` (sent minus stored) and `duplicates_stored` (rows sharing a dedup key), by
   querying the store;
4. single-reading requests at a fixed rate (open loop: each request is due at its own
   time whether or not earlier ones were answered; latency counts from that time), after
   a VACUUM ANALYZE and CHECKPOINT so that they see a steady state, not the database
   digesting step 2.

Extra fields: the two ceiling runs, p50, the latency phase's failures and losses, the
serve process's CPU time per reading in the batch phase and its peak RSS.

`--format omh` adds, after step 3, the same number of readings as Open mHealth data
points (`POST /api/v1/omh/dataPoints`, arrays of --batch points, the same clients) and
reports their rate beside the native one: `omh_readings_per_s`, `omh_ratio_to_native`
(goal: at least 0.5), `omh_lost`, `omh_duplicates_stored`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import os
import random
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg

from egenmon.bench import one
from egenmon.dev.cluster import free_port, throwaway_database
from egenmon.devices.credentials import new_secret, secret_digest
from egenmon.domain.identifiers import luhn_digit
from egenmon.domain.readings import COLUMNS, Binding
from egenmon.ingest.message import parse_message
from egenmon.ingest.normalise import normalise
from egenmon.settings import Settings
from egenmon.store import care_units, db, patients
from egenmon.store import devices as devices_store
from egenmon.store.migrate import migrate
from egenmon.store.readings import COPY_TYPES as _TYPES

DB_NAME = "egenmon_bench"
TYPES = (
    ("heart_rate", "/min", lambda i: 55 + i % 40),
    ("spo2", "%", lambda i: 90 + i % 10),
    ("body_temperature", "Cel", lambda i: 36.0 + (i % 25) / 10),
    ("body_weight", "kg", lambda i: 60.0 + (i % 400) / 10),
    ("respiratory_rate", "/min", lambda i: 10 + i % 15),
    ("blood_glucose", "mmol/L", lambda i: 4.0 + (i % 60) / 10),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--readings",
        type=int,
        default=500_000,
        help="readings posted in the batch phase (default 500000)",
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--batch", type=int, default=1000, help="readings per message")
    parser.add_argument("--devices", type=int, default=200, help="devices posting")
    parser.add_argument(
        "--single-rate",
        type=float,
        default=500.0,
        help="single-reading requests a second in the latency phase",
    )
    parser.add_argument(
        "--single-seconds", type=float, default=5.0, help="length of the latency phase"
    )
    parser.add_argument(
        "--format",
        choices=("native", "omh"),
        default="native",
        help="omh: also post the readings as Open mHealth data points, rate side by side",
    )


@dataclass(frozen=True)
class Device:
    id: str
    secret: str
    patient_id: uuid.UUID


def run(args: argparse.Namespace, settings: Settings) -> Iterator[dict]:
    if args.readings < 1 or args.clients < 1 or not 1 <= args.batch <= 1000:
        raise ValueError("--readings and --clients must be positive, --batch 1 to 1000")
    with contextlib.ExitStack() as stack:
        url = settings.database_url or stack.enter_context(
            throwaway_database("egenmon-bench-http-", dbname=DB_NAME)
        )
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            devices = _register(conn, args.devices)
        base, serve = stack.enter_context(_serve(url))
        yield _bench(args, url, base, serve, devices)


# -- environment ----------------------------------------------------------------------


def _register(conn: psycopg.Connection, n: int) -> list[Device]:
    """n devices, each bound to a patient of its own since 2020."""
    unit = care_units.add_care_unit(conn, "Bench", f"SE2321000016-B{secrets.token_hex(4)}")
    since = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    rng = random.Random()  # noqa: S311
    devices: list[Device] = []
    while len(devices) < n:
        nine = f"{rng.randrange(30, 90):02d}{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
        nine += f"{rng.randrange(1000):03d}"
        try:
            patient = patients.add_patient(
                conn, "19" + nine + str(luhn_digit(nine)), "personnummer", unit
            )
        except db.Conflict:
            continue
        secret = new_secret()
        device_id = f"bench-{secrets.token_hex(5)}"
        devices_store.add_device(
            conn, device_id, "Bench", secret_digest(secret), patient_id=patient, since=since
        )
        devices.append(Device(device_id, secret, patient))
    return devices


@contextlib.contextmanager
def _serve(url: str) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    env.update(
        {
            "EGENMON_DATABASE_URL": url,
            "EGENMON_LOG_LEVEL": "WARNING",
            "EGENMON_AUTH_SECRET": secrets.token_urlsafe(32),
        }
    )
    for key in ("EGENMON_BATCH_MAX_ROWS", "EGENMON_BATCH_MAX_DELAY_MS", "EGENMON_POOL_MAX"):
        if key in os.environ:
            env[key] = os.environ[key]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "egenmon",
            "serve",
            "--no-mqtt",
            "--no-scheduler",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(port, proc)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def _wait_ready(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
            raise RuntimeError(f"egenmon serve exited with {proc.returncode}: {err}")
        try:
            status, _ = asyncio.run(_get(port, "/readyz"))
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("egenmon serve was not ready within a minute")


# -- workload -------------------------------------------------------------------------


def _messages(
    devices: list[Device], total: int, batch: int, start: dt.datetime
) -> list[tuple[Device, bytes, int]]:
    """(device, body, readings) for `total` readings, `batch` per message, devices in turn.

    Each device's readings are a minute apart from `start`: no two share a dedup key.
    """
    out = []
    next_index = dict.fromkeys((d.id for d in devices), 0)
    sent = 0
    turn = 0
    while sent < total:
        device = devices[turn % len(devices)]
        turn += 1
        n = min(batch, total - sent)
        first = next_index[device.id]
        readings = []
        for i in range(first, first + n):
            type_name, unit, value = TYPES[i % len(TYPES)]
            t = start + dt.timedelta(minutes=i)
            readings.append(
                {"type": type_name, "time": t.isoformat(), "value": value(i), "unit": unit}
            )
        next_index[device.id] = first + n
        body = orjson.dumps(
            {
                "message_id": str(uuid.uuid4()),
                "device_id": device.id,
                "battery": 0.8,
                "readings": readings,
            }
        )
        out.append((device, body, n))
        sent += n
    return out


def _ceiling_rows(devices: list[Device], work: list[tuple[Device, bytes, int]]) -> list[tuple]:
    """The rows the pipeline makes of the same messages (normalised outside the clock)."""
    bindings = {
        d.id: [Binding(d.patient_id, dt.datetime(2020, 1, 1, tzinfo=dt.UTC))] for d in devices
    }
    now = dt.datetime.now(dt.UTC)
    rows: list[tuple] = []
    for device, body, _ in work:
        got, errors = normalise(
            parse_message(body), device.id, bindings[device.id], now, "http", now
        )
        if errors:
            raise RuntimeError(f"bench readings were rejected: {errors[:3]}")
        rows.extend(got)
    return rows


def _ceiling(url: str, rows: list[tuple]) -> float:
    """Rows/s of one plain COPY of the rows into a fresh copy of the readings layout."""
    cols = ", ".join(COLUMNS)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_ceiling")
        conn.execute("CREATE TABLE bench_ceiling (LIKE readings INCLUDING ALL)")
        interval = one(
            conn.execute(
                "SELECT time_interval FROM timescaledb_information.dimensions"
                " WHERE hypertable_name = 'readings' AND column_name = 'time'"
            )
        )[0]
        conn.execute(
            "SELECT create_hypertable('bench_ceiling', 'time',"
            " chunk_time_interval => %s::interval)",
            (interval,),
        )
        conn.execute("CHECKPOINT")
        conn.autocommit = False
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(f"COPY bench_ceiling ({cols}) FROM STDIN (FORMAT BINARY)") as copy,
        ):
            copy.set_types(_TYPES)
            for row in rows:
                copy.write_row(row)
        conn.commit()
        seconds = time.perf_counter() - started
        conn.autocommit = True
        stored = one(conn.execute("SELECT count(*) FROM bench_ceiling"))[0]
        conn.execute("DROP TABLE bench_ceiling")
        conn.execute("CHECKPOINT")
    if stored != len(rows):
        raise RuntimeError(f"ceiling stored {stored} of {len(rows)} rows")
    return len(rows) / seconds


def _bench(
    args: argparse.Namespace, url: str, base: str, serve: subprocess.Popen, devices: list[Device]
) -> dict:
    port = int(base.rsplit(":", 1)[1])
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) - dt.timedelta(days=30)
    work = _messages(devices, args.readings, args.batch, start)
    rows = _ceiling_rows(devices, work)
    # Millions of objects held here (the messages, the ceiling's rows) would make Python's
    # cyclic collector walk them again and again while the clients and COPY allocate
    # (half the ceiling's time at 1M rows): out of its sight, they cost nothing.
    gc.freeze()
    # The ceiling is measured before and after the batch phase and the higher figure kept:
    # on a machine shared with other work, one unlucky ceiling would flatter the ratio.
    ceiling_before = _ceiling(url, rows)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    cpu_before = _cpu_seconds(serve.pid)
    batch = asyncio.run(_post_all(port, work, args.clients))
    cpu_batch = _cpu_seconds(serve.pid) - cpu_before
    ceiling_after = _ceiling(url, rows)
    ceiling = max(ceiling_before, ceiling_after)
    del rows
    gc.unfreeze()
    ids = [d.id for d in devices]  # a given database may hold other readings too
    with psycopg.connect(url, autocommit=True) as conn:
        stored = one(
            conn.execute(
                "SELECT count(*) FROM readings WHERE device_id = ANY(%s) AND time >= %s",
                (ids, start),
            )
        )[0]
        duplicates = one(
            conn.execute(
                "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM readings"
                " WHERE device_id = ANY(%s) GROUP BY dedup_key HAVING count(*) > 1) d",
                (ids,),
            )
        )[0]

    # The latency phase measures a steady state, not the database digesting the batch
    # phase's load (its checkpoint, autovacuum and statistics come first).
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE readings")
        conn.execute("CHECKPOINT")
    # Single readings at fresh times (a day after the batch phase's last ones).
    later = start + dt.timedelta(minutes=args.readings // max(1, len(devices)) + 1440)
    latency = asyncio.run(_single(port, devices, args.single_rate, args.single_seconds, later))
    with psycopg.connect(url, autocommit=True) as conn:
        single_stored = one(
            conn.execute(
                "SELECT count(*) FROM readings WHERE device_id = ANY(%s) AND time >= %s",
                (ids, later),
            )
        )[0]
    omh: dict = {}
    if getattr(args, "format", "native") == "omh":
        omh = _omh_phase(args, url, port, devices, start + dt.timedelta(days=8))
    rate = args.readings / batch["seconds"]
    if omh:
        omh["omh_ratio_to_native"] = round(omh["omh_readings_per_s"] / rate, 3)
    return {
        "readings": args.readings,
        "seconds": round(batch["seconds"], 3),
        "readings_per_s": round(rate),
        "ceiling_copy_per_s": round(ceiling),
        "ratio_to_ceiling": round(rate / ceiling, 3),
        "ceiling_runs_per_s": [round(ceiling_before), round(ceiling_after)],
        "p99_ms": round(latency["p99_ms"], 2),
        "lost": args.readings - stored,
        "duplicates_stored": int(duplicates),
        "clients": args.clients,
        "batch": args.batch,
        "devices": len(devices),
        "requests_retried": batch["retried"],
        "p50_ms": round(latency["p50_ms"], 2),
        "single_rate": args.single_rate,
        "single_requests": latency["requests"],
        "single_failed": latency["failed"],
        "single_failures": latency["failures"],
        "single_lost": latency["requests"] - latency["failed"] - single_stored,
        "serve_cpu_us_per_reading": round(cpu_batch / args.readings * 1e6, 2),
        "serve_max_rss_mb": _max_rss_mb(serve.pid),
        **omh,
    }


# -- Open mHealth ---------------------------------------------------------------------

_OMH = {
    "heart_rate": ("heart-rate", "heart_rate", "beats/min"),
    "spo2": ("oxygen-saturation", "oxygen_saturation", "%"),
    "body_temperature": ("body-temperature", "body_temperature", "C"),
    "body_weight": ("body-weight", "body_weight", "kg"),
    "respiratory_rate": ("respiratory-rate", "respiratory_rate", "breaths/min"),
    "blood_glucose": ("blood-glucose", "blood_glucose", "mmol/L"),
}


def _omh_messages(
    devices: list[Device], total: int, batch: int, start: dt.datetime
) -> list[tuple[Device, bytes, int]]:
    """The native workload's readings as arrays of Open mHealth data points."""
    out = []
    next_index = dict.fromkeys((d.id for d in devices), 0)
    sent = turn = 0
    created = dt.datetime.now(dt.UTC).isoformat()
    while sent < total:
        device = devices[turn % len(devices)]
        turn += 1
        n = min(batch, total - sent)
        first = next_index[device.id]
        points = []
        for i in range(first, first + n):
            type_name, _unit, value = TYPES[i % len(TYPES)]
            schema, field, unit = _OMH[type_name]
            points.append(
                {
                    "header": {
                        "uuid": str(uuid.uuid4()),
                        "schema_id": {"namespace": "omh", "name": schema, "version": "4.0"},
                        "creation_date_time": created,
                        "acquisition_provenance": {"source_name": "bench", "modality": "sensed"},
                    },
                    "body": {
                        field: {"value": value(i), "unit": unit},
                        "effective_time_frame": {
                            "date_time": (start + dt.timedelta(minutes=i)).isoformat()
                        },
                    },
                }
            )
        next_index[device.id] = first + n
        out.append((device, orjson.dumps(points), n))
        sent += n
    return out


def _omh_phase(
    args: argparse.Namespace, url: str, port: int, devices: list[Device], start: dt.datetime
) -> dict:
    work = _omh_messages(devices, args.readings, args.batch, start)
    result = asyncio.run(_post_all(port, work, args.clients, "/api/v1/omh/dataPoints"))
    ids = [d.id for d in devices]
    with psycopg.connect(url, autocommit=True) as conn:
        stored = one(
            conn.execute(
                "SELECT count(*) FROM readings WHERE device_id = ANY(%s) AND source = 'omh'",
                (ids,),
            )
        )[0]
        duplicates = one(
            conn.execute(
                "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM readings"
                " WHERE device_id = ANY(%s) AND source = 'omh' GROUP BY dedup_key"
                " HAVING count(*) > 1) d",
                (ids,),
            )
        )[0]
    return {
        "omh_readings": args.readings,
        "omh_seconds": round(result["seconds"], 3),
        "omh_readings_per_s": round(args.readings / result["seconds"]),
        "omh_lost": args.readings - stored,
        "omh_duplicates_stored": int(duplicates),
        "omh_requests_retried": result["retried"],
    }


# -- a small HTTP/1.1 client --------------------------------------------------------------


class _Conn:
    """One keep-alive connection: POST a body, read status and body (Content-Length)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, token: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        try:
            return await _response(self.reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    status_line = await reader.readline()
    if not status_line:
        raise asyncio.IncompleteReadError(b"", None)
    status = int(status_line.split()[1])
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        return await _response(reader)
    finally:
        writer.close()


async def _post_all(
    port: int,
    work: list[tuple[Device, bytes, int]],
    clients: int,
    path: str = "/api/v1/readings",
) -> dict:
    queue = list(reversed(work))
    retried = 0
    failures: list[str] = []

    async def client() -> None:
        nonlocal retried
        conn = _Conn(port)
        try:
            while queue:
                device, body, n = queue.pop()
                for attempt in range(6):
                    try:
                        status, answer = await conn.post(path, device.secret, body)
                    except (OSError, asyncio.IncompleteReadError, ValueError) as e:
                        status, answer = 0, str(e).encode()
                    if status == 200:
                        got = orjson.loads(answer)
                        if got["accepted"] + got["duplicates"] != n:
                            failures.append(f"answer {got} for {n} readings")
                        break
                    if status not in (0, 503) or attempt == 5:
                        failures.append(f"{status}: {answer[:200]!r}")
                        break
                    retried += 1  # a device would try again; so does the bench
                    await asyncio.sleep(0.2 * (attempt + 1))
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} batch requests failed, e.g. {failures[0]}")
    return {"seconds": seconds, "retried": retried}


async def _single(
    port: int, devices: list[Device], rate: float, seconds: float, start: dt.datetime
) -> dict:
    total = max(1, int(rate * seconds))
    free: list[_Conn] = []
    latencies: list[float] = []
    failed = 0
    failures: dict[int, int] = {}

    async def one(i: int, due: float) -> None:
        nonlocal failed
        device = devices[i % len(devices)]
        t = start + dt.timedelta(seconds=i)
        body = orjson.dumps(
            {
                "device_id": device.id,
                "readings": [
                    {
                        "type": "heart_rate",
                        "time": t.isoformat(),
                        "value": 60 + i % 30,
                        "unit": "/min",
                    }
                ],
            }
        )
        reused = bool(free)
        conn = free.pop() if free else _Conn(port)
        try:
            status, _ = await conn.post("/api/v1/readings", device.secret, body)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = 0
        if status == 0 and reused:
            # The server closed an idle keep-alive connection (as servers do): any HTTP
            # client sends again on a new one, and so does this one, on the clock.
            conn = _Conn(port)
            try:
                status, _ = await conn.post("/api/v1/readings", device.secret, body)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                status = 0
        latencies.append(time.perf_counter() - due)
        if status == 200:
            free.append(conn)
        else:
            failed += 1
            failures[status] = failures.get(status, 0) + 1
            conn.close()

    # Warm the server's caches first (readings before `start`); not measured.
    async def warm(device: Device) -> None:
        conn = _Conn(port)
        body = orjson.dumps(
            {
                "readings": [
                    {
                        "type": "heart_rate",
                        "unit": "/min",
                        "value": 60,
                        "time": (start - dt.timedelta(hours=1)).isoformat(),
                    }
                ]
            }
        )
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
            await conn.post("/api/v1/readings", device.secret, body)
        free.append(conn)

    await asyncio.gather(*(warm(d) for d in devices[:50]))
    t0 = time.perf_counter() + 0.05
    tasks = []
    for i in range(total):
        due = t0 + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    for conn in free:
        conn.close()
    latencies.sort()
    return {
        "requests": total,
        "failed": failed,
        "failures": {str(k): v for k, v in failures.items()},
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000,
    }


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _max_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None
