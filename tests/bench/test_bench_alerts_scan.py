"""`egenmon bench alerts-scan`: the contract's fields, on a throwaway database of the
server it is given."""

from __future__ import annotations

import json

import psycopg


def test_alerts_scan_prints_the_contract_fields(cli, env, pg_cluster):
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        before = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    r = cli("bench", "alerts-scan", "--json", "--patients", "400")
    assert r.code == 0, r.err
    lines = [json.loads(line) for line in r.out.splitlines()]
    assert [line["cycle"] for line in lines] == ["first", "steady"]
    first, steady = lines
    for line in lines:
        assert line["patients"] == 400
        assert line["seconds"] > 0
        # About 26 readings a patient a week, of which the rules' windows hold about half.
        assert 400 * 8 < line["readings_in_window"] < line["readings_stored"]
    # 5 % deteriorate: their alerts open in the first cycle.
    assert first["opened"] >= 400 * 0.05 * 0.5
    assert first["late_readings"] == 0
    # Before the steady cycle one patient in 50 uploads 10 days at once: the steady cycle
    # judges those readings at their measurement times; only late patients can open.
    assert steady["late_readings"] > 0 and steady["anchors"] > 0
    assert steady["opened"] <= 400 // 50 and steady["findings"] > 0
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        after = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert not {d for d in after - before if d.startswith("egenmon_bench_")}
