import datetime as dt
import uuid

import jwt
import pytest

from egenmon.auth import AuthError, Principal, Scope, decode_token, issue_token, parse_scopes
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
    assert not p.allows("Observation", "c")


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
    claims["exp"] = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
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
