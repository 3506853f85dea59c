"""The process users run: `egenmon serve` exactly as `make run` (through `egenmon dev`)
and compose start it (all roles: HTTP on uvloop with httptools, the MQTT consumer with
its results publisher, the rule scheduler), driven from outside as a device, an
integrator and a clinician's browser would (issue 12, finding 3).

The in-process tests run the app on asyncio's loop; this one runs what production runs.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from egenmon.auth import issue_token
from egenmon.dev.cluster import free_port
from egenmon.dev.mosquitto import Mosquitto
from egenmon.dev.simulate_mqtt import DevicePublisher
from egenmon.settings import Settings
from tests.conftest import stop_process

pytestmark = pytest.mark.timeout(180)

T0 = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=2)
MQTT_MESSAGES = 200


def reading(i: int) -> dict:
    return {
        "type": "heart_rate",
        "time": (T0 + dt.timedelta(seconds=i)).isoformat(),
        "value": 60 + i % 30,
        "unit": "/min",
    }


class Served:
    """`python -m egenmon serve --port N`: the command `egenmon dev` runs, and the
    Dockerfile's CMD (`serve --host 0.0.0.0 --port 8000`), with its log in a file."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._out = open(log, "wb")
        env = {**os.environ, "EGENMON_LOG_LEVEL": "INFO"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "egenmon", "serve", "--port", str(self.port)],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve exited:\n{self.text()}"
            try:
                last = httpx.get(self.base + "/readyz", timeout=3)
                if last.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"/readyz never 200: {last and last.text}\n{self.text()}")

    def stop(self) -> None:
        stop_process(self.proc, grace=20)
        self._out.close()


@pytest.fixture
def served(env: dict, tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "serve.log")
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def test_serve_runs_on_uvloop_and_httptools(served: Served):
    maps = Path(f"/proc/{served.proc.pid}/maps").read_text()
    assert "uvloop" in maps and "httptools" in maps


def test_a_make_run_instance_answers_http_mqtt_with_results_fhir_and_the_ui(
    served: Served, broker: Mosquitto, device: dict, settings: Settings
):
    # HTTP ingest, as a device.
    r = httpx.post(
        served.base + "/api/v1/readings",
        content=orjson.dumps({"message_id": "http-1", "readings": [reading(0)]}),
        headers={"Authorization": f"Bearer {device['secret']}"},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text

    # MQTT, as a device subscribed to its results topic: a result for every message.
    pub = DevicePublisher(
        "127.0.0.1", broker.port, device["id"], device["secret"], results=True
    ).connect()
    try:
        ids = [f"mqtt-{i}" for i in range(MQTT_MESSAGES)]
        for i, message_id in enumerate(ids):
            pub.publish({"message_id": message_id, "readings": [reading(i + 1)]})
        assert pub.wait_published(30)
        deadline = time.monotonic() + 60
        while len(pub.results) < MQTT_MESSAGES and time.monotonic() < deadline:
            time.sleep(0.1)
        answers: dict[str, list[dict]] = {}
        for res in list(pub.results):
            answers.setdefault(res.get("message_id"), []).append(res)
    finally:
        pub.close()
    assert set(answers) == set(ids), f"{len(answers)} of {MQTT_MESSAGES} results\n{served.text()}"
    # QoS 1 is at least once: a message delivered twice (a slow PUBACK on a loaded machine)
    # is answered twice, stored once and then counted as a duplicate.
    for message_id, got in answers.items():
        assert sum(res["accepted"] for res in got) == 1, (message_id, got)
        assert all(res["rejected"] == [] for res in got), (message_id, got)

    # FHIR search, as an integrator: every reading is an Observation.
    token = issue_token(settings, role="integrator", subject=f"e2e-{uuid.uuid4().hex[:6]}")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    r = httpx.get(
        served.base + "/fhir/Observation",
        params={"patient": device["patient"], "_count": "500"},
        headers=headers,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["resourceType"] == "Bundle"
    assert len(bundle.get("entry", [])) == MQTT_MESSAGES + 1

    # The clinician UI's login page, as a browser.
    r = httpx.get(served.base + "/login", timeout=10)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "<form" in r.text

    # Ready, with the results connection up, and nothing went wrong in the process.
    r = httpx.get(served.base + "/readyz", timeout=5)
    assert r.status_code == 200, r.text
    log = served.text()
    assert "Traceback" not in log and "ERROR" not in log, log
    assert "mqtt-results: no connection" not in log, log


def test_a_consumer_only_process_runs_on_uvloop_too(env: dict, tmp_path: Path):
    """`serve --no-http` (the benchmark's and a scaled-out deployment's consumers) runs on
    the loop the all-roles process runs, so what is measured and tested is what runs."""
    log = tmp_path / "consumer.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "egenmon", "serve", "--no-http", "--no-scheduler"],
            env={**os.environ, "EGENMON_LOG_LEVEL": "INFO"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 60
            while "subscribed" not in log.read_text(errors="replace"):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            assert "uvloop" in Path(f"/proc/{proc.pid}/maps").read_text()
        finally:
            proc.terminate()
            proc.wait(20)
    assert "Traceback" not in log.read_text(errors="replace")
