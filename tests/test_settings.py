import pytest

from egenmon.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("EGENMON_"):
            monkeypatch.delenv(key)


def test_defaults_follow_the_contract():
    s = load_settings()
    assert s.mqtt_topic_prefix == "egenmon/v1"
    assert s.timezone == "Europe/Stockholm"
    assert s.database_url is None


def test_values_are_read_from_egenmon_variables(monkeypatch):
    monkeypatch.setenv("EGENMON_MQTT_URL", "mqtt://dev:pw%40x@broker:1884")
    monkeypatch.setenv("EGENMON_TIMEZONE", "UTC")
    s = load_settings()
    assert (s.mqtt.host, s.mqtt.port, s.mqtt.username, s.mqtt.password) == (
        "broker",
        1884,
        "dev",
        "pw@x",
    )
    assert s.tz.key == "UTC"
    assert "pw@x" not in repr(s.mqtt)


@pytest.mark.parametrize(
    ("var", "value", "named"),
    [
        ("EGENMON_MQTT_URL", "http://broker:1883", "EGENMON_MQTT_URL"),
        ("EGENMON_MQTT_URL", "mqtt://", "EGENMON_MQTT_URL"),
        ("EGENMON_TIMEZONE", "Europe/Atlantis", "EGENMON_TIMEZONE"),
        ("EGENMON_LOG_LEVEL", "LOUD", "EGENMON_LOG_LEVEL"),
        ("EGENMON_DATABASE_URL", "mysql://x", "EGENMON_DATABASE_URL"),
        ("EGENMON_MQTT_TOPIC_PREFIX", "egenmon/#", "EGENMON_MQTT_TOPIC_PREFIX"),
        ("EGENMON_POOL_MAX", "many", "EGENMON_POOL_MAX"),
        ("EGENMON_ENVIRONMENT", "staging", "EGENMON_ENVIRONMENT"),
        ("EGENMON_MQTT_CLIENT_ID", "has space", "EGENMON_MQTT_CLIENT_ID"),
    ],
)
def test_a_bad_value_stops_start_up_naming_the_variable(monkeypatch, var, value, named):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_production_refuses_a_placeholder_signing_secret(monkeypatch):
    monkeypatch.setenv("EGENMON_AUTH_SECRET", "changeme")
    with pytest.raises(SettingsError, match="EGENMON_AUTH_SECRET"):
        _ = load_settings().signing_secret


def test_development_may_run_without_a_signing_secret(monkeypatch):
    monkeypatch.setenv("EGENMON_ENVIRONMENT", "development")
    assert len(load_settings().signing_secret) >= 32


def test_cli_reports_a_bad_setting_with_exit_code_2(monkeypatch, capsys):
    from egenmon.cli import main

    monkeypatch.setenv("EGENMON_TIMEZONE", "Nowhere/Else")
    assert main(["migrate"]) == 2
    assert "EGENMON_TIMEZONE" in capsys.readouterr().err
