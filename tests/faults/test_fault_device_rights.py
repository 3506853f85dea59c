"""Fault 5: a device cannot publish as another, and a revoked device cannot connect, even
when it was revoked while the broker was down."""

import pytest
from faultkit import message, quarantined, stored, wait_until

from egenmon.dev.simulate_mqtt import DevicePublisher, PublishRefused, readings_topic


def connect(broker, device: dict) -> DevicePublisher:
    return DevicePublisher(
        "127.0.0.1", broker.port, device["id"], device["secret"], client_id=device["id"]
    ).connect()


@pytest.fixture
def other(cli, patient) -> dict:
    r = cli(
        "device",
        "add",
        "--patient",
        patient,
        "--model",
        "Other",
        "--since",
        "2020-01-01T00:00:00Z",
        "--json",
    )
    assert r.code == 0, r.err
    return r.json


def test_a_device_publishing_to_another_devices_topic_is_refused_by_the_broker(
    broker, device, other, consumers, database_url
):
    consumers()
    pub = connect(broker, device)
    spoofed = message(other["id"], 0)  # claims to be the other device, on its topic
    pub.publish(spoofed, topic=readings_topic("egenmon/v1", other["id"]))
    pub.publish(message(device["id"], 1))
    assert pub.wait_published(10)
    assert [reason for _, reason in pub.refused] == ["Not authorized"]
    wait_until(lambda: stored(database_url, device["id"])[0] == 1, 20, "its own reading")
    assert stored(database_url, other["id"]) == (0, 0)
    assert quarantined(database_url) == []  # refused at the broker: nothing came through
    pub.close()


def test_a_revoked_device_is_dropped_and_cannot_connect(broker, device, cli, consumers):
    consumers()
    pub = connect(broker, device)
    r = cli("device", "revoke", device["id"], "--json")
    assert r.code == 0 and r.json["mqtt"] == "disabled", r.out + r.err
    wait_until(lambda: not pub.is_connected(), 5, "the session to be dropped")
    pub.close()
    with pytest.raises(PublishRefused, match="Not authorized|Bad user name or password"):
        connect(broker, device)


def test_a_device_revoked_while_the_broker_was_down_is_locked_out_when_it_returns(
    broker, device, cli, consumers
):
    consumer = consumers()
    broker.stop()
    r = cli("device", "revoke", device["id"], "--json")
    assert r.code == 0 and r.json["mqtt"].startswith("pending"), r.out + r.err
    broker.start()
    # The consumer reconnects and disables in the broker what the database says is revoked.
    wait_until(
        lambda: "disabled 1 revoked devices" in consumer.text(), 30, "the consumer to reconcile"
    )
    with pytest.raises(PublishRefused, match="Not authorized|Bad user name or password"):
        connect(broker, device)
