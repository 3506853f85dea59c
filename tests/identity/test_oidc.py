"""The relying party's pure checks (ID token, assurance level, PKCE, URLs) and the
provider's key cache, without servers: tokens are signed here with keys made here, and
the provider's HTTP answers come from an httpx transport standing in for it."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from egenmon.identity import oidc
from egenmon.identity.oidc import LoginRefused, RelyingParty
from egenmon.identity.provider import Provider, ProviderError, UnknownKey

ISSUER = "https://idp.region.example"
LOA = "http://id.elegnamnden.se/loa/1.0/loa"
RP = RelyingParty(
    issuer=ISSUER,
    client_id="egenmon",
    client_secret="s" * 32,
    private_key=None,
    scopes="openid profile",
    claim_hsa_id="employeeHsaId",
    claim_care_unit="healthCareUnitHsaId",
    claim_personnummer="https://id.oidc.se/claim/personalIdentityNumber",
    acr_levels=tuple(LOA + str(n) for n in (1, 2, 3, 4)),
    acr_required=LOA + "3",
)
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def id_token(key=KEY, **claims) -> str:
    now = int(time.time())
    body = {
        "iss": ISSUER,
        "aud": "egenmon",
        "sub": "s1",
        "iat": now,
        "exp": now + 300,
        "nonce": "n-1",
        "acr": LOA + "3",
    }
    body.update(claims)
    return jwt.encode(
        {k: v for k, v in body.items() if v is not None}, key, "RS256", headers={"kid": "k1"}
    )


def reason(token: str, nonce: str = "n-1", key=None) -> str:
    with pytest.raises(LoginRefused) as e:
        oidc.check_id_token(token, key or KEY.public_key(), RP, nonce=nonce)
    return e.value.reason


def test_a_valid_id_token_gives_its_claims():
    claims = oidc.check_id_token(id_token(), KEY.public_key(), RP, nonce="n-1")
    assert claims["sub"] == "s1"


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"aud": "another-client"}, "aud"),
        ({"aud": ["egenmon", "another"]}, "aud"),  # several audiences, no azp
        ({"aud": None}, "aud"),
        ({"nonce": "n-2"}, "nonce"),
        ({"nonce": None}, "nonce"),
        ({"iss": "https://evil.example"}, "id_token"),
        ({"exp": None}, "id_token"),
        ({"exp": int(time.time()) - 3600}, "id_token"),
        ({"iat": int(time.time()) + 3600}, "id_token"),
        ({"iat": int(time.time()) - 7200, "exp": int(time.time()) + 60}, "id_token"),
        ({"nbf": int(time.time()) + 3600}, "id_token"),
    ],
)
def test_an_id_token_with_a_gap_is_refused_naming_it(claims, expected):
    assert reason(id_token(**claims)) == expected


def test_an_id_token_signed_by_another_key_or_unsigned_is_refused():
    assert reason(id_token(key=OTHER_KEY)) == "id_token"
    unsigned = jwt.encode({"iss": ISSUER, "aud": "egenmon"}, None, algorithm="none")
    assert reason(unsigned) == "id_token"


def test_several_audiences_pass_with_us_as_azp():
    token = id_token(aud=["egenmon", "other"], azp="egenmon")
    assert oidc.check_id_token(token, KEY.public_key(), RP, nonce="n-1")["azp"] == "egenmon"


def test_the_assurance_level_must_be_the_required_one_or_higher():
    assert oidc.check_acr({"acr": LOA + "3"}, RP) == LOA + "3"
    assert oidc.check_acr({"acr": LOA + "4"}, RP) == LOA + "4"
    for acr in (LOA + "2", "urn:made-up", None, 3):
        with pytest.raises(LoginRefused) as e:
            oidc.check_acr({"acr": acr}, RP)
        assert e.value.reason == "acr"


def test_pkce_s256_matches_rfc_7636_appendix_b():
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert oidc.pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_the_authorization_url_carries_pkce_state_nonce_and_the_levels_asked_for():
    url = oidc.authorization_url(
        {"authorization_endpoint": ISSUER + "/auth"},
        RP,
        redirect_uri="https://egenmon.example/login/callback",
        state="st",
        nonce="no",
        code_verifier="v" * 43,
    )
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert q["response_type"] == "code" and q["code_challenge_method"] == "S256"
    assert q["code_challenge"] == oidc.pkce_challenge("v" * 43)
    assert (q["state"], q["nonce"], q["client_id"]) == ("st", "no", "egenmon")
    assert q["acr_values"] == f"{LOA}3 {LOA}4"
    assert "v" * 43 not in url  # the verifier itself never travels through the browser


def test_the_logout_url_names_the_id_token_and_where_to_return():
    meta = {"end_session_endpoint": ISSUER + "/session/end"}
    url = oidc.logout_url(meta, RP, id_token="tok", post_logout="https://e.example/login?bye=1")
    q = {k: v[0] for k, v in parse_qs(urlsplit(url or "").query).items()}
    assert q == {
        "client_id": "egenmon",
        "id_token_hint": "tok",
        "post_logout_redirect_uri": "https://e.example/login?bye=1",
    }
    assert oidc.logout_url({}, RP, id_token="tok", post_logout="/") is None


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=400))
def test_any_text_as_an_id_token_is_refused_cleanly(text):
    with pytest.raises(LoginRefused):
        oidc.check_id_token(text, KEY.public_key(), RP, nonce="n-1")


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=40), st.integers(), st.none(), st.lists(st.text(max_size=5))))
def test_a_personnummer_claim_is_twelve_valid_digits_or_refused(value):
    try:
        number = oidc.personnummer_of({RP.claim_personnummer: value}, RP)
    except LoginRefused as e:
        assert e.reason == "no_identifier"
    else:
        assert len(number) == 12 and number.isdigit()


# --- the provider's discovery and key cache -------------------------------------------------


def jwk(key, kid: str) -> dict:
    out = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**out, "kid": kid, "use": "sig", "alg": "RS256"}


class FakeIdP:
    """The provider's HTTP answers (it lies outside egenmon), counting the JWKS fetches."""

    def __init__(self, issuer: str = ISSUER) -> None:
        self.issuer = issuer
        self.keys = [jwk(KEY, "k1")]
        self.jwks_fetches = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(
                200,
                json={
                    "issuer": self.issuer,
                    "authorization_endpoint": ISSUER + "/auth",
                    "token_endpoint": ISSUER + "/token",
                    "jwks_uri": ISSUER + "/jwks",
                },
            )
        if request.url.path == "/jwks":
            self.jwks_fetches += 1
            return httpx.Response(200, json={"keys": self.keys})
        if request.url.path == "/big":
            return httpx.Response(200, content=b" " * (600 * 1024))
        return httpx.Response(404)


def provider(idp: FakeIdP, **kw) -> Provider:
    return Provider(ISSUER, client=httpx.AsyncClient(transport=httpx.MockTransport(idp)), **kw)


def test_keys_are_cached_and_fetched_again_for_an_unknown_kid_at_most_so_often():
    async def run() -> None:
        idp = FakeIdP()
        p = provider(idp, refresh_at_most_every=3600)
        assert (await p.key("k1")).key_id == "k1"
        assert (await p.key("k1")).key_id == "k1"
        assert idp.jwks_fetches == 1
        # A rotated key: unknown at first, so the set is fetched again.
        idp.keys.append(jwk(OTHER_KEY, "k2"))
        assert (await p.key("k2")).key_id == "k2"
        assert idp.jwks_fetches == 2
        # Made-up kids do not make egenmon flood the provider: one more fetch at most.
        for kid in ("x1", "x2", "x3"):
            with pytest.raises(UnknownKey):
                await p.key(kid)
        assert idp.jwks_fetches == 2

    asyncio.run(run())


def test_a_discovery_document_of_another_issuer_or_too_big_is_refused():
    async def run() -> None:
        with pytest.raises(ProviderError, match="names issuer"):
            await provider(FakeIdP(issuer="https://evil.example")).metadata()
        p = provider(FakeIdP(), jwks_uri=ISSUER + "/big")
        with pytest.raises(ProviderError, match="more than"):
            await p.key("k1")

    asyncio.run(run())
