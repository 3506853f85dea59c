"""Bearer tokens of the region's identity provider, checked with the keys of its JWKS URI
(a real little HTTP server here, standing in for the provider), mapped by HSA-id and
personnummer; and the patient's own access-log extract as JSON."""

from __future__ import annotations

import datetime as dt
import json
import threading
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import make_personnummer

ISSUER = "https://idp.region.example"
AUDIENCE = "https://egenmon.region.example"
UNIT_HSA = "SE2321000016-A1B2"
PNR_CLAIM = "https://id.oidc.se/claim/personalIdentityNumber"


class JwksServer:
    """Serves a JWKS whose keys a test may rotate; counts the fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.fetches += 1
                body = json.dumps({"keys": [owner.jwk(kid) for kid in owner.keys]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks"

    def add_key(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self, kid: str) -> dict:
        public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.keys[kid].public_key()))
        return {**public, "kid": kid, "use": "sig", "alg": "RS256"}

    def sign(self, kid: str = "k1", **claims: object) -> str:
        now = dt.datetime.now(dt.UTC)
        body: dict = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "SE2321000016-7331",
            "role": "clinician",
            "healthCareUnitHsaId": UNIT_HSA,
            "scope": "user/*.rs",
            "iat": now,
            "exp": now + dt.timedelta(minutes=5),
        }
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        key = self.keys.get(kid) or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def idp(env, monkeypatch) -> Iterator[JwksServer]:
    server = JwksServer()
    server.add_key("k1")
    monkeypatch.setenv("EGENMON_AUTH_ISSUER", ISSUER)
    monkeypatch.setenv("EGENMON_AUTH_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("EGENMON_AUTH_JWKS_URI", server.url)
    yield server
    server.close()


@pytest.fixture
def app_client(idp) -> Iterator:
    """The app in-process, trusting the provider (created after its settings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from egenmon.app import Roles, create_app
    from egenmon.settings import load_settings

    app = create_app(load_settings(), Roles(mqtt=False, scheduler=False))
    with TestClient(app, follow_redirects=False) as c:
        yield c


@pytest.fixture
def unit_and_patient(cli) -> tuple[str, str, str]:
    unit = cli("care-unit", "add", "--name", "VC Provider", "--hsa-id", UNIT_HSA, "--json")
    pnr = make_personnummer("19700101")
    patient = cli("patient", "add", "--personnummer", pnr, "--care-unit", UNIT_HSA, "--json").json[
        "id"
    ]
    return unit.json["id"], patient, pnr


def get(client, path: str, token: str):
    return client.get(path, headers={"Authorization": f"Bearer {token}"})


def test_provider_tokens_map_the_care_unit_and_patient_by_their_swedish_ids(
    app_client, idp, unit_and_patient
):
    _, patient, pnr = unit_and_patient
    r = get(app_client, f"/fhir/Patient/{patient}", idp.sign())
    assert r.status_code == 200, r.text
    # The patient, by personnummer, reads their own extract: the clinician's read is in it.
    token = idp.sign(sub="citizen-1", role="patient", scope="patient/*.rs", **{PNR_CLAIM: pnr})
    extract = get(app_client, "/api/v1/me/access-log", token)
    assert extract.status_code == 200, extract.text
    reads = [e for e in extract.json()["entries"] if e["resource"] == "Patient"]
    assert reads and reads[0]["actor"]["id"] == "SE2321000016-7331"
    assert reads[0]["care_unit"]["hsa_id"] == UNIT_HSA


def test_a_rotated_key_is_fetched_once_and_gaps_are_refused(app_client, idp, unit_and_patient):
    _, patient, _ = unit_and_patient
    assert get(app_client, f"/fhir/Patient/{patient}", idp.sign()).status_code == 200
    fetched = idp.fetches
    idp.add_key("k2")  # the provider rotates its key
    assert get(app_client, f"/fhir/Patient/{patient}", idp.sign(kid="k2")).status_code == 200
    assert idp.fetches == fetched + 1
    for token, words in (
        (idp.sign(kid="k9"), "key is unknown"),  # unknown even after a refresh
        (idp.sign(exp=None), "'exp'"),
        (idp.sign(aud="https://another.example"), "(aud)"),
        (idp.sign(aud=None), "'aud'"),
        (idp.sign(nbf=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)), "not valid yet"),
        (idp.sign(healthCareUnitHsaId="SE2321000016-NONE"), "care unit (HSA-id) is unknown"),
        (idp.sign(healthCareUnitHsaId=None), "no care unit HSA-id"),
        (idp.sign(role="patient", **{PNR_CLAIM: "191212121212"}), "patient is unknown"),
        (idp.sign(role=None), "no known role"),
    ):
        r = get(app_client, f"/fhir/Patient/{patient}", token)
        assert r.status_code == 401, (words, r.text)
        assert words in r.text, (words, r.text)
    # Made-up kids do not make egenmon fetch the keys again and again.
    assert idp.fetches <= fetched + 2


def test_the_extract_is_paged_and_only_for_patients(client, cli, patient, care_unit):
    for _ in range(3):
        assert cli("token", "issue", "--role", "clinician", "--care-unit", care_unit).code == 0
    clinician = cli("token", "issue", "--role", "clinician", "--care-unit", care_unit, "--json")
    staff_token = clinician.json["token"]
    for _ in range(3):
        assert get(client, f"/fhir/Patient/{patient}", staff_token).status_code == 200
    own = cli("token", "issue", "--role", "patient", "--patient", patient, "--json").json["token"]
    first = get(client, "/api/v1/me/access-log?limit=2", own)
    assert first.status_code == 200
    page = first.json()
    assert len(page["entries"]) == 2 and page["next"]
    second = get(client, page["next"], own).json()
    ids = [e["id"] for e in page["entries"] + second["entries"]]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == len(ids)
    assert get(client, "/api/v1/me/access-log", staff_token).status_code == 403
    for bad in ("limit=0", "limit=1000", "limit=x", "before=-1", "before=9" * 30):
        r = get(client, f"/api/v1/me/access-log?{bad}", own)
        assert r.status_code == 400 and r.json()["error"], bad
    assert client.get("/api/v1/me/access-log").status_code == 401
