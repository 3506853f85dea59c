"""Real services for the suite: a throwaway PostgreSQL+TimescaleDB cluster and Mosquitto.

Both start on free ports in a private temporary folder (never a developer's own
databases or broker), as root (PostgreSQL then runs as `postgres`) and as a normal user.
Each test that asks for `database_url` gets a fresh database cloned from a migrated
template, which takes a fraction of a second.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

import psycopg
import pytest

from egenmon.dev.cluster import Cluster, free_port
from egenmon.dev.mosquitto import Mosquitto
from egenmon.settings import Settings, load_settings
from egenmon.store.migrate import migrate

# pytester: tests/test_architecture.py runs the marking below in a pytest of its own.
pytest_plugins = ["pytester"]

TEMPLATE = "egenmon_template"
# The fixtures that start a server: PostgreSQL, Mosquitto, `egenmon serve`, a webhook
# receiver. A test that uses none of them, directly or through other fixtures, and is not
# marked `services` (it starts one itself), is a unit test: marked `unit`, so
# `make test-unit` (pytest -m unit) runs the pure tests alone. A new fixture that starts
# PostgreSQL or Mosquitto belongs here: until it is, its tests fail (StartsAServer).
SERVICE_FIXTURES = frozenset(
    {"pg_cluster", "broker", "own_broker", "big_broker", "serve", "receiver", "oidc_provider"}
)
TEST_SECRET = "test-signing-secret-of-at-least-32-characters"
_db_counter = itertools.count()


def is_unit(fixturenames: Iterable[str]) -> bool:
    """A test is a unit test when its fixtures (all of them, transitively) start no server."""
    return SERVICE_FIXTURES.isdisjoint(fixturenames)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("services") is None and is_unit(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.unit)


class StartsAServer(AssertionError):
    """A test marked `unit` started PostgreSQL or Mosquitto."""


@pytest.fixture(autouse=True)
def _unit_tests_start_no_server(request: pytest.FixtureRequest) -> Iterator[None]:
    """Holds the marking honest: under `unit`, starting a database or a broker fails the
    test (say, through request.getfixturevalue or a Cluster of its own)."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return

    def refuse(self: object, *args: object, **kwargs: object) -> None:
        raise StartsAServer(
            f"{request.node.nodeid} is marked unit but starts {type(self).__name__}: "
            "use a service fixture (conftest.SERVICE_FIXTURES) so it is not marked unit"
        )

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Cluster, "start", refuse)
        mp.setattr(Mosquitto, "start", refuse)
        yield


@pytest.fixture(scope="session")
def service_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="egenmon-test-"))
    # The postgres user must reach its data folder when we are root.
    os.chmod(base, 0o755)  # noqa: S103
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster(service_dir: Path) -> Iterator[Cluster]:
    cluster = Cluster(
        service_dir / "pg",
        fsync=False,
        extra_conf={"timescaledb.max_background_workers": "0", "max_locks_per_transaction": "256"},
    )
    cluster.start()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
    with psycopg.connect(cluster.url(TEMPLATE)) as conn:
        migrate(conn)
    yield cluster
    cluster.destroy()


def create_database(cluster: Cluster) -> str:
    name = f"t{os.getpid()}_{next(_db_counter)}"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
    return name


def drop_database(cluster: Cluster, name: str) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def database_url(pg_cluster: Cluster) -> Iterator[str]:
    """A fresh, migrated database of its own for this test."""
    name = create_database(pg_cluster)
    yield pg_cluster.url(name)
    drop_database(pg_cluster, name)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(database_url, autocommit=True) as c:
        yield c


@pytest.fixture(scope="session")
def broker(service_dir: Path) -> Iterator[Mosquitto]:
    """egenmon's broker configuration on a private Mosquitto, shared by the session."""
    m = Mosquitto(service_dir / "mqtt")
    m.start()
    yield m
    m.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of the test's own, with egenmon's configuration, to stop, freeze or
    restart without disturbing the session's."""
    m = Mosquitto(tmp_path / "mqtt")
    m.start()
    yield m
    m.stop()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, database_url: str, broker: Mosquitto) -> dict:
    """The EGENMON_ environment of a test, pointing at its database and the broker."""
    for key in list(os.environ):
        if key.startswith("EGENMON_"):
            monkeypatch.delenv(key)
    values = {
        "EGENMON_DATABASE_URL": database_url,
        "EGENMON_MQTT_URL": broker.mqtt_url,
        "EGENMON_ENVIRONMENT": "test",
        "EGENMON_AUTH_SECRET": TEST_SECRET,
        "EGENMON_LOG_LEVEL": "WARNING",
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


@pytest.fixture
def settings(env: dict) -> Settings:
    return load_settings()


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    @property
    def json(self) -> dict:
        return json.loads(self.out)


@pytest.fixture
def cli(env: dict):
    """Run `egenmon ...` in-process with the test's environment."""
    from egenmon.cli import main

    def run(*args: str, stdin: str | None = None) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        old_stdin = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as e:  # argparse errors
                    code = int(e.code or 0)
        finally:
            sys.stdin = old_stdin
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


@pytest.fixture
def care_unit(cli) -> str:
    r = cli(
        "care-unit",
        "add",
        "--name",
        "Vårdcentralen Test",
        "--hsa-id",
        f"SE2321000016-{uuid.uuid4().hex[:6]}",
        "--json",
    )
    assert r.code == 0, r.err
    return r.json["id"]


_pnr_serial = itertools.count(100)


def make_personnummer(birth: str = "19800101") -> str:
    from egenmon.domain.identifiers import luhn_digit

    serial = f"{next(_pnr_serial) % 1000:03d}"
    return birth + serial + str(luhn_digit(birth[2:] + serial))


@pytest.fixture
def patient(cli, care_unit: str) -> str:
    r = cli(
        "patient", "add", "--personnummer", make_personnummer(), "--care-unit", care_unit, "--json"
    )
    assert r.code == 0, r.err
    return r.json["id"]


@pytest.fixture
def device(cli, patient: str) -> dict:
    """A device bound to `patient` since 30 days ago: {"id", "secret", "patient"}."""
    r = cli(
        "device",
        "add",
        "--patient",
        patient,
        "--model",
        "Omron M7",
        "--id",
        f"omron-{uuid.uuid4().hex[:10]}",
        "--since",
        "2020-01-01T00:00:00Z",
        "--json",
    )
    assert r.code == 0, r.err
    return {**r.json, "patient": patient}


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(url)


def stop_process(proc: subprocess.Popen, grace: float = 15) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds; closes a piped stderr."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


@pytest.fixture
def serve(env: dict) -> Iterator:
    """Start real `egenmon serve` processes: serve(*extra_args) -> (base_url, process)."""
    procs: list[subprocess.Popen] = []

    def start(*args: str, http: bool = True) -> tuple[str, subprocess.Popen]:
        port = free_port()
        cmd = [sys.executable, "-m", "egenmon", "serve", *args]
        if http:
            cmd += ["--port", str(port)]
        proc = subprocess.Popen(
            cmd, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        if http:
            wait_http(base + "/healthz", proc)
        return base, proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        stop_process(p)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- a local OpenID provider (issue 14) ---------------------------------------------------

# The provider's accounts: login -> (HSA-id or personnummer, acr, how it misbehaves). A
# test registers the HSA-ids, the care unit and the personnummer in its own database.
OIDC_PASSWORD = "provider-password"
OIDC_UNIT_HSA = "SE2321000016-15Q7"
OIDC_STAFF_HSA = "SE2321000016-7331"
OIDC_PATIENT_PNR = "191212121212"
# A second client of egenmon's, authenticating with a private-key JWT (private_key_jwt).
OIDC_KEY_CLIENT = "egenmon-key"


class _ClientKey:
    """A fixed EC test key (the same whichever way this module is imported): PEM for
    egenmon, the public JWK for the provider's client registration."""

    @property
    def _key(self):
        from cryptography.hazmat.primitives.asymmetric import ec

        return ec.derive_private_key(0x6567656E6D6F6E2D746573742D6B6579, ec.SECP256R1())

    @property
    def pem(self) -> str:
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    @property
    def public_jwk(self) -> dict:
        import jwt

        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self._key.public_key()))
        return {**jwk, "use": "sig", "alg": "ES256", "kid": "egenmon-key-1"}


OIDC_CLIENT_KEY = _ClientKey()


@pytest.fixture(scope="session")
def oidc_provider(service_dir: Path) -> Iterator:
    """The npm `oidc-provider` (tools/oidc) on a free port, shared by the session, with a
    clinician, a patient, and accounts that sign in below the required assurance level,
    with an unknown HSA-id or personnummer, or get a wrong nonce or audience."""
    from egenmon.dev.oidc_provider import LOA, LocalProvider, account, loopback_client

    staff = {"hsa_id": OIDC_STAFF_HSA, "care_unit_hsa_id": OIDC_UNIT_HSA}
    provider = LocalProvider(
        service_dir / "oidc",
        extra_clients=[
            loopback_client(
                OIDC_KEY_CLIENT,
                token_endpoint_auth_method="private_key_jwt",
                jwks={"keys": [OIDC_CLIENT_KEY.public_jwk]},
            )
        ],
        accounts={
            "clinician": account(OIDC_PASSWORD, name="Berit Sjuksköterska", **staff),
            "clinician-low": account(OIDC_PASSWORD, acr=LOA + "2", **staff),
            "stranger": account(
                OIDC_PASSWORD, hsa_id="SE2321000016-0000", care_unit_hsa_id=OIDC_UNIT_HSA
            ),
            "clinician-nonce": account(OIDC_PASSWORD, tamper="nonce", **staff),
            "clinician-aud": account(OIDC_PASSWORD, tamper="aud", **staff),
            "patient": account(OIDC_PASSWORD, personnummer=OIDC_PATIENT_PNR, name="Tolvan"),
            "patient-low": account(OIDC_PASSWORD, acr=LOA + "2", personnummer=OIDC_PATIENT_PNR),
            "patient-unknown": account(OIDC_PASSWORD, personnummer="198001019879"),
        },
    )
    provider.start()
    yield provider
    provider.stop()
