import datetime as dt
import json
import uuid

import jwt
import pytest

from egenmon.auth import LEEWAY, decode_token, issue_token
from egenmon.domain.principals import AuthError, Principal, Scope, parse_scopes
from egenmon.settings import load_settings

UNIT = uuid.uuid4()
PATIENT = uuid.uuid4()


@pytest.fixture
def s(monkeypatch):
    monkeypatch.setenv("EGENMON_AUTH_SECRET", "x" * 40)
    return load_settings()


def test_a_clinician_token_round_trips(s):
    token = issue_token(s, role="clinician", subject="nurse.anna", care_unit_id=UNIT)
    p = decode_token(s, token)
    assert (p.subject, p.role, p.care_unit_id, p.patient_id) == (
        "nurse.anna",
        "clinician",
        UNIT,
        None,
    )
    assert p.allows("Observation", "r") and p.allows("Observation", "s")
    # A clinician enters readings on a patient's behalf (staff-entered), never changes one.
    assert p.allows("Observation", "c")
    assert not p.allows("Observation", "u") and not p.allows("Observation", "d")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "clinician"}, "--care-unit"),
        ({"role": "patient"}, "--patient"),
        ({"role": "janitor"}, "role must be"),
        ({"role": "admin", "scope": "everything"}, "not SMART scopes"),
    ],
)
def test_issue_refuses_incomplete_tokens(s, kwargs, message):
    with pytest.raises(ValueError, match=message):
        issue_token(s, **kwargs)


def test_expired_token_is_401(s):
    token = issue_token(s, role="admin", ttl_seconds=60)
    claims = jwt.decode(token, s.signing_secret, algorithms=["HS256"], audience="egenmon")
    # Beyond the clock-skew leeway.
    claims["exp"] = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=LEEWAY + 1)
    expired = jwt.encode(claims, s.signing_secret, algorithm="HS256")
    with pytest.raises(AuthError, match="expired") as e:
        decode_token(s, expired)
    assert e.value.status == 401


def test_token_signed_with_another_key_is_401(s):
    token = issue_token(s, role="admin")
    forged = jwt.encode(
        jwt.decode(token, options={"verify_signature": False}), "y" * 40, algorithm="HS256"
    )
    with pytest.raises(AuthError) as e:
        decode_token(s, forged)
    assert e.value.status == 401


def test_unsigned_token_is_refused(s):
    token = jwt.encode({"role": "admin", "sub": "x"}, None, algorithm="none")
    with pytest.raises(AuthError):
        decode_token(s, token)


@pytest.mark.parametrize(
    ("scope", "resource", "action", "allowed"),
    [
        ("system/Observation.rs", "Observation", "r", True),
        ("system/Observation.rs", "Observation", "c", False),
        ("system/Observation.rs", "Patient", "r", False),
        ("user/*.rs", "Patient", "s", True),
        ("patient/Observation.rs", "Observation", "s", True),
        ("patient/Observation.read", "Observation", "s", True),  # SMART v1
        ("patient/Observation.write", "Observation", "c", True),
        ("system/*.cruds", "Task", "u", True),
    ],
)
def test_smart_v2_scopes(scope, resource, action, allowed):
    p = Principal("x", "integrator", scopes=parse_scopes(scope))
    assert p.allows(resource, action) is allowed


def test_scope_parse_rejects_garbage():
    assert Scope.parse("openid") is None
    assert Scope.parse("system/Observation.xyz") is None


def test_patient_visibility_by_role():
    other_unit, other_patient = uuid.uuid4(), uuid.uuid4()
    clinician = Principal("n", "clinician", care_unit_id=UNIT)
    assert clinician.may_see(PATIENT, UNIT)
    assert not clinician.may_see(PATIENT, other_unit)
    me = Principal("p", "patient", patient_id=PATIENT)
    assert me.may_see(PATIENT, other_unit)
    assert not me.may_see(other_patient, UNIT)
    assert Principal("i", "integrator").may_see(other_patient, other_unit)


def test_token_issue_command(cli, care_unit, settings):
    r = cli("token", "issue", "--role", "clinician", "--care-unit", care_unit, "--json")
    assert r.code == 0, r.err
    p = decode_token(settings, r.json["token"])
    assert p.care_unit_id == uuid.UUID(care_unit)
    bad = cli("token", "issue", "--role", "clinician", "--care-unit", "nowhere")
    assert bad.code == 2 and "unknown care unit" in bad.err


# --- issue 12, finding 4: exp required, aud checked, roles never inferred from scopes ----


def _hs256(s, **claims):
    now = dt.datetime.now(dt.UTC)
    base = {
        "iss": "egenmon",
        "aud": "egenmon",
        "sub": "someone",
        "role": "admin",
        "scope": "system/*.cruds",
        "iat": now,
        "exp": now + dt.timedelta(minutes=5),
    }
    base.update(claims)
    return jwt.encode({k: v for k, v in base.items() if v is not None}, s.signing_secret, "HS256")


def test_an_hs256_token_without_exp_is_refused(s):
    assert decode_token(s, _hs256(s)).role == "admin"
    with pytest.raises(AuthError, match="'exp'") as e:
        decode_token(s, _hs256(s, exp=None))
    assert e.value.status == 401


def test_nbf_and_iat_in_the_future_are_refused_beyond_a_small_leeway(s):
    now = dt.datetime.now(dt.UTC)
    # Clock skew of a few seconds is tolerated.
    assert decode_token(s, _hs256(s, iat=now + dt.timedelta(seconds=10))).role == "admin"
    for claim in ("nbf", "iat"):
        with pytest.raises(AuthError, match="not valid yet"):
            decode_token(s, _hs256(s, **{claim: now + dt.timedelta(minutes=10)}))


def test_a_system_scope_without_a_role_is_refused_not_made_an_integrator(s):
    with pytest.raises(AuthError, match="no known role") as e:
        decode_token(s, _hs256(s, role=None, scope="system/*.rs"))
    assert e.value.status == 401
    with pytest.raises(AuthError, match="no known role"):
        decode_token(s, _hs256(s, role=None, scope="patient/*.rs"))
    with pytest.raises(AuthError, match="no known role"):
        decode_token(s, _hs256(s, role=["admin"]))


@pytest.fixture
def idp(tmp_path, monkeypatch):
    """An identity provider: an RSA key, its JWKS file, and settings that trust it."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": "k1", "use": "sig", "alg": "RS256"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    monkeypatch.setenv("EGENMON_AUTH_SECRET", "x" * 40)
    monkeypatch.setenv("EGENMON_AUTH_ISSUER", "https://idp.region.example")
    monkeypatch.setenv("EGENMON_AUTH_JWKS_FILE", str(path))
    monkeypatch.setenv("EGENMON_AUTH_AUDIENCE", "https://egenmon.region.example")
    settings = load_settings()

    def sign(**claims):
        now = dt.datetime.now(dt.UTC)
        base = {
            "iss": "https://idp.region.example",
            "aud": "https://egenmon.region.example",
            "sub": "nurse.berit",
            "role": "clinician",
            "care_unit": str(UNIT),
            "scope": "user/*.rs",
            "iat": now,
            "exp": now + dt.timedelta(minutes=5),
        }
        base.update(claims)
        body = {k: v for k, v in base.items() if v is not None}
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})

    return settings, sign


def test_identity_provider_tokens_need_our_audience_and_exp(idp):
    settings, sign = idp
    p = decode_token(settings, sign())
    assert (p.subject, p.role, p.care_unit_id) == ("nurse.berit", "clinician", UNIT)
    for claims, message in (
        ({"aud": "https://another-service.example"}, r"not meant for egenmon \(aud\)"),
        ({"aud": None}, "'aud'"),
        ({"exp": None}, "'exp'"),
        ({"role": None, "scope": "system/*.rs"}, "no known role"),
        ({"iss": "https://evil.example"}, "not valid"),
    ):
        with pytest.raises(AuthError, match=message) as e:
            decode_token(settings, sign(**claims))
        assert e.value.status == 401, claims


def test_identity_provider_settings_go_together(monkeypatch, tmp_path):
    from egenmon.settings import SettingsError

    monkeypatch.setenv("EGENMON_AUTH_ISSUER", "https://idp.region.example")
    monkeypatch.setenv("EGENMON_AUTH_JWKS_FILE", str(tmp_path / "jwks.json"))
    with pytest.raises(SettingsError, match="EGENMON_AUTH_AUDIENCE"):
        load_settings()
