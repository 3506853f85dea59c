import uuid

from egenmon.devices.credentials import secret_digest


def test_patient_add_prints_an_opaque_id(cli, care_unit, conn):
    r = cli("patient", "add", "--personnummer", "19121212-1212", "--care-unit", care_unit, "--json")
    assert r.code == 0, r.err
    pid = uuid.UUID(r.json["id"])
    row = conn.execute(
        "SELECT personnummer, identifier_kind FROM patients WHERE id = %s", (pid,)
    ).fetchone()
    assert row == ("191212121212", "personnummer")
    assert "191212121212" not in r.out


def test_patient_add_accepts_samordningsnummer(cli, care_unit, conn):
    r = cli("patient", "add", "--personnummer", "199001720003", "--care-unit", care_unit, "--json")
    assert r.code == 0, r.err
    kind = conn.execute(
        "SELECT identifier_kind FROM patients WHERE id = %s", (r.json["id"],)
    ).fetchone()[0]
    assert kind == "samordningsnummer"


def test_care_unit_can_be_named_by_hsa_id(cli, conn):
    cli("care-unit", "add", "--name", "VC Norr", "--hsa-id", "SE2321000016-N0RR")
    r = cli(
        "patient",
        "add",
        "--personnummer",
        "191212121212",
        "--care-unit",
        "SE2321000016-N0RR",
        "--json",
    )
    assert r.code == 0, r.err


def test_invalid_personnummer_is_exit_code_2_naming_the_problem(cli, care_unit):
    r = cli("patient", "add", "--personnummer", "191212121213", "--care-unit", care_unit)
    assert r.code == 2
    assert "check digit" in r.err and "--personnummer" in r.err
    assert "191212121213" not in r.err


def test_unknown_care_unit_is_exit_code_2(cli):
    r = cli("patient", "add", "--personnummer", "191212121212", "--care-unit", "nowhere")
    assert r.code == 2
    assert "unknown care unit" in r.err


def test_duplicate_patient_is_exit_code_2(cli, care_unit):
    args = ("patient", "add", "--personnummer", "191212121212", "--care-unit", care_unit)
    assert cli(*args).code == 0
    r = cli(*args)
    assert r.code == 2 and "exists already" in r.err


def test_device_add_shows_the_secret_once_and_stores_only_its_digest(cli, patient, conn):
    r = cli("device", "add", "--patient", patient, "--model", "Omron M7 Intelli IT", "--json")
    assert r.code == 0, r.err
    device_id, secret = r.json["id"], r.json["secret"]
    assert len(secret) >= 40
    assert r.json["mqtt"] == "provisioned"
    stored = conn.execute(
        "SELECT secret_sha256, status FROM devices WHERE id = %s", (device_id,)
    ).fetchone()
    assert stored == (secret_digest(secret), "active")
    dump = conn.execute("SELECT row_to_json(d)::text FROM devices d").fetchone()[0]
    assert secret not in dump
    binding = conn.execute(
        "SELECT patient_id::text, upper_inf(during) FROM device_bindings WHERE device_id = %s",
        (device_id,),
    ).fetchone()
    assert binding == (patient, True)


def test_device_add_for_unknown_patient_is_exit_code_2(cli):
    r = cli("device", "add", "--patient", str(uuid.uuid4()), "--model", "M7")
    assert r.code == 2 and "unknown patient" in r.err


def test_device_add_with_since_without_offset_is_refused(cli, patient):
    r = cli(
        "device", "add", "--patient", patient, "--model", "M7", "--since", "2026-01-01T00:00:00"
    )
    assert r.code == 2 and "offset" in r.err


def test_device_revoke_marks_it_revoked(cli, device, conn):
    r = cli("device", "revoke", device["id"], "--json")
    assert r.code == 0, r.err
    assert r.json["mqtt"] == "disabled"
    status = conn.execute(
        "SELECT status, revoked_at IS NOT NULL FROM devices WHERE id = %s", (device["id"],)
    ).fetchone()
    assert status == ("revoked", True)


def test_device_revoke_of_unknown_device_is_exit_code_2(cli):
    r = cli("device", "revoke", "no-such-device")
    assert r.code == 2 and "unknown device" in r.err
