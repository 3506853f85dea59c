"""`egenmon dev`: the embedded default with a private cluster and broker under a state dir."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from egenmon.store.cluster import free_port
from tests.conftest import wait_http


@pytest.fixture
def state_dir():
    base = Path(tempfile.mkdtemp(prefix="egenmon-dev-"))
    os.chmod(base, 0o755)  # noqa: S103 (the postgres user must reach it as root)
    yield base / ".egenmon"
    shutil.rmtree(base, ignore_errors=True)


def dev_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}


def start_dev(state: Path, port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "egenmon",
            "dev",
            "--state-dir",
            str(state),
            "--port",
            str(port),
            "--no-simulator",
        ],
        env=dev_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    return out


def pg_port(state: Path) -> int:
    return int((state / "pg" / "egenmon-port.conf").read_text().split("=")[1])


@pytest.mark.services  # `egenmon dev` starts its own cluster and broker
def test_dev_runs_refuses_a_second_copy_stops_cleanly_and_keeps_data(state_dir):
    port = free_port()
    first = start_dev(state_dir, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", first, timeout=120)
        devices = json.loads((state_dir / "demo-devices.json").read_text())
        assert len(devices) >= 3
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "egenmon",
                "dev",
                "--state-dir",
                str(state_dir),
                "--port",
                str(free_port()),
                "--no-simulator",
            ],
            env=dev_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2
        assert "already running" in second.stderr
        user = "postgres" if os.geteuid() == 0 else os.environ.get("USER", "")
        url = f"postgresql://{user}@127.0.0.1:{pg_port(state_dir)}/egenmon"
        with psycopg.connect(url) as c:
            patients = c.execute("SELECT count(*) FROM patients").fetchone()[0]
            plans = c.execute("SELECT protocol FROM monitoring_plans ORDER BY 1").fetchall()
            users = c.execute("SELECT username, role FROM users").fetchall()
        assert patients == len(devices)
        assert sorted(p for (p,) in plans) == sorted(d["protocol"] for d in devices)
        login = json.loads((state_dir / "demo-login.json").read_text())
        assert users == [(login["username"], "clinician")]
    finally:
        out = stop(first)
    assert first.returncode == 0, out
    assert f"log in as {login['username']} with password {login['password']}" in out
    assert not (state_dir / "pg" / "postmaster.pid").exists(), "PostgreSQL left running"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)

    again = start_dev(state_dir, port)
    try:
        t0 = time.monotonic()
        wait_http(f"http://127.0.0.1:{port}/readyz", again, timeout=60)
        assert time.monotonic() - t0 < 30
        with psycopg.connect(f"postgresql://{user}@127.0.0.1:{pg_port(state_dir)}/egenmon") as c:
            assert c.execute("SELECT count(*) FROM patients").fetchone()[0] == patients
    finally:
        stop(again)
    assert again.returncode == 0
