"""Issue 12, finding 2: poison messages over MQTT are quarantined and acknowledged, and
never stall the consumer for other devices, not even after a restart."""

import psycopg
import pytest
from faultkit import Stream, message, stored, wait_until

from egenmon.dev.simulate_mqtt import DevicePublisher

POISON = 1000
GOOD = 40


@pytest.fixture
def other(cli, patient) -> dict:
    r = cli(
        "device", "add", "--patient", patient, "--model", "Poisoner", "--since",
        "2020-01-01T00:00:00Z", "--json",
    )  # fmt: skip
    assert r.code == 0, r.err
    return r.json


def poison(device_id: str, i: int) -> bytes:
    # An unknown top-level key holding NUL: refused with a reason that names the key.
    return b'{"x\\u0000y%d": 1, "message_id": "p-%d", "readings": [{}]}' % (i, i)


def quarantine_count(database_url: str, device_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            # The one JSON parser refuses NUL anywhere in a body, naming it (escaped: a text
            # column cannot hold NUL), before any field is looked at.
            "SELECT count(*) FROM quarantine WHERE device_id = %s"
            " AND strpos(reason, 'NUL character') > 0",
            (device_id,),
        ).fetchone()
    assert row
    return row[0]


def test_1000_nul_messages_are_quarantined_and_acknowledged_while_others_flow(
    broker, device, other, consumers, database_url
):
    consumer = consumers(http=True)
    bad = DevicePublisher(
        "127.0.0.1", broker.port, other["id"], other["secret"], client_id=other["id"]
    )
    bad.connect()
    for i in range(POISON):
        bad.publish(poison(other["id"], i))
    stream = Stream(broker, device, GOOD, per_s=20).start()
    stream.finish()
    assert bad.wait_published(30)
    wait_until(lambda: stored(database_url, device["id"])[0] >= GOOD, 40, "the good readings")
    wait_until(
        lambda: quarantine_count(database_url, other["id"]) >= POISON,
        60,
        "every poison message in quarantine",
        interval=0.2,
    )
    assert consumer.get("/readyz")[0] == 200
    consumer.stop()
    received, acknowledged = consumer.counts()
    assert received == acknowledged == POISON + GOOD
    assert stored(database_url, device["id"]) == (GOOD, GOOD)
    assert quarantine_count(database_url, other["id"]) == POISON
    assert "Traceback" not in consumer.text()
    assert "\\x00" not in consumer.text() and "x\x00y" not in consumer.text()

    # A restart finds nothing to redeliver: the stall does not come back.
    again = consumers(http=True)
    more = Stream(broker, device, GOOD * 2, per_s=40).start()  # messages 0..79: 40 new
    more.finish()
    wait_until(lambda: stored(database_url, device["id"])[0] >= GOOD * 2, 40, "readings again")
    again.stop()
    received, acknowledged = again.counts()
    assert received == acknowledged == GOOD * 2
    assert quarantine_count(database_url, other["id"]) == POISON
    bad.close()
    stream.close()
    more.close()


def test_a_batch_the_database_refuses_is_split_and_only_the_refused_message_is_kept(
    broker, device, other, consumers, database_url
):
    # A message whose reading the database refuses (a DataError in the writer's COPY):
    # a value of a type the database cannot hold in its column, forced past normalise
    # by a trigger that raises data_exception for one marked reading.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION poison_check() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN IF NEW.value = 123 THEN"
            " RAISE EXCEPTION 'refused' USING ERRCODE = 'data_exception'; END IF;"
            " RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER poison_check BEFORE INSERT ON readings"
            " FOR EACH ROW EXECUTE FUNCTION poison_check()"
        )
    consumer = consumers()
    pub = DevicePublisher(
        "127.0.0.1", broker.port, device["id"], device["secret"], client_id=device["id"]
    )
    pub.connect()
    msgs = [message(device["id"], i) for i in range(50)]
    msgs[7]["readings"][0]["value"] = 123
    pub.publish_many(msgs)
    assert pub.wait_published(20)
    wait_until(lambda: stored(database_url, device["id"])[0] >= 49, 40, "49 readings stored")
    wait_until(lambda: quarantine_count_any(database_url, device["id"]) >= 1, 20, "quarantine")
    consumer.stop()
    received, acknowledged = consumer.counts()
    assert received == acknowledged == 50
    assert stored(database_url, device["id"]) == (49, 49)
    [(reason,)] = quarantine_rows_of(database_url, device["id"])
    assert "refused by the database" in reason
    pub.close()


def quarantine_count_any(database_url: str, device_id: str) -> int:
    return len(quarantine_rows_of(database_url, device_id))


def quarantine_rows_of(database_url: str, device_id: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT reason FROM quarantine WHERE device_id = %s", (device_id,)
        ).fetchall()
