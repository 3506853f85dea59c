"""A small, fast run of `egenmon bench ingest-mqtt`: its fields, and nothing lost or doubled."""

import argparse

import pytest

from egenmon.bench import ingest_mqtt
from egenmon.settings import load_settings

FIELDS = {
    "readings",
    "seconds",
    "readings_per_s",
    "ceiling_broker_per_s",
    "ratio_to_ceiling",
    "lost",
    "duplicates_stored",
}


def test_bench_ingest_mqtt_reports_the_contract_fields_and_loses_nothing(database_url):
    parser = argparse.ArgumentParser()
    ingest_mqtt.add_arguments(parser)
    args = parser.parse_args(["--readings", "400", "--batched-readings", "1000"])
    # The suite's database, but a broker of the benchmark's own: its consumer joins the
    # shared subscription for good, which must not touch the suite's broker.
    settings = load_settings(database_url=database_url, mqtt_url=None, environment="test")
    lines = list(ingest_mqtt.run(args, settings))
    assert [line["per_message"] for line in lines] == [1, 50]
    for line, readings in zip(lines, (400, 1000), strict=True):
        assert FIELDS <= line.keys()
        assert line["readings"] == readings
        assert line["lost"] == 0 and line["duplicates_stored"] == 0
        assert line["ended_by"] == "poll"  # the suite's cluster keeps no commit times
        assert line["readings_per_s"] > 0 and line["ceiling_broker_per_s"] > 0
        ratio = line["readings_per_s"] / line["ceiling_broker_per_s"]
        assert abs(line["ratio_to_ceiling"] - ratio) < 0.01
        # The ceiling runs twice and the better run counts.
        runs = line["ceiling_runs_per_s"]
        assert len(runs) == 2 and line["ceiling_broker_per_s"] == max(runs)


@pytest.mark.services  # its own throwaway cluster and broker
def test_on_a_throwaway_cluster_the_run_ends_at_the_last_commit():
    parser = argparse.ArgumentParser()
    ingest_mqtt.add_arguments(parser)
    args = parser.parse_args(["--readings", "300", "--per-message", "1"])
    settings = load_settings(database_url=None, mqtt_url=None, environment="test")
    [line] = list(ingest_mqtt.run(args, settings))
    assert line["lost"] == 0 and line["duplicates_stored"] == 0
    assert line["ended_by"] == "last commit" and line["seconds"] > 0
