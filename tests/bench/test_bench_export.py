"""`egenmon bench export`: a small run proves it fills, exports, downloads and validates."""

from __future__ import annotations

import json


def test_a_small_export_on_the_given_database(cli, conn) -> None:
    r = cli("bench", "export", "--json", "--readings", "500", "--patients", "10", "--days", "5",
            "--validate-every", "5")  # fmt: skip
    assert r.code == 0, r.err
    [result] = [json.loads(line) for line in r.out.splitlines() if line.strip()]
    assert result["rows_by_type"] == {"Patient": 10, "Device": 10, "Observation": 500}
    assert result["lines_parsed"] == result["rows"] == 520
    assert result["lines_validated"] == 2 + 2 + 100  # every 5th line of each file
    assert result["invalid_lines"] == 0
    assert 0 < result["rss_before_mb"] <= result["peak_rss_mb"]
    assert result["rows_per_s"] > 0 and result["seconds"] > 0
    # The export logged each exported patient once, as the bench's client.
    logged = conn.execute(
        "SELECT count(*) FROM access_log WHERE actor = 'bench-export' AND action = 'export'"
    ).fetchone()[0]
    assert logged == 10
