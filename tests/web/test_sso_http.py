"""The sign-in flow over plain HTTP (no browser) against the real local provider and the
app in-process: egenmon authenticating at the token endpoint with a private-key JWT
(private_key_jwt, EGENMON_OIDC_PRIVATE_KEY_FILE), a patient's session from it, a
callback without its state cookie refused, and `next` kept to this site."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import pytest

from tests.conftest import (
    OIDC_CLIENT_KEY,
    OIDC_KEY_CLIENT,
    OIDC_PASSWORD,
    OIDC_PATIENT_PNR,
    OIDC_UNIT_HSA,
)


@pytest.fixture
def app(env, monkeypatch, oidc_provider, tmp_path, cli) -> Iterator:
    key = tmp_path / "client-key.pem"
    key.write_text(OIDC_CLIENT_KEY.pem)
    for k, v in oidc_provider.settings_env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("EGENMON_OIDC_CLIENT_SECRET")
    monkeypatch.setenv("EGENMON_OIDC_CLIENT_ID", OIDC_KEY_CLIENT)
    monkeypatch.setenv("EGENMON_OIDC_PRIVATE_KEY_FILE", str(key))
    monkeypatch.setenv("EGENMON_PUBLIC_URL", "http://127.0.0.1:8123")
    unit = cli("care-unit", "add", "--name", "VC", "--hsa-id", OIDC_UNIT_HSA, "--json")
    r = cli("patient", "add", "--personnummer", OIDC_PATIENT_PNR, "--care-unit", OIDC_UNIT_HSA)
    assert unit.code == 0 and r.code == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from egenmon.app import Roles, create_app
    from egenmon.settings import load_settings

    with TestClient(
        create_app(load_settings(), Roles(mqtt=False, scheduler=False)),
        base_url="http://127.0.0.1:8123",
        follow_redirects=False,
    ) as c:
        yield c


def sign_in(app, start: str, login: str) -> httpx.Response:
    """Walk the redirects as a browser would: egenmon -> provider -> egenmon's callback."""
    r = app.get(start)
    assert r.status_code == 303, r.text
    with httpx.Client(follow_redirects=False, timeout=10) as op:

        def follow(r: httpx.Response) -> httpx.Response:
            return op.get(urljoin(str(r.url), r.headers["location"]))

        r = op.get(r.headers["location"])
        while r.status_code in (302, 303) and "/interaction/" not in r.headers["location"]:
            r = follow(r)
        interaction = urljoin(str(r.url), r.headers["location"])
        op.get(interaction)
        r = op.post(interaction + "/login", data={"login": login, "password": OIDC_PASSWORD})
        while "/login/callback" not in r.headers["location"]:
            r = follow(r)
        callback = urlsplit(r.headers["location"])
    return app.get(f"{callback.path}?{callback.query}")


def test_private_key_jwt_signs_a_patient_in(app, database_url):
    done = sign_in(app, "/app/login/sso?next=/app/", "patient")
    assert done.status_code == 303, done.text[-600:]
    assert done.headers["location"] == "/app/"
    home = app.get("/app/")
    assert home.status_code == 200 and "Vem har sett mina uppgifter" in home.text
    assert OIDC_PATIENT_PNR not in home.text
    me = app.get("/api/v1/me/access-log").json()["entries"]
    assert me[0]["action"] in ("login", "read") and me[0]["actor"]["self"]


def test_a_callback_without_its_state_cookie_is_refused(app):
    start = app.get("/login/sso")
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    app.cookies.clear()
    r = app.get(f"/login/callback?code=anything&state={state}")
    assert r.status_code == 400 and 'data-reason="state"' in r.text
    assert app.get("/login/callback").status_code == 400


def test_next_must_stay_on_this_site(app, conn):
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil", "/ui/patients/x"):
        assert app.get("/login/sso", params={"next": target}).status_code == 303
    kept = [n for (n,) in conn.execute("SELECT next FROM oidc_logins ORDER BY created_at")]
    assert kept == ["/ui/", "/ui/", "/ui/", "/ui/patients/x"]
    done = sign_in(app, "/app/login/sso?next=https://evil.example/", "patient")
    assert done.headers["location"] == "/app/"


def test_the_patient_page_speaks_english_when_asked(app):
    sign_in(app, "/app/login/sso", "patient")
    home = app.get("/app/")
    csrf = home.text.split('name="csrf_token" value="')[1].split('"')[0]
    switched = app.post("/app/locale", data={"csrf_token": csrf, "locale": "en", "next": "/app/"})
    assert switched.status_code == 303
    assert "Who has seen my information" in app.get("/app/").text
    refused = app.post("/app/locale", data={"locale": "sv"})  # no CSRF token
    assert refused.status_code == 403


def test_local_passwords_can_be_switched_off(env, monkeypatch, oidc_provider, make_user, care_unit):
    from tests.web.conftest import PASSWORD

    make_user("anna", care_unit)
    for k, v in oidc_provider.settings_env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("EGENMON_LOCAL_ACCOUNTS", "false")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from egenmon.app import Roles, create_app
    from egenmon.settings import load_settings

    app = create_app(load_settings(), Roles(mqtt=False, scheduler=False))
    with TestClient(app, follow_redirects=False) as c:
        page = c.get("/login")
        assert 'id="sso-login"' in page.text and 'name="password"' not in page.text
        r = c.post(
            "/login",
            data={
                "username": "anna",
                "password": PASSWORD,
                "csrf_token": c.cookies.get("egenmon_login_csrf"),
            },
        )
        assert r.status_code == 403 and "avstängd" in r.text
        assert "egenmon_session" not in c.cookies
