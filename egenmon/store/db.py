"""Connections: the async pool the service uses and plain connections for commands."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool


class DatabaseError(RuntimeError):
    """The database cannot be used as egenmon needs it; the message says why."""


def connect(url: str, **kwargs: object) -> psycopg.Connection:
    """A plain connection (commands, migrations, tests)."""
    try:
        return psycopg.connect(url, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as e:
        raise DatabaseError(f"cannot connect to the database: {_first_line(e)}") from None


def check_timescaledb(conn: psycopg.Connection) -> str:
    """The TimescaleDB version installed in the database; refuses a database without it."""
    row = conn.execute(
        "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
    ).fetchone()
    if row:
        return row[0]
    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if not available:
        raise DatabaseError(
            "the database server has no TimescaleDB extension: egenmon needs PostgreSQL with "
            "TimescaleDB (scripts/install.sh builds it; the docker image is timescale/timescaledb)"
        )
    preload = conn.execute("SHOW shared_preload_libraries").fetchone()
    if not preload or "timescaledb" not in preload[0]:
        raise DatabaseError(
            "TimescaleDB is installed but not loaded: add shared_preload_libraries = "
            "'timescaledb' to postgresql.conf and restart the server"
        )
    raise DatabaseError("the database has no timescaledb extension yet: run `egenmon migrate`")


async def ping(conn: psycopg.AsyncConnection) -> None:
    """One round trip: raises if the connection (or the server) is gone."""
    await conn.execute("SELECT 1")


async def _configure(conn: psycopg.AsyncConnection) -> None:
    conn.row_factory = dict_row  # type: ignore[assignment]


def make_pool(url: str, min_size: int = 2, max_size: int = 10) -> AsyncConnectionPool:
    """The service's pool; opened by the app at start-up, never at import time."""
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        configure=_configure,
        kwargs={"autocommit": True},
        name="egenmon",
    )


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# How long the ingest path waits for a pooled connection: in an outage a device gets its
# 503 (and tries again) within seconds rather than after the pool's default 30 s.
POOL_WAIT_S = 3.0


class NotFound(LookupError):
    """What was asked for is not there (a care unit, patient, device or user)."""


class Conflict(ValueError):
    """The database refused a write that clashes with what is stored (it exists already,
    or a binding overlaps another); the message says what."""
