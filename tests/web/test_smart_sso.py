"""A SMART standalone launch whose patient signs in through the real local OpenID
provider: the authorize endpoint sends nobody-signed-in to /app/login with itself as
`next`, the sign-in comes back to it, and the code it then issues buys a token that reads
the patient's own observations. The app in-process, as tests/web/test_sso_http.py runs it.
"""

from __future__ import annotations

import re
import secrets
import warnings
from collections.abc import Iterator
from html import unescape
from urllib.parse import urlencode, urljoin, urlsplit

import httpx
import pytest

from egenmon.identity.smart import pkce_challenge
from tests.conftest import OIDC_PASSWORD, OIDC_PATIENT_PNR, OIDC_UNIT_HSA

ROOT = "http://127.0.0.1:8124"
REDIRECT = "https://app.example.org/callback"


@pytest.fixture
def app(env, monkeypatch, oidc_provider, cli) -> Iterator:
    for k, v in oidc_provider.settings_env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("EGENMON_PUBLIC_URL", ROOT)
    assert cli("care-unit", "add", "--name", "VC", "--hsa-id", OIDC_UNIT_HSA).code == 0
    assert cli("patient", "add", "--personnummer", OIDC_PATIENT_PNR,
               "--care-unit", OIDC_UNIT_HSA).code == 0  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from egenmon.app import Roles, create_app
    from egenmon.settings import load_settings

    with TestClient(
        create_app(load_settings(), Roles(mqtt=False, scheduler=False)),
        base_url=ROOT,
        follow_redirects=False,
    ) as c:
        yield c


def test_a_patient_signs_in_at_the_provider_and_the_launch_goes_on(app, cli) -> None:
    added = cli("client", "add", "--name", "Mina värden", "--redirect-uri", REDIRECT,
                "--scope", "launch/patient", "patient/*.rs", "--json")  # fmt: skip
    client_id = added.json["client_id"]
    verifier = secrets.token_urlsafe(48)
    authorize = "/oauth/authorize?" + urlencode(
        {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
         "scope": "launch/patient patient/Observation.rs", "state": "st", "aud": ROOT + "/fhir",
         "code_challenge": pkce_challenge(verifier), "code_challenge_method": "S256"}
    )  # fmt: skip
    r = app.get(authorize)
    assert r.status_code == 303 and r.headers["location"].startswith("/app/login?next=")
    page = app.get(r.headers["location"])
    link = unescape(re.search(r'href="(/app/login/sso\?next=[^"]+)"', page.text).group(1))
    r = app.get(link)  # to the provider
    with httpx.Client(follow_redirects=False, timeout=10) as op:

        def follow(r: httpx.Response) -> httpx.Response:
            return op.get(urljoin(str(r.url), r.headers["location"]))

        r = op.get(r.headers["location"])
        while r.status_code in (302, 303) and "/interaction/" not in r.headers["location"]:
            r = follow(r)
        interaction = urljoin(str(r.url), r.headers["location"])
        op.get(interaction)
        r = op.post(interaction + "/login", data={"login": "patient", "password": OIDC_PASSWORD})
        while "/login/callback" not in r.headers["location"]:
            r = follow(r)
        callback = urlsplit(r.headers["location"])
    back = app.get(f"{callback.path}?{callback.query}")
    assert back.status_code == 303 and back.headers["location"] == authorize
    r = app.get(back.headers["location"])  # signed in now: the code, to the app
    assert r.status_code == 302 and r.headers["location"].startswith(REDIRECT + "?code=")
    code = httpx.URL(r.headers["location"]).params["code"]
    token = app.post("/oauth/token", data={"grant_type": "authorization_code", "code": code,
                     "client_id": client_id, "redirect_uri": REDIRECT,
                     "code_verifier": verifier}).json()  # fmt: skip
    patient = token["patient"]
    found = app.get(
        "/fhir/Observation",
        params={"patient": patient},
        headers={"Authorization": f"Bearer {token['access_token']}"},
    )
    assert found.status_code == 200 and found.json()["resourceType"] == "Bundle"
    me = app.get("/api/v1/me/access-log").json()["entries"]
    assert any(e["action"] == "authorize" for e in me)  # the patient sees the app was let in
