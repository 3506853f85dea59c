"""The sign-in settings go together, and a bad one names itself at start."""

from __future__ import annotations

import pytest

from egenmon.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("EGENMON_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("EGENMON_ENVIRONMENT", "test")


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"EGENMON_OIDC_ISSUER": "https://idp.example"}, "EGENMON_OIDC_CLIENT_ID"),
        (
            {"EGENMON_OIDC_ISSUER": "https://idp.example", "EGENMON_OIDC_CLIENT_ID": "e"},
            "EGENMON_OIDC_CLIENT_SECRET or EGENMON_OIDC_PRIVATE_KEY_FILE",
        ),
        ({"EGENMON_OIDC_ISSUER": "idp.example"}, "EGENMON_OIDC_ISSUER"),
        ({"EGENMON_OIDC_SCOPES": "profile"}, "EGENMON_OIDC_SCOPES"),
        ({"EGENMON_OIDC_ACR_REQUIRED": "urn:made-up"}, "EGENMON_OIDC_ACR_REQUIRED"),
        ({"EGENMON_AUTH_JWKS_URI": "https://idp.example/jwks"}, "EGENMON_AUTH_AUDIENCE"),
    ],
)
def test_a_bad_sign_in_setting_is_refused_naming_it(monkeypatch, values, named):
    full = {
        "EGENMON_OIDC_ISSUER": "https://idp.example",
        "EGENMON_OIDC_CLIENT_ID": "egenmon",
        "EGENMON_OIDC_CLIENT_SECRET": "x" * 32,
    }
    if "EGENMON_OIDC_ISSUER" in values or "EGENMON_AUTH_JWKS_URI" in values:
        full = {}
    for k, v in {**full, **values}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_a_complete_sign_in_configuration_loads(monkeypatch):
    monkeypatch.setenv("EGENMON_OIDC_ISSUER", "https://idp.example")
    monkeypatch.setenv("EGENMON_OIDC_CLIENT_ID", "egenmon")
    monkeypatch.setenv("EGENMON_OIDC_PRIVATE_KEY_FILE", "no-such-key.pem")
    monkeypatch.setenv("EGENMON_LOCAL_ACCOUNTS", "false")
    s = load_settings()
    assert s.oidc and not s.local_accounts
    assert s.oidc_acr_required in s.oidc_acr_levels.split()


def test_an_unreadable_private_key_file_is_named(monkeypatch, tmp_path):
    from egenmon.identity.oidc import RelyingParty

    bad = tmp_path / "key.pem"
    bad.write_text("not a key")
    monkeypatch.setenv("EGENMON_OIDC_ISSUER", "https://idp.example")
    monkeypatch.setenv("EGENMON_OIDC_CLIENT_ID", "egenmon")
    for path in (bad, tmp_path / "absent.pem"):
        monkeypatch.setenv("EGENMON_OIDC_PRIVATE_KEY_FILE", str(path))
        with pytest.raises(SettingsError, match="EGENMON_OIDC_PRIVATE_KEY_FILE"):
            RelyingParty.from_settings(load_settings())
