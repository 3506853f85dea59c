"""Benchmarks: `egenmon bench NAME --json`."""

from typing import Any

import psycopg


def one(cur: psycopg.Cursor[Any]) -> Any:
    """The row of a query that always returns one (count(*), SHOW ...)."""
    row = cur.fetchone()
    if row is None:
        raise RuntimeError("the query returned no row")
    return row
