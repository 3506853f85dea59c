"""Alert scan: one scheduler cycle of every rule over N patients with a week of readings.

Starts a throwaway PostgreSQL+TimescaleDB cluster (fsync off: only for bulk-loading the
test data) unless EGENMON_DATABASE_URL is given, in which case a throwaway database is
created on that server and dropped afterwards. The data are generated in SQL: N patients
on the five protocols (hypertension, heart failure, COPD, diabetes, general), each with a
monitoring plan, a bound device and 7 days of readings at the protocol's pace (about 26
readings a patient), 5 % of them deteriorating over the last two days. Then two cycles run
as `egenmon alerts run-once` runs them: the first opens the alerts, the second is the
steady state (every minute in production). Before the steady cycle, late readings arrive:
LATE_SHARE of the patients upload a device's readings of 10 to 1 days ago at once (the
protocol's schedule, a fifth of them with a gain or fall over days 8 to 5), so the steady
cycle judges them at their measurement times. Each prints one line: `patients`,
`readings_in_window`, `seconds` (the whole cycle: fetch, evaluate, reconcile), with
`scan_seconds`, `late_readings` (arrived late since the previous cycle), `anchors`
(measurement times evaluated besides the scan time), the alerts changed, the worker
processes, `cpu_s` (CPU seconds of the cycle's processes, the database's excluded) and
`ceiling_stream_s`: a plain server-side cursor over the same window (the cost of reading
the data at all).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from egenmon.alerts import engine, monitoring
from egenmon.alerts.rules.findings import CLOCK_SKEW
from egenmon.bench import one
from egenmon.dev.cluster import Cluster
from egenmon.settings import Settings
from egenmon.store import readings
from egenmon.store.migrate import migrate

# protocol → share of patients; measurement types with their pace and values
# (type, every hours, value mean, spread, value2 mean, spread, change when deteriorating).
PROTOCOLS = {
    "hypertension": 0.30,
    "heart_failure": 0.25,
    "copd": 0.20,
    "diabetes": 0.15,
    "general": 0.10,
}
SCHEDULE: dict[str, list[tuple[str, int, float, float, float | None, float | None, float]]] = {
    "hypertension": [
        ("blood_pressure", 12, 128, 8, 80, 5, 45),
        ("heart_rate", 12, 70, 6, None, None, 20),
    ],
    "heart_failure": [
        ("body_weight", 24, 80, 0.3, None, None, 3.5),
        ("blood_pressure", 24, 122, 6, 75, 4, -10),
        ("heart_rate", 24, 72, 5, None, None, 30),
        ("spo2", 24, 97, 0.8, None, None, -6),
    ],
    "copd": [
        ("spo2", 24, 95.5, 0.8, None, None, -6),
        ("heart_rate", 24, 78, 5, None, None, 25),
        ("respiratory_rate", 24, 16, 1.5, None, None, 8),
        ("body_temperature", 24, 36.8, 0.2, None, None, 1.5),
    ],
    "diabetes": [
        ("blood_glucose", 12, 7, 1.2, None, None, -4.5),
        ("blood_pressure", 24, 126, 7, 78, 5, 0),
    ],
    "general": [("blood_pressure", 24, 124, 7, 77, 5, 0), ("heart_rate", 24, 70, 6, None, None, 0)],
}
SICK_SHARE = 0.05
DAYS = 7
# Patients (one in 50) whose device was offline and uploads 10 to 1 days ago at once.
LATE_EVERY = 50
LATE_DAYS = (10, 1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--patients", type=int, default=100_000, help="patients (default 100000)")
    parser.add_argument(
        "--workers", type=int, help="evaluating processes (default: as a cycle chooses)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the cluster (its folder)")


def run(args: argparse.Namespace, settings: Settings) -> Iterator[dict]:
    if args.patients < 1:
        raise ValueError("--patients must be at least 1")
    with _database(settings, args.keep) as url:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        stored = load(url, args.patients, now)
        stream_s = ceiling_stream(url, now)
        late = 0
        for label in ("first", "steady"):
            if label == "steady":
                late = add_late(url, now)
            cpu = _cpu()
            result = engine.run_cycle(url, tz=settings.tz, now=now, workers=args.workers)
            yield {
                "patients": result.patients,
                "readings_in_window": result.readings_in_window,
                "seconds": round(result.seconds, 3),
                "cycle": label,
                "scan_seconds": round(result.scan_seconds, 3),
                "late_readings": late,
                "anchors": result.anchors,
                "ceiling_stream_s": round(stream_s, 3),
                "cpu_s": round(_cpu() - cpu, 3),
                "workers": result.workers,
                "findings": result.findings,
                "opened": len(result.opened),
                "updated": len(result.updated),
                "escalated": len(result.escalated),
                "readings_stored": stored,
            }
            now += dt.timedelta(minutes=1)


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the worker processes): with
    other work on the machine, a truer measure of the cost than the wall clock."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextlib.contextmanager
def _database(settings: Settings, keep: bool) -> Iterator[str]:
    """A migrated throwaway database: on the given server, or in a private cluster."""
    if settings.database_url:
        name = f"egenmon_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        url = psycopg.conninfo.make_conninfo(settings.database_url, dbname=name)
        try:
            with psycopg.connect(url) as conn:
                migrate(conn)
            yield url
        finally:
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        return
    folder = Path(tempfile.mkdtemp(prefix="egenmon-bench-alerts-"))
    folder.chmod(0o755)  # the postgres user reaches its data folder when we are root
    cluster = Cluster(
        folder / "pg",
        fsync=False,
        extra_conf={"max_locks_per_transaction": "256", "timescaledb.max_background_workers": "0"},
    )
    cluster.start()
    try:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE bench")
        with psycopg.connect(cluster.url("bench")) as conn:
            migrate(conn)
        yield cluster.url("bench")
    finally:
        if keep:
            cluster.stop()
        else:
            cluster.destroy()
            shutil.rmtree(folder, ignore_errors=True)


def load(url: str, n: int, now: dt.datetime) -> int:
    """N patients with plans, devices and a week of readings; the readings stored."""
    from egenmon.domain.measurements import TYPES

    with psycopg.connect(url, autocommit=True) as conn:
        unit = one(
            conn.execute(
                "INSERT INTO care_units (name, hsa_id) VALUES ('Bench', 'SE2321000016-BENCH')"
                " RETURNING id"
            )
        )[0]
        conn.execute(
            "CREATE UNLOGGED TABLE bench_patients AS"
            " SELECT i, gen_random_uuid() AS id, 'bench-' || i AS device_id,"
            " (random() < %s) AS sick, (random() * 600)::int AS phase_min,"
            " CASE WHEN i %% 20 < 6 THEN 'hypertension' WHEN i %% 20 < 11 THEN 'heart_failure'"
            " WHEN i %% 20 < 15 THEN 'copd' WHEN i %% 20 < 18 THEN 'diabetes' ELSE 'general'"
            " END AS protocol FROM generate_series(1, %s) AS i",
            (SICK_SHARE, n),
        )
        conn.execute(
            "INSERT INTO patients (id, personnummer, identifier_kind, care_unit_id)"
            " SELECT id, lpad(i::text, 12, '0'), 'personnummer', %s FROM bench_patients",
            (unit,),
        )
        conn.execute(
            "INSERT INTO devices (id, model, secret_sha256, last_seen)"
            " SELECT device_id, 'Bench hub', sha256(device_id::bytea), %s - interval '2 hours'"
            " FROM bench_patients",
            (now,),
        )
        conn.execute(
            "INSERT INTO device_bindings (device_id, patient_id, during)"
            " SELECT device_id, id, tstzrange(%s - interval '60 days', NULL) FROM bench_patients",
            (now,),
        )
        for protocol in PROTOCOLS:
            doc = monitoring.document(monitoring.make_plan(protocol))
            conn.execute(
                "INSERT INTO monitoring_plans (patient_id, protocol, plan, version, set_by,"
                " set_at) SELECT id, %s, %s, 1, 'bench', %s - interval '30 days'"
                " FROM bench_patients WHERE protocol = %s",
                (protocol, Jsonb(doc), now, protocol),
            )
        conn.execute(
            "CREATE UNLOGGED TABLE bench_schedule (protocol text, type text, code text,"
            " mdc text, unit text, every interval, v1 float8, s1 float8, v2 float8, s2 float8,"
            " sick float8)"
        )
        with conn.cursor() as cur, cur.copy("COPY bench_schedule FROM STDIN") as copy:
            for protocol, items in SCHEDULE.items():
                for type_, every, v1, s1, v2, s2, sick in items:
                    t = TYPES[type_]
                    copy.write_row(
                        (
                            protocol,
                            type_,
                            t.loinc,
                            t.mdc,
                            t.unit,
                            dt.timedelta(hours=every),
                            v1,
                            s1,
                            v2,
                            s2,
                            sick,
                        )
                    )
        # Readings measured every `every` over 7 days (ending an hour ago), values around
        # the patient's usual with noise; the sick drift over their last two days.
        conn.execute(
            "INSERT INTO readings (time, patient_id, device_id, type, code, mdc, value, value2,"
            " unit, on_oxygen, source, dedup_key, received_at)"
            " SELECT t, p.id, p.device_id, s.type, s.code, s.mdc,"
            "  round((s.v1 + s.s1 * (random() - 0.5) * 2 + CASE WHEN p.sick THEN s.sick *"
            "   greatest(0, 1 - extract(epoch FROM %(end)s - t) / 172800) ELSE 0 END)::numeric,"
            "   1)::float8,"
            "  CASE WHEN s.v2 IS NULL THEN NULL ELSE round(s.v2 + s.s2 * (random() - 0.5) * 2)"
            "   END,"
            "  s.unit, CASE WHEN s.type = 'spo2' THEN false END, 'http',"
            "  p.device_id || '|' || s.type || '|' ||"
            "   to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00',"
            "  t + interval '1 minute'"
            " FROM bench_patients p JOIN bench_schedule s ON s.protocol = p.protocol"
            " CROSS JOIN LATERAL generate_series(%(start)s + p.phase_min * interval '1 minute',"
            "   %(end)s, s.every) AS t",
            {"start": now - dt.timedelta(days=DAYS), "end": now - dt.timedelta(hours=1)},
        )
        conn.execute("VACUUM ANALYZE readings")
        conn.execute("ANALYZE patients")
        conn.execute("ANALYZE monitoring_plans")
        conn.execute("ANALYZE device_bindings")
        conn.execute("ANALYZE devices")
        return int(one(conn.execute("SELECT count(*) FROM readings"))[0])


def add_late(url: str, now: dt.datetime) -> int:
    """Late uploads before the steady cycle (received half a minute after `now`): every
    LATE_EVERY-th patient's readings of LATE_DAYS ago on the protocol's schedule, a fifth
    of them changing over days 8 to 5 by the protocol's deterioration; the number."""
    oldest, newest = LATE_DAYS
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(
            "INSERT INTO readings (time, patient_id, device_id, type, code, mdc, value, value2,"
            " unit, on_oxygen, source, dedup_key, received_at)"
            " SELECT t, p.id, p.device_id, s.type, s.code, s.mdc,"
            "  round((s.v1 + s.s1 * (random() - 0.5) * 2 + CASE WHEN p.i %% (5 * %(every)s) = 0"
            "   THEN s.sick * least(1, greatest(0, extract(epoch FROM t - (%(now)s -"
            "   interval '8 days')) / 259200)) ELSE 0 END)::numeric, 1)::float8,"
            "  CASE WHEN s.v2 IS NULL THEN NULL ELSE round(s.v2 + s.s2 * (random() - 0.5) * 2)"
            "   END,"
            "  s.unit, CASE WHEN s.type = 'spo2' THEN false END, 'http',"
            "  p.device_id || '|late|' || s.type || '|' ||"
            "   to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00',"
            "  %(received)s"
            " FROM bench_patients p JOIN bench_schedule s ON s.protocol = p.protocol"
            " CROSS JOIN LATERAL generate_series(%(start)s + (p.phase_min + 17) * interval"
            "   '1 minute', %(end)s, s.every) AS t"
            " WHERE p.i %% %(every)s = 0",
            {
                "every": LATE_EVERY,
                "now": now,
                "start": now - dt.timedelta(days=oldest),
                "end": now - dt.timedelta(days=newest),
                "received": now + dt.timedelta(seconds=30),
            },
        )
        return cur.rowcount


def ceiling_stream(url: str, now: dt.datetime) -> float:
    """Seconds to stream the cycle's window through a plain server-side cursor."""
    since = {t: now - w for t, w in engine.WINDOWS.items()}
    start = time.perf_counter()
    with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as conn:
        for _ in readings.stream_window(conn, since, now - engine.DEFAULT_WINDOW, now + CLOCK_SKEW):
            pass
    return time.perf_counter() - start
