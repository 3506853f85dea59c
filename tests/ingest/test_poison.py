"""Poison input (NUL, invalid UTF-8, huge or odd keys) is refused with a 4xx and kept in
quarantine: the quarantine insert never fails on content, and a reason never carries
the raw input unescaped (issue 12, finding 2)."""

from __future__ import annotations

import orjson
import pytest

from egenmon.auth import issue_token
from egenmon.ingest.pipeline import safe_reason
from tests.ingest.conftest import auth, pipeline_of, quarantine_rows, reading, stored

URL = "/api/v1/readings"

POISON = [
    # An unknown top-level key holding NUL: the finding as reported.
    b'{"x\\u0000y": 1, "readings": [{"type": "heart_rate"}]}',
    # A NUL key of a reading, and one in a reading's type.
    b'{"readings": [{"type": "heart_rate", "time": "2026-01-10T08:00:00Z", '
    b'"value": 72, "unit": "/min", "a\\u0000": 1}]}',
    b'{"readings": [{"type": "heart\\u0000rate"}]}',
    # A lone surrogate (not valid Unicode) as a key.
    b'{"\\ud800": 1, "readings": [{}]}',
    # Invalid UTF-8 bytes, raw.
    b'{"readings": [{"type": "\xff\xfe"}]}',
    # A huge key.
    b'{"' + b"k" * 100_000 + b'": 1, "readings": [{}]}',
]


@pytest.mark.parametrize(
    "raw",
    POISON,
    ids=["nul-key", "nul-reading-key", "nul-type", "surrogate", "bad-utf8", "huge-key"],
)
def test_poison_over_http_is_4xx_and_quarantined_with_an_escaped_reason(in_app, device, conn, raw):
    async def go(client, app):
        return await client.post(URL, content=raw, headers=auth(device["secret"]))

    r = in_app(go)
    assert r.status_code in (400, 422), r.text
    [q] = quarantine_rows(conn)
    assert q["device_id"] == device["id"]
    assert q["reason"] and "\x00" not in q["reason"] and len(q["reason"]) <= 1000
    if q["kind"] == "message":
        assert bytes(q["raw"]) == raw  # the body whole, byte for byte
    # The answer is JSON a device can parse, with the same escaped reason.
    text = r.json()["error"] if r.status_code == 400 else r.json()["rejected"][0]["error"]
    assert "\x00" not in text


def test_a_good_message_after_poison_is_stored(in_app, device, conn):
    async def go(client, app):
        bad = await client.post(URL, content=POISON[0], headers=auth(device["secret"]))
        good = await client.post(
            URL, content=orjson.dumps({"readings": [reading()]}), headers=auth(device["secret"])
        )
        return bad, good

    bad, good = in_app(go)
    assert (bad.status_code, good.status_code) == (400, 200)
    assert len(stored(conn, device["id"])) == 1


def test_the_quarantine_insert_takes_any_text_in_any_field(in_app, device, conn):
    hostile = "a\x00b\ud800c" + "\x1b[31m" + "z" * 5000

    async def go(client, app):
        await pipeline_of(app).quarantine(
            source="mqtt", reason=hostile, raw=b"\x00\xff" * 10, device_id=hostile, topic=hostile
        )

    in_app(go)
    [q] = quarantine_rows(conn)
    assert bytes(q["raw"]) == b"\x00\xff" * 10
    for field in ("reason", "device_id", "topic"):
        assert "\x00" not in q[field] and "\x1b" not in q[field], field
        assert "\\x00" in q[field]  # escaped, not dropped: an admin sees what was sent


def test_safe_reason_escapes_what_text_columns_and_json_cannot_hold():
    assert safe_reason("ok: unknown field 'x'") == "ok: unknown field 'x'"
    assert safe_reason("a\x00b") == "a\\x00b"
    assert safe_reason("\ud800") == "\\ud800"
    assert safe_reason("ä ö å – Ω") == "ä ö å – Ω"  # printable Unicode stays as it is
    assert len(safe_reason("x" * 10_000)) <= 1000
    orjson.dumps(safe_reason("\ud800\udfff\x00"))  # valid for JSON: no lone surrogates


def _fhir_observation(device: dict) -> dict:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"reference": f"Patient/{device['patient']}"},
        "device": {"reference": f"Device/{device['id']}"},
        "effectiveDateTime": "2026-11-24T07:40:00+01:00",
        "valueQuantity": {
            "value": 81.5,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    }


@pytest.mark.parametrize("where", ["top", "nested", "bundle"])
def test_poison_over_fhir_is_4xx_and_quarantined(in_app, settings, device, conn, where):
    obs = _fhir_observation(device)
    if where == "top":
        obs["x\x00y"] = 1
        path, resource = "/fhir/Observation", obs
    elif where == "nested":
        obs["valueQuantity"]["\x00"] = 1
        path, resource = "/fhir/Observation", obs
    else:
        obs["x\x00y"] = 1
        resource = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"resource": obs, "request": {"method": "POST", "url": "Observation"}}],
        }
        path = "/fhir"
    token = issue_token(settings, role="integrator", subject="poison-test")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

    async def go(client, app):
        return await client.post(path, content=orjson.dumps(resource), headers=headers)

    r = in_app(go)
    # The one JSON parser refuses NUL anywhere in a body, a Bundle's entries included.
    assert 400 <= r.status_code < 500, r.text
    rows = quarantine_rows(conn)
    assert len(rows) == 1 and rows[0]["source"] == "fhir"
    assert "\x00" not in rows[0]["reason"]
    assert b"\\u0000" in bytes(rows[0]["raw"])
    assert stored(conn, device["id"]) == []


def test_a_message_the_database_refuses_is_422_and_quarantined_not_503_for_ever(
    in_app, device, conn
):
    # Content that gets past the checks but that the database refuses (a DataError in the
    # batch writer's COPY), made here by a trigger: retrying cannot help, so not a 503.
    conn.execute(
        "CREATE FUNCTION refuse_123() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
        " IF NEW.value = 123 THEN RAISE EXCEPTION 'refused' USING ERRCODE = 'data_exception';"
        " END IF; RETURN NEW; END $$"
    )
    conn.execute(
        "CREATE TRIGGER refuse_123 BEFORE INSERT ON readings"
        " FOR EACH ROW EXECUTE FUNCTION refuse_123()"
    )
    raw = orjson.dumps({"message_id": "m-refused", "readings": [reading(value=123, unit="/min")]})

    async def go(client, app):
        refused = await client.post(URL, content=raw, headers=auth(device["secret"]))
        good = await client.post(
            URL, content=orjson.dumps({"readings": [reading()]}), headers=auth(device["secret"])
        )
        return refused, good

    refused, good = in_app(go)
    assert refused.status_code == 422, refused.text
    assert "refused by the database" in refused.json()["error"]
    assert good.status_code == 200
    [q] = quarantine_rows(conn)
    assert bytes(q["raw"]) == raw and "refused by the database" in q["reason"]
    assert [r["value"] for r in stored(conn, device["id"])] == [72]
