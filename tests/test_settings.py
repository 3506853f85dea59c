import pytest

from egenmon.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("EGENMON_"):
            monkeypatch.delenv(key)


SECRET = "a-random-value-of-at-least-32-characters-0123"


def test_defaults_follow_the_contract():
    s = load_settings(secrets_required=False)
    assert s.mqtt_topic_prefix == "egenmon/v1"
    assert s.timezone == "Europe/Stockholm"
    assert s.database_url is None


def test_values_are_read_from_egenmon_variables(monkeypatch):
    monkeypatch.setenv("EGENMON_MQTT_URL", "mqtt://dev:pw%40x@broker:1884")
    monkeypatch.setenv("EGENMON_TIMEZONE", "UTC")
    monkeypatch.setenv("EGENMON_AUTH_SECRET", SECRET)
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


@pytest.mark.parametrize("secret", [None, "", "changeme", "secret", "dev", "x" * 31])
def test_production_refuses_a_missing_or_placeholder_secret_at_load(monkeypatch, secret):
    # Production is the default: nothing set but the secret under test.
    if secret is not None:
        monkeypatch.setenv("EGENMON_AUTH_SECRET", secret)
    with pytest.raises(SettingsError, match="EGENMON_AUTH_SECRET") as refused:
        load_settings()
    if secret:
        assert secret not in str(refused.value)  # the message never shows the value


def test_production_starts_with_a_real_secret(monkeypatch):
    monkeypatch.setenv("EGENMON_AUTH_SECRET", SECRET)
    settings = load_settings()
    assert settings.production
    assert settings.signing_secret == SECRET


def test_production_refuses_a_placeholder_webhook_secret_but_not_an_unset_one(monkeypatch):
    monkeypatch.setenv("EGENMON_AUTH_SECRET", SECRET)
    assert load_settings().webhook_secret is None
    monkeypatch.setenv("EGENMON_WEBHOOK_SECRET", "changeme")
    with pytest.raises(SettingsError, match="EGENMON_WEBHOOK_SECRET"):
        load_settings()


@pytest.mark.parametrize("environment", ["development", "test"])
def test_development_and_test_load_without_a_secret(monkeypatch, environment):
    monkeypatch.setenv("EGENMON_ENVIRONMENT", environment)
    monkeypatch.setenv("EGENMON_WEBHOOK_SECRET", "dev")
    settings = load_settings()
    assert not settings.production
    assert len(settings.signing_secret) >= 32


def test_the_cli_refuses_a_command_in_production_without_a_secret(monkeypatch, capsys):
    from egenmon.cli import main

    # Refused before the command runs: the database URL is never tried.
    monkeypatch.setenv("EGENMON_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    assert main(["migrate"]) == 2
    assert "EGENMON_AUTH_SECRET" in capsys.readouterr().err


def test_broker_config_signs_nothing_so_it_runs_in_production_without_a_secret(tmp_path, capsys):
    # docker-compose runs `egenmon broker config` without EGENMON_AUTH_SECRET.
    from egenmon.cli import main

    assert main(["broker", "config", "--out", str(tmp_path), "--port", "18830", "--json"]) == 0
    assert (tmp_path / "mosquitto.conf").exists()


def test_development_may_run_without_a_signing_secret(monkeypatch):
    monkeypatch.setenv("EGENMON_ENVIRONMENT", "development")
    assert len(load_settings().signing_secret) >= 32


def test_cli_reports_a_bad_setting_with_exit_code_2(monkeypatch, capsys):
    from egenmon.cli import main

    monkeypatch.setenv("EGENMON_TIMEZONE", "Nowhere/Else")
    assert main(["migrate"]) == 2
    assert "EGENMON_TIMEZONE" in capsys.readouterr().err


def _date_param_documentation(statement: dict) -> str:
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    return next(p for p in observation["searchParam"] if p["name"] == "date")["documentation"]


def test_the_capability_statement_names_the_configured_time_zone():
    from egenmon.fhir.capability import capability_statement

    default = _date_param_documentation(capability_statement("http://h/fhir"))
    assert "Europe/Stockholm local time" in default
    helsinki = capability_statement("http://h/fhir", timezone="Europe/Helsinki")
    assert "Europe/Helsinki local time" in _date_param_documentation(helsinki)
    assert "{timezone}" not in str(helsinki)
