"""The export runner and sweeper against the real database, without a server: expired
files go, a job whose process died is failed, a cancelled job writes nothing."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import psycopg

from egenmon.domain.identifiers import luhn_digit
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


def _unit_with_patients(conn: psycopg.Connection, n: int) -> uuid.UUID:
    unit = conn.execute(
        "INSERT INTO care_units (name, hsa_id) VALUES ('Test', %s) RETURNING id",
        (f"SE2321000016-{uuid.uuid4().hex[:8]}",),
    ).fetchone()[0]  # type: ignore[index]
    for i in range(n):
        birth, serial = "19800101", f"{i:03d}"
        conn.execute(
            "INSERT INTO patients (personnummer, identifier_kind, care_unit_id)"
            " VALUES (%s, 'personnummer', %s)",
            (birth + serial + str(luhn_digit(birth[2:] + serial)), unit),
        )
    return unit


def test_a_job_runs_to_completion_and_logs_each_patient(database_url: str, tmp_path: Path) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        unit = _unit_with_patients(conn, 3)
        job = _job(conn, "accepted", f"unit_filter = '{unit}'")
        assert run_job(database_url, tmp_path, job, keep_hours=1) == "completed"
        lines = (job_dir(tmp_path, job) / "Patient.ndjson").read_bytes().splitlines()
        assert len(lines) == 3
        status, output = conn.execute(
            "SELECT status, output FROM export_jobs WHERE id = %s", (job,)
        ).fetchone()  # type: ignore[misc]
        assert status == "completed" and output == [
            {"type": "Patient", "name": "Patient.ndjson", "count": 3}
        ]
        logged = conn.execute(
            "SELECT patient_ids FROM access_log WHERE action = 'export' AND actor = 'c'"
        ).fetchall()
        assert sorted(len(r[0]) for r in logged) == [1, 1, 1]


def test_a_job_stopped_while_it_runs_leaves_no_files(database_url: str, tmp_path: Path) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        unit = _unit_with_patients(conn, 2)
        job = _job(conn, "accepted", f"unit_filter = '{unit}', types = '{{Patient,Device}}'")
        stop = threading.Event()
        stop.set()  # the process is stopping: the runner gives up at its next beat
        assert run_job(database_url, tmp_path, job, keep_hours=1, stop=stop) == "cancelled"
        assert not job_dir(tmp_path, job).exists()
        assert (
            conn.execute(
                "SELECT count(*) FROM access_log WHERE action = 'export' AND actor = 'c'"
            ).fetchone()[0]
            == 0
        )  # type: ignore[index]
