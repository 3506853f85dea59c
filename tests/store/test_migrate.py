import psycopg
import pytest

from egenmon.app import check_database
from egenmon.settings import load_settings
from egenmon.store.db import DatabaseError, check_timescaledb
from egenmon.store.migrate import available, migrate


def test_readings_is_a_hypertable_after_migrate(conn):
    rows = conn.execute(
        "SELECT hypertable_name FROM timescaledb_information.hypertables"
    ).fetchall()
    assert ("readings",) in rows


def test_migrate_twice_changes_nothing(conn):
    before = conn.execute("SELECT version, applied_at FROM schema_migrations ORDER BY 1").fetchall()
    assert [v for v, _ in before] == [m.version for m in available()]
    assert migrate(conn) == []
    after = conn.execute("SELECT version, applied_at FROM schema_migrations ORDER BY 1").fetchall()
    assert after == before


def test_migrate_command_is_idempotent(cli):
    first = cli("migrate", "--json")
    assert first.code == 0, first.err
    assert first.json["applied"] == []  # the test database is cloned from a migrated one
    assert first.json["timescaledb"]


def test_migrate_applies_everything_on_an_empty_database(pg_cluster):
    with psycopg.connect(pg_cluster.url(), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS empty_one")
        c.execute("CREATE DATABASE empty_one")
    try:
        with psycopg.connect(pg_cluster.url("empty_one")) as c:
            ran = migrate(c)
            assert [m.version for m in ran] == [m.version for m in available()]
            assert check_timescaledb(c)
            assert migrate(c) == []
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as c:
            c.execute("DROP DATABASE empty_one WITH (FORCE)")


def test_start_up_refuses_a_database_without_timescaledb(pg_cluster, monkeypatch):
    with psycopg.connect(pg_cluster.url(), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS plain_pg")
        c.execute("CREATE DATABASE plain_pg")
    try:
        monkeypatch.setenv("EGENMON_DATABASE_URL", pg_cluster.url("plain_pg"))
        with pytest.raises(DatabaseError, match="timescaledb"):
            check_database(load_settings(environment="test"))
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as c:
            c.execute("DROP DATABASE plain_pg WITH (FORCE)")


def test_readings_index_serves_patient_code_time(conn):
    indexes = {
        r[0]: r[1]
        for r in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'readings'"
        )
    }
    assert '(patient_id, code, "time" DESC)' in indexes["readings_patient_code_time"]
    assert "UNIQUE" in indexes["readings_dedup"]
