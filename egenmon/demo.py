"""Demo data for `egenmon dev`: a care unit, patients with devices, a clinician login."""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from egenmon.devices import registry
from egenmon.identifiers import luhn_digit
from egenmon.settings import Settings
from egenmon.store import admin

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
    if devices_file.exists():
        return [DemoDevice(**d) for d in json.loads(devices_file.read_text())]
    try:
        unit_id = admin.find_care_unit(conn, DEMO_HSA_ID)
    except admin.NotFound:
        unit_id = admin.add_care_unit(conn, DEMO_UNIT, DEMO_HSA_ID)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=120)
    devices = []
    for i, (name, birth, serial, scenario, protocol) in enumerate(DEMO_PATIENTS):
        pnr = personnummer(birth, serial)
        existing = conn.execute("SELECT id FROM patients WHERE personnummer = %s",
                                (pnr,)).fetchone()
        patient_id = existing[0] if existing else admin.add_patient(
            conn, pnr, "personnummer", unit_id, name)
        added = registry.add_device(
            conn, settings, patient_id=str(patient_id), model="Demo Hub", since=since,
            manufacturer="egenmon", device_id=f"demo-hub-{i + 1:02d}-{os.urandom(2).hex()}",
        )
        devices.append(DemoDevice(added.device_id, added.secret, str(patient_id), scenario,
                                  protocol))
    fd = os.open(devices_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump([asdict(d) for d in devices], f)
    return devices
