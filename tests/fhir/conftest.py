"""A real `egenmon serve` per test module for the FHIR API tests (see fhirtest.py).

One server and one database per module keep the tests fast; each test makes its own care
unit, patients and devices (and tokens with their own subject), so tests do not see each
other's data.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from fhirtest import TEMPLATE, TEST_SECRET, FhirServer

from egenmon.dev.cluster import Cluster, free_port
from egenmon.settings import Settings
from tests.conftest import stop_process

_db_serial = itertools.count()


def _create_database(cluster: Cluster) -> str:
    name = f"fhir{os.getpid()}_{next(_db_serial)}"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
    return name


def _wait(url: str, proc: subprocess.Popen) -> None:
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"egenmon serve exited with {proc.returncode}: {err[-2000:]}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def fhir(pg_cluster: Cluster) -> Iterator[FhirServer]:
    """`egenmon serve --no-mqtt --no-scheduler` on a database of this module's own."""
    name = _create_database(pg_cluster)
    url = pg_cluster.url(name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    env.update(
        EGENMON_DATABASE_URL=url,
        EGENMON_ENVIRONMENT="test",
        EGENMON_AUTH_SECRET=TEST_SECRET,
        EGENMON_LOG_LEVEL="WARNING",
    )
    settings = Settings(
        database_url=url, mqtt_url=None, environment="test", auth_secret=TEST_SECRET
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "egenmon", "serve", "--no-mqtt", "--no-scheduler",
         "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    root = f"http://127.0.0.1:{port}"
    server = FhirServer(url, settings, root)
    try:
        _wait(root + "/healthz", proc)
        yield server
    finally:
        server.close()
        stop_process(proc)
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
