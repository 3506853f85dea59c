"""Quarantine for admins: list it (command and HTTP), replay entries once fixed."""

from __future__ import annotations

import datetime as dt
import uuid

import orjson

from egenmon.ingest import quarantine
from egenmon.store import devices
from tests.ingest.conftest import auth, pipeline_of, quarantine_rows, reading, stored

URL = "/api/v1/readings"
EARLY = "2019-06-01T08:00:00+02:00"  # before the device's binding (from 2020)


def _post(in_app, device, *bodies: bytes) -> list:
    async def go(client, app):
        return [await client.post(URL, content=b, headers=auth(device["secret"])) for b in bodies]

    return in_app(go)


def test_replay_after_the_missing_binding_was_added_stores_and_resolves(in_app, cli, device, conn):
    early = reading(minutes=0) | {"time": EARLY}
    [r] = _post(
        in_app, device, orjson.dumps({"message_id": "old", "readings": [early, reading(minutes=5)]})
    )
    assert r.json()["accepted"] == 1 and "no patient bound" in r.json()["rejected"][0]["error"]

    listed = cli("quarantine", "list", "--json")
    assert listed.code == 0, listed.err
    [entry] = listed.json["entries"]
    assert (entry["kind"], entry["reading_index"], entry["device_id"], entry["message_id"]) == (
        "reading",
        0,
        device["id"],
        "old",
    )
    assert orjson.loads(entry["raw"]) == early and entry["resolved_at"] is None

    # Still refused: the entry stays open and says why.
    again = cli("quarantine", "replay", str(entry["id"]), "--json")
    assert again.code == 1
    [note] = again.json["replayed"]
    assert not note["resolved"] and "no patient bound" in note["note"]

    devices.bind_device(
        conn,
        device["id"],
        uuid.UUID(device["patient"]),
        dt.datetime(2019, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    )
    done = cli("quarantine", "replay", str(entry["id"]), "--json")
    assert done.code == 0, done.out + done.err
    [note] = done.json["replayed"]
    assert note["resolved"] and "accepted 1" in note["note"]

    rows = stored(conn)
    assert len(rows) == 2
    replayed = next(row for row in rows if row["source"] == "replay")
    assert replayed["time"] == dt.datetime.fromisoformat(EARLY)
    assert str(replayed["patient_id"]) == device["patient"]
    assert replayed["message_id"] == "old"

    [q] = quarantine_rows(conn)
    assert q["resolved_at"] is not None and "accepted 1" in q["resolution"]
    assert cli("quarantine", "list", "--json").json["entries"] == []
    assert len(cli("quarantine", "list", "--all", "--json").json["entries"]) == 1
    # A second replay changes nothing.
    twice = cli("quarantine", "replay", str(entry["id"]), "--json").json["replayed"][0]
    assert twice["resolved"] and "already resolved" in twice["note"]
    assert len(stored(conn)) == 2


def test_replay_of_a_whole_message_and_of_unknown_ids(in_app, cli, device, conn):
    body = orjson.dumps({"readings": [reading(minutes=1) | {"time": EARLY}]})
    not_json = b"{oops"
    _post(in_app, device, body, not_json)
    by_reason = {q["reason"][:10]: q["id"] for q in quarantine_rows(conn)}
    assert len(by_reason) == 2
    bad_id = next(i for r, i in by_reason.items() if r.startswith("body is"))

    out = cli("quarantine", "replay", str(bad_id), "999999", "--json")
    assert out.code == 1
    notes = {n["id"]: n for n in out.json["replayed"]}
    assert "still refused (400)" in notes[bad_id]["note"] and not notes[bad_id]["resolved"]
    assert notes[999999]["note"] == "no such quarantine entry"
    [q] = [q for q in quarantine_rows(conn) if q["id"] == bad_id]
    assert q["resolved_at"] is None and q["replayed_at"] is not None
    assert "still refused" in q["resolution"]


def test_the_quarantine_endpoint_is_for_admins_only(in_app, cli, device, care_unit, conn):
    admin_token = cli("token", "issue", "--role", "admin", "--json").json["token"]
    clinician = cli(
        "token", "issue", "--role", "clinician", "--care-unit", care_unit, "--json"
    ).json["token"]

    async def go(client, app):
        await client.post(URL, content=b"not json", headers=auth(device["secret"]))
        ok = await client.get(
            "/api/v1/quarantine", headers={"Authorization": f"Bearer {admin_token}"}
        )
        refused = await client.get(
            "/api/v1/quarantine", headers={"Authorization": f"Bearer {clinician}"}
        )
        anonymous = await client.get("/api/v1/quarantine")
        return ok, refused, anonymous

    ok, refused, anonymous = in_app(go)
    assert ok.status_code == 200
    [entry] = ok.json()["entries"]
    assert entry["raw"] == "not json" and entry["device_id"] == device["id"]
    assert "not JSON" in entry["reason"]
    assert refused.status_code == 403 and anonymous.status_code == 401
    # Reading quarantine is recorded in the access log, like any read of patient data.
    logged = conn.execute("SELECT role, action, resource FROM access_log").fetchall()
    assert ("admin", "read", "quarantine") in logged


def _observation(device: dict, when: str) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
            "subject": {"reference": f"Patient/{device['patient']}"},
            "device": {"reference": f"Device/{device['id']}"},
            "effectiveDateTime": when,
            "valueQuantity": {
                "value": 81.5,
                "unit": "kg",
                "system": "http://unitsofmeasure.org",
                "code": "kg",
            },
        }
    )


def test_replay_of_fhir_entries_goes_through_fhir_ingest(in_app, cli, device, conn):
    early, ok = _observation(device, EARLY), _observation(device, "2026-11-24T07:40:00+01:00")

    async def go(client, app):
        pipeline = pipeline_of(app)
        for raw in (early, ok, b'{"resourceType": "Observation", "status": "final"}'):
            await pipeline.quarantine(source="fhir", reason="test", raw=raw, device_id=device["id"])

    in_app(go)
    ids = [str(r["id"]) for r in quarantine_rows(conn)]
    result = cli("quarantine", "replay", *ids, "--json")
    notes = {n["id"]: n for n in result.json["replayed"]}
    by_id = [notes[int(i)] for i in ids]
    assert [n["resolved"] for n in by_id] == [False, True, False]
    assert "no patient bound" in by_id[0]["note"]
    assert "created" in by_id[1]["note"]
    rows = stored(conn, device["id"])
    assert [(r["type"], r["value"], r["source"]) for r in rows] == [("body_weight", 81.5, "fhir")]
    # Replay does not quarantine again: the entry is the quarantine.
    assert len(quarantine_rows(conn)) == 3


def test_a_replay_not_given_fhir_ingest_leaves_fhir_entries_open_with_a_note(in_app, device, conn):
    ok = _observation(device, "2026-11-24T07:40:00+01:00")
    replayed = []

    async def go(client, app):
        pipeline = pipeline_of(app)
        await pipeline.quarantine(source="fhir", reason="test", raw=ok, device_id=device["id"])
        ids = [r["id"] for r in quarantine_rows(conn)]
        replayed.extend(await quarantine.replay(pipeline, ids))

    in_app(go)
    assert [r.resolved for r in replayed] == [False]
    assert "needs FHIR ingest" in replayed[0].note
    assert stored(conn, device["id"]) == []
    assert quarantine_rows(conn)[0]["resolved_at"] is None
