"""A session may belong to a patient: the same cookie and resolver give
Principal(role="patient", patient_id=...), with the same CSRF rule as for staff, and a
patient's session opens no clinician page."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import uuid

import psycopg

from egenmon.store import sessions as sessions_store
from egenmon.web.sessions import COOKIE, digest


def _patient_session(url: str, patient_id: str) -> tuple[str, str]:
    """A patient's session made through the store as the OpenID callback makes it:
    (cookie value, CSRF token)."""
    cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)

    async def make() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await sessions_store.create_patient_session(
                conn, digest(cookie), uuid.UUID(patient_id), dt.timedelta(hours=1), csrf
            )

    asyncio.run(make())
    return cookie, csrf


def test_a_patient_session_reads_only_the_patients_own_data(
    client, database_url, patient, cli, care_unit
):
    other = cli(
        "patient", "add", "--personnummer", "191212121212", "--care-unit", care_unit, "--json"
    ).json["id"]
    cookie, _ = _patient_session(database_url, patient)
    client.cookies.set(COOKIE, cookie)
    own = client.get(f"/fhir/Patient/{patient}")
    assert own.status_code == 200 and own.json()["id"] == patient
    assert client.get(f"/fhir/Patient/{other}").status_code in (403, 404)
    found = client.get("/fhir/Patient").json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [patient]
    # A patient's session is no clinician's: the UI sends it to the staff login.
    ui = client.get("/ui/")
    assert ui.status_code == 303 and ui.headers["location"].startswith("/login")


def test_a_patient_sessions_unsafe_calls_need_its_csrf_token(client, database_url, patient, conn):
    cookie, csrf = _patient_session(database_url, patient)
    client.cookies.set(COOKIE, cookie)
    no_token = client.post("/api/v1/alerts/00000000-0000-0000-0000-000000000000/acknowledge")
    assert no_token.status_code == 401
    with_token = client.post(
        "/api/v1/alerts/00000000-0000-0000-0000-000000000000/acknowledge",
        headers={"X-CSRF-Token": csrf},
        json={},
    )
    # Authenticated now (a patient may not act on alerts, or there is no such alert).
    assert with_token.status_code in (403, 404)
    owners = conn.execute("SELECT user_id, patient_id::text FROM sessions").fetchall()
    assert owners == [(None, patient)]


def test_a_session_row_belongs_to_exactly_one_owner(conn, patient):
    try:
        conn.execute(
            "INSERT INTO sessions (id_sha256, expires_at, csrf_token)"
            " VALUES (%s, now() + interval '1 hour', 'x')",
            (digest("nobody"),),
        )
    except psycopg.errors.CheckViolation:
        pass
    else:
        raise AssertionError("a session without an owner was stored")
