"""Bulk export jobs, run in the server process: write the NDJSON files, sweep old ones.

A kick-off inserts a job row (`egenmon.store.exports.create_job`, which enforces one
running job per client and `EGENMON_EXPORT_MAX_JOBS` in all) and hands its id to the
`ExportService` of its process. The service runs each job in a worker thread with two
connections of its own: one streams the rows (a server-side cursor, 5,000 rows at a
time, in one repeatable-read snapshot per resource type), the other records progress
and notices a cancel. Each row is rendered by the same functions the FHIR API uses and
written as one line; memory stays flat whatever the size. When the files are written,
every exported patient gets an access-log entry of their own.

Files live in `EGENMON_EXPORT_DIR/<job id>/` (directories 0700, files 0600) and are
removed, with the job, `EGENMON_EXPORT_KEEP_HOURS` after completion, at once on DELETE,
and when a job fails. A job whose process died (no heartbeat for 5 minutes) is failed by
the sweeper of any process; its client kicks off again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from egenmon.fhir.render import (
    render_device,
    render_flag,
    render_observation,
    render_patient,
    render_task,
)
from egenmon.settings import Settings
from egenmon.store import exports
from egenmon.store.access_log import record_access_each

__all__ = ["ExportService", "export_dir", "job_dir", "run_job"]

log = logging.getLogger("egenmon.export")

_BEAT_ROWS = 20_000  # progress (and a look for a cancel) every so many lines
_BEAT_SECONDS = 2.0
_STALE_SECONDS = 300.0
_SWEEP_SECONDS = 30.0


class Cancelled(Exception):
    """The job was deleted by its client, or the process is stopping."""


def export_dir(settings: Settings) -> Path:
    return Path(settings.export_dir).resolve()


def job_dir(root: Path, job_id: uuid.UUID) -> Path:
    return root / str(job_id)


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _open_private(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb", buffering=1 << 20)


def _sources(
    conn: Any, job: dict[str, Any]
) -> dict[str, tuple[Callable[[], Iterator[dict[str, Any]]], Callable[..., dict[str, Any]]]]:
    """Each type's rows and renderer, bounded by the job's care unit, _since and
    transaction time."""
    unit, since, until = job["unit_filter"], job["since"], job["transaction_time"]
    codes = job["codes"]
    return {
        "Patient": (lambda: exports.stream_patients(conn, unit, since), render_patient),
        "Device": (lambda: exports.stream_devices(conn, unit, since), render_device),
        "Observation": (
            lambda: exports.stream_observations(conn, unit, codes, since, until),
            render_observation,
        ),
        "Flag": (lambda: exports.stream_alerts(conn, unit, since), render_flag),
        "Task": (lambda: exports.stream_alerts(conn, unit, since), render_task),
    }


def run_job(
    url: str,
    root: Path,
    job_id: uuid.UUID,
    keep_hours: float,
    stop: threading.Event | None = None,
) -> str:
    """Run one accepted job to its end; returns its final status."""
    with exports.connect(url) as control, exports.connect(url) as data:
        job = exports.claim_job(control, job_id)
        if job is None:
            return "cancelled"
        folder = job_dir(root, job_id)
        try:
            _private_dir(root)
            _private_dir(folder)
            output, patients = _write(control, data, job, folder, stop)
            record_access_each(
                control,
                actor=job["client"],
                role=job["role"],
                care_unit_id=job["care_unit_id"],
                action="export",
                resource="$export",
                patient_ids=patients,
                detail={
                    "job": str(job_id),
                    "level": job["level"],
                    "types": list(job["types"]),
                    "since": job["since"].isoformat() if job["since"] else None,
                },
            )
            if exports.finish_job(control, job_id, output, keep_hours):
                return "completed"
            shutil.rmtree(folder, ignore_errors=True)
            return "cancelled"
        except Cancelled:
            shutil.rmtree(folder, ignore_errors=True)
            return "cancelled"
        except Exception as exc:  # noqa: BLE001  the client is told it failed, never a stack
            log.error("export %s failed: %s", job_id, type(exc).__name__)
            shutil.rmtree(folder, ignore_errors=True)
            exports.fail_job(
                control, job_id, f"the export failed ({type(exc).__name__})", keep_hours
            )
            return "failed"


def _write(
    control: Any,
    data: Any,
    job: dict[str, Any],
    folder: Path,
    stop: threading.Event | None,
) -> tuple[list[dict[str, Any]], set[uuid.UUID]]:
    job_id = job["id"]
    sources = _sources(data, job)
    output: list[dict[str, Any]] = []
    patients: set[uuid.UUID] = set()
    done: list[str] = []
    last_beat = time.monotonic()
    for kind in job["types"]:
        rows, render = sources[kind]
        name = f"{kind}.ndjson"
        path = folder / name
        count = 0
        dumps = orjson.dumps
        with _open_private(path) as out:
            for row in rows():
                resource = render(row)
                out.write(dumps(resource) + b"\n")
                count += 1
                pid = row.get("patient_id") if kind != "Patient" else row["id"]
                if pid is not None:
                    patients.add(pid)
                if count % _BEAT_ROWS == 0 or time.monotonic() - last_beat > _BEAT_SECONDS:
                    last_beat = time.monotonic()
                    _beat(control, job_id, done, kind, count, stop)
        if count:
            output.append({"type": kind, "name": name, "count": count})
        else:
            path.unlink()
        done.append(f"{kind} {count}")
        _beat(control, job_id, done, None, 0, stop)
    return output, patients


def _beat(
    control: Any,
    job_id: uuid.UUID,
    done: list[str],
    kind: str | None,
    count: int,
    stop: threading.Event | None,
) -> None:
    parts = [*done, *([f"{kind} {count} so far"] if kind else [])]
    status = exports.heartbeat(control, job_id, "written: " + ", ".join(parts))
    if status != "running" or (stop is not None and stop.is_set()):
        raise Cancelled


def sweep(url: str, root: Path, keep_hours: float) -> int:
    """Fail jobs whose process died; remove expired and cancelled jobs and their files."""
    removed = 0
    with exports.connect(url) as conn:
        exports.fail_stale(conn, _STALE_SECONDS, keep_hours)
        for job_id in exports.expired_jobs(conn):
            shutil.rmtree(job_dir(root, job_id), ignore_errors=True)
            exports.delete_job(conn, job_id)
            removed += 1
    return removed


class ExportService:
    """Runs this process's export jobs in threads (at most `EGENMON_EXPORT_MAX_JOBS` at
    once) and sweeps expired ones."""

    name = "exports"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = export_dir(settings)
        self._slots = asyncio.Semaphore(settings.export_max_jobs)
        self._stop = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="export-sweeper")

    async def stop(self) -> None:
        self._stop.set()
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        if self._sweeper:
            self._sweeper.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def submit(self, job_id: uuid.UUID) -> None:
        task = asyncio.create_task(self._run(job_id), name=f"export-{job_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job_id: uuid.UUID) -> None:
        async with self._slots:
            await asyncio.to_thread(
                run_job,
                self.settings.require_database(),
                self.root,
                job_id,
                self.settings.export_keep_hours,
                self._stop,
            )

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(
                    sweep,
                    self.settings.require_database(),
                    self.root,
                    self.settings.export_keep_hours,
                )
            except Exception as exc:  # noqa: BLE001  a failed sweep is retried next round
                log.warning("export sweep failed: %s", type(exc).__name__)
            await asyncio.sleep(_SWEEP_SECONDS)
