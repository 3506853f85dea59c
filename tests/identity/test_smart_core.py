"""The SMART authorization server's pure parts, without a server: form parsing (with
hypothesis), scope grants, PKCE, signed one-time values, client assertions, and the
AuditEvent rendering and search parsing."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from urllib.parse import urlencode

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fhir.resources.R4B.auditevent import AuditEvent
from hypothesis import given, settings
from hypothesis import strategies as st

from egenmon.domain.principals import Principal, Scope
from egenmon.fhir.render import render_audit_event
from egenmon.fhir.search import SearchError, parse_audit_search
from egenmon.identity import smart
from egenmon.identity.smart import OAuthError

FORM = "application/x-www-form-urlencoded"
NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
TOKEN_URL = "https://egenmon.example/oauth/token"


# --- the token endpoint's form --------------------------------------------------------


@given(st.binary(max_size=2048), st.sampled_from([FORM, FORM + "; charset=utf-8", "text/plain"]))
def test_any_body_is_a_form_or_a_clear_invalid_request(body: bytes, content_type: str) -> None:
    try:
        form = smart.parse_form(body, content_type)
    except OAuthError as e:
        assert e.error == "invalid_request" and e.status == 400 and e.description
        return
    assert content_type.startswith(FORM)
    assert all(isinstance(k, str) and v and "\x00" not in v for k, v in form.items())


@settings(max_examples=50)
@given(
    st.dictionaries(
        st.text(min_size=1, max_size=20),
        st.text(min_size=1, max_size=200).filter(lambda v: "\x00" not in v),
        max_size=10,
    )
)
def test_a_well_formed_form_reads_back_as_sent(fields: dict[str, str]) -> None:
    body = urlencode(fields).encode()
    assert smart.parse_form(body, FORM) == fields


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"a=1&a=2", "given more than once"),
        (b"x=" + b"y" * 9000, "longer than"),
        (b"x=" + b"y" * 20000, "over"),
        (b"%ff=1", "not a form"),
        ("&".join(f"f{i}=1" for i in range(40)).encode(), "at most"),
    ],
)
def test_a_bad_form_is_refused_naming_the_fault(body: bytes, says: str) -> None:
    with pytest.raises(OAuthError, match=says):
        smart.parse_form(body, FORM)


# --- scopes ---------------------------------------------------------------------------

scope_text = st.builds(
    lambda c, r, a: f"{c}/{r}.{a}",
    st.sampled_from(["patient", "user", "system"]),
    st.sampled_from(["*", "Observation", "Patient", "AuditEvent", "Flag"]),
    st.sampled_from(["rs", "r", "s", "cruds", "c", "read", "write", "*"]),
)


@given(st.lists(scope_text, max_size=6), st.lists(scope_text, max_size=6),
       st.lists(scope_text, max_size=6))  # fmt: skip
def test_granted_scopes_are_within_asked_registered_and_allowed(
    asked: list[str], registered: list[str], allowed: list[str]
) -> None:
    granted = smart.grant_scopes(asked, registered, allowed)
    for text in granted:
        g = Scope.parse(text)
        assert g is not None
        for source in (asked, registered, allowed):
            holder = Principal("x", "admin", scopes=tuple(
                s for s in (Scope.parse(t) for t in source) if s and s.context == g.context
            ))  # fmt: skip
            assert all(holder.allows(g.resource, a) for a in g.actions), (text, source)
        if g.resource == "AuditEvent":  # only where every side names it
            assert all(any("/AuditEvent." in t for t in src) for src in (registered, allowed))


def test_grants_narrow_wildcards_and_never_reach_the_log_through_them() -> None:
    assert smart.grant_scopes(["patient/*.rs"], ["patient/Observation.rs"], ["patient/*.rs"]) == [
        "patient/Observation.rs"
    ]
    assert smart.grant_scopes(["system/AuditEvent.rs"], ["system/*.rs"], ["system/*.rs"]) == []
    assert smart.grant_scopes(
        ["patient/Observation.cruds"], ["patient/*.rs"], ["patient/*.rs"]
    ) == ["patient/Observation.rs"]
    assert smart.grant_scopes(["launch/patient", "openid"], ["launch/patient"], ["*"]) == []


# --- PKCE and signed values -----------------------------------------------------------


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-._~", min_size=43, max_size=128))
def test_pkce_matches_its_own_challenge_only(verifier: str) -> None:
    challenge = smart.pkce_challenge(verifier)
    assert smart.pkce_ok(verifier, challenge)
    assert not smart.pkce_ok(verifier + "x", challenge)
    assert not smart.pkce_ok(None, challenge)


def test_signed_values_are_for_one_purpose_and_expire() -> None:
    code = smart.sign("s" * 40, "code", {"cid": "app"}, 60, dt.datetime.now(dt.UTC))
    assert smart.unsign("s" * 40, "code", code)["cid"] == "app"
    with pytest.raises(OAuthError, match="not valid"):
        smart.unsign("s" * 40, "launch", code)
    with pytest.raises(OAuthError, match="not valid"):
        smart.unsign("t" * 40, "code", code)
    old = smart.sign("s" * 40, "code", {}, 60, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    with pytest.raises(OAuthError, match="expired"):
        smart.unsign("s" * 40, "code", old)


# --- client assertions ----------------------------------------------------------------


@pytest.fixture(scope="module")
def key() -> tuple[Any, list[dict[str, Any]]]:
    private = ec.generate_private_key(ec.SECP256R1())
    public = jwt.algorithms.ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    public["kid"] = "k1"
    return private, smart.check_jwks({"keys": [public]})


def _assertion(private: Any, **claims: Any) -> str:
    body = {"iss": "c1", "sub": "c1", "aud": TOKEN_URL, "jti": "j1",
            "exp": NOW + dt.timedelta(minutes=4), **claims}  # fmt: skip
    return jwt.encode({k: v for k, v in body.items() if v is not None}, private, "ES256",
                      headers={"kid": "k1"})  # fmt: skip


def test_a_good_assertion_passes_and_bad_ones_say_why(key: tuple) -> None:
    private, keys = key
    now = dt.datetime.now(dt.UTC)
    good = _assertion(private, exp=now + dt.timedelta(minutes=4))
    assert smart.check_assertion(good, "c1", keys, TOKEN_URL, now)["jti"] == "j1"
    cases = {
        "expired": (_assertion(private, exp=now - dt.timedelta(minutes=5)), "expired"),
        "far": (_assertion(private, exp=now + dt.timedelta(hours=1)), "expire within"),
        "aud": (_assertion(private, exp=now + dt.timedelta(minutes=1), aud="x"), "aud"),
        "jti": (_assertion(private, exp=now + dt.timedelta(minutes=1), jti=None), "jti"),
        "iss": (_assertion(private, exp=now + dt.timedelta(minutes=1), iss="c2"), "iss"),
        "sub": (_assertion(private, exp=now + dt.timedelta(minutes=1), sub="c2"), "sub"),
    }
    for why, (signed, says) in cases.items():
        with pytest.raises(OAuthError, match=says) as err:
            smart.check_assertion(signed, "c1", keys, TOKEN_URL, now)
        assert err.value.error == "invalid_client" and err.value.status == 401, why
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(OAuthError, match="signature"):
        smart.check_assertion(_assertion(other, exp=now + dt.timedelta(minutes=1)), "c1", keys,
                              TOKEN_URL, now)  # fmt: skip


@pytest.mark.parametrize(
    "jwks",
    [
        {},
        {"keys": []},
        {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]},
        {"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "c"}]},
        {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "HS256"}]},
    ],
)
def test_a_jwks_with_secret_private_or_unusable_keys_is_refused(jwks: dict) -> None:
    with pytest.raises(ValueError):
        smart.check_jwks(jwks)


@given(st.text(max_size=300))
def test_any_assertion_text_is_refused_as_invalid_client(text: str) -> None:
    try:
        smart.unverified_issuer(text)
    except OAuthError as e:
        assert e.error == "invalid_client"


# --- AuditEvent -----------------------------------------------------------------------


def _entry(**over: Any) -> dict[str, Any]:
    return {
        "id": 17,
        "at": NOW,
        "actor": "ssk-anna",
        "role": "clinician",
        "care_unit_id": uuid.uuid4(),
        "care_unit_hsa_id": "SE2321000016-ABCD",
        "care_unit_name": "Vårdcentralen",
        "action": "search-refused",
        "resource": "Observation",
        "patient_ids": [uuid.uuid4()],
        "detail": {
            "outcome": "refused",
            "status": 403,
            "reason": "forbidden",
            "params": ["patient"],
        },  # fmt: skip
        **over,
    }


def test_access_log_entries_render_as_valid_audit_events() -> None:
    refused = render_audit_event(_entry())
    AuditEvent.model_validate(refused)
    assert (refused["action"], refused["outcome"]) == ("E", "4")
    assert refused["outcomeDesc"] == "refused (403): forbidden"
    read = render_audit_event(_entry(action="read", detail=None, care_unit_id=None, role="admin"))
    AuditEvent.model_validate(read)
    assert (read["action"], read["outcome"], read["subtype"][0]["code"]) == ("R", "0", "read")
    other = render_audit_event(_entry(action="authorize", detail={"scope": "x"}, patient_ids=[]))
    AuditEvent.model_validate(other)
    assert other["action"] == "E"


def test_audit_searches_parse_and_refuse_clearly() -> None:
    q = parse_audit_search([("action", "R,E"), ("action", "E"), ("date", "ge2026-12-01"),
                            ("agent", "ssk-anna")])  # fmt: skip
    assert q.actions == {"E"} and q.agent == "ssk-anna" and q.since is not None
    for bad in (("action", "X"), ("action", "urn:x|R"), ("date", "ap2026"), ("agent", "a\x01"),
                ("patient", "not-a-uuid"), ("entity", "x")):  # fmt: skip
        with pytest.raises(SearchError, match=bad[0]):
            parse_audit_search([bad])


def test_a_clinician_in_a_launch_context_sees_that_patient_only() -> None:
    unit, launched, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    narrowed = Principal("ssk", "clinician", care_unit_id=unit, patient_id=launched)
    assert narrowed.may_see(launched, unit)
    assert not narrowed.may_see(other, unit)
    assert not narrowed.may_see(launched, uuid.uuid4())  # never outside the care unit
    assert narrowed.patient_filter == ("patient", launched)
    assert Principal("ssk", "clinician", care_unit_id=unit).patient_filter == ("care_unit", unit)


authorize_names = st.sampled_from(
    ["response_type", "client_id", "redirect_uri", "scope", "state", "aud", "code_challenge",
     "code_challenge_method", "launch", "other"]
)  # fmt: skip


@given(st.lists(st.tuples(authorize_names, st.text(max_size=80)), max_size=12))
def test_any_authorize_request_is_read_or_refused_with_an_oauth_error(
    pairs: list[tuple[str, str]],
) -> None:
    base = "https://egenmon.example/fhir"
    try:
        client_id, redirect_uri, params = smart.parse_authorize(pairs)
        request = smart.check_authorize(params, base)
    except OAuthError as e:
        assert e.error in ("invalid_request", "invalid_scope", "unsupported_response_type")
        return
    assert request.aud.rstrip("/") == base and request.client_id == client_id
    assert request.redirect_uri == redirect_uri
    assert len(request.code_challenge) == 43 and request.state
