"""fhir-search: Observation search latency (one patient, one code, 30 days) over HTTP.

Loads the readings hypertable with COPY (many patients, several codes, readings spread
over --days), then times `GET /fhir/Observation?patient=P&code=http://loinc.org|C&date=ge..
&date=lt..` (30 days, the default page of 50) against a real `egenmon serve` process with
an integrator token, one request after another over a kept-alive connection. Each query
also writes its access-log row, as every search does.

Without EGENMON_DATABASE_URL it starts a throwaway PostgreSQL+TimescaleDB cluster with
fsync off for the bulk load only (loading test data is not what is measured); fsync,
synchronous_commit and full_page_writes are switched back on before the queries run.
With EGENMON_DATABASE_URL it migrates and loads that database and leaves its settings alone.

The ceiling beside it: the same SQL (`egenmon.store.readings.search_observations`) run
directly with psycopg, without HTTP, rendering or the access log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

from egenmon import progress
from egenmon.auth import issue_token
from egenmon.dev.cluster import Cluster, free_port
from egenmon.domain.identifiers import luhn_digit
from egenmon.domain.measurements import TYPES
from egenmon.fhir.reads import observation_filter
from egenmon.fhir.search import parse_observation_search
from egenmon.settings import Settings
from egenmon.store import readings as readings_store
from egenmon.store.migrate import migrate

LOADED_TYPES = (
    "heart_rate",
    "blood_pressure",
    "spo2",
    "body_weight",
    "body_temperature",
    "respiratory_rate",
)
_VALUES = {
    "heart_rate": ("72", r"\N"),
    "blood_pressure": ("128", "82"),
    "spo2": ("96", r"\N"),
    "body_weight": ("81.4", r"\N"),
    "body_temperature": ("36.8", r"\N"),
    "respiratory_rate": ("16", r"\N"),
}
WINDOW = timedelta(days=30)
_CHUNK_ROWS = 20_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--readings", type=int, default=1_000_000, help="rows to load")
    parser.add_argument("--patients", type=int, default=2000, help="patients to spread them over")
    parser.add_argument("--queries", type=int, default=1000, help="searches to time")
    parser.add_argument("--days", type=int, default=90, help="days the readings span (>= 31)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed searches first")


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def _identity(n: int) -> str:
    """A valid personnummer for bench patient n (born 1900-1969, unique per n < 10**6)."""
    year = 1900 + n // 12_000 % 70
    month = 1 + n // 1000 % 12
    day = 1 + n % 28
    birth = f"{year:04d}{month:02d}{day:02d}"
    serial = f"{n % 1000:03d}"
    return birth + serial + str(luhn_digit(birth[2:] + serial))


def _registry(conn: psycopg.Connection, patients: int, start: datetime) -> list[tuple[str, str]]:
    """A care unit, patients and one device each; returns (patient id, device id) pairs."""
    run = uuid.uuid4().hex[:8]
    unit = conn.execute(
        "INSERT INTO care_units (name, hsa_id) VALUES (%s, %s) RETURNING id",
        (f"Bench {run}", f"SE2321000016-B{run}"),
    ).fetchone()
    assert unit is not None
    offset = random.randrange(10**5)  # noqa: S311 (spreads test identities, not a secret)
    pnrs = [_identity(offset + i) for i in range(patients)]
    rows = conn.execute(
        "INSERT INTO patients (personnummer, identifier_kind, care_unit_id)"
        " SELECT p, 'personnummer', %s FROM unnest(%s::text[]) AS p"
        " ON CONFLICT (personnummer) DO NOTHING RETURNING id",
        (unit[0], pnrs),
    ).fetchall()
    pairs = [(str(r[0]), f"bench-{run}-{i}") for i, r in enumerate(rows)]
    conn.execute(
        "INSERT INTO devices (id, model, secret_sha256)"
        " SELECT d, 'Bench device', sha256(d::bytea) FROM unnest(%s::text[]) AS d",
        ([d for _, d in pairs],),
    )
    conn.execute(
        "INSERT INTO device_bindings (device_id, patient_id, during)"
        " SELECT d, p, tstzrange(%s, NULL) FROM unnest(%s::text[], %s::uuid[]) AS b(d, p)",
        (start - timedelta(days=1), [d for _, d in pairs], [p for p, _ in pairs]),
    )
    return pairs


def _load(
    conn: psycopg.Connection,
    pairs: list[tuple[str, str]],
    readings: int,
    start: datetime,
    days: int,
    shown: progress.tqdm | None = None,
) -> int:
    """COPY `readings` rows in time order (each chunk's indexes stay in memory); `shown`,
    a progress bar, follows the rows written."""
    series = len(pairs) * len(LOADED_TYPES)
    per_series = max(1, -(-readings // series))  # ceil: the last step may be partial
    step = timedelta(days=days) / per_series
    fixed = {
        name: (TYPES[name].loinc, TYPES[name].mdc, TYPES[name].unit, *_VALUES[name])
        for name in LOADED_TYPES
    }
    written = 0
    with conn.cursor() as cur:
        with cur.copy(
            "COPY readings (time, patient_id, device_id, type, code, mdc, value, value2, unit,"
            " source, dedup_key, received_at) FROM STDIN"
        ) as copy:
            lines: list[str] = []
            for i in range(per_series):
                when = start + step * i
                for j, (patient, device) in enumerate(pairs):
                    # Patients measure at different minutes, types a few seconds apart.
                    base = when + timedelta(seconds=(j * 37) % 3600)
                    for k, name in enumerate(LOADED_TYPES):
                        t = (base + timedelta(seconds=k * 5)).isoformat()
                        code, mdc, unit, v1, v2 = fixed[name]
                        lines.append(
                            f"{t}\t{patient}\t{device}\t{name}\t{code}\t{mdc}\t{v1}\t{v2}\t"
                            f"{unit}\thttp\t{device}|{name}|{t}\t{t}\n"
                        )
                        written += 1
                        if written >= readings:
                            break
                    if written >= readings:
                        break
                if len(lines) >= _CHUNK_ROWS or written >= readings:
                    copy.write("".join(lines))
                    if shown is not None:
                        shown.update(len(lines))
                    lines.clear()
                if written >= readings:
                    break
            if lines:
                copy.write("".join(lines))
                if shown is not None:
                    shown.update(len(lines))
    conn.commit()
    return written


def _setting(conn: psycopg.Connection, name: str) -> str | None:
    row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    return str(row[0]) if row else None


def _serve(url: str, secret: str) -> tuple[str, subprocess.Popen]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    env.update(
        EGENMON_DATABASE_URL=url,
        EGENMON_AUTH_SECRET=secret,
        EGENMON_ENVIRONMENT="production",
        EGENMON_LOG_LEVEL="WARNING",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "egenmon", "serve", "--no-mqtt", "--no-scheduler",
         "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"egenmon serve exited with {proc.returncode}: {err[-1000:]}")
        try:
            httpx.get(base + "/healthz", timeout=1)
            return base, proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("egenmon serve did not start within 60 s")


def _queries(
    pairs: list[tuple[str, str]], start: datetime, days: int, n: int, seed: int
) -> list[list[tuple[str, str]]]:
    rng = random.Random(seed)  # noqa: S311 (reproducible query mix, not a secret)
    span = timedelta(days=days) - WINDOW
    out = []
    for _ in range(n):
        patient, _device = rng.choice(pairs)
        name = rng.choice(LOADED_TYPES)
        low = start + span * rng.random()
        high = low + WINDOW
        out.append(
            [
                ("patient", patient),
                ("code", f"http://loinc.org|{TYPES[name].loinc}"),
                ("date", "ge" + low.strftime("%Y-%m-%dT%H:%M:%SZ")),
                ("date", "lt" + high.strftime("%Y-%m-%dT%H:%M:%SZ")),
            ]
        )
    return out


def _http(
    base: str, token: str, queries: list[list[tuple[str, str]]], warmup: int
) -> tuple[list[float], int]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    times: list[float] = []
    entries = 0
    with httpx.Client(base_url=base + "/fhir", headers=headers, timeout=30) as client:
        for i, params in enumerate(queries):
            started = time.perf_counter()
            r = client.get("/Observation", params=tuple(params))
            body = r.content
            elapsed = time.perf_counter() - started
            if r.status_code != 200:
                raise RuntimeError(f"search answered {r.status_code}: {body[:300]!r}")
            if i >= warmup:
                times.append(elapsed * 1000)
                entries += body.count(b'"resourceType":"Observation"')
    return times, entries


async def _sql(url: str, queries: list[list[tuple[str, str]]], warmup: int) -> list[float]:
    from psycopg.rows import dict_row

    times = []
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as conn:
        for i, params in enumerate(queries):
            q = parse_observation_search(params)
            started = time.perf_counter()
            await readings_store.search_observations(conn, observation_filter(q), None, q.count + 1)
            if i >= warmup:
                times.append((time.perf_counter() - started) * 1000)
    return times


def run(args: argparse.Namespace, settings: Settings) -> Iterator[dict[str, Any]]:
    if args.days <= WINDOW.days:
        raise ValueError("--days must be more than 30 (the searched window)")
    if args.readings < 1 or args.patients < 1 or args.queries < 1:
        raise ValueError("--readings, --patients and --queries must be positive")
    with contextlib.ExitStack() as stack:
        cluster: Cluster | None = None
        if settings.database_url:
            url = settings.database_url
        else:
            tmp = Path(tempfile.mkdtemp(prefix="egenmon-bench-fhir-"))
            os.chmod(tmp, 0o755)  # noqa: S103 (the postgres user must reach its data dir)
            stack.callback(shutil.rmtree, tmp, True)
            cluster = Cluster(
                tmp / "pg", fsync=False, extra_conf={"timescaledb.max_background_workers": "0"}
            )
            cluster.start()
            stack.callback(cluster.destroy)
            with psycopg.connect(cluster.url(), autocommit=True) as c:
                c.execute("CREATE DATABASE egenmon_bench")
            url = cluster.url("egenmon_bench")
        with psycopg.connect(url) as conn:
            migrate(conn)
            conn.autocommit = False
            end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
            start = end - timedelta(days=args.days)
            pairs = _registry(conn, args.patients, start)
            conn.commit()
            fsync_load = _setting(conn, "fsync") == "on"
            load_started = time.perf_counter()
            with progress.bar(
                args.readings, "loading", enabled=progress.wanted(args.json)
            ) as shown:
                loaded = _load(conn, pairs, args.readings, start, args.days, shown)
            load_seconds = time.perf_counter() - load_started
            conn.autocommit = True
            # The steady state of a store that has been up for a while: autovacuum has
            # set the hint bits and the statistics are current.
            conn.execute("VACUUM (ANALYZE) readings")
            conn.execute("ANALYZE patients")
            if cluster is not None:
                # Honest figures: what is measured runs with durable commits.
                for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                    conn.execute(f"ALTER SYSTEM SET {setting} = on")
                conn.execute("SELECT pg_reload_conf()")
                conn.execute("CHECKPOINT")
                deadline = time.monotonic() + 10
                while _setting(conn, "fsync") != "on" and time.monotonic() < deadline:
                    time.sleep(0.1)
            row = conn.execute("SELECT count(*) FROM readings").fetchone()
            rows_in_store = int(row[0]) if row else loaded
            fsync_queries = _setting(conn, "fsync") == "on"
        secret = secrets.token_hex(32)
        base, proc = _serve(url, secret)

        def stop_serve() -> None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stderr:
                proc.stderr.close()

        stack.callback(stop_serve)
        token = issue_token(
            Settings(auth_secret=secret, environment="production", database_url=url),
            role="integrator",
            subject="bench-fhir-search",
        )
        queries = _queries(pairs, start, args.days, args.warmup + args.queries, seed=4)
        times, entries = _http(base, token, queries, args.warmup)
        sql_times = asyncio.run(_sql(url, queries, args.warmup))
        yield {
            "bench": "fhir-search",
            "rows_in_store": rows_in_store,
            "queries": len(times),
            "p50_ms": round(statistics.median(times), 2),
            "p95_ms": round(_percentile(times, 95), 2),
            "p99_ms": round(_percentile(times, 99), 2),
            "mean_entries_per_page": round(entries / len(times), 1),
            "ceiling_sql_p50_ms": round(statistics.median(sql_times), 2),
            "ceiling_sql_p95_ms": round(_percentile(sql_times, 95), 2),
            "goal_p95_ms": 20,
            "patients": len(pairs),
            "codes": len(LOADED_TYPES),
            "days": args.days,
            "load_seconds": round(load_seconds, 1),
            "load_rows_per_s": round(loaded / load_seconds) if load_seconds > 0 else None,
            "fsync_during_load": fsync_load,
            "fsync_during_queries": fsync_queries,
        }
