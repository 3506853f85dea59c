"""Hostile requests to the FHIR API of a real `egenmon serve`: each a 4xx OperationOutcome
with a reason (and a quarantine row for a body that was meant as data), never a 500."""

from __future__ import annotations

import select
import socket
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from fhirtest import FhirServer, spec_example


@pytest.fixture
def pat(fhir: FhirServer) -> dict[str, Any]:
    return fhir.setup()


def outcome(r) -> str:
    body = r.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body["issue"][0]["diagnostics"]


def quarantined(fhir: FhirServer) -> list[tuple]:
    return fhir.conn.execute(
        "SELECT reason, raw FROM quarantine WHERE source = 'fhir' ORDER BY id"
    ).fetchall()


def test_an_observation_nested_300_levels_deep_is_400_and_quarantined(
    fhir: FhirServer, pat: dict
) -> None:
    obs = spec_example("heart-rate", pat["patient"], pat["device"])
    raw = orjson.dumps(obs)[:-1] + b', "extension": ' + b"[" * 300 + b"]" * 300 + b"}"
    before = len(quarantined(fhir))
    with fhir.client(fhir.token()) as c:
        r = c.post("/Observation", content=raw, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 400
    assert "levels deep" in outcome(r)
    rows = quarantined(fhir)
    assert len(rows) == before + 1 and "levels deep" in rows[-1][0]
    assert bytes(rows[-1][1]) == raw


def test_a_repeated_key_in_an_observation_is_400_naming_it(fhir: FhirServer, pat: dict) -> None:
    obs = spec_example("heart-rate", pat["patient"], pat["device"])
    raw = orjson.dumps(obs)[:-1] + b', "status": "preliminary"}'
    before = len(quarantined(fhir))
    with fhir.client(fhir.token()) as c:
        r = c.post("/Observation", content=raw, headers={"Content-Type": "application/fhir+json"})
        bundle = c.post(
            "/",
            content=b'{"resourceType": "Bundle", "type": "batch", "type": "transaction"}',
            headers={"Content-Type": "application/fhir+json"},
        )
    assert r.status_code == 400 and 'the key "status" twice' in outcome(r)
    assert bundle.status_code == 400 and 'the key "type" twice' in outcome(bundle)
    assert len(quarantined(fhir)) == before + 2
    assert fhir.count("SELECT count(*) FROM readings WHERE patient_id = %s", [pat["patient"]]) == 0


@pytest.mark.parametrize(
    ("path", "query", "name"),
    [
        ("/Observation", "code=a%00b", "code"),
        ("/Patient", "identifier=%00", "identifier"),
        ("/Flag", "status=active%01", "status"),
        ("/Observation/$lastn", "max=1&patient=%00", "patient"),
        ("/Device", "_count=5&identifier=x%7F", "identifier"),
    ],
)
def test_a_control_character_in_a_search_is_400_naming_the_parameter(
    fhir: FhirServer, path: str, query: str, name: str
) -> None:
    with fhir.client(fhir.token()) as c:
        r = c.get(f"{path}?{query}")
    assert r.status_code == 400
    assert f'query parameter "{name}"' in outcome(r)


def test_a_cursor_reused_on_another_resource_is_400(fhir: FhirServer, pat: dict) -> None:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    fhir.readings(
        pat["patient"], pat["device"], "heart_rate", [t0 + timedelta(minutes=i) for i in range(3)]
    )
    with fhir.client(fhir.token()) as c:
        first = c.get("/Observation", params={"patient": str(pat["patient"]), "_count": "1"})
        assert first.status_code == 200
        [nxt] = [x["url"] for x in first.json()["link"] if x["relation"] == "next"]
        cursor = parse_qs(urlsplit(nxt).query)["_cursor"][0]
        assert c.get("/Observation", params={"_cursor": cursor}).status_code == 200
        for path in ("/Patient", "/Device", "/Flag", "/Task"):
            r = c.get(path, params={"_cursor": cursor})
            assert r.status_code == 400, (path, r.text)
            assert "_cursor" in outcome(r)


def _chunked_upload(root: str, token: str, total: int) -> tuple[int, bytes]:
    """POST a chunked body of `total` bytes, stopping as soon as an answer comes back;
    (bytes sent, the answer's first bytes)."""
    host, port = urlsplit(root).hostname, urlsplit(root).port
    sock = socket.create_connection((host, port), timeout=30)
    head = (
        "POST /fhir/Observation HTTP/1.1\r\n"
        f"Host: {host}\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    sock.sendall(head.encode())
    chunk = b"[" * (1024 * 1024)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    answer = b""
    try:
        while sent < total:
            _, writable, _ = select.select([sock], [sock], [], 30)
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            if writable:
                sock.sendall(frame)
                sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server closed after its answer; read it
    try:
        while part := sock.recv(65536):
            answer += part
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        sock.close()
    return sent, answer


def test_a_chunked_200_mb_body_is_refused_at_the_limit_not_buffered(fhir: FhirServer) -> None:
    sent, answer = _chunked_upload(fhir.root, fhir.token(), 200 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"too-costly" in answer
    # The server stopped reading at 8 MiB: what the client could push past it is what the
    # sockets' buffers hold, far from the 200 MB.
    assert sent < 64 * 1024 * 1024


def test_an_unsupported_method_on_a_served_path_is_405_naming_the_allowed(
    fhir: FhirServer,
) -> None:
    with fhir.client(fhir.token()) as c:
        r = c.delete("/Observation")
        assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
        assert "allowed: GET, POST" in outcome(r)
        r = c.put("/metadata")
        assert r.status_code == 405 and r.headers["allow"] == "GET"
        assert c.delete("/Nothing").status_code == 404


@pytest.mark.parametrize("path", ["/Device/a%00b", "/Patient/%01", "/Observation/x%7F"])
def test_a_control_character_in_a_read_id_is_400(fhir: FhirServer, path: str) -> None:
    with fhir.client(fhir.token()) as c:
        r = c.get(path)
    assert r.status_code == 400
    assert "control characters" in outcome(r)
