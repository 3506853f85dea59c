import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from egenmon.devices.broker import write_config


def connect(
    port: int, username: str, password: str, client_id: str | None = None, clean: bool = False
) -> tuple[mqtt.Client, object]:
    """Connect; a device's client id is its device id unless told otherwise."""
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id if client_id is not None else username,
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
    watcher, _ = connect(broker.port, url.username, url.password, f"watcher-{time.monotonic_ns()}")
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


def test_a_device_may_connect_only_with_its_own_device_id_as_client_id(
    cli, broker, device, patient
):
    other = cli("device", "add", "--patient", patient, "--model", "B", "--json").json
    for client_id in (other["id"], "egenmon-consumer-host-0", f"{device['id']}-x", ""):
        c, rc = connect(broker.port, device["id"], device["secret"], client_id)
        assert rc.is_failure and "Not authorized" in str(rc), client_id
        c.loop_stop()
    c, rc = connect(broker.port, device["id"], device["secret"])
    assert not rc.is_failure
    c.disconnect()
    c.loop_stop()


def test_device_ids_of_the_platform_are_refused(cli, patient, conn):
    ids = ["egenmon-consumer-host-0", "egenmon", "Egenmon-x"]
    for device_id in ids:
        r = cli("device", "add", "--patient", patient, "--model", "M", "--id", device_id)
        assert r.code != 0 and "reserved" in r.err, r.out + r.err
    row = conn.execute("SELECT count(*) FROM devices WHERE id = ANY(%s)", (ids,)).fetchone()
    assert row[0] == 0  # nothing added


def test_rerunning_broker_config_binds_devices_added_before_client_ids_were_bound(tmp_path):
    write_config(tmp_path, port=1)
    path = tmp_path / "dynamic-security.json"
    dynsec = json.loads(path.read_text())
    dynsec["clients"].append({"username": "old-hub-1", "roles": [{"rolename": "device:old-hub-1"}]})
    path.write_text(json.dumps(dynsec))
    write_config(tmp_path, port=1)
    clients = {c["username"]: c for c in json.loads(path.read_text())["clients"]}
    assert clients["old-hub-1"]["clientid"] == "old-hub-1"
    assert "clientid" not in clients["egenmon"]  # the platform runs several ids
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_the_consumer_binds_devices_of_a_running_broker_at_start(cli, broker, patient, env):
    """A device registered before client ids were bound (its client has no clientid) is
    bound when the service starts; from then on only its device id lets it in."""
    import asyncio

    from egenmon.devices.dynsec import DynsecClient
    from egenmon.ingest.mqtt import _bind_client_ids
    from egenmon.settings import MqttUrl

    url = MqttUrl(broker.mqtt_url)
    with DynsecClient(url) as dyn:
        dyn.run({"command": "createClient", "username": "legacy-hub-7", "password": "pw-legacy"})
    c, rc = connect(broker.port, "legacy-hub-7", "pw-legacy", "anything-goes")
    assert not rc.is_failure  # unbound: the hole this closes
    c.disconnect()
    c.loop_stop()
    assert asyncio.run(asyncio.to_thread(_bind_client_ids, url)) >= 1
    c, rc = connect(broker.port, "legacy-hub-7", "pw-legacy", "anything-goes")
    assert rc.is_failure
    c.loop_stop()
    c, rc = connect(broker.port, "legacy-hub-7", "pw-legacy")
    assert not rc.is_failure
    c.disconnect()
    c.loop_stop()
