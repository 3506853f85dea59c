import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from egenmon.devices.broker import write_config


def connect(port: int, username: str, password: str) -> tuple[mqtt.Client, object]:
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{username}-{time.monotonic_ns()}",
        protocol=mqtt.MQTTv5,
    )
    c.username_pw_set(username, password)
    done = threading.Event()
    result = {}

    def on_connect(client, userdata, flags, rc, props):
        result["rc"] = rc
        done.set()

    c.on_connect = on_connect
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(5), "no CONNACK"
    return c, result["rc"]


def test_broker_config_writes_conf_and_platform_account(tmp_path, cli):
    r = cli("broker", "config", "--out", str(tmp_path), "--port", "18830", "--json")
    assert r.code == 0, r.err
    conf = (tmp_path / "mosquitto.conf").read_text()
    assert "listener 18830" in conf
    assert "allow_anonymous false" in conf
    assert "persistence true" in conf
    assert "mosquitto_dynamic_security.so" in conf
    assert r.json["mqtt_url"].startswith("mqtt://egenmon:")
    dynsec = json.loads((tmp_path / "dynamic-security.json").read_text())
    assert [c["username"] for c in dynsec["clients"]] == ["egenmon"]
    assert dynsec["defaultACLAccess"]["publishClientSend"] is False
    assert oct((tmp_path / "dynamic-security.json").stat().st_mode & 0o777) == "0o600"


def test_broker_config_rerun_keeps_the_platform_password(tmp_path):
    first = write_config(tmp_path, port=1)
    second = write_config(tmp_path, port=2)
    assert first.mqtt_url.rsplit(":", 1)[0] == second.mqtt_url.rsplit(":", 1)[0]
    assert "listener 2" in (tmp_path / "mosquitto.conf").read_text()


def test_a_new_device_connects_at_once_and_revoke_drops_it(cli, device, broker):
    client, rc = connect(broker.port, device["id"], device["secret"])
    assert not rc.is_failure
    assert client.is_connected()
    r = cli("device", "revoke", device["id"])
    assert r.code == 0, r.err
    deadline = time.monotonic() + 5
    while client.is_connected() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not client.is_connected(), "revoke must drop the connected session"
    client.loop_stop()
    again, rc = connect(broker.port, device["id"], device["secret"])
    assert rc.is_failure
    again.loop_stop()


def test_wrong_password_and_anonymous_are_refused(broker, device):
    c, rc = connect(broker.port, device["id"], "not-the-secret")
    assert rc.is_failure
    c.loop_stop()
    c, rc = connect(broker.port, "", "")
    assert rc.is_failure
    c.loop_stop()


@pytest.mark.parametrize("target", ["own", "other"])
def test_a_device_publishes_only_to_its_own_readings_topic(cli, patient, broker, target):
    a = cli("device", "add", "--patient", patient, "--model", "A", "--json").json
    b = cli("device", "add", "--patient", patient, "--model", "B", "--json").json
    topic_owner = a["id"] if target == "own" else b["id"]
    topic = f"egenmon/v1/devices/{topic_owner}/readings"
    # Watch with the platform account, which may read every device's readings.
    from egenmon.settings import MqttUrl

    url = MqttUrl(broker.mqtt_url)
    watcher, _ = connect(broker.port, url.username, url.password)
    got = threading.Event()
    watcher.on_message = lambda *args: got.set()
    subscribed = threading.Event()
    watcher.on_subscribe = lambda *args: subscribed.set()
    watcher.subscribe(topic, qos=1)
    assert subscribed.wait(5)
    sender, _ = connect(broker.port, a["id"], a["secret"])
    sender.publish(topic, b"{}", qos=1).wait_for_publish(5)
    arrived = got.wait(1.5)
    assert arrived is (target == "own")
    sender.loop_stop()
    watcher.loop_stop()
