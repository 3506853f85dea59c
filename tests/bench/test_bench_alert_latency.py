"""`egenmon bench alert-latency`: the contract's fields, every critical reading's alert
opened and its webhook delivered, on the test's database with a real serve process."""

from __future__ import annotations

import json


def test_alert_latency_prints_the_contract_fields(cli, env):
    r = cli(
        "bench", "alert-latency", "--json", "--rate", "400", "--seconds", "2", "--batch", "10",
        "--devices", "30", "--criticals-per-s", "5",
    )  # fmt: skip
    assert r.code == 0, r.err
    [line] = [json.loads(x) for x in r.out.splitlines()]
    for field in ("rate", "p50_s", "p99_s", "delivery_p99_s", "readings", "criticals", "missed"):
        assert field in line, field
    assert line["rate"] == 400 and line["mode"] == "instant"
    assert line["readings"] == 800 and line["lost"] == 0
    assert line["criticals"] >= 8 and line["missed"] == 0 and line["deliveries_missed"] == 0
    assert 0 <= line["p50_s"] <= line["p99_s"] <= line["delivery_p99_s"] + 15
    assert line["opened_by"] == {"rules": line["criticals"]}
