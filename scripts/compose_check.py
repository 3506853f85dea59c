"""Drives the docker-compose stack from the host as a user would (`make compose-check`).

Run by scripts/compose-check.sh once a Docker daemon answers and the local images exist,
with the project's .venv Python (paho-mqtt and httpx). It brings the stack up with
docker-compose.yml + docker-compose.local.yml, then:

  /readyz; a care unit, a patient (with a plan) and a device through `compose run ...
  egenmon`; a reading over MQTT with the device's result on its results topic; readings
  over HTTP; a FHIR search; the scheduler opening an alert; `down` and `up` with the data
  kept; a backup (pg_dump of the db volume, tar of the mosquitto volume), `down -v`, a
  restore into empty volumes and the same data and device account back; `down -v`.

It fails loudly (exit 1, naming the step) if a service is unhealthy or restarted, if the
MQTT result never arrives, or if data is missing after a restart or the restore. It always
ends with `down -v`. It prints no secret and no personnummer.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent
PROJECT = os.environ.get("COMPOSE_CHECK_PROJECT", "egenmoncheck")
COMPOSE = os.environ.get("COMPOSE", "docker-compose")
PREFIX = "egenmon/v1"
LONG_LIVED = ("db", "broker", "egenmon")
ONE_SHOT = ("migrate", "broker-config")
# A test personnummer (Skatteverket's published example), never printed.
PERSONNUMMER = "191212121212"
HSA_ID = "SE2321000016-CHK1"


class CheckFailed(Exception):
    pass


def say(msg: str) -> None:
    print(f"compose-check: {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.http_port = free_port()
        self.mqtt_port = free_port()
        check_file = workdir / "docker-compose.check.yml"
        # The one change to production settings: the scheduler's cycle every 5 s instead
        # of 60 s, so that the alert opens within seconds.
        check_file.write_text(
            "services:\n  egenmon:\n    environment:\n      EGENMON_SCHEDULER_INTERVAL_S: '5'\n"
        )
        self.files = [
            ROOT / "docker-compose.yml",
            ROOT / "docker-compose.local.yml",
            check_file,
        ]
        self.env = {
            **os.environ,
            "POSTGRES_PASSWORD": secrets.token_hex(24),
            "EGENMON_AUTH_SECRET": secrets.token_hex(32),
            "HTTP_PUBLISH": f"127.0.0.1:{self.http_port}",
            "MQTT_PUBLISH": f"127.0.0.1:{self.mqtt_port}",
        }
        self.base = f"http://127.0.0.1:{self.http_port}"

    def compose(
        self, *args: str, stdin: bytes | None = None, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        cmd = [COMPOSE, "--project-directory", str(ROOT), "-p", PROJECT]
        for f in self.files:
            cmd += ["-f", str(f)]
        r = subprocess.run(
            [*cmd, *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if check and r.returncode != 0:
            raise CheckFailed(
                f"`compose {' '.join(args[:4])}` exited {r.returncode}:\n"
                + r.stderr.decode(errors="replace")[-3000:]
            )
        return r

    def egenmon(self, *args: str) -> dict:
        """`compose run --rm --no-deps egenmon ARGS --json`: the admin path of the README."""
        r = self.compose("run", "--rm", "--no-deps", "-T", "egenmon", *args, "--json")
        lines = [x for x in r.stdout.decode().splitlines() if x.strip().startswith("{")]
        if not lines:
            raise CheckFailed(f"`egenmon {args[0]} {args[1]}` printed no JSON")
        return json.loads(lines[-1])

    def containers(self, service: str) -> list[dict]:
        ids = subprocess.run(
            [
                "docker",
                "ps",
                "-a",
                "-q",
                "--filter",
                f"label=com.docker.compose.project={PROJECT}",
                "--filter",
                f"label=com.docker.compose.service={service}",
                "--filter",
                "label=com.docker.compose.oneoff=False",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        if not ids:
            return []
        out = subprocess.run(
            ["docker", "inspect", *ids], capture_output=True, text=True, check=True
        ).stdout
        return json.loads(out)

    def up(self, *services: str) -> None:
        self.compose("up", "-d", "--no-build", *services)

    def wait_healthy(self, services: tuple[str, ...] = LONG_LIVED, timeout: float = 240) -> None:
        """Every long-lived service healthy, never restarted; every one-shot step exited 0."""
        deadline = time.monotonic() + timeout
        while True:
            states = {}
            for service in services:
                found = self.containers(service)
                if len(found) != 1:
                    states[service] = f"{len(found)} containers"
                    continue
                state = found[0]["State"]
                if found[0]["RestartCount"]:
                    raise CheckFailed(f"{service} restarted {found[0]['RestartCount']} times")
                if state["Status"] != "running":
                    raise CheckFailed(f"{service} is {state['Status']} (exit {state['ExitCode']})")
                health = (state.get("Health") or {}).get("Status", "none")
                if health == "unhealthy":
                    raise CheckFailed(f"{service} is unhealthy")
                states[service] = health
            if all(v == "healthy" for v in states.values()):
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"not healthy after {timeout:.0f} s: {states}")
            time.sleep(2)
        if "egenmon" in services:
            for step in ONE_SHOT:
                for c in self.containers(step):
                    code = c["State"]["ExitCode"]
                    if c["State"]["Status"] != "exited" or code != 0:
                        raise CheckFailed(f"{step}: {c['State']['Status']}, exit {code}")

    def logs(self) -> str:
        r = self.compose("logs", "--no-color", "--tail", "40", check=False, timeout=120)
        return r.stdout.decode(errors="replace")


def reading_message(device_id: str, readings: list[dict]) -> dict:
    return {"message_id": str(uuid.uuid4()), "device_id": device_id, "readings": readings}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def mqtt_round_trip(stack: Stack, device: dict, message: dict, timeout: float = 30) -> dict:
    """Publish as the device at QoS 1 and wait for the platform's result on results/."""
    got: list[dict] = []
    subscribed = []
    # The broker lets a device connect only with its own device id as client id.
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device["id"])
    client.username_pw_set(device["id"], device["secret"])
    base = f"{PREFIX}/devices/{device['id']}"

    def on_connect(c, userdata, flags, reason_code, properties):  # noqa: ANN001
        if not reason_code.is_failure:
            c.subscribe(f"{base}/results", qos=1)

    def on_subscribe(c, userdata, mid, reason_codes, properties):  # noqa: ANN001
        subscribed.append(reason_codes)

    def on_message(c, userdata, msg):  # noqa: ANN001
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if body.get("message_id") == message["message_id"]:
            got.append(body)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", stack.mqtt_port)
    client.loop_start()
    try:
        deadline = time.monotonic() + 15
        while not subscribed:
            if time.monotonic() > deadline:
                raise CheckFailed("the device could not connect and subscribe to its results")
            time.sleep(0.1)
        if any(rc.is_failure for rc in subscribed[0]):
            raise CheckFailed("the broker refused the device's subscription to its results")
        info = client.publish(f"{base}/readings", json.dumps(message), qos=1)
        info.wait_for_publish(timeout=15)
        if not info.is_published():
            raise CheckFailed("the broker never acknowledged the device's reading")
        deadline = time.monotonic() + timeout
        while not got:
            if time.monotonic() > deadline:
                raise CheckFailed(
                    f"the device's MQTT result never arrived on {PREFIX}/devices/<id>/results "
                    f"within {timeout:.0f} s"
                )
            time.sleep(0.1)
    finally:
        client.loop_stop()
        client.disconnect()
    return got[0]


def fhir_count(http: httpx.Client, token: str, patient_id: str) -> int:
    r = http.get(
        "/fhir/Observation",
        params={"patient": patient_id, "_summary": "count"},
        headers={"Authorization": f"Bearer {token}"},
    )
    if r.status_code != 200:
        raise CheckFailed(f"FHIR count answered {r.status_code}")
    return r.json()["total"]


def open_alerts(http: httpx.Client, token: str, patient_id: str) -> list[dict]:
    r = http.get(
        "/api/v1/alerts",
        params={"patient": patient_id},
        headers={"Authorization": f"Bearer {token}"},
    )
    if r.status_code != 200:
        raise CheckFailed(f"GET /api/v1/alerts answered {r.status_code}")
    return [a for a in r.json()["alerts"] if a.get("status") in ("open", "acknowledged")]


def readyz(http: httpx.Client) -> None:
    r = http.get("/readyz")
    if r.status_code != 200:
        raise CheckFailed(f"/readyz answered {r.status_code} from the host")


def drive(stack: Stack, workdir: Path) -> list[tuple[str, float]]:
    marks: list[tuple[str, float]] = []
    last = time.monotonic()

    def mark(name: str) -> None:
        nonlocal last
        t = time.monotonic()
        marks.append((name, t - last))
        say(f"ok: {name} ({t - last:.1f} s)")
        last = t

    stack.up()
    stack.wait_healthy()
    mark("up: db, broker and egenmon healthy; migrate and broker-config exited 0")

    http = httpx.Client(base_url=stack.base, timeout=30)
    readyz(http)
    mark("/readyz answers 200 from the host")

    unit = stack.egenmon("care-unit", "add", "--name", "Kontrollmottagningen", "--hsa-id", HSA_ID)
    patient = stack.egenmon("patient", "add", "--personnummer", PERSONNUMMER, "--care-unit", HSA_ID)
    stack.egenmon(
        "plan",
        "set",
        "--patient",
        patient["id"],
        "--protocol",
        "hypertension",
        "--threshold",
        "systolic:90:150",
    )
    device = stack.egenmon("device", "add", "--patient", patient["id"], "--model", "Omron M7")
    admin = stack.egenmon("token", "issue", "--role", "admin")["token"]
    integrator = stack.egenmon("token", "issue", "--role", "integrator")["token"]
    if not (unit.get("id") and device.get("secret")):
        raise CheckFailed("care unit or device came back without an id or secret")
    mark("care unit, patient, plan, device and tokens through `compose run ... egenmon`")

    time.sleep(1)  # the device is bound from the second it was added
    message = reading_message(
        device["id"], [{"type": "heart_rate", "time": now(), "value": 72, "unit": "/min"}]
    )
    result = mqtt_round_trip(stack, device, message)
    if result.get("accepted") != 1:
        raise CheckFailed(f"the MQTT reading was not accepted: {result}")
    mark("a reading over MQTT, the device's result on its results topic")

    body = reading_message(
        device["id"],
        [
            {
                "type": "blood_pressure",
                "time": now(),
                "systolic": 185,
                "diastolic": 112,
                "unit": "mm[Hg]",
            },
            {"type": "spo2", "time": now(), "value": 97, "unit": "%"},
        ],
    )
    r = http.post(
        "/api/v1/readings", json=body, headers={"Authorization": f"Bearer {device['secret']}"}
    )
    if r.status_code != 200 or r.json().get("accepted") != 2:
        raise CheckFailed(f"HTTP ingest answered {r.status_code}: {r.text[:300]}")
    mark("readings over HTTP")

    r = http.get(
        "/fhir/Observation",
        params={"patient": patient["id"], "_sort": "-date"},
        headers={"Authorization": f"Bearer {integrator}"},
    )
    bundle = r.json() if r.status_code == 200 else {}
    if bundle.get("resourceType") != "Bundle" or len(bundle.get("entry", [])) != 3:
        raise CheckFailed(f"FHIR search answered {r.status_code}, not the 3 observations")
    observations = fhir_count(http, integrator, patient["id"])
    mark("FHIR search finds the 3 observations")

    deadline = time.monotonic() + 60
    while not (alerts := open_alerts(http, admin, patient["id"])):
        if time.monotonic() > deadline:
            raise CheckFailed("the scheduler opened no alert within 60 s of a systolic 185")
        time.sleep(1)
    alert_ids = sorted(a["id"] for a in alerts)
    mark(f"the scheduler opened an alert ({', '.join(sorted(a['rule'] for a in alerts))})")

    def same_data(when: str) -> None:
        readyz(http)
        if fhir_count(http, integrator, patient["id"]) != observations:
            raise CheckFailed(f"observations lost {when}")
        if sorted(a["id"] for a in open_alerts(http, admin, patient["id"])) != alert_ids:
            raise CheckFailed(f"alerts lost {when}")
        again = reading_message(
            device["id"], [{"type": "heart_rate", "time": now(), "value": 70, "unit": "/min"}]
        )
        if mqtt_round_trip(stack, device, again).get("accepted") != 1:
            raise CheckFailed(f"the device's reading was refused {when}")

    stack.compose("down")
    stack.up()
    stack.wait_healthy()
    same_data("after down and up")
    observations += 1
    mark("down + up: observations, alert and device account kept in the volumes")

    # Backup as the README says: quiesce, pg_dump the database, tar the broker's volume.
    stack.compose("stop", "egenmon", "broker")
    dump = stack.compose(
        "exec", "-T", "db", "pg_dump", "-U", "egenmon", "-d", "egenmon", "-Fc"
    ).stdout
    broker_tar = stack.compose(
        "run", "--rm", "--no-deps", "-T", "--entrypoint", "tar", "broker",
        "-C", "/mosquitto/config", "--numeric-owner", "-cf", "-", ".",
    ).stdout  # fmt: skip
    with tarfile.open(fileobj=io.BytesIO(broker_tar)) as tar:
        saved = {Path(name).name for name in tar.getnames()}
    if not {"mosquitto.conf", "dynamic-security.json", "platform.secret"} <= saved:
        raise CheckFailed("the broker volume's backup misses its configuration or accounts")
    if not dump.startswith(b"PGDMP"):
        raise CheckFailed("pg_dump wrote no custom-format dump")
    (workdir / "egenmon.dump").write_bytes(dump)
    stack.compose("down", "-v")
    if subprocess.run(
        ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip():
        raise CheckFailed("`down -v` left volumes behind")
    mark(f"backup: pg_dump {len(dump) // 1024} KiB, broker volume {len(broker_tar) // 1024} KiB")

    # Restore into empty volumes: the database first, then the broker's volume, then up.
    stack.up("db")
    stack.wait_healthy(("db",))
    psql = ("exec", "-T", "db", "psql", "-v", "ON_ERROR_STOP=1", "-q", "-U", "egenmon")
    stack.compose(*psql, "-d", "egenmon", "-c", "SELECT timescaledb_pre_restore()")
    stack.compose(
        "exec", "-T", "db", "pg_restore", "-U", "egenmon", "-d", "egenmon", "--exit-on-error",
        stdin=dump,
    )  # fmt: skip
    stack.compose(*psql, "-d", "egenmon", "-c", "SELECT timescaledb_post_restore()")
    stack.compose(
        "run", "--rm", "--no-deps", "-T", "--entrypoint", "tar", "broker",
        "-C", "/mosquitto/config", "--numeric-owner", "-xf", "-",
        stdin=broker_tar,
    )  # fmt: skip
    stack.up()
    stack.wait_healthy()
    same_data("after the restore")
    mark("restore into empty volumes: observations, alert and device account back")

    stack.wait_healthy()
    return marks


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="egenmon-compose-check-") as tmp:
        stack = Stack(Path(tmp))
        stack.compose("down", "-v", check=False)  # leftovers of an interrupted run
        try:
            marks = drive(stack, Path(tmp))
        except (CheckFailed, httpx.HTTPError, subprocess.TimeoutExpired, OSError) as e:
            say(f"FAILED: {e}")
            say("last log lines of the services:")
            print(stack.logs(), file=sys.stderr)
            return 1
        finally:
            stack.compose("down", "-v", check=False)
    total = time.monotonic() - started
    say(f"passed: the stack ran, {len(marks)} steps, {total:.0f} s (down -v done)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
