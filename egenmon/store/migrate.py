"""Numbered SQL migrations, each applied once in its own transaction and recorded."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from egenmon.store.db import DatabaseError

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Serialises concurrent `egenmon migrate` runs (two serve processes starting at once).
_LOCK_KEY = 0x6567656E6D6F6E  # "egenmon"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    out = []
    for entry in resources.files("egenmon.store").joinpath("migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise DatabaseError("two migrations share a number")
    return out


def applied(conn: psycopg.Connection) -> set[int]:
    exists = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    if not exists or exists[0] is None:
        return set()
    return {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}


def has_schema(conn: psycopg.Connection) -> bool:
    """Whether egenmon's schema is there (migrations were run)."""
    row = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    return row is not None and row[0] is not None


def migrate(conn: psycopg.Connection) -> list[Migration]:
    """Apply every migration not yet applied; returns those applied now."""
    conn.autocommit = True
    avail = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if not avail:
        raise DatabaseError(
            "the database server has no TimescaleDB extension: egenmon needs PostgreSQL with "
            "TimescaleDB (scripts/install.sh builds it)"
        )
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = applied(conn)
        ran = []
        for m in available():
            if m.version in done:
                continue
            try:
                with conn.transaction():
                    conn.execute(m.sql)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (m.version, m.name),
                    )
            except psycopg.Error as e:
                raise DatabaseError(f"migration {m.version:04d}_{m.name} failed: {e}") from None
            ran.append(m)
        return ran
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
