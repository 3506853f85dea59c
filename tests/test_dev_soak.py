"""`egenmon dev` as `make run` starts it, with the device simulator, for a few minutes: it
serves, stores the simulated readings, stops cleanly on Ctrl-C, and its output (serve,
consumer, publisher, scheduler, simulator) holds no traceback and no ERROR line."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import httpx
import psycopg
import pytest

from egenmon.dev.cluster import free_port
from tests.conftest import wait_http

SOAK_S = 120  # after ready; with start and stop the test stays under three minutes
BAD_LINE = re.compile(r"Traceback \(most recent call last\)|\bERROR\b|\bCRITICAL\b")


def problems(log: str) -> list[str]:
    """Each traceback or ERROR line with a few lines after it, once per distinct text."""
    lines = log.splitlines()
    found: dict[str, str] = {}
    last = -10
    for i, line in enumerate(lines):
        if not BAD_LINE.search(line):
            continue
        if line.startswith("Traceback") and i - last <= 3:
            continue  # the traceback of the ERROR line just above
        last = i
        excerpt = "\n".join(lines[i : i + 12])
        key = re.sub(r"^\S+ \S+ ", "", line)  # without its time stamp
        found.setdefault(key, excerpt)
    return list(found.values())


@pytest.mark.timeout(SOAK_S + 200)
def test_egenmon_dev_runs_minutes_with_the_simulator_without_a_traceback():
    base = Path(tempfile.mkdtemp(prefix="egenmon-soak-"))
    os.chmod(base, 0o755)  # noqa: S103 (the postgres user must reach it as root)
    state = base / ".egenmon"
    port = free_port()
    log_path = base / "dev.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    try:
        with open(log_path, "w") as log:
            dev = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("egenmon")),
                    "dev",
                    "--state-dir",
                    str(state),
                    "--port",
                    str(port),
                ],
                cwd=base,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz", dev, timeout=120)
            start = time.monotonic()
            url = None
            while url is None and time.monotonic() - start < 30:
                text = log_path.read_text()
                if "Ctrl-C stops everything" in text and (state / "env").exists():
                    url = env_url(state)
                time.sleep(0.5)
            assert url, "egenmon dev did not say it was ready"
            use_like_a_clinician(port, state)
            counts = []
            while time.monotonic() - start < SOAK_S:
                time.sleep(10)
                assert dev.poll() is None, "egenmon dev exited"
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                    assert r.status == 200
                with psycopg.connect(url) as conn:
                    counts.append(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
        finally:
            dev.send_signal(signal.SIGINT)
            try:
                dev.wait(90)
            except subprocess.TimeoutExpired:
                dev.kill()
                dev.wait()
        log = log_path.read_text(errors="replace")
        assert dev.returncode == 0, log[-3000:]
        # The back-fill arrived and live readings keep coming.
        assert counts[0] > 0 and counts[-1] > counts[0], counts
        assert "egenmon dev: stopping" in log
        found = problems(log)
        assert not found, f"{len(found)} problem(s) in the output:\n\n" + "\n\n".join(found)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def env_url(state: Path) -> str:
    out = subprocess.run(
        ["bash", "-c", f". '{state / 'env'}' && printf %s \"$EGENMON_DATABASE_URL\""],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("postgresql://"), json.dumps(out[:20])
    return out


def use_like_a_clinician(port: int, state: Path) -> None:
    """Log in to the UI with the printed demo login and open the worklist and a patient;
    read FHIR with a token issued from another shell (.egenmon/env)."""
    base = f"http://127.0.0.1:{port}"
    login = json.loads((state / "demo-login.json").read_text())
    with httpx.Client(base_url=base, timeout=30) as ui:
        page = ui.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = ui.post(
            "/login",
            data={
                "username": login["username"],
                "password": login["password"],
                "csrf_token": token,
                "next": "/ui/",
            },
        )
        assert r.status_code == 303, r.text[:500]
        worklist = ui.get("/ui/")
        assert worklist.status_code == 200
        patient = json.loads((state / "demo-devices.json").read_text())[0]["patient_id"]
        assert ui.get(f"/ui/patients/{patient}").status_code == 200
    issued = subprocess.run(
        [
            "bash",
            "-c",
            f". '{state / 'env'}' && '{Path(sys.executable).with_name('egenmon')}' token issue "
            "--role clinician --care-unit SE2321000016-DEMO",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert issued.returncode == 0, issued.stderr
    bearer = {"Authorization": f"Bearer {issued.stdout.strip()}"}
    r = httpx.get(f"{base}/fhir/Patient/{patient}", headers=bearer, timeout=30)
    assert r.status_code == 200 and r.json()["id"] == patient
    r = httpx.get(f"{base}/fhir/Observation", params={"patient": patient}, headers=bearer)
    assert r.status_code == 200 and r.json()["resourceType"] == "Bundle"
