"""Helpers of the FHIR API tests: the server handle, readings rows, the spec's examples.

A module of its own (not conftest) so that test modules import it by a unique name.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
from fhirpy import SyncFHIRClient
from psycopg.types.json import Jsonb

from egenmon.auth import issue_token
from egenmon.devices.credentials import new_secret, secret_digest
from egenmon.domain.identifiers import luhn_digit
from egenmon.domain.ids import observation_id
from egenmon.domain.measurements import LOINC, MDC, TYPES, UCUM
from egenmon.domain.readings import COLUMNS
from egenmon.settings import Settings
from egenmon.store import care_units, devices, patients

TEST_SECRET = "test-signing-secret-of-at-least-32-characters"
TEMPLATE = "egenmon_template"
CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
SCT = "http://snomed.info/sct"
PNR_SYSTEM = "http://electronichealth.se/identifier/personnummer"
SNR_SYSTEM = "http://electronichealth.se/identifier/samordningsnummer"
PNR_OID = "urn:oid:1.2.752.129.2.1.3.1"
SNR_OID = "urn:oid:1.2.752.129.2.1.3.3"

_serial = itertools.count(1)
_db_serial = itertools.count()


def identity_number(samordning: bool = False) -> str:
    """A valid, unique personnummer (or samordningsnummer) for this test session."""
    n = next(_serial)
    year, month, day = 1930 + n // 5000 % 70, 1 + n // 1000 % 12, 1 + n % 28
    dd = day + 60 if samordning else day
    birth = f"{year:04d}{month:02d}{dd:02d}"
    serial = f"{n % 1000:03d}"
    return birth + serial + str(luhn_digit(birth[2:] + serial))


class FhirServer:
    """A running `egenmon serve` with its own database, and helpers to fill and query it."""

    def __init__(self, url: str, settings: Settings, base: str) -> None:
        self.db_url = url
        self.settings = settings
        self.root = base
        self.base = base + "/fhir"
        self.conn = psycopg.connect(url, autocommit=True)

    # --- the registry -----------------------------------------------------------------

    def care_unit(self) -> uuid.UUID:
        return care_units.add_care_unit(
            self.conn, "Vårdcentralen Test", f"SE2321000016-{uuid.uuid4().hex[:8]}"
        )

    def patient(self, care_unit: uuid.UUID, samordning: bool = False) -> tuple[uuid.UUID, str]:
        number = identity_number(samordning)
        kind = "samordningsnummer" if samordning else "personnummer"
        return patients.add_patient(self.conn, number, kind, care_unit, "Tolvan Tolvansson"), number

    def device(
        self, patient: uuid.UUID, since: datetime | None = None, model: str = "Omron M7"
    ) -> str:
        device_id = f"dev-{uuid.uuid4().hex[:12]}"
        devices.add_device(
            self.conn,
            device_id,
            model,
            secret_digest(new_secret()),
            patient_id=patient,
            since=since or datetime(2020, 1, 1, tzinfo=UTC),
            manufacturer="Omron",
        )
        return device_id

    def setup(self) -> dict[str, Any]:
        """A care unit with one patient and a device bound to them since 2020."""
        unit = self.care_unit()
        patient, number = self.patient(unit)
        return {"unit": unit, "patient": patient, "pnr": number, "device": self.device(patient)}

    # --- tokens -----------------------------------------------------------------------

    def token(
        self,
        role: str = "integrator",
        *,
        care_unit: uuid.UUID | None = None,
        patient: uuid.UUID | None = None,
        scope: str | None = None,
        subject: str | None = None,
    ) -> str:
        return issue_token(
            self.settings,
            role=role,
            subject=subject or f"{role}-{uuid.uuid4().hex[:10]}",
            care_unit_id=care_unit,
            patient_id=patient,
            scope=scope,
        )

    def client(self, token: str | None = None, **headers: str) -> httpx.Client:
        h = {"Accept": "application/fhir+json", **headers}
        if token:
            h["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.base, headers=h, timeout=30)

    def fhirpy(self, token: str, **extra_headers: str) -> SyncFHIRClient:
        return SyncFHIRClient(
            self.base, authorization=f"Bearer {token}", extra_headers=extra_headers or None
        )

    # --- readings, straight into the store --------------------------------------------

    def insert(self, rows: Sequence[dict[str, Any]]) -> list[str]:
        """Store readings (dicts of readings columns); returns their Observation ids."""
        with self.conn.cursor() as cur:
            with cur.copy(f"COPY readings ({', '.join(COLUMNS)}) FROM STDIN") as copy_:
                for r in rows:
                    copy_.write_row(
                        [
                            Jsonb(r[c]) if c == "extra" and r[c] is not None else r[c]
                            for c in COLUMNS
                        ]
                    )
        return [observation_id(r["time"], r["dedup_key"]) for r in rows]

    def readings(
        self,
        patient: uuid.UUID,
        device: str,
        type_: str,
        times: Sequence[datetime],
        value: float = 70.0,
    ) -> list[str]:
        """One reading of `type_` at each time; returns the Observation ids in that order."""
        return self.insert([reading_row(patient, device, type_, t, value) for t in times])

    def access_log(self, actor: str) -> list[dict[str, Any]]:
        with self.conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return cur.execute(
                "SELECT * FROM access_log WHERE actor = %s ORDER BY id", (actor,)
            ).fetchall()

    def count(self, sql: str, params: Sequence[Any] = ()) -> int:
        row = self.conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        self.conn.close()


def reading_row(
    patient: uuid.UUID,
    device: str,
    type_: str,
    time: datetime,
    value: float = 70.0,
    **over: Any,
) -> dict[str, Any]:
    t = TYPES[type_]
    time = time.astimezone(UTC)
    row: dict[str, Any] = {
        "time": time,
        "patient_id": patient,
        "device_id": device,
        "type": type_,
        "code": t.loinc,
        "mdc": t.mdc,
        "value": value,
        "value2": None,
        "value3": None,
        "unit": t.unit,
        "on_oxygen": None,
        "note": None,
        "source": "http",
        "dedup_key": f"{device}|{type_}|{time.isoformat(timespec='microseconds')}",
        "received_at": time + timedelta(seconds=2),
        "message_id": None,
        "extra": None,
    }
    if type_ == "blood_pressure":
        row.update(value=max(value, 120.0), value2=80.0)
    row.update(over)
    return row


# --- FHIR specification vital-sign examples ---------------------------------------------
# observation-example-heart-rate, -bloodpressure, -body-weight, -body-temperature, -satO2,
# -respiratory-rate from the FHIR R4 specification, with what egenmon needs added: a full
# measurement time with an offset, a patient id and a device.

_VITAL = [
    {"coding": [{"system": CAT, "code": "vital-signs", "display": "Vital Signs"}],
     "text": "Vital Signs"}
]  # fmt: skip

SPEC_EXAMPLES: dict[str, dict[str, Any]] = {
    "heart-rate": {
        "code": {"coding": [{"system": LOINC, "code": "8867-4", "display": "Heart rate"}],
                 "text": "Heart rate"},
        "valueQuantity": {"value": 44, "unit": "beats/minute", "system": UCUM, "code": "/min"},
    },
    "blood-pressure": {
        "identifier": [{"system": "urn:ietf:rfc:3986",
                        "value": "urn:uuid:187e0c12-8dd2-67e2-99b2-bf273c878281"}],
        "basedOn": [{"identifier": {"system": "https://acme.org/identifiers", "value": "1234"}}],
        "code": {"coding": [{"system": LOINC, "code": "85354-9",
                             "display": "Blood pressure panel with all children optional"}],
                 "text": "Blood pressure systolic & diastolic"},
        "performer": [{"reference": "Practitioner/example"}],
        "interpretation": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": "L", "display": "low"}], "text": "Below low normal"}],
        "bodySite": {"coding": [{"system": SCT, "code": "368209003", "display": "Right arm"}]},
        "component": [
            {"code": {"coding": [{"system": LOINC, "code": "8480-6",
                                  "display": "Systolic blood pressure"},
                                 {"system": SCT, "code": "271649006",
                                  "display": "Systolic blood pressure"}]},
             "valueQuantity": {"value": 107, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"},
             "interpretation": [{"coding": [{
                 "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                 "code": "N", "display": "normal"}], "text": "Normal"}]},
            {"code": {"coding": [{"system": LOINC, "code": "8462-4",
                                  "display": "Diastolic blood pressure"}]},
             "valueQuantity": {"value": 60, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}},
        ],
    },
    "body-weight": {
        "code": {"coding": [{"system": LOINC, "code": "29463-7", "display": "Body Weight"},
                            {"system": LOINC, "code": "3141-9",
                             "display": "Body weight Measured"},
                            {"system": SCT, "code": "27113001", "display": "Body weight"}]},
        "valueQuantity": {"value": 185, "unit": "lbs", "system": UCUM, "code": "[lb_av]"},
    },
    "body-temperature": {
        "code": {"coding": [{"system": LOINC, "code": "8310-5", "display": "Body temperature"}],
                 "text": "Body temperature"},
        "valueQuantity": {"value": 36.5, "unit": "C", "system": UCUM, "code": "Cel"},
    },
    "satO2": {
        "identifier": [{"system": "http://goodcare.org/observation/id",
                        "value": "o1223435-10"}],
        "code": {"coding": [
            {"system": LOINC, "code": "2708-6",
             "display": "Oxygen saturation in Arterial blood"},
            {"system": LOINC, "code": "59408-5",
             "display": "Oxygen saturation in Arterial blood by Pulse oximetry"},
            {"system": MDC, "code": "150456", "display": "MDC_PULS_OXIM_SAT_O2"}]},
        "valueQuantity": {"value": 95, "unit": "%", "system": UCUM, "code": "%"},
        "interpretation": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
            "code": "N", "display": "Normal (applies to non-numeric results)"}]}],
        "referenceRange": [{"low": {"value": 90, "unit": "%", "system": UCUM, "code": "%"},
                            "high": {"value": 99, "unit": "%", "system": UCUM, "code": "%"}}],
    },
    "respiratory-rate": {
        "code": {"coding": [{"system": LOINC, "code": "9279-1", "display": "Respiratory rate"}],
                 "text": "Respiratory rate"},
        "valueQuantity": {"value": 26, "unit": "breaths/minute", "system": UCUM, "code": "/min"},
    },
}  # fmt: skip


def spec_example(
    name: str, patient: uuid.UUID, device: str, when: str = "2026-01-24T07:31:00+01:00"
) -> dict[str, Any]:
    """A specification example as an integrator would post it for `patient` and `device`."""
    return {
        "resourceType": "Observation",
        "meta": {"profile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"]},
        "status": "final",
        "category": copy.deepcopy(_VITAL),
        "subject": {"reference": f"Patient/{patient}"},
        "effectiveDateTime": when,
        "device": {"reference": f"Device/{device}"},
        **copy.deepcopy(SPEC_EXAMPLES[name]),
    }
