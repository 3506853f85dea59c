"""`egenmon bench fhir-search`: a small, fast run proves it loads, serves and reports."""

from __future__ import annotations

import json

import pytest

FIELDS = {"rows_in_store", "queries", "p50_ms", "p95_ms"}


def run(cli, *args: str) -> dict:
    r = cli("bench", "fhir-search", "--json", *args)
    assert r.code == 0, r.err
    lines = [json.loads(line) for line in r.out.splitlines() if line.strip()]
    assert len(lines) == 1
    return lines[0]


def test_on_the_given_database(cli, conn) -> None:
    result = run(cli, "--readings", "3000", "--patients", "10", "--queries", "20",
                 "--warmup", "2", "--days", "40")  # fmt: skip
    assert FIELDS <= set(result)
    assert result["rows_in_store"] == 3000
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 3000
    assert result["queries"] == 20
    assert 0 < result["p50_ms"] <= result["p95_ms"]
    assert 0 < result["ceiling_sql_p50_ms"] <= result["ceiling_sql_p95_ms"]
    assert result["mean_entries_per_page"] > 0  # the searches found what was loaded
    # Every timed search (and the warm-up) was a logged read.
    logged = conn.execute(
        "SELECT count(*) FROM access_log WHERE actor = 'bench-fhir-search'"
    ).fetchone()[0]
    assert logged == 22


def test_on_a_throwaway_cluster_with_durable_queries(
    cli,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EGENMON_DATABASE_URL")
    result = run(cli, "--readings", "1200", "--patients", "4", "--queries", "10",
                 "--warmup", "1", "--days", "35")  # fmt: skip
    assert FIELDS <= set(result)
    assert result["rows_in_store"] == 1200
    assert result["fsync_during_load"] is False
    assert result["fsync_during_queries"] is True


def test_bad_sizes_are_refused(cli) -> None:
    r = cli("bench", "fhir-search", "--json", "--days", "10")
    assert r.code == 2
    assert "--days" in r.err
