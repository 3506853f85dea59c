"""Any vendor's device (issue 17): the codes gateways send over FHIR, Open mHealth data
points and Bluetooth measurements over HTTP, through the real `egenmon serve`."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
from fhir.resources.R4B.observation import Observation
from fhirtest import FhirServer

from egenmon.devices.credentials import new_secret, secret_digest
from egenmon.domain.measurements import LOINC, MDC
from egenmon.ingest import quarantine
from egenmon.store import devices
from tests.ingest.conftest import running_app

_MINUTES = itertools.count()


@pytest.fixture(scope="module")
def ctx(fhir: FhirServer) -> dict[str, Any]:
    return {**fhir.setup(), "token": fhir.token()}


def observation(ctx: dict, system: str, code: str, value: float, unit: str, when: str) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{ctx['patient']}"},
        "device": {"reference": f"Device/{ctx['device']}"},
        "effectiveDateTime": when,
        "identifier": [{"system": "urn:test", "value": uuid.uuid4().hex}],
        "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": unit},
    }


def post(fhir: FhirServer, ctx: dict, body: dict):
    with fhir.client(ctx["token"]) as c:
        return c.post("/Observation", json=body, headers={"Content-Type": "application/fhir+json"})


def codes(served: dict) -> list[tuple[str, str]]:
    return [(c["system"], c["code"]) for c in served["code"]["coding"]]


@pytest.mark.parametrize(
    ("system", "code", "value", "unit", "type_", "canonical", "stored", "served_back"),
    [
        (LOINC, "15074-8", 6.1, "mmol/L", "blood_glucose", "14743-9", 6.1, True),
        (LOINC, "2339-0", 110, "mg/dL", "blood_glucose", "14743-9", 6.11, False),
        (LOINC, "41653-7", 90, "mg/dL", "blood_glucose", "14743-9", 5.0, False),
        (LOINC, "8331-1", 37.2, "Cel", "body_temperature", "8310-5", 37.2, True),
        (MDC, "188424", 99.5, "[degF]", "body_temperature", "8310-5", 37.5, True),
        (MDC, "160368", 5.4, "mmol/L", "blood_glucose", "14743-9", 5.4, True),
    ],
)
def test_variant_codes_are_accepted_and_served_with_the_canonical_code(
    fhir: FhirServer, ctx: dict, system, code, value, unit, type_, canonical, stored, served_back
) -> None:
    when = f"2026-11-21T08:{next(_MINUTES):02}:00+01:00"  # a time of its own per case
    r = post(fhir, ctx, observation(ctx, system, code, value, unit, when))
    assert r.status_code == 201, r.text
    served = r.json()
    Observation.model_validate(served)
    assert codes(served)[0] == (LOINC, canonical)
    assert ((system, code) in codes(served)) is served_back
    assert served["valueQuantity"]["value"] == pytest.approx(stored, abs=0.01)
    row = fhir.conn.execute(
        "SELECT type, code, unit FROM readings WHERE device_id = %s AND dedup_key LIKE %s",
        (ctx["device"], f"%{served['identifier'][1]['value']}"),
    ).fetchone()
    assert row is not None and row[0] == type_ and row[1] == canonical


def test_a_mass_glucose_code_with_a_molar_unit_is_refused_naming_both(
    fhir: FhirServer, ctx: dict
) -> None:
    r = post(fhir, ctx, observation(ctx, LOINC, "2339-0", 6.1, "mmol/L", "2026-11-20T08:00:00Z"))
    assert r.status_code == 422, r.text
    text = r.json()["issue"][0]["diagnostics"]
    assert "2339-0" in text and "mg/dL" in text and "mmol/L" in text


def test_an_unknown_code_is_refused_listing_the_accepted_codes(fhir: FhirServer, ctx) -> None:
    r = post(fhir, ctx, observation(ctx, LOINC, "0000-0", 6.1, "mmol/L", "2026-11-20T08:00:00Z"))
    assert r.status_code == 422
    text = r.json()["issue"][0]["diagnostics"]
    assert "15074-8" in text and "8331-1" in text and "188424" in text


def test_a_control_solution_is_refused_with_its_reason(fhir: FhirServer, ctx) -> None:
    r = post(fhir, ctx, observation(ctx, MDC, "160208", 5.5, "mmol/L", "2026-11-20T08:05:00Z"))
    assert r.status_code == 422
    assert "control-solution" in r.json()["issue"][0]["diagnostics"]


# --- Open mHealth and Bluetooth over HTTP (device credentials), through the real serve ----


@pytest.fixture(scope="module")
def dev(fhir: FhirServer, ctx: dict) -> dict[str, Any]:
    """A device of the module's patient whose secret the test knows."""
    secret = new_secret()
    device_id = f"dev-{uuid.uuid4().hex[:12]}"
    devices.add_device(
        fhir.conn,
        device_id,
        "A&D UA-651BLE",
        secret_digest(secret),
        patient_id=ctx["patient"],
        since=datetime(2020, 1, 1, tzinfo=UTC),
        manufacturer="A&D",
    )
    return {"id": device_id, "auth": {"Authorization": f"Bearer {secret}"}}


def api(fhir: FhirServer, path: str, dev: dict | None, body: Any) -> httpx.Response:
    headers = dev["auth"] if dev else {}
    return httpx.post(f"{fhir.root}{path}", json=body, headers=headers, timeout=30)


def stored_rows(fhir: FhirServer, device: str, source: str) -> list[tuple]:
    return fhir.conn.execute(
        "SELECT type, code, unit, value, value2, on_oxygen, dedup_key, extra FROM readings"
        " WHERE device_id = %s AND source = %s ORDER BY type",
        (device, source),
    ).fetchall()


def quarantine_of(fhir: FhirServer, device: str, source: str) -> list[tuple]:
    return fhir.conn.execute(
        "SELECT reason, raw, reading_index FROM quarantine WHERE device_id = %s AND source = %s"
        " ORDER BY id",
        (device, source),
    ).fetchall()


def data_point(name: str, body: dict, when: str = "2026-11-23T07:25:00+01:00") -> dict:
    return {
        "header": {
            "uuid": str(uuid.uuid4()),
            "schema_id": {"namespace": "omh", "name": name, "version": "4.0"},
            "creation_date_time": "2026-11-23T07:26:00Z",
            "acquisition_provenance": {"source_name": "Omron Connect", "modality": "sensed"},
        },
        "body": {"effective_time_frame": {"date_time": when}, **body},
    }


OMH_SAMPLES = [
    # (schema, body, type, LOINC, unit stored, value stored, value2 stored)
    ("blood-pressure", {"systolic_blood_pressure": {"value": 140, "unit": "mmHg"},
                        "diastolic_blood_pressure": {"value": 60, "unit": "mmHg"}},
     "blood_pressure", "85354-9", "mm[Hg]", 140, 60),
    ("heart-rate", {"heart_rate": {"value": 50, "unit": "beats/min"}},
     "heart_rate", "8867-4", "/min", 50, None),
    ("body-weight", {"body_weight": {"value": 180, "unit": "lb"}},
     "body_weight", "29463-7", "kg", 81.65, None),
    ("oxygen-saturation", {"oxygen_saturation": {"value": 95, "unit": "%"},
                           "supplemental_oxygen_flow_rate": {"value": 2.5, "unit": "L/min"}},
     "spo2", "2708-6", "%", 95, None),
    ("body-temperature", {"body_temperature": {"value": 100.4, "unit": "F"},
                          "measurement_location": "oral"},
     "body_temperature", "8310-5", "Cel", 38.0, None),
    ("blood-glucose", {"blood_glucose": {"value": 110, "unit": "mg/dL"}},
     "blood_glucose", "14743-9", "mmol/L", 6.11, None),
    ("respiratory-rate", {"respiratory_rate": {"value": 12, "unit": "breaths/min"}},
     "respiratory_rate", "9279-1", "/min", 12, None),
]  # fmt: skip


def test_omh_samples_store_with_code_ucum_unit_and_value_once(fhir: FhirServer, ctx, dev) -> None:
    points = [data_point(name, body) for name, body, *_ in OMH_SAMPLES]
    invalid = data_point("heart-rate", {"heart_rate": {"value": 50, "unit": "beats/min"},
                                        "descriptive_statistic": "maximum"})  # fmt: skip
    r = api(fhir, "/api/v1/omh/dataPoints", dev, [*points, invalid])
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 7 and r.json()["duplicates"] == 0
    [rejected] = r.json()["rejected"]
    assert rejected["index"] == 7 and "descriptive_statistic" in rejected["error"]
    rows = {row[0]: row for row in stored_rows(fhir, dev["id"], "omh")}
    for name, _body, type_, loinc, unit, value, value2 in OMH_SAMPLES:
        row = rows[type_]
        assert (row[1], row[2]) == (loinc, unit), name
        assert row[3] == pytest.approx(value, abs=0.01) and row[4] == value2
        uid = points[[s[0] for s in OMH_SAMPLES].index(name)]["header"]["uuid"]
        assert row[6] == f"{dev['id']}|id|omh:{uid}"
    assert rows["spo2"][5] is True  # oxygen flow: on oxygen
    [(reason, raw, index)] = quarantine_of(fhir, dev["id"], "omh")
    assert "descriptive_statistic" in reason and index == 7
    assert orjson.loads(raw) == invalid
    # The same data points again: stored once.
    again = api(fhir, "/api/v1/omh/dataPoints", dev, points)
    assert again.json() == {"accepted": 0, "duplicates": 7, "rejected": []}


def test_omh_interval_is_served_as_effective_period(fhir: FhirServer, ctx, dev) -> None:
    dp = data_point("heart-rate", {"heart_rate": {"value": 61, "unit": "beats/min"}})
    interval = {
        "start_date_time": "2026-11-22T07:00:00+01:00",
        "end_date_time": "2026-11-22T07:01:00+01:00",
    }
    dp["body"]["effective_time_frame"] = {"time_interval": interval}
    r = api(fhir, "/api/v1/omh/dataPoints", dev, dp)
    assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
    with fhir.client(ctx["token"]) as c:
        bundle = c.get("/Observation", params={"device": dev["id"], "code": "8867-4",
                                               "date": "2026-11-22T06:01:00Z"}).json()  # fmt: skip
    [entry] = bundle["entry"]
    obs = entry["resource"]
    Observation.model_validate(obs)
    assert "effectiveDateTime" not in obs
    assert obs["effectivePeriod"] == {
        "start": "2026-11-22T06:00:00Z",
        "end": "2026-11-22T06:01:00Z",
    }
    assert {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{dp['header']['uuid']}"} in obs[
        "identifier"
    ]


def test_omh_body_refusals_and_credentials(fhir: FhirServer, ctx, dev) -> None:
    r = api(fhir, "/api/v1/omh/dataPoints", None, data_point("heart-rate", {}))
    assert r.status_code == 401
    r = httpx.post(f"{fhir.root}/api/v1/omh/dataPoints", content=b"{not json",
                   headers=dev["auth"], timeout=30)  # fmt: skip
    assert r.status_code == 400 and "JSON" in r.json()["error"]
    assert any(bytes(raw) == b"{not json" for _, raw, _ in quarantine_of(fhir, dev["id"], "omh")), (
        quarantine_of(fhir, dev["id"], "omh")
    )
    naive = data_point("heart-rate", {"heart_rate": {"value": 64, "unit": "beats/min"}},
                       "2026-11-23T07:25:00")  # fmt: skip
    r = api(fhir, "/api/v1/omh/dataPoints", dev, [data_point("step-count", {}), naive])
    assert r.status_code == 422
    first, second = r.json()["rejected"]
    assert first["index"] == 0 and "header.schema_id" in first["error"]
    assert second["index"] == 1 and second["error"].startswith(
        "body (effective_time_frame, heart_rate): time: '2026-11-23T07:25:00' has no offset"
    )


def ble_bp(flags: int = 0x06, mean: bytes = b"\x6c\x00") -> str:
    # flags: time stamp + pulse; 142/91 (mean) mmHg, 2026-11-20 08:31:05, pulse 72
    stamp = (2026).to_bytes(2, "little") + bytes([11, 20, 8, 31, 5])
    return (bytes([flags]) + b"\x8e\x00\x5b\x00" + mean + stamp + b"\x48\x00").hex()


def test_ble_blood_pressure_with_pulse_stores_two_readings_at_the_device_time(
    fhir: FhirServer, ctx, dev
) -> None:
    body = [
        {"characteristic": "0x2A35", "value_hex": ble_bp()},
        {"characteristic": "0x2A1C", "value_hex": "00ffff7f00"},  # temperature NaN
        {"characteristic": "0x2A37", "value_hex": "0648", "time": "2026-11-20T09:00:00+01:00"},
    ]
    r = api(fhir, "/api/v1/ble/measurements", dev, body)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 3
    [rejected] = r.json()["rejected"]
    assert rejected["index"] == 1 and "special value NaN" in rejected["error"]
    rows = stored_rows(fhir, dev["id"], "ble")
    assert [(t, c, u, v, v2) for t, c, u, v, v2, *_ in rows] == [
        ("blood_pressure", "85354-9", "mm[Hg]", 142, 91),
        ("heart_rate", "8867-4", "/min", 72, None),
        ("heart_rate", "8867-4", "/min", 72, None),
    ]
    times = fhir.conn.execute(
        "SELECT type, time FROM readings WHERE device_id = %s AND source = 'ble' ORDER BY time",
        (dev["id"],),
    ).fetchall()
    assert [t.isoformat() for _, t in times] == [
        "2026-11-20T07:31:05+00:00", "2026-11-20T07:31:05+00:00", "2026-11-20T08:00:00+00:00"
    ]  # fmt: skip
    [(reason, raw, index)] = quarantine_of(fhir, dev["id"], "ble")
    assert "temperature: special value NaN" in reason and index == 1
    assert orjson.loads(raw) == body[1]
    again = api(fhir, "/api/v1/ble/measurements", dev, body[0])
    assert again.json() == {"accepted": 0, "duplicates": 2, "rejected": []}
    with fhir.client(ctx["token"]) as c:
        bundle = c.get("/Observation", params={"device": dev["id"], "code": "85354-9"}).json()
    served = [e["resource"] for e in bundle["entry"]]
    for obs in served:
        Observation.model_validate(obs)
    assert all("extension" in o for o in served)  # what the translation kept is served
    [ble_obs] = [o for o in served if o["extension"][0]["url"].endswith("/ble-measurement")]
    assert ble_obs["effectiveDateTime"] == "2026-11-20T07:31:05Z"


def test_quarantined_omh_and_ble_items_replay_once_the_binding_is_fixed(
    fhir: FhirServer, ctx
) -> None:
    secret = new_secret()
    device_id = f"dev-{uuid.uuid4().hex[:12]}"
    since = datetime(2020, 1, 1, tzinfo=UTC)
    devices.add_device(
        fhir.conn,
        device_id,
        "Omron M7",
        secret_digest(secret),
        patient_id=ctx["patient"],
        since=since,
    )
    dev = {"id": device_id, "auth": {"Authorization": f"Bearer {secret}"}}
    early = "2019-06-01T08:00:00+02:00"  # before the device's binding
    hr = data_point("heart-rate", {"heart_rate": {"value": 58, "unit": "beats/min"}}, early)
    r = api(fhir, "/api/v1/omh/dataPoints", dev, hr)
    assert r.status_code == 422 and "no patient bound" in r.json()["rejected"][0]["error"]
    r = api(fhir, "/api/v1/ble/measurements", dev,
            {"characteristic": "0x2A37", "value_hex": "0648", "time": early})  # fmt: skip
    assert r.status_code == 422
    ids = [
        i
        for (i,) in fhir.conn.execute(
            "SELECT id FROM quarantine WHERE device_id = %s ORDER BY id", (device_id,)
        ).fetchall()
    ]
    assert len(ids) == 2
    devices.bind_device(
        fhir.conn, device_id, ctx["patient"], datetime(2019, 1, 1, tzinfo=UTC), since
    )

    async def go() -> list:
        async with running_app(fhir.settings) as (_client, app):
            return await quarantine.replay(app.state.runtime.pipeline, ids)

    replayed = asyncio.run(go())
    assert [r.resolved for r in replayed] == [True, True], [r.note for r in replayed]
    assert all("accepted 1" in r.note for r in replayed)
    rows = fhir.conn.execute(
        "SELECT type, dedup_key FROM readings WHERE device_id = %s ORDER BY dedup_key",
        (device_id,),
    ).fetchall()
    assert rows == [
        ("heart_rate", f"{device_id}|heart_rate|2019-06-01T06:00:00.000000+00:00"),
        ("heart_rate", f"{device_id}|id|omh:{hr['header']['uuid']}"),
    ]
