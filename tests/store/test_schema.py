import datetime as dt
import uuid

import psycopg
import pytest

from egenmon.store import access_log, db, devices, patients

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def two_patients(conn, care_unit):
    from tests.conftest import make_personnummer

    unit = uuid.UUID(care_unit)
    return (
        patients.add_patient(conn, make_personnummer(), "personnummer", unit),
        patients.add_patient(conn, make_personnummer(), "personnummer", unit),
    )


def test_overlapping_bindings_are_refused_by_the_database(conn, two_patients):
    a, b = two_patients
    devices.add_device(conn, "cuff-1", "M7", b"x" * 32, patient_id=a, since=T0)
    # Straight SQL, past the application: the exclusion constraint decides.
    with pytest.raises(psycopg.errors.ExclusionViolation):
        conn.execute(
            "INSERT INTO device_bindings (device_id, patient_id, during)"
            " VALUES ('cuff-1', %s, tstzrange(%s, NULL))",
            (b, T0 + dt.timedelta(days=3)),
        )


def test_a_device_moves_between_patients_without_overlap(conn, two_patients):
    a, b = two_patients
    devices.add_device(conn, "cuff-2", "M7", b"x" * 32, patient_id=a, since=T0)
    moved = T0 + dt.timedelta(days=10)
    assert devices.end_binding(conn, "cuff-2", moved) == 1
    devices.bind_device(conn, "cuff-2", b, moved)
    rows = conn.execute(
        "SELECT patient_id, lower(during), upper(during) FROM device_bindings"
        " WHERE device_id = 'cuff-2' ORDER BY lower(during)"
    ).fetchall()
    assert rows == [(a, T0, moved), (b, moved, None)]


def test_binding_the_same_time_twice_is_a_conflict(conn, two_patients):
    a, b = two_patients
    devices.add_device(conn, "cuff-3", "M7", b"x" * 32, patient_id=a, since=T0)
    with pytest.raises(db.Conflict, match="already bound"):
        devices.bind_device(
            conn, "cuff-3", b, T0 - dt.timedelta(days=1), T0 + dt.timedelta(seconds=1)
        )


def test_access_log_is_append_only(conn, two_patients):
    access_log.record_access(
        conn,
        actor="nurse",
        role="clinician",
        action="read",
        resource="Observation",
        patient_ids=[two_patients[0]],
    )
    assert conn.execute("SELECT count(*) FROM access_log").fetchone()[0] == 1
    for sql in (
        "UPDATE access_log SET actor = 'x'",
        "DELETE FROM access_log",
        "TRUNCATE access_log",
    ):
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(sql)
    assert conn.execute("SELECT actor FROM access_log").fetchone()[0] == "nurse"


def test_personnummer_is_unique_and_twelve_digits(conn, care_unit):
    unit = uuid.UUID(care_unit)
    patients.add_patient(conn, "191212121212", "personnummer", unit)
    with pytest.raises(db.Conflict):
        patients.add_patient(conn, "191212121212", "personnummer", unit)
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            "INSERT INTO patients (personnummer, identifier_kind, care_unit_id)"
            " VALUES ('1912121212', 'personnummer', %s)",
            (unit,),
        )


def test_the_reading_source_is_one_the_contract_names(conn, two_patients):
    from egenmon.ingest.normalise import SOURCES

    a, _ = two_patients

    def insert(source: str, n: int) -> None:
        conn.execute(
            "INSERT INTO readings (time, patient_id, device_id, type, code, mdc, value, unit,"
            " source, dedup_key, received_at)"
            " VALUES (%s, %s, 'd', 'heart_rate', '8867-4', '147842', 60, '/min', %s, %s, now())",
            (T0 + dt.timedelta(minutes=n), a, source, f"k{n}"),
        )

    for n, source in enumerate(sorted(SOURCES)):
        insert(source, n)
    assert len(SOURCES) == 10
    with pytest.raises(psycopg.errors.CheckViolation):
        insert("bogus", 99)
