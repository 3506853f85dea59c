"""Sign-in through a real OpenID provider (npm oidc-provider, tests/conftest.py's
`oidc_provider`) in a real Chromium against a real `egenmon serve`: discovery, the
redirect with PKCE, state and nonce, the code exchange, the ID token's validation and
RP-initiated logout, for a clinician and a patient; and the sign-ins egenmon must refuse
with a clear page and a line in the access log."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from egenmon.dev.cluster import free_port
from egenmon.store import care_units, patients, users
from tests.conftest import (
    OIDC_PASSWORD,
    OIDC_PATIENT_PNR,
    OIDC_STAFF_HSA,
    OIDC_UNIT_HSA,
    TEST_SECRET,
    create_database,
    drop_database,
    wait_http,
)
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS

CLINICIAN_NAME = "Berit Sjuksköterska"
UNIT_NAME = "Vårdcentralen Tolvåker"


@dataclass
class Site:
    base: str
    db: str
    patient_id: str
    unit_id: str


@pytest.fixture(scope="module")
def site(pg_cluster, oidc_provider) -> Iterator[Site]:
    """One `egenmon serve` with sign-in through the provider, on a database holding the
    provider's care unit, clinician (by HSA-id, no password) and patient."""
    name = create_database(pg_cluster)
    url = pg_cluster.url(name)
    with psycopg.connect(url, autocommit=True) as conn:
        unit = care_units.add_care_unit(conn, UNIT_NAME, OIDC_UNIT_HSA)
        user = users.add_user(conn, "berit", None, "clinician", unit, CLINICIAN_NAME)
        users.set_hsa_id(conn, user, OIDC_STAFF_HSA)
        patient = patients.add_patient(conn, OIDC_PATIENT_PNR, "personnummer", unit, "Tolvan")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    env.update(
        {
            "EGENMON_DATABASE_URL": url,
            "EGENMON_ENVIRONMENT": "test",
            "EGENMON_AUTH_SECRET": TEST_SECRET,
            "EGENMON_LOG_LEVEL": "WARNING",
            **oidc_provider.settings_env(),
        }
    )
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "egenmon", "serve", "--port", str(port), "--no-mqtt"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", proc)
        yield Site(base, url, str(patient), str(unit))
    finally:
        proc.terminate()
        proc.wait(15)
        drop_database(pg_cluster, name)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Browser) -> Iterator[Page]:
    """A fresh browser profile (no cookies at egenmon or at the provider)."""
    context = chromium.new_context(locale="sv-SE", timezone_id="Europe/Stockholm")
    yield context.new_page()
    context.close()


def sign_in_at_provider(page: Page, login: str) -> None:
    """The provider's own login form (the browser was sent there by egenmon)."""
    page.wait_for_selector("#op-login")
    page.fill("#op-login", login)
    page.fill("#op-password", OIDC_PASSWORD)
    page.click("#op-submit")
    page.wait_for_url(lambda url: "/interaction/" not in url)


def log_rows(site: Site, action: str) -> list[tuple]:
    with psycopg.connect(site.db) as conn:
        return conn.execute(
            "SELECT actor, role, care_unit_id::text, patient_ids::text[], detail"
            " FROM access_log WHERE action = %s ORDER BY id",
            (action,),
        ).fetchall()


def test_a_clinician_signs_in_and_out_through_the_provider(site: Site, page: Page, oidc_provider):
    callbacks: list[str] = []
    page.on("request", lambda r: callbacks.append(r.url) if "/login/callback" in r.url else None)
    page.goto(f"{site.base}/ui/patients/{site.patient_id}")
    assert "/login?next=" in page.url
    page.click("#sso-login")
    page.wait_for_url(lambda url: url.startswith(oidc_provider.issuer))  # by discovery
    sign_in_at_provider(page, "clinician")
    # Back at egenmon, on the page asked for first (`next`), as the clinician.
    assert page.url == f"{site.base}/ui/patients/{site.patient_id}"
    assert CLINICIAN_NAME in page.inner_text("header")
    assert UNIT_NAME in page.inner_text("header")
    (login,) = log_rows(site, "login")
    assert login[:3] == ("berit", "clinician", site.unit_id)
    assert login[4]["acr"].endswith("loa3")

    # The same callback again (a replay): its state was good once.
    assert len(callbacks) == 1 and "code=" in callbacks[0]
    replay = page.context.new_page()
    replay.goto(callbacks[0])
    assert replay.locator("#sso-refused").get_attribute("data-reason") == "state"
    replay.close()

    page.click("#logout")
    # RP-initiated logout: the provider asks, then sends the browser back to egenmon.
    page.wait_for_url(lambda url: url.startswith(oidc_provider.issuer))
    page.click("#logout-confirm")
    page.wait_for_url(f"{site.base}/login?bye=1")
    assert "Du är utloggad" in page.inner_text("main")
    # Signed out at the provider too: signing in again asks for the login.
    page.click("#sso-login")
    page.wait_for_selector("#op-login")


def test_a_patient_signs_in_sees_who_opened_their_chart_and_signs_out(
    site: Site, page: Page, chromium: Browser, oidc_provider
):
    # A clinician opens the patient's chart in the UI.
    staff = chromium.new_context(locale="sv-SE").new_page()
    staff.goto(f"{site.base}/login?next=/ui/patients/{site.patient_id}")
    staff.click("#sso-login")
    sign_in_at_provider(staff, "clinician")
    assert staff.url == f"{site.base}/ui/patients/{site.patient_id}"
    staff.context.close()

    page.goto(f"{site.base}/app/")
    assert "/app/login" in page.url
    page.click("#sso-login")
    sign_in_at_provider(page, "patient")
    assert page.url == f"{site.base}/app/"
    extract = page.inner_text("#access-log")
    assert CLINICIAN_NAME in extract and OIDC_STAFF_HSA in extract and UNIT_NAME in extract
    assert "Läste" in extract
    # The same extract as JSON, through the patient's session.
    r = page.request.get(f"{site.base}/api/v1/me/access-log?limit=100")
    assert r.status == 200
    entries = r.json()["entries"]
    chart = [e for e in entries if e["resource"] == "ui/patient"]
    assert chart and chart[0]["actor"]["hsa_id"] == OIDC_STAFF_HSA
    assert chart[0]["care_unit"]["hsa_id"] == OIDC_UNIT_HSA
    assert chart[0]["action"] == "read" and not chart[0]["actor"]["self"]
    # The patient's session reads only their own data.
    assert page.request.get(f"{site.base}/fhir/Patient/{site.patient_id}").status == 200
    assert page.request.get(f"{site.base}/ui/").url.startswith(f"{site.base}/login")

    page.click("#logout")
    page.click("#logout-confirm")
    page.wait_for_url(f"{site.base}/app/login?bye=1")
    assert page.request.get(f"{site.base}/api/v1/me/access-log").status == 401


@pytest.mark.parametrize(
    ("login", "start", "reason"),
    [
        ("clinician-low", "/login", "acr"),
        ("stranger", "/login", "unknown_user"),
        ("clinician-nonce", "/login", "nonce"),
        ("clinician-aud", "/login", "aud"),
        ("patient-low", "/app/login", "acr"),
        ("patient-unknown", "/app/login", "unknown_patient"),
    ],
)
def test_a_refused_sign_in_shows_why_and_is_logged(
    site: Site, page: Page, login: str, start: str, reason: str
):
    before = len(log_rows(site, "login-refused"))
    page.goto(site.base + start)
    page.click("#sso-login")
    sign_in_at_provider(page, login)
    refused = page.locator("#sso-refused")
    assert refused.get_attribute("data-reason") == reason
    assert len(refused.inner_text()) > 20  # words, not a code
    # No session was begun: egenmon still asks for a login.
    assert page.request.get(f"{site.base}/api/v1/alerts").status == 401
    rows = log_rows(site, "login-refused")
    assert len(rows) == before + 1
    actor, role, _, patient_ids, detail = rows[-1]
    assert detail["reason"] == reason
    if login == "patient-low":
        # A known patient's refused sign-in is in their own extract.
        assert (role, patient_ids) == ("patient", [site.patient_id])
    with psycopg.connect(site.db) as conn:
        everything = conn.execute("SELECT string_agg(row(a.*)::text, ' ') FROM access_log a")
        text = everything.fetchone()[0]
    assert OIDC_PATIENT_PNR not in text and "198001019879" not in text
