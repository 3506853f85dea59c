"""Demo data for `egenmon dev`: a care unit, patients with devices, a clinician login."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from egenmon.alerts.monitoring import make_plan, set_plan
from egenmon.devices import registry
from egenmon.domain.identifiers import luhn_digit
from egenmon.settings import Settings
from egenmon.store import care_units, db, patients, users

DEMO_HSA_ID = "SE2321000016-DEMO"
DEMO_UNIT = "Vårdcentralen Demo"

# (display name, birth date YYYYMMDD, serial NNN, scenario, protocol)
DEMO_PATIENTS = (
    ("Tolvan Tolvansson", "19121212", "121", "stable", "hypertension"),
    ("Astrid Andersson", "19450312", "238", "deteriorating", "heart_failure"),
    ("Bertil Berg", "19520704", "457", "stable", "copd"),
    ("Cecilia Carlsson", "19680921", "662", "stable", "diabetes"),
)


@dataclass(frozen=True)
class DemoDevice:
    device_id: str
    secret: str
    patient_id: str
    scenario: str
    protocol: str


def personnummer(birth: str, serial: str) -> str:
    return birth + serial + str(luhn_digit(birth[2:] + serial))


def seed(conn: psycopg.Connection, settings: Settings, state_dir: Path) -> list[DemoDevice]:
    """Create the demo data once; later runs read the devices back from state_dir."""
    devices_file = state_dir / "demo-devices.json"
    seed_clinician(conn, state_dir)
    if devices_file.exists():
        return [DemoDevice(**d) for d in json.loads(devices_file.read_text())]
    try:
        unit_id = care_units.find_care_unit(conn, DEMO_HSA_ID)
    except db.NotFound:
        unit_id = care_units.add_care_unit(conn, DEMO_UNIT, DEMO_HSA_ID)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=120)
    devices = []
    for i, (name, birth, serial, scenario, protocol) in enumerate(DEMO_PATIENTS):
        pnr = personnummer(birth, serial)
        existing = patients.patient_id_by_number(conn, pnr)
        patient_id = (
            existing if existing else patients.add_patient(conn, pnr, "personnummer", unit_id, name)
        )
        added = registry.add_device(
            conn,
            settings,
            patient_id=str(patient_id),
            model="Demo Hub",
            since=since,
            manufacturer="egenmon",
            device_id=f"demo-hub-{i + 1:02d}-{os.urandom(2).hex()}",
        )
        devices.append(
            DemoDevice(added.device_id, added.secret, str(patient_id), scenario, protocol)
        )
        set_plan(conn, patient_id, make_plan(protocol), set_by="egenmon dev (demo)")
    fd = os.open(devices_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump([asdict(d) for d in devices], f)
    return devices


DEMO_CLINICIAN = "demo.sjukskoterska"
DEMO_CLINICIAN_NAME = "Demo Sjuksköterska"
DEMO_LOGIN_FILE = "demo-login.json"


def seed_clinician(conn: psycopg.Connection, state_dir: Path) -> tuple[str, str]:
    """The demo clinician of the demo care unit: (username, password).

    The password is random, made once and kept (mode 0600) in state_dir, so `egenmon dev`
    can print it on every start; a login lost with a reset database is made again with it.
    """
    from egenmon.web import accounts

    login_file = state_dir / DEMO_LOGIN_FILE
    new_password = not login_file.exists()
    if new_password:
        username, password = DEMO_CLINICIAN, secrets.token_urlsafe(12)
        fd = os.open(login_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"username": username, "password": password}, f)
    else:
        saved = json.loads(login_file.read_text())
        username, password = saved["username"], saved["password"]
    if users.user_id_by_name(conn, username) is None:
        try:
            unit_id = care_units.find_care_unit(conn, DEMO_HSA_ID)
        except db.NotFound:
            unit_id = care_units.add_care_unit(conn, DEMO_UNIT, DEMO_HSA_ID)
        users.add_user(
            conn,
            username,
            accounts.hash_password(password),
            "clinician",
            unit_id,
            DEMO_CLINICIAN_NAME,
            "sv",
        )
    elif new_password:
        # The database outlived the state folder: the printed password must work.
        users.set_password(conn, username, accounts.hash_password(password))
    return username, password


def demo_login(state_dir: Path) -> tuple[str, str] | None:
    """The demo clinician's (username, password) as seed_clinician saved them, if it has."""
    login_file = state_dir / DEMO_LOGIN_FILE
    if not login_file.exists():
        return None
    saved = json.loads(login_file.read_text())
    return saved["username"], saved["password"]
