"""export: Bulk Data `$export` of one care unit, end to end, against a real `egenmon serve`.

Loads one care unit with --patients patients and --readings readings by COPY (the
fhir-search benchmark's loader), then, with an integrator token, kicks off
`GET /fhir/Group/{unit}/$export`, polls the status URL until the manifest arrives, and
downloads every file, checking each line: every line is parsed, and every
--validate-every'th line is validated with fhir.resources (1: all of them). It reports
the export's rows/s and seconds, the serve process's peak RSS (VmHWM) beside its RSS
before the export, and what the download found.

Without EGENMON_DATABASE_URL it starts a throwaway PostgreSQL+TimescaleDB cluster with
fsync off for the bulk load only; fsync is switched back on before the export runs.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

from egenmon import progress
from egenmon.auth import issue_token
from egenmon.bench.fhir_search import _load, _registry, _setting
from egenmon.dev.cluster import Cluster, free_port
from egenmon.settings import Settings
from egenmon.store.migrate import migrate

_GOAL_RSS_MB = 300


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--readings", type=int, default=5_000_000, help="rows to load")
    parser.add_argument("--patients", type=int, default=10_000, help="patients in the unit")
    parser.add_argument("--days", type=int, default=90, help="days the readings span")
    parser.add_argument(
        "--validate-every",
        type=int,
        default=1,
        help="validate every Nth line with fhir.resources (1: all; every line is parsed)",
    )


def _rss_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _serve(url: str, secret: str, export_dir: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    env.update(
        EGENMON_DATABASE_URL=url,
        EGENMON_AUTH_SECRET=secret,
        EGENMON_ENVIRONMENT="production",
        EGENMON_LOG_LEVEL="WARNING",
        EGENMON_EXPORT_DIR=str(export_dir),
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


def _validator(kind: str) -> Any:
    from fhir.resources.R4B import device, flag, observation, patient, task

    return {
        "Patient": patient.Patient,
        "Device": device.Device,
        "Observation": observation.Observation,
        "Flag": flag.Flag,
        "Task": task.Task,
    }[kind]


def _download(
    client: httpx.Client, manifest: dict[str, Any], every: int
) -> tuple[int, int, int, int]:
    """(lines, validated, invalid, bytes) of every file."""
    lines = validated = invalid = size = 0
    for entry in manifest["output"]:
        model = _validator(entry["type"])
        with client.stream("GET", entry["url"], headers={"Accept": "application/fhir+ndjson"}) as r:
            if r.status_code != 200:
                raise RuntimeError(f"{entry['url']} answered {r.status_code}")
            count = 0
            for line in r.iter_lines():
                if not line:
                    continue
                size += len(line) + 1
                count += 1
                try:
                    resource = orjson.loads(line)
                    if resource.get("resourceType") != entry["type"]:
                        raise ValueError("wrong resourceType")
                    if count % every == 0:
                        model.model_validate(resource)
                        validated += 1
                except ValueError:
                    invalid += 1
            if count != entry["count"]:
                raise RuntimeError(
                    f"{entry['type']}: {count} lines, manifest says {entry['count']}"
                )
            lines += count
    return lines, validated, invalid, size


def run(args: argparse.Namespace, settings: Settings) -> Iterator[dict[str, Any]]:
    if args.readings < 1 or args.patients < 1 or args.validate_every < 1:
        raise ValueError("--readings, --patients and --validate-every must be positive")
    with contextlib.ExitStack() as stack:
        tmp = Path(tempfile.mkdtemp(prefix="egenmon-bench-export-"))
        os.chmod(tmp, 0o755)  # noqa: S103 (the postgres user must reach its data dir)
        stack.callback(shutil.rmtree, tmp, True)
        cluster: Cluster | None = None
        if settings.database_url:
            url = settings.database_url
        else:
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
            load_started = time.perf_counter()
            with progress.bar(
                args.readings, "loading", enabled=progress.wanted(args.json)
            ) as shown:
                loaded = _load(conn, pairs, args.readings, start, args.days, shown)
            load_seconds = time.perf_counter() - load_started
            conn.autocommit = True
            conn.execute("VACUUM (ANALYZE) readings")
            row = conn.execute(
                "SELECT care_unit_id FROM patients WHERE id = %s", (pairs[0][0],)
            ).fetchone()
            assert row is not None
            unit = str(row[0])
            if cluster is not None:
                for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                    conn.execute(f"ALTER SYSTEM SET {setting} = on")
                conn.execute("SELECT pg_reload_conf()")
                conn.execute("CHECKPOINT")
            fsync = _setting(conn, "fsync") == "on"
        secret = secrets.token_hex(32)
        base, proc = _serve(url, secret, tmp / "exports")

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
            subject="bench-export",
        )
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
        with httpx.Client(base_url=base + "/fhir", headers=headers, timeout=120) as client:
            rss_before = _rss_kb(proc.pid, "VmRSS")
            started = time.perf_counter()
            r = client.get(f"/Group/{unit}/$export", headers={"Prefer": "respond-async"})
            if r.status_code != 202:
                raise RuntimeError(f"kick-off answered {r.status_code}: {r.text[:300]}")
            status_url = r.headers["Content-Location"]
            polls = 0
            peak_sampled = rss_before
            while True:
                s = client.get(status_url, headers={"Accept": "application/json"})
                polls += 1
                peak_sampled = max(peak_sampled, _rss_kb(proc.pid, "VmRSS"))
                if s.status_code == 200:
                    manifest = s.json()
                    break
                if s.status_code != 202:
                    raise RuntimeError(f"status answered {s.status_code}: {s.text[:300]}")
                time.sleep(0.2)
            seconds = time.perf_counter() - started
            peak_kb = _rss_kb(proc.pid, "VmHWM")
            download_started = time.perf_counter()
            lines, validated, invalid, size = _download(client, manifest, args.validate_every)
            download_seconds = time.perf_counter() - download_started
        counts = {o["type"]: o["count"] for o in manifest["output"]}
        yield {
            "bench": "export",
            "patients": len(pairs),
            "readings": loaded,
            "rows": sum(counts.values()),
            "rows_by_type": counts,
            "seconds": round(seconds, 1),
            "rows_per_s": round(sum(counts.values()) / seconds) if seconds > 0 else None,
            "peak_rss_mb": round(peak_kb / 1024, 1),
            "rss_before_mb": round(rss_before / 1024, 1),
            "peak_rss_sampled_during_export_mb": round(peak_sampled / 1024, 1),
            "goal_rss_mb": _GOAL_RSS_MB,
            "status_polls": polls,
            "ndjson_bytes": size,
            "lines_parsed": lines,
            "lines_validated": validated,
            "invalid_lines": invalid,
            "download_seconds": round(download_seconds, 1),
            "load_seconds": round(load_seconds, 1),
            "fsync_during_export": fsync,
        }
