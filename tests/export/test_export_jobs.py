"""The export runner and sweeper against the real database, without a server: expired
files go, a job whose process died is failed, a cancelled job writes nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg

from egenmon.export.jobs import job_dir, run_job, sweep


def _job(conn: psycopg.Connection, status: str, extra: str = "") -> uuid.UUID:
    row = conn.execute(
        "INSERT INTO export_jobs (client, role, level, types, request, status)"
        " VALUES ('c', 'integrator', 'system', '{Patient}', 'x', %s) RETURNING id",
        (status,),
    ).fetchone()
    assert row is not None
    if extra:
        conn.execute(f"UPDATE export_jobs SET {extra} WHERE id = %s", (row[0],))
    return row[0]


def test_the_sweeper_removes_expired_files_and_fails_dead_jobs(
    database_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        expired = _job(conn, "completed", "expires_at = now() - interval '1 second'")
        kept = _job(conn, "completed", "expires_at = now() + interval '1 hour'")
        dead = _job(conn, "running", "heartbeat_at = now() - interval '10 minutes'")
        alive = _job(conn, "running")
        for job in (expired, kept):
            job_dir(tmp_path, job).mkdir()
            (job_dir(tmp_path, job) / "Patient.ndjson").write_bytes(b"{}\n")
        assert sweep(database_url, tmp_path, keep_hours=1) == 1
        assert not job_dir(tmp_path, expired).exists()
        assert (job_dir(tmp_path, kept) / "Patient.ndjson").exists()
        states = dict(conn.execute("SELECT id, status FROM export_jobs").fetchall())
        assert expired not in states
        assert states[kept] == "completed"
        assert states[dead] == "failed" and states[alive] == "running"


def test_a_job_cancelled_before_it_starts_writes_nothing(database_url: str, tmp_path: Path) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        job = _job(conn, "cancelled")
    assert run_job(database_url, tmp_path, job, keep_hours=1) == "cancelled"
    assert not job_dir(tmp_path, job).exists()
