"""`egenmon dev`: the embedded default with a private cluster and broker under a state dir."""

import json
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest

from egenmon.dev.cluster import free_port
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


def env_file_vars(state: Path) -> dict[str, str]:
    """What `. .egenmon/env` exports, read the way a shell would."""
    out = subprocess.run(
        ["bash", "-c", f"set -a; . {shlex.quote(str(state / 'env'))}; env -0"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        check=True,
    ).stdout.decode()
    pairs = (item.split("=", 1) for item in out.split("\0") if "=" in item)
    return {k: v for k, v in pairs if k.startswith("EGENMON_")}


def egenmon_with(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    """An egenmon command from another shell that has only sourced .egenmon/env."""
    return subprocess.run(
        [sys.executable, "-m", "egenmon", *argv],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def readable_by_others(state: Path) -> list[str]:
    """Files under state that a user other than the owner could read: o+r, in folders that
    are all o+x (state itself may be passable: as root, postgres must reach its folder)."""
    found = []
    for root, dirs, files in os.walk(state):
        here = Path(root)
        chain = [here, *here.relative_to(state).parents]
        if not all((state / p).stat().st_mode & stat.S_IXOTH for p in chain):
            continue
        for name in dirs + files:
            st = (here / name).lstat()
            if stat.S_ISSOCK(st.st_mode) or stat.S_ISLNK(st.st_mode):
                continue
            if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
                found.append(f"{oct(stat.S_IMODE(st.st_mode))} {here.relative_to(state) / name}")
    return found


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
        # The instance's environment, from .egenmon/env only (mode 0600).
        assert stat.S_IMODE((state_dir / "env").stat().st_mode) == 0o600
        instance = env_file_vars(state_dir)
        assert {"EGENMON_DATABASE_URL", "EGENMON_MQTT_URL", "EGENMON_AUTH_SECRET"} <= set(instance)
        url = instance["EGENMON_DATABASE_URL"]
        with psycopg.connect(url) as c:
            patients = c.execute("SELECT count(*) FROM patients").fetchone()[0]
            plans = c.execute("SELECT protocol FROM monitoring_plans ORDER BY 1").fetchall()
            users = c.execute("SELECT username, role FROM users").fetchall()
            # The platform's own role: owns its database, is no superuser.
            assert c.execute(
                "SELECT current_user, rolsuper, rolcreaterole FROM pg_roles "
                "WHERE rolname = current_user"
            ).fetchone() == ("egenmon", False, False)
        assert patients == len(devices)
        assert sorted(p for (p,) in plans) == sorted(d["protocol"] for d in devices)
        login = json.loads((state_dir / "demo-login.json").read_text())
        assert users == [(login["username"], "clinician")]

        # No one gets in without a password (the finding: trust for every local user).
        pg = pg_port(state_dir)
        for user in ("postgres", "root", "egenmon", os.environ.get("USER") or "nobody"):
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(
                    f"postgresql://{user}@127.0.0.1:{pg}/egenmon", connect_timeout=5
                ).close()
        assert "trust" not in (state_dir / "pg" / "pg_hba.conf").read_text()
        assert readable_by_others(state_dir) == []

        # From another shell with only the env file: admin commands and tokens work.
        added = egenmon_with(
            instance,
            "patient",
            "add",
            "--personnummer",
            "199001012385",
            "--care-unit",
            "SE2321000016-DEMO",
            "--json",
        )
        assert added.returncode == 0, added.stderr
        patient_id = json.loads(added.stdout)["id"]
        token = egenmon_with(
            instance,
            "token",
            "issue",
            "--role",
            "clinician",
            "--care-unit",
            "SE2321000016-DEMO",
            "--json",
        )
        assert token.returncode == 0, token.stderr
        bearer = json.loads(token.stdout)["token"]
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/fhir/Patient/{patient_id}",
            headers={"Authorization": f"Bearer {bearer}"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert json.loads(r.read())["id"] == patient_id
        listed = egenmon_with(instance, "quarantine", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout)["entries"] == []
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/app/", timeout=10) as r:
                has_app = r.status == 200
        except urllib.error.HTTPError:
            has_app = False
    finally:
        out = stop(first)
    assert first.returncode == 0, out
    assert f"log in as {login['username']} with password {login['password']}" in out
    assert f"clinician UI: http://127.0.0.1:{port}/ui/" in out
    assert (f"patient app: http://127.0.0.1:{port}/app/" in out) == has_app
    assert f". {state_dir / 'env'}" in out and "egenmon token issue" in out
    # The local OpenID provider ran, with its demo logins printed and its settings kept.
    assert "OpenID provider (local, oidc-provider): http://127.0.0.1:" in out
    assert "tolvan / " in out and instance["EGENMON_OIDC_ISSUER"].startswith("http://127.0.0.1:")
    assert not (state_dir / "pg" / "postmaster.pid").exists(), "PostgreSQL left running"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)

    again = start_dev(state_dir, port)
    try:
        t0 = time.monotonic()
        wait_http(f"http://127.0.0.1:{port}/readyz", again, timeout=60)
        assert time.monotonic() - t0 < 30
        url = env_file_vars(state_dir)["EGENMON_DATABASE_URL"]
        with psycopg.connect(url) as c:
            assert (
                c.execute("SELECT count(*) FROM patients").fetchone()[0] == patients + 1
            )  # the one added above
    finally:
        stop(again)
    assert again.returncode == 0
