import json
import urllib.error
import urllib.request

import pytest

from egenmon.dev.mosquitto import Mosquitto


def get(url: str) -> tuple[int, dict | str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode()
            status = r.status
    except urllib.error.HTTPError as e:
        body, status = e.read().decode(), e.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body


@pytest.fixture
def own_broker(tmp_path, monkeypatch):
    m = Mosquitto(tmp_path / "mqtt")
    m.start()
    monkeypatch.setenv("EGENMON_MQTT_URL", m.mqtt_url)
    yield m
    m.stop()


def test_readyz_turns_503_naming_the_broker_when_it_stops(env, own_broker, serve):
    base, _ = serve("--no-scheduler", "--no-mqtt")
    assert get(base + "/healthz") == (200, {"status": "ok"})
    assert get(base + "/readyz") == (200, {"status": "ready"})
    own_broker.stop()
    status, body = get(base + "/readyz")
    assert status == 503
    assert body["down"] == ["broker"]
    assert get(base + "/healthz")[0] == 200  # alive, just not ready
    own_broker.start()
    assert get(base + "/readyz")[0] == 200


def test_metrics_are_prometheus_text(env, serve):
    base, _ = serve("--no-scheduler", "--no-mqtt")
    status, body = get(base + "/metrics")
    assert status == 200
    assert "egenmon_readings_total" in body


def test_serve_refuses_an_unmigrated_database(pg_cluster, env, monkeypatch, cli):
    import psycopg

    with psycopg.connect(pg_cluster.url(), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS unmigrated")
        c.execute("CREATE DATABASE unmigrated")
    try:
        monkeypatch.setenv("EGENMON_DATABASE_URL", pg_cluster.url("unmigrated"))
        r = cli("serve", "--port", "1")
        assert r.code == 2
        assert "timescaledb" in r.err.lower()
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as c:
            c.execute("DROP DATABASE unmigrated WITH (FORCE)")
