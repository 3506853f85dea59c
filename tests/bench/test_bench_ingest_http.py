"""A small, fast run of `egenmon bench ingest-http` on the test's database."""

from __future__ import annotations

import json

FIELDS = {
    "readings",
    "seconds",
    "readings_per_s",
    "ceiling_copy_per_s",
    "ratio_to_ceiling",
    "p99_ms",
    "lost",
    "duplicates_stored",
}


def test_bench_ingest_http_reports_its_fields_and_loses_nothing(cli, conn):
    r = cli(
        "bench",
        "ingest-http",
        "--json",
        "--readings",
        "3000",
        "--clients",
        "4",
        "--batch",
        "250",
        "--devices",
        "6",
        "--single-rate",
        "100",
        "--single-seconds",
        "1",
        "--format",
        "omh",
    )
    assert r.code == 0, r.err
    [line] = r.out.strip().splitlines()
    result = json.loads(line)
    assert FIELDS <= set(result)
    assert result["readings"] == 3000
    assert (result["lost"], result["duplicates_stored"]) == (0, 0)
    assert result["single_lost"] == 0 and result["single_failed"] == 0
    # Open mHealth beside the native format, in the same run (issue 17)
    assert (result["omh_readings"], result["omh_lost"], result["omh_duplicates_stored"]) == (
        3000,
        0,
        0,
    )
    assert result["omh_ratio_to_native"] == round(
        result["omh_readings_per_s"] / result["readings_per_s"], 3
    )
    assert result["readings_per_s"] > 0 and result["ceiling_copy_per_s"] > 0
    assert (
        result["ratio_to_ceiling"]
        == round(result["readings_per_s"] / result["ceiling_copy_per_s"], 3)
        or abs(result["ratio_to_ceiling"] - result["readings_per_s"] / result["ceiling_copy_per_s"])
        < 0.01
    )
    assert result["p99_ms"] > 0
    # What the bench says it stored is in the store: the batch readings and the single ones.
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] >= 3000 + 100
    assert conn.execute("SELECT to_regclass('bench_ceiling')").fetchone()[0] is None
