"""Hypothesis on the ways data comes in: the Reading message parser, the FHIR Observation
intake and the JSON parser under them, first as pure functions (many examples), then
through a served `egenmon serve` (a bounded few): nothing but the refusal type escapes,
every refusal has a reason, and what the contract keeps is kept in quarantine."""

from __future__ import annotations

import datetime as dt
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import orjson
import requests
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from egenmon.domain.readings import Binding
from egenmon.fhir.observation_in import observation_to_reading
from egenmon.fhir.outcome import FhirError
from egenmon.ingest.message import MessageError, ReadingMessage, parse_message
from egenmon.ingest.normalise import normalise
from egenmon.jsonbody import MAX_DEPTH, JsonBodyError, loads
from tests.fuzz.conftest import FuzzServer

sys.path.insert(0, str(Path(__file__).parent.parent / "fhir"))
from fhirtest import spec_example

NOW = dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC)
PATIENT = uuid.UUID("11111111-1111-4111-8111-111111111111")
BINDINGS = [Binding(PATIENT, dt.datetime(2020, 1, 1, tzinfo=dt.UTC))]
PURE = settings(max_examples=200, deadline=None, derandomize=True, database=None)
SERVED = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

# --- strategies -------------------------------------------------------------------------

text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "\x00", "a\x00b", "\u2028", "\ud7ff", "𝄞", "x" * 300, "NaN"]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)
types = st.sampled_from(
    ["heart_rate", "blood_pressure", "spo2", "body_temperature", "body_weight",
     "respiratory_rate", "glucose", "steps", "", "x"]
)  # fmt: skip
times = st.one_of(
    st.datetimes(
        min_value=dt.datetime(2019, 1, 1),
        max_value=dt.datetime(2027, 1, 1),
        timezones=st.just(dt.UTC),
    ).map(lambda t: t.isoformat()),
    text,
)


@st.composite
def readings(draw: st.DrawFn) -> dict[str, Any]:
    reading: dict[str, Any] = {"type": draw(types), "time": draw(times)}
    keys = ["value", "value2", "unit", "note", "on_oxygen", "systolic", "diastolic", "id"]
    for key in draw(st.sets(st.sampled_from(keys), max_size=5)):
        reading[key] = draw(json_values)
    reading.update(draw(st.dictionaries(text, json_values, max_size=2)))
    return reading


@st.composite
def message_bodies(draw: st.DrawFn) -> bytes:
    """A Reading message, perhaps with hostile parts: extra keys, a repeated key, deep
    nesting, a wrong device id, or cut short."""
    message: dict[str, Any] = {"readings": draw(st.lists(readings(), min_size=0, max_size=4))}
    if draw(st.booleans()):
        message["message_id"] = draw(json_values)
    if draw(st.booleans()):
        message["battery"] = draw(json_values)
    if draw(st.booleans()):
        message[draw(text)] = draw(json_values)
    raw = dump(message)
    twist = draw(st.sampled_from(["none", "repeat", "deep", "cut", "device"]))
    if twist == "repeat":
        raw = raw[:-1] + b', "readings": []}'
    elif twist == "deep":
        levels = draw(st.integers(min_value=MAX_DEPTH - 2, max_value=1100))
        raw = raw[:-1] + b', "x": ' + b"[" * levels + b"]" * levels + b"}"
    elif twist == "cut":
        raw = raw[: draw(st.integers(min_value=0, max_value=len(raw)))]
    elif twist == "device":
        raw = raw[:-1] + b', "device_id": "someone-else"}'
    return raw


def dump(value: Any) -> bytes:
    """JSON as a client would write it (big integers too, which orjson does not write)."""
    return json.dumps(value).encode()


def reasonable(reason: str) -> bool:
    return bool(reason.strip()) and "\x00" not in reason and len(reason) < 5000


# --- pure: the parser, normalise, the FHIR mapping ------------------------------------


@PURE
@given(st.binary(max_size=300) | message_bodies())
def test_the_message_parser_accepts_or_refuses_with_a_reason(raw: bytes) -> None:
    try:
        message = parse_message(raw)
    except MessageError as e:
        assert reasonable(str(e))
        return
    assert isinstance(message, ReadingMessage)
    rows, errors = normalise(message, "dev-1", BINDINGS, NOW, "http", NOW)
    assert all(reasonable(reason) for _, reason in errors)
    assert {i for i, _ in errors} <= set(range(len(message.readings)))
    assert len(rows) + len(errors) == len(message.readings)


@PURE
@given(json_values)
def test_the_json_parser_reads_what_orjson_writes(value: Any) -> None:
    try:
        raw = orjson.dumps(value)
    except orjson.JSONEncodeError:
        assume(False)  # an integer over 64 bits: orjson reads it back as a float
    try:
        assert loads(raw) == value
    except JsonBodyError as e:
        assert "NUL" in str(e) and b"\\u0000" in raw


@PURE
@given(st.dictionaries(text, json_values, min_size=1, max_size=5), st.data())
def test_a_repeated_key_anywhere_is_refused(obj: dict, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(sorted(obj)))
    raw = dump(obj)[:-1] + b", " + dump(key) + b": 0}"
    try:
        loads(b'{"outer": [' + raw + b"]}")
    except JsonBodyError as e:
        assert "twice" in str(e) or "NUL" in str(e)
    else:
        raise AssertionError("a repeated key was taken")


@st.composite
def observations(draw: st.DrawFn) -> Any:
    """A vital-signs example with elements changed, dropped or added at any depth."""
    name = draw(
        st.sampled_from(
            ["heart-rate", "blood-pressure", "body-weight", "satO2", "body-temperature"]
        )
    )
    obs: Any = spec_example(name, PATIENT, "dev-1")
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        node = obs
        path = draw(st.lists(st.sampled_from(sorted(obs)), min_size=1, max_size=1))
        key = path[0]
        action = draw(st.sampled_from(["drop", "replace", "add"]))
        if action == "drop":
            node.pop(key, None)
        elif action == "replace":
            node[key] = draw(json_values)
        else:
            node[draw(text)] = draw(json_values)
    if draw(st.integers(min_value=0, max_value=9)) == 0:
        obs = draw(json_values)
    return obs


@PURE
@given(observations())
def test_the_fhir_mapping_takes_an_observation_or_refuses_it_with_a_reason(obs: Any) -> None:
    try:
        posted = observation_to_reading(obs)
    except FhirError as e:
        assert 400 <= e.status < 500 and reasonable(e.diagnostics)
        return
    assert posted.reading["type"]


# --- served: the same inputs through a running egenmon serve ---------------------------


def _quarantined(server: FuzzServer) -> int:
    row = server.conn.execute("SELECT count(*) FROM quarantine").fetchone()
    assert row is not None
    return int(row[0])


def _stored(server: FuzzServer) -> int:
    row = server.conn.execute("SELECT count(*) FROM readings").fetchone()
    assert row is not None
    return int(row[0])


@SERVED
@given(raw=message_bodies())
def test_http_ingest_answers_4xx_with_a_reason_and_keeps_what_it_refuses(
    fuzz_server: FuzzServer, raw: bytes
) -> None:
    before = _quarantined(fuzz_server)
    r = requests.post(
        fuzz_server.root + "/api/v1/readings",
        data=raw,
        headers=fuzz_server.auth_for("/api/v1/readings"),
        timeout=60,
    )
    assert r.status_code in (200, 400, 403, 422), r.text
    body = r.json()
    if r.status_code in (400, 403):
        assert reasonable(body["error"])
        assert _quarantined(fuzz_server) == before + 1  # the whole message, with its reason
    else:
        assert all(reasonable(e["error"]) for e in body["rejected"])
        assert _quarantined(fuzz_server) == before + len(body["rejected"])  # each reading


@SERVED
@given(obs=observations(), twist=st.sampled_from(["none", "repeat", "deep"]))
def test_fhir_create_answers_an_outcome_with_a_reason_and_keeps_what_it_refuses(
    fuzz_server: FuzzServer, obs: Any, twist: str
) -> None:
    raw = dump(obs)
    if twist == "repeat" and raw.startswith(b"{") and raw != b"{}":
        raw = raw[:-1] + b', "status": "x", "status": "y"}'
    elif twist == "deep":
        raw = b'{"resourceType": "Observation", "x": ' + b"[" * 600 + b"]" * 600 + b"}"
    before, stored = _quarantined(fuzz_server), _stored(fuzz_server)
    r = requests.post(
        fuzz_server.root + "/fhir/Observation",
        data=raw,
        headers={
            **fuzz_server.auth_for("/fhir"),
            "Content-Type": "application/fhir+json",
        },
        timeout=60,
    )
    assert r.status_code < 500, r.text
    body = r.json()
    if r.status_code >= 400:
        assert body["resourceType"] == "OperationOutcome"
        assert reasonable(body["issue"][0]["diagnostics"])
        if r.status_code in (400, 422):
            assert _quarantined(fuzz_server) == before + 1
        assert _stored(fuzz_server) == stored
    else:
        assert body["resourceType"] == "Observation"
