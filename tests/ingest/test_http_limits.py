"""Limits every route shares (egenmon.limits): query control characters, body size while
streaming, and the JSON of API bodies; each a 4xx naming what is wrong, never a 500."""

from __future__ import annotations

import uuid

import pytest

from egenmon.auth import issue_token
from tests.ingest.conftest import auth


def token(settings, role: str = "admin", **kw: object) -> dict[str, str]:
    return auth(issue_token(settings, role=role, subject=f"{role}-limits", **kw))


@pytest.mark.parametrize(
    ("path", "query", "name"),
    [
        ("/api/v1/quarantine", "source=a%00b", "source"),
        ("/api/v1/quarantine", "device=%01", "device"),
        ("/api/v1/alerts", "patient=x%00", "patient"),
        ("/api/v1/alerts", "status=open&rule=%7F", "rule"),
        ("/api/v1/alerts", "na%00me=1", "na\\u0000me"),
    ],
)
def test_a_control_character_in_a_query_parameter_is_400_naming_it(
    in_app, settings, path, query, name
):
    async def go(client, app):
        return await client.get(f"{path}?{query}", headers=token(settings))

    r = in_app(go)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert f'query parameter "{name}"' in error and "control characters" in error


def test_an_out_of_range_number_in_a_query_is_400_naming_it_not_500(in_app, settings):
    async def go(client, app):
        return [
            await client.get(f"/api/v1/quarantine?before={n}", headers=token(settings))
            for n in ("99999999999999999999", "-1", "0")
        ]

    answers = in_app(go)
    assert [r.status_code for r in answers] == [400, 400, 400]
    assert all('query parameter "before"' in r.json()["error"] for r in answers)


def test_a_repeated_key_in_an_api_body_is_400_naming_it(in_app, settings):
    raw = b'{"url": "https://example.org/hook", "secret": "a", "secret": "b"}'

    async def go(client, app):
        return await client.post(
            "/api/v1/webhooks",
            content=raw,
            headers={**token(settings), "Content-Type": "application/json"},
        )

    r = in_app(go)
    assert r.status_code == 400
    assert 'the key "secret" twice' in r.json()["error"]


def test_a_deeply_nested_api_body_is_400(in_app, settings):
    raw = b'{"note": ' + b"[" * 500 + b"]" * 500 + b"}"

    async def go(client, app):
        return await client.post(
            f"/api/v1/alerts/{uuid.uuid4()}/acknowledge", content=raw, headers=token(settings)
        )

    r = in_app(go)
    assert r.status_code == 400
    assert "levels deep" in r.json()["error"]


def test_an_api_body_over_the_limit_is_413_declared_or_streamed(in_app, settings):
    big = b'{"note": "' + b"x" * (2 * 1024 * 1024) + b'"}'

    async def chunks():
        for i in range(0, len(big), 64 * 1024):
            yield big[i : i + 64 * 1024]

    async def go(client, app):
        url = f"/api/v1/alerts/{uuid.uuid4()}/acknowledge"
        declared = await client.post(url, content=big, headers=token(settings))
        streamed = await client.post(url, content=chunks(), headers=token(settings))
        return declared, streamed

    for r in in_app(go):
        assert r.status_code == 413
        assert "over 1 MiB" in r.json()["error"]


def test_readings_keep_their_own_limit_and_quarantine(in_app, device, conn):
    from tests.ingest.conftest import quarantine_rows

    big = b'{"readings": [{"note": "' + b"x" * (2 * 1024 * 1024) + b'"}]}'

    async def go(client, app):
        return await client.post("/api/v1/readings", content=big, headers=auth(device["secret"]))

    r = in_app(go)
    assert r.status_code == 413
    [q] = quarantine_rows(conn)
    assert len(bytes(q["raw"])) == 1024 * 1024


@pytest.mark.parametrize(
    "path", ["/api/v1/alerts/a%00b", "/api/v1/patients/%00/plan", "/api/v1/webhooks/%01"]
)
def test_a_control_character_in_a_path_is_400(in_app, settings, path):
    async def go(client, app):
        return await client.request(
            "DELETE" if "webhooks" in path else "GET", path, headers=token(settings)
        )

    r = in_app(go)
    assert r.status_code == 400
    assert "control characters" in r.json()["error"]
