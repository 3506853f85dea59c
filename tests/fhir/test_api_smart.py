"""SMART on FHIR against a real `egenmon serve`: the configuration, standalone and EHR
launch with `fhirclient` (the SMART Python client), SMART Backend Services with signed
client assertions, refused tokens, CORS, and the access log as AuditEvents.

One server for the module (tests/fhir/conftest.py); each test registers its own clients
and makes its own care units, patients and sessions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.server
import json
import secrets
import threading
import time
import uuid
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fhirclient import client as smart_client
from fhirclient.models.observation import Observation
from fhirtest import FhirServer

from egenmon.identity import clients
from egenmon.identity.smart import ASSERTION_TYPE, pkce_challenge
from egenmon.store import users

REDIRECT = "http://127.0.0.1:9/callback"
CAPABILITIES = ("launch-standalone", "launch-ehr", "context-standalone-patient",
                "context-ehr-patient", "client-public", "client-confidential-asymmetric",
                "permission-v2")  # fmt: skip
APP_ORIGIN = "https://app.example.org"


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    """An RSA and an EC P-384 key pair, and the public JWKS that registers both."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP384R1())
    rsa_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    ec_jwk = jwt.algorithms.ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True)
    rsa_jwk.update(kid="rsa-1", alg="RS384")
    ec_jwk.update(kid="ec-1", alg="ES384")
    return {"rsa": rsa_key, "ec": ec_key, "jwks": {"keys": [rsa_jwk, ec_jwk]}}


@pytest.fixture(scope="module")
def backend(fhir: FhirServer, keys: dict[str, Any]) -> str:
    """A backend-services client allowed to read observations and patients."""
    return clients.add_client(
        fhir.conn,
        name="Regionens integration",
        scopes=["system/Observation.rs", "system/Patient.rs"],
        jwks=keys["jwks"],
    )["client_id"]


@pytest.fixture(scope="module")
def app(fhir: FhirServer) -> str:
    """A public browser app with a registered origin."""
    return clients.add_client(
        fhir.conn,
        name="Mina mätvärden",
        scopes=["launch", "launch/patient", "patient/Observation.rs", "user/Observation.rs"],
        redirect_uris=[REDIRECT],
        origins=[APP_ORIGIN],
        launch_uri=APP_ORIGIN + "/launch",
    )["client_id"]


def assertion(
    fhir: FhirServer,
    client_id: str,
    key: Any,
    alg: str = "RS384",
    kid: str = "rsa-1",
    **claims: Any,
) -> str:
    now = dt.datetime.now(dt.UTC)
    body = {
        "iss": client_id,
        "sub": client_id,
        "aud": fhir.root + "/oauth/token",
        "exp": now + dt.timedelta(minutes=4),
        "jti": uuid.uuid4().hex,
        **claims,
    }
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


def token_request(fhir: FhirServer, form: dict[str, str], **headers: str) -> httpx.Response:
    return httpx.post(fhir.root + "/oauth/token", data=form, headers=headers, timeout=10)


def backend_form(signed: str, scope: str = "system/Observation.rs") -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
    }


def session(fhir: FhirServer, *, user: uuid.UUID | None = None, patient: Any = None) -> dict:
    """A signed-in browser session (as the login routes make them): cookie and CSRF."""
    sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    fhir.conn.execute(
        "INSERT INTO sessions (id_sha256, user_id, patient_id, expires_at, csrf_token)"
        " VALUES (%s, %s, %s, now() + interval '1 hour', %s)",
        (hashlib.sha256(sid.encode()).digest(), user, patient, csrf),
    )
    return {"cookies": {"egenmon_session": sid}, "csrf": csrf}


def clinician(fhir: FhirServer, unit: uuid.UUID) -> tuple[str, dict]:
    name = f"ssk-{uuid.uuid4().hex[:8]}"
    return name, session(fhir, user=users.add_user(fhir.conn, name, None, "clinician", unit))


def launch_app(
    fhir: FhirServer, app: str, scope: str, who: dict, launch: str | None = None
) -> smart_client.FHIRClient:
    """fhirclient through the authorize redirect (the browser carrying the session) and
    the code exchange."""
    settings = {"app_id": app, "api_base": fhir.base, "redirect_uri": REDIRECT, "scope": scope}
    if launch:
        settings["launch_token"] = launch
    client = smart_client.FHIRClient(settings=settings)
    r = httpx.get(client.authorize_url, cookies=who["cookies"], timeout=10)
    assert r.status_code == 302, r.text
    assert r.headers["location"].startswith(REDIRECT + "?")
    assert "error" not in httpx.URL(r.headers["location"]).params, r.headers["location"]
    client.handle_callback(r.headers["location"])
    return client


# --- configuration --------------------------------------------------------------------


def test_smart_configuration_names_what_is_served(fhir: FhirServer) -> None:
    for url in (fhir.base + "/.well-known/smart-configuration",
                fhir.root + "/.well-known/smart-configuration"):  # fmt: skip
        r = httpx.get(url)
        assert r.status_code == 200
        conf = r.json()
        assert conf["token_endpoint"] == fhir.root + "/oauth/token"
        assert conf["authorization_endpoint"] == fhir.root + "/oauth/authorize"
        assert conf["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
        assert conf["code_challenge_methods_supported"] == ["S256"]
        assert {"authorization_code", "client_credentials"} == set(conf["grant_types_supported"])
        assert set(CAPABILITIES) <= set(conf["capabilities"])
    security = httpx.get(fhir.base + "/metadata").json()["rest"][0]["security"]
    uris = {e["url"]: e["valueUri"] for e in security["extension"][0]["extension"]}
    assert uris == {"authorize": conf["authorization_endpoint"], "token": conf["token_endpoint"]}
    assert security["cors"] is True


# --- backend services -----------------------------------------------------------------


def test_a_backend_client_gets_a_token_with_a_signed_assertion_and_searches(
    fhir: FhirServer, keys: dict, backend: str
) -> None:
    data = fhir.setup()
    fhir.readings(data["patient"], data["device"], "heart_rate", [dt.datetime.now(dt.UTC)])
    for key, alg, kid in ((keys["rsa"], "RS384", "rsa-1"), (keys["ec"], "ES384", "ec-1")):
        r = token_request(
            fhir,
            backend_form(
                assertion(fhir, backend, key, alg, kid),
                "system/Observation.rs system/Observation.c system/AuditEvent.rs",
            ),
        )
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        # Only what was asked AND registered: no create, no access log.
        assert body["scope"] == "system/Observation.rs"
        assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 300
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == body["expires_in"]
        assert claims["client_id"] == backend
        with fhir.client(body["access_token"]) as c:
            found = c.get("/Observation", params={"patient": str(data["patient"])})
            assert found.status_code == 200
            assert found.json()["total"] == 1
            assert c.get("/Patient", params={"_count": "1"}).status_code == 403  # not granted


def test_bad_client_assertions_are_refused(fhir: FhirServer, keys: dict, backend: str) -> None:
    stranger = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    bad = {
        "expired": assertion(fhir, backend, keys["rsa"], exp=now - dt.timedelta(minutes=2)),
        "too long": assertion(fhir, backend, keys["rsa"], exp=now + dt.timedelta(minutes=30)),
        "no exp": assertion(fhir, backend, keys["rsa"], exp=None),
        "no jti": assertion(fhir, backend, keys["rsa"], jti=None),
        "other aud": assertion(fhir, backend, keys["rsa"], aud=fhir.root + "/token"),
        "sub differs": assertion(fhir, backend, keys["rsa"], sub="someone-else"),
        "unknown key": assertion(fhir, backend, stranger, "ES384", "ec-1"),
        "unknown kid": assertion(fhir, backend, keys["rsa"], kid="rsa-9"),
        "unknown client": assertion(fhir, "nobody-1234", keys["rsa"]),
        "hs256": jwt.encode({"iss": backend, "sub": backend}, "x" * 32, algorithm="HS256"),
    }
    for why, signed in bad.items():
        r = token_request(fhir, backend_form(signed))
        assert r.status_code == 401, why
        assert r.json()["error"] == "invalid_client", why
    replayed = assertion(fhir, backend, keys["rsa"])
    assert token_request(fhir, backend_form(replayed)).status_code == 200
    r = token_request(fhir, backend_form(replayed))
    assert r.status_code == 401 and "jti" in r.json()["error_description"]
    r = token_request(fhir, backend_form(assertion(fhir, backend, keys["rsa"]), "system/Flag.rs"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


def test_token_endpoint_form_errors_are_clear(fhir: FhirServer, backend: str) -> None:
    cases = [
        (b"grant_type=password", "unsupported_grant_type"),
        (b"grant_type=client_credentials&grant_type=client_credentials", "invalid_request"),
        (b"\xff\xfe", "invalid_request"),
        (b"scope=x", "invalid_request"),
    ]
    for body, error in cases:
        r = httpx.post(
            fhir.root + "/oauth/token",
            content=body,
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert r.status_code == 400 and r.json()["error"] == error, (body, r.text)
    r = httpx.post(fhir.root + "/oauth/token", json={"grant_type": "client_credentials"})
    assert r.status_code == 400 and "x-www-form-urlencoded" in r.json()["error_description"]


def test_tokens_without_exp_for_another_audience_or_from_an_unknown_key_are_refused(
    fhir: FhirServer, keys: dict
) -> None:
    secret = fhir.settings.signing_secret
    now = dt.datetime.now(dt.UTC)
    base = {"iss": "egenmon", "aud": "egenmon", "sub": "x", "role": "integrator",
            "scope": "system/*.rs", "iat": now, "exp": now + dt.timedelta(minutes=5)}  # fmt: skip
    tokens = {
        "no exp": jwt.encode({k: v for k, v in base.items() if k != "exp"}, secret, "HS256"),
        "other aud": jwt.encode({**base, "aud": "https://other.example"}, secret, "HS256"),
        "unknown key": jwt.encode(base, keys["rsa"], "RS256", headers={"kid": "nope"}),
        "other secret": jwt.encode(base, "y" * 40, "HS256"),
    }
    for why, token in tokens.items():
        with fhir.client(token) as c:
            r = c.get("/Observation", params={"_count": "1"})
        assert r.status_code == 401, why
        assert r.json()["resourceType"] == "OperationOutcome"


# --- app launch -----------------------------------------------------------------------


def test_fhirclient_standalone_launch_reads_the_patients_own_observations(
    fhir: FhirServer, app: str
) -> None:
    data = fhir.setup()
    other = fhir.setup()
    fhir.readings(data["patient"], data["device"], "spo2", [dt.datetime.now(dt.UTC)], 97)
    fhir.readings(other["patient"], other["device"], "spo2", [dt.datetime.now(dt.UTC)], 91)
    who = session(fhir, patient=data["patient"])
    smart = launch_app(fhir, app, "launch/patient patient/Observation.rs", who)
    assert smart.patient_id == str(data["patient"])
    search = Observation.where(struct={"patient": smart.patient_id})
    found = list(search.perform_resources_iter(smart.server))
    assert [o.subject.reference for o in found] == [f"Patient/{data['patient']}"]
    assert found[0].valueQuantity.value == 97
    # The token sees this patient only: another patient's search is refused.
    with fhir.client(smart.server.auth.access_token) as c:
        r = c.get("/Observation", params={"patient": str(other["patient"])})
        assert r.status_code == 403


def test_nobody_signed_in_is_sent_to_the_login_page(fhir: FhirServer, app: str) -> None:
    smart = smart_client.FHIRClient(
        settings={
            "app_id": app,
            "api_base": fhir.base,
            "redirect_uri": REDIRECT,
            "scope": "launch/patient patient/Observation.rs",
        }  # fmt: skip
    )
    r = httpx.get(smart.authorize_url)
    assert r.status_code == 303
    assert r.headers["location"].startswith("/app/login?next=%2Foauth%2Fauthorize%3F")


def test_an_ehr_launch_gives_a_clinician_the_launched_patient_only(
    fhir: FhirServer, app: str, backend: str
) -> None:
    data = fhir.setup()
    fhir.readings(data["patient"], data["device"], "heart_rate", [dt.datetime.now(dt.UTC)])
    neighbour, _ = fhir.patient(data["unit"])  # same care unit, not launched
    _, who = clinician(fhir, data["unit"])
    r = httpx.post(
        fhir.root + "/api/v1/smart/launch",
        json={"patient": str(data["patient"]), "client_id": app},
        cookies=who["cookies"],
        headers={"X-CSRF-Token": who["csrf"]},
    )
    assert r.status_code == 200, r.text
    # The app's launch URL with the FHIR base as iss and the launch context.
    url = httpx.URL(r.json()["launch_url"])
    assert (url.host, url.path, url.params["iss"]) == ("app.example.org", "/launch", fhir.base)
    smart = launch_app(fhir, app, "launch patient/Observation.rs", who, url.params["launch"])
    assert smart.patient_id == str(data["patient"])
    with fhir.client(smart.server.auth.access_token) as c:
        assert c.get("/Observation", params={"patient": smart.patient_id}).json()["total"] == 1
        assert c.get("/Observation", params={"patient": str(neighbour)}).status_code == 403
    # A launch made for another app is refused by this one.
    r = httpx.post(
        fhir.root + "/api/v1/smart/launch",
        json={"patient": str(data["patient"]), "client_id": backend},
        cookies=who["cookies"],
        headers={"X-CSRF-Token": who["csrf"]},
    )
    assert "launch_url" not in r.json()
    with pytest.raises(AssertionError, match=r"error=invalid_request.*another\+app"):
        launch_app(fhir, app, "launch patient/Observation.rs", who, r.json()["launch"])
    # A patient of another care unit cannot be launched.
    elsewhere = fhir.setup()
    r = httpx.post(
        fhir.root + "/api/v1/smart/launch",
        json={"patient": str(elsewhere["patient"])},
        cookies=who["cookies"],
        headers={"X-CSRF-Token": who["csrf"]},
    )
    assert r.status_code == 404


def test_authorize_refuses_what_it_must(fhir: FhirServer, app: str) -> None:
    data = fhir.setup()
    who = session(fhir, patient=data["patient"])
    verifier = secrets.token_urlsafe(48)
    challenge = pkce_challenge(verifier)
    good = {"response_type": "code", "client_id": app, "redirect_uri": REDIRECT,
            "scope": "launch/patient patient/Observation.rs", "state": "s1", "aud": fhir.base,
            "code_challenge": challenge, "code_challenge_method": "S256"}  # fmt: skip

    def authorize(**over: str | None) -> httpx.Response:
        params = {k: v for k, v in {**good, **over}.items() if v is not None}
        return httpx.get(fhir.root + "/oauth/authorize", params=params, cookies=who["cookies"])

    # Not redirected: an unknown client or an unregistered redirect URI.
    assert authorize(client_id="nobody").status_code == 400
    assert authorize(redirect_uri="http://127.0.0.1:9/other").status_code == 400
    # Redirected back with the error and the state.
    for over, error in (
        ({"aud": "https://elsewhere.example/fhir"}, "invalid_request"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": None}, "invalid_request"),
        ({"scope": "user/Observation.rs"}, "invalid_scope"),  # a patient is no user
    ):
        r = authorize(**over)
        assert r.status_code == 302, over
        assert f"error={error}" in r.headers["location"] and "state=s1" in r.headers["location"]
    r = authorize()
    code = httpx.URL(r.headers["location"]).params["code"]
    form = {"grant_type": "authorization_code", "client_id": app, "code": code,
            "redirect_uri": REDIRECT, "code_verifier": verifier}  # fmt: skip
    wrong = token_request(fhir, {**form, "code_verifier": "x" * 50})
    assert wrong.json()["error"] == "invalid_grant"
    ok = token_request(fhir, form)
    assert ok.status_code == 200 and ok.json()["patient"] == str(data["patient"])
    again = token_request(fhir, form)  # a code is used once
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


# --- CORS -----------------------------------------------------------------------------


def test_cors_for_registered_origins_only(fhir: FhirServer, app: str) -> None:
    preflight = {"Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "authorization"}  # fmt: skip
    for path in ("/fhir/Observation", "/oauth/token"):
        r = httpx.options(fhir.root + path, headers={"Origin": APP_ORIGIN, **preflight})
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == APP_ORIGIN
        assert "Authorization" in r.headers["access-control-allow-headers"]
        assert "access-control-allow-credentials" not in r.headers
        r = httpx.options(fhir.root + path, headers={"Origin": "https://evil.example", **preflight})
        assert r.status_code == 403
        assert "access-control-allow-origin" not in r.headers
    r = httpx.get(fhir.base + "/metadata", headers={"Origin": APP_ORIGIN})
    assert r.headers["access-control-allow-origin"] == APP_ORIGIN
    assert "Origin" in r.headers["vary"]
    r = httpx.get(fhir.base + "/metadata", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    # Not on the UI or the authorize endpoint (a browser navigates there).
    r = httpx.get(fhir.root + "/login", headers={"Origin": APP_ORIGIN})
    assert "access-control-allow-origin" not in r.headers


# --- AuditEvent -----------------------------------------------------------------------


def test_a_permitted_and_a_refused_read_appear_as_audit_events(
    fhir: FhirServer, keys: dict
) -> None:
    data = fhir.setup()
    reader = fhir.token("clinician", care_unit=data["unit"], subject=f"ssk-{uuid.uuid4().hex[:6]}")
    stranger_unit = fhir.care_unit()
    stranger = fhir.token("clinician", care_unit=stranger_unit, subject=f"x-{uuid.uuid4().hex[:6]}")
    pid = str(data["patient"])
    with fhir.client(reader) as c:
        assert c.get("/Observation", params={"patient": pid}).status_code == 200
        assert c.get(f"/Patient/{pid}").status_code == 200
    with fhir.client(stranger) as c:
        assert c.get("/Observation", params={"patient": pid}).status_code == 403
        assert c.get(f"/Patient/{pid}").status_code == 404  # as if it did not exist
    auditor = clients.add_client(
        fhir.conn, name="Loggranskning", scopes=["system/AuditEvent.rs"], jwks=keys["jwks"]
    )["client_id"]
    r = token_request(
        fhir, backend_form(assertion(fhir, auditor, keys["rsa"]), "system/AuditEvent.rs")
    )
    assert r.status_code == 200, r.text
    with fhir.client(r.json()["access_token"]) as c:
        bundle = c.get("/AuditEvent", params={"patient": pid, "date": "ge2026-01-01"}).json()
        events = [e["resource"] for e in bundle["entry"]]

        def seen(token: str) -> list[tuple[str, str]]:
            sub = jwt.decode(token, options={"verify_signature": False})["sub"]
            return sorted(
                (e["action"], e["outcome"])
                for e in events
                if e["agent"][0]["who"]["identifier"]["value"] == sub
            )

        # The search (E) and the read (R) of each: permitted (0), refused (4).
        assert seen(reader) == [("E", "0"), ("R", "0")]
        assert seen(stranger) == [("E", "4"), ("R", "4")]
        refused = next(e for e in events if e["outcome"] == "4" and e["action"] == "E")
        assert "refused (403)" in refused["outcomeDesc"]
        assert {"reference": f"Patient/{pid}"} in [x["what"] for x in refused["entity"]]
        # Searches by agent and action, and a read of one event.
        agent = refused["agent"][0]["who"]["identifier"]["value"]
        only = c.get("/AuditEvent", params={"agent": agent, "action": "E"}).json()
        assert [e["resource"]["id"] for e in only["entry"]] == [refused["id"]]
        reads_ = c.get("/AuditEvent", params={"patient": pid, "action": "R"}).json()
        assert sorted(e["resource"]["outcome"] for e in reads_["entry"]) == ["0", "4"]
        assert c.get(f"/AuditEvent/{refused['id']}").json()["outcome"] == "4"
        assert c.get("/AuditEvent", params={"action": "X"}).status_code == 400
        # Paging: one event a page, the next link goes on.
        first = c.get("/AuditEvent", params={"patient": pid, "_count": "1"}).json()
        nxt = next(x["url"] for x in first["link"] if x["relation"] == "next")
        second = httpx.get(nxt, headers=c.headers).json()
        assert second["entry"][0]["resource"]["id"] != first["entry"][0]["resource"]["id"]
    # Nobody else reads the log: a wildcard integrator, a patient, a plain clinician.
    for token in (
        fhir.token("integrator", scope="system/*.rs"),
        fhir.token("patient", patient=data["patient"]),
        reader,
    ):
        with fhir.client(token) as c:
            assert c.get("/AuditEvent", params={"patient": pid}).status_code == 403
    # A care unit's log reviewer sees their unit's entries, not the stranger unit's.
    reviewer = fhir.token(
        "clinician", care_unit=stranger_unit, scope="user/AuditEvent.rs", subject="granskare"
    )
    with fhir.client(reviewer) as c:
        found = c.get("/AuditEvent", params={"patient": pid}).json()
        assert {e["resource"]["outcome"] for e in found["entry"]} == {"4"}
        assert len(found["entry"]) == 2  # the stranger's search and read


# --- keys from a JWKS URI -------------------------------------------------------------


class _JwksHandler(http.server.BaseHTTPRequestHandler):
    jwks: dict = {"keys": []}
    fetched = 0

    def do_GET(self) -> None:
        body = json.dumps(type(self).jwks).encode()
        type(self).fetched += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_keys_from_a_jwks_uri_are_fetched_and_rotated(fhir: FhirServer, keys: dict) -> None:
    handler = type("Handler", (_JwksHandler,), {"jwks": keys["jwks"], "fetched": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
        client = clients.add_client(
            fhir.conn, name="Roterande", scopes=["system/Observation.rs"], jwks_uri=uri
        )["client_id"]
        assert token_request(fhir, backend_form(assertion(fhir, client, keys["rsa"]))).is_success
        assert token_request(fhir, backend_form(assertion(fhir, client, keys["rsa"]))).is_success
        assert handler.fetched == 1  # cached
        # The client rotates to a new key: an unknown kid makes egenmon fetch again.
        new = ec.generate_private_key(ec.SECP384R1())
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(new.public_key(), as_dict=True)
        handler.jwks = {"keys": [{**jwk, "kid": "ec-2"}]}
        deadline = time.monotonic() + 10
        while True:
            r = token_request(fhir, backend_form(assertion(fhir, client, new, "ES384", "ec-2")))
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            assert r.json()["error"] == "invalid_client"
            time.sleep(0.2)
        assert r.status_code == 200, r.text
        assert handler.fetched == 2
    finally:
        server.shutdown()
        server.server_close()


def test_a_confidential_app_must_prove_itself_at_the_token_endpoint(
    fhir: FhirServer, keys: dict
) -> None:
    data = fhir.setup()
    app = clients.add_client(
        fhir.conn,
        name="Konfidentiell app",
        scopes=["launch/patient", "patient/Observation.rs"],
        jwks=keys["jwks"],
        redirect_uris=[REDIRECT],
    )["client_id"]
    who = session(fhir, patient=data["patient"])
    verifier = secrets.token_urlsafe(48)
    r = httpx.get(
        fhir.root + "/oauth/authorize",
        params={
            "response_type": "code",
            "client_id": app,
            "redirect_uri": REDIRECT,
            "scope": "launch/patient patient/Observation.rs",
            "state": "s",
            "aud": fhir.base,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        },  # fmt: skip
        cookies=who["cookies"],
    )
    code = httpx.URL(r.headers["location"]).params["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier}  # fmt: skip
    r = token_request(fhir, {**form, "client_id": app})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    signed = assertion(fhir, app, keys["ec"], "ES384", "ec-1")
    r = token_request(
        fhir, {**form, "client_assertion_type": ASSERTION_TYPE, "client_assertion": signed}
    )
    assert r.status_code == 200, r.text
    assert r.json()["patient"] == str(data["patient"])
    assert r.json()["scope"] == "launch/patient patient/Observation.rs"
