"""`egenmon dev`: the embedded default, a private database and broker under .egenmon/."""

from __future__ import annotations

import argparse
import fcntl
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from egenmon.dev.cluster import Cluster, ClusterError, ForeignOwner, write_secret
from egenmon.dev.demo import DEMO_HSA_ID, seed
from egenmon.dev.mosquitto import Mosquitto, MosquittoError
from egenmon.dev.oidc_provider import DEMO_STAFF_HSA, LocalProvider, demo_lines, demo_provider
from egenmon.dev.oidc_provider import ProviderError as OidcProviderError
from egenmon.dev.oidc_provider import installed as oidc_installed
from egenmon.settings import Settings, load_settings
from egenmon.store.db import DatabaseError, connect
from egenmon.store.migrate import migrate

DB_NAME = "egenmon"
DB_ROLE = "egenmon"  # the platform's own login: owns its database, no superuser
ENV_FILE = "env"


class DevError(RuntimeError):
    """Why `egenmon dev` cannot run or stopped: told to the user without a traceback."""


def say(text: str) -> None:
    print(f"egenmon dev: {text}", flush=True)


def _lock(state: Path) -> int:
    fd = os.open(state / "dev.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.read(fd, 32).decode().strip() or "?"
        os.close(fd)
        raise DevError(
            f"egenmon dev is already running from {state.absolute()} (pid {other}); "
            "stop it with Ctrl-C first"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _wait_ready(url: str, child: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise DevError(f"egenmon serve exited with code {child.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:  # noqa: S310 (local URL)
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise DevError(f"egenmon serve was not ready within {timeout:.0f} s")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_dev(args: argparse.Namespace, settings: Settings) -> None:
    state: Path = args.state_dir.absolute()
    state.mkdir(parents=True, exist_ok=True)
    # Also for SIGINT: a shell that starts us in the background ignores it by default.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    lock_fd = _lock(state)
    cluster: Cluster | None = None
    broker: Mosquitto | None = None
    provider: LocalProvider | None = None
    children: list[subprocess.Popen] = []
    env = dict(os.environ)
    env.setdefault("EGENMON_ENVIRONMENT", "development")
    secret_file = state / "auth.secret"
    if not secret_file.exists():
        write_secret(secret_file, secrets.token_urlsafe(32))
    env.setdefault("EGENMON_AUTH_SECRET", secret_file.read_text().strip())
    try:
        if not settings.database_url:
            cluster = Cluster(state / "pg")
            if cluster.user:
                # postgres must pass through to its data folder, not list what is here.
                os.chmod(state, 0o711)  # noqa: S103
            else:
                os.chmod(state, 0o700)
            say("starting the private PostgreSQL+TimescaleDB cluster")
            cluster.start()
            env["EGENMON_DATABASE_URL"] = app_database(cluster, state)
        if not settings.mqtt_url:
            broker = Mosquitto(state / "mqtt", prefix=settings.mqtt_topic_prefix)
            say("starting the private Mosquitto broker")
            broker.start()
            os.chmod(state / "mqtt", 0o700)  # its persistence holds readings in flight
            env["EGENMON_MQTT_URL"] = broker.mqtt_url
        if not settings.oidc_issuer:
            provider = start_oidc_provider(state, env)
        instance = {k: v for k, v in env.items() if k.startswith("EGENMON_")}
        os.environ.update(instance)
        run_settings = load_settings()
        with connect(run_settings.require_database(), autocommit=True) as conn:
            ran = migrate(conn)
            if ran:
                say(f"applied {len(ran)} migration(s)")
            devices = seed(conn, run_settings, state)
            if provider is not None:
                seed_identity(conn)
        env_file = write_env_file(state, instance)
        serve = subprocess.Popen(
            [sys.executable, "-m", "egenmon", "serve", "--port", str(args.port)], env=env
        )
        children.append(serve)
        _wait_ready(f"http://127.0.0.1:{args.port}/readyz", serve)
        if not args.no_simulator:
            children.extend(start_simulators(env, state, args.port, devices))
        app = _answers(f"http://127.0.0.1:{args.port}/app/")
        for line in ready_lines(args.port, state, env_file, len(devices), patient_app=app):
            say(line)
        if provider is not None:
            for line in demo_lines(provider, args.port):
                say(line)
        say("Ctrl-C stops everything")
        while all(c.poll() is None for c in children[:1]):
            time.sleep(0.5)
        raise DevError(f"egenmon serve exited with code {serve.returncode}")
    except (ClusterError, MosquittoError, DatabaseError) as e:
        raise DevError(str(e)) from None
    except KeyboardInterrupt:
        say("stopping")
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in reversed(children):
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        if provider is not None:
            provider.stop()
        if broker:
            broker.stop()
        if cluster:
            cluster.stop()
        os.close(lock_fd)


SIMULATOR_DAYS = 14  # history back-filled at each start; dedup stores what is new only
SIMULATOR_RATE = 0.5  # readings a second in all, live


def start_simulators(env: dict, state: Path, port: int, devices: list) -> list[subprocess.Popen]:
    """The device simulator for the demo patients: two weeks of history, then live.

    Each demo device carries its patient's scenario and protocol in demo-devices.json.
    """
    devices_file = state / "demo-devices.json"
    if not devices or not devices_file.exists():
        return []
    say(f"simulating {len(devices)} demo devices ({SIMULATOR_DAYS} days of history, then live)")
    return [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "egenmon",
                "simulate",
                "--via",
                "http",
                "--url",
                f"http://127.0.0.1:{port}",
                "--devices-file",
                str(devices_file),
                "--days",
                str(SIMULATOR_DAYS),
                "--rate",
                str(SIMULATOR_RATE),
                "--json",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
        )
    ]


def start_oidc_provider(state: Path, env: dict[str, str]) -> LocalProvider | None:
    """The local OpenID provider with demo logins (issue 14), its settings put in `env`;
    None (said why) when it is not installed: password logins still work."""
    from egenmon.dev.demo import DEMO_CLINICIAN_NAME, DEMO_HSA_ID, DEMO_PATIENTS, personnummer

    if not oidc_installed():
        say("no local OpenID provider (run scripts/install.sh for it); password logins only")
        return None
    _, birth, serial, _, _ = DEMO_PATIENTS[0]
    provider = demo_provider(
        state,
        unit_hsa=DEMO_HSA_ID,
        patient_pnr=personnummer(birth, serial),
        clinician_name=DEMO_CLINICIAN_NAME,
    )
    say("starting the local OpenID provider")
    try:
        provider.start()
    except OidcProviderError as e:
        say(f"the local OpenID provider did not start ({e}); password logins only")
        return None
    env.update(provider.settings_env())
    return provider


def seed_identity(conn: Any) -> None:
    """The demo clinician is found by the provider's demo HSA-id."""
    from egenmon.dev.demo import DEMO_CLINICIAN
    from egenmon.store import users

    user_id = users.user_id_by_name(conn, DEMO_CLINICIAN)
    if user_id is not None:
        users.set_hsa_id(conn, user_id, DEMO_STAFF_HSA)


def app_database(cluster: Cluster, state: Path) -> str:
    """The URL the platform uses: its own role, owner of its database, not a superuser.

    A database made by an older egenmon belongs to the superuser; then the platform keeps
    using the superuser (with its password), and says how to start afresh."""
    try:
        return cluster.ensure_owned_database(DB_NAME, DB_ROLE, state / "db.password")
    except ForeignOwner:
        say(
            f"the database {DB_NAME} predates the '{DB_ROLE}' role and belongs to the "
            f"superuser, which the platform therefore uses; remove {state} to start afresh"
        )
        return cluster.url(DB_NAME)


def write_env_file(state: Path, instance: dict[str, str]) -> Path:
    """`state/env` (mode 0600): `export EGENMON_...=...` for the running instance."""
    path = state / ENV_FILE
    lines = [
        "# egenmon dev: the running instance. In another shell: . .egenmon/env",
        "# then admin commands (egenmon patient add, quarantine list, ...) and",
        "# egenmon token issue work against it. Rewritten at every start.",
        *(f"export {k}={shlex.quote(v)}" for k, v in sorted(instance.items())),
    ]
    write_secret(path, "\n".join(lines) + "\n")
    return path


def _answers(url: str) -> bool:
    """Does the running server have this page (the patient app, once it exists)?"""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (local URL)
            return r.status < 400
    except OSError:  # HTTPError (404) included
        return False


def ready_lines(
    port: int, state: Path, env_file: Path, n_devices: int, *, patient_app: bool = False
) -> list[str]:
    """What a newcomer needs once everything runs: URLs, logins, how to reach it."""
    base = f"http://127.0.0.1:{port}"
    try:
        shown = env_file.relative_to(Path.cwd())
    except ValueError:
        shown = env_file
    return [
        f"ready: {base}/",
        f"clinician UI: {base}/ui/",
        *demo_logins(state),
        *([f"patient app: {base}/app/"] if patient_app else []),
        f"API docs {base}/docs, FHIR {base}/fhir/metadata, metrics {base}/metrics",
        f"{n_devices} demo patients with devices; state in {state}",
        f"in another shell, `. {shlex.quote(str(shown))}` makes admin commands and "
        "`egenmon token issue` work against this instance, e.g. "
        "`egenmon token issue --role clinician --care-unit "
        f"{DEMO_HSA_ID}`",
    ]


def demo_logins(state: Path) -> list[str]:
    """Lines naming the demo clinician login (made by `egenmon.dev.demo.seed_clinician`)."""
    from egenmon.dev.demo import demo_login

    login = demo_login(state)
    if login is None:
        return []
    username, password = login
    return [
        f"clinician UI: log in as {username} with password {password} "
        f"(kept in {state / 'demo-login.json'})"
    ]
