"""The simulator: pure value generation (scenarios against clinical.md) and the command."""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections import defaultdict

import pytest

from egenmon.dev.simulate import SimDevice, generate, messages, session_times
from egenmon.domain.readings import Binding
from egenmon.ingest.message import parse_message
from egenmon.ingest.normalise import normalise
from tests.ingest.conftest import stored

START = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
DEVICES = [SimDevice(f"sim-{i}") for i in range(8)]


def series(device: SimDevice, scenario: str, days: float, onset=None) -> dict:
    out = defaultdict(list)
    rng = random.Random(device.device_id)
    for r in generate(device, scenario, START, START + dt.timedelta(days=days), rng, onset=onset):
        t = dt.datetime.fromisoformat(r["time"])
        if r["type"] == "blood_pressure":
            out["systolic"].append((t, r["systolic"]))
            out["diastolic"].append((t, r["diastolic"]))
        else:
            out[r["type"]].append((t, r["value"]))
    return out


def max_gain_within(points: list, window: dt.timedelta) -> float:
    return max(
        b - a for i, (ta, a) in enumerate(points) for tb, b in points[i:] if tb - ta <= window
    )


@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.device_id)
def test_stable_patients_stay_inside_the_normal_ranges(device):
    s = series(device, "stable", 28)
    values = {k: [v for _, v in pts] for k, pts in s.items()}
    # clinical.md: home BP < 135/85 (ESH), NEWS2 zero bands for pulse (51-90), breathing
    # (12-20) and SpO2 (>= 96), 1177's normal temperature (36-37.8), glucose 3.9-10.0.
    assert max(values["systolic"]) < 135 and max(values["diastolic"]) < 85
    assert min(values["systolic"]) > 110
    assert 51 <= min(values["heart_rate"]) and max(values["heart_rate"]) <= 90
    assert 12 <= min(values["respiratory_rate"]) and max(values["respiratory_rate"]) <= 20
    assert min(values["spo2"]) >= 96
    assert 36.0 <= min(values["body_temperature"]) and max(values["body_temperature"]) < 37.8
    assert 3.9 <= min(values["blood_glucose"]) and max(values["blood_glucose"]) <= 10.0
    assert max_gain_within(s["body_weight"], dt.timedelta(days=3)) < 2.0
    # A daily rhythm and noise, not a constant.
    assert len(set(values["heart_rate"])) > 5 and len(set(values["body_temperature"])) > 5


@pytest.mark.parametrize("device", DEVICES, ids=lambda d: d.device_id)
def test_deteriorating_patients_cross_the_clinical_thresholds_within_days(device):
    onset = START + dt.timedelta(days=2)
    s = series(device, "deteriorating", 8, onset=onset)
    before = {k: [v for t, v in pts if t < onset] for k, pts in s.items()}
    after = {
        k: [v for t, v in pts if onset + dt.timedelta(days=6) >= t >= onset] for k, pts in s.items()
    }
    # Before the decline the patient looks well.
    assert max(before["heart_rate"]) <= 90 and min(before["spo2"]) >= 96
    # Heart failure (ESC HFA): more than 2 kg gained within 3 days.
    gained = max_gain_within(
        [(t, v) for t, v in s["body_weight"] if t >= onset], dt.timedelta(days=3)
    )
    assert gained > 2.0
    # SpO2 (BTS): a fall of 3 points or more and below 92 %.
    assert max(before["spo2"]) - min(after["spo2"]) >= 3 and min(after["spo2"]) < 92
    # Pulse over 90, breathing over 20 (NEWS2 points), fever (1177: 38.0 or more).
    assert max(after["heart_rate"]) > 90
    assert max(after["respiratory_rate"]) > 20
    assert max(after["body_temperature"]) >= 38.0


def test_every_generated_reading_is_accepted_by_normalise():
    now = START + dt.timedelta(days=30)
    patient = uuid.uuid4()
    for scenario in ("stable", "deteriorating"):
        for protocol in ("hypertension", "heart_failure", "copd", "diabetes", None):
            device = SimDevice("sim-norm", protocol=protocol, scenario=scenario)
            readings = generate(
                device, scenario, START, START + dt.timedelta(days=10), random.Random(1)
            )
            for msg in messages(device, readings, 200):
                rows, errors = normalise(
                    parse_message(json.dumps(msg)),
                    device.device_id,
                    [Binding(patient, START)],
                    now,
                    "http",
                    now,
                )
                assert errors == [] and rows


def test_the_same_span_gives_the_same_times_so_a_repeated_backfill_dedups():
    device = SimDevice("sim-7")
    a = [
        r["time"]
        for r in generate(device, "stable", START, START + dt.timedelta(days=3), random.Random(1))
    ]
    b = [
        r["time"]
        for r in generate(
            device,
            "stable",
            START + dt.timedelta(hours=1),
            START + dt.timedelta(days=3),
            random.Random(2),
        )
    ]
    assert set(b) <= set(a) and len(a) == len(set(a))
    times = list(session_times(START, START + dt.timedelta(days=1), dt.timedelta(hours=12)))
    assert len(times) == 2
    msgs = list(
        messages(
            device,
            generate(device, "stable", START, START + dt.timedelta(days=3), random.Random(1)),
            10,
        )
    )
    assert all(len(m["readings"]) <= 10 for m in msgs)
    assert len({m["message_id"] for m in msgs}) == len(msgs)
    assert all(0 <= m["battery"] <= 1 and m["device_id"] == "sim-7" for m in msgs)


def test_unknown_scenario_is_refused():
    with pytest.raises(ValueError, match="unknown scenario"):
        list(generate(DEVICES[0], "zombie", START, START + dt.timedelta(days=1), random.Random(0)))


def test_simulate_command_backfills_over_http_and_a_repeat_is_all_duplicates(
    serve, cli, device, conn, tmp_path
):
    base, _ = serve("--no-mqtt", "--no-scheduler")
    devices_file = tmp_path / "devices.json"
    devices_file.write_text(
        json.dumps(
            [
                {
                    "device_id": device["id"],
                    "secret": device["secret"],
                    "patient_id": device["patient"],
                    "scenario": "deteriorating",
                    "protocol": "heart_failure",
                }
            ]
        )
    )
    args = (
        "simulate",
        "--via",
        "http",
        "--url",
        base,
        "--devices-file",
        str(devices_file),
        "--days",
        "3",
        "--duration",
        "0",
        "--json",
    )
    first = cli(*args)
    assert first.code == 0, first.err
    out = first.json
    assert out["readings"] == 6 * 6  # twice a day for three days, six types each
    assert (out["accepted"], out["rejected"], out["failed_messages"]) == (36, 0, 0)
    rows = stored(conn, device["id"])
    assert len(rows) == 36 and {r["type"] for r in rows} == {
        "body_weight",
        "blood_pressure",
        "heart_rate",
        "spo2",
        "body_temperature",
        "respiratory_rate",
    }
    again = cli(*args).json
    assert (again["accepted"], again["duplicates"]) == (0, 36)


def test_simulate_command_creates_patients_and_runs_live(serve, cli, conn, tmp_path):
    base, _ = serve("--no-mqtt", "--no-scheduler")
    saved = tmp_path / "sim-devices.json"
    r = cli(
        "simulate",
        "--url",
        base,
        "--patients",
        "2",
        "--rate",
        "20",
        "--duration",
        "2.5",
        "--save-devices",
        str(saved),
        "--json",
    )
    assert r.code == 0, r.err
    assert r.json["devices"] == 2 and r.json["accepted"] > 0
    assert r.json["failed_messages"] == 0 and r.json["rejected"] == 0
    created = json.loads(saved.read_text())
    assert len(created) == 2 and all(d["secret"] for d in created)
    per_device = dict(conn.execute("SELECT device_id, count(*) FROM readings GROUP BY 1"))
    assert set(per_device) == {d["device_id"] for d in created}
    assert sum(per_device.values()) == r.json["accepted"]


def test_dev_runs_the_simulator_for_the_demo_devices(serve, device, conn, tmp_path):
    import os
    import time

    from egenmon.dev.demo import DemoDevice
    from egenmon.dev.devenv import start_simulators

    base, _ = serve("--no-mqtt", "--no-scheduler")
    demo = DemoDevice(
        device["id"], device["secret"], device["patient"], "deteriorating", "heart_failure"
    )
    (tmp_path / "demo-devices.json").write_text(json.dumps([demo.__dict__]))
    [proc] = start_simulators(dict(os.environ), tmp_path, int(base.rsplit(":", 1)[1]), [demo])
    try:
        deadline = time.monotonic() + 30
        while len(stored(conn, device["id"])) < 14 * 2 * 6:  # the two weeks of history
            assert proc.poll() is None, "the simulator exited"
            assert time.monotonic() < deadline, "no history within 30 s"
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)
    weights = [r["value"] for r in stored(conn, device["id"]) if r["type"] == "body_weight"]
    assert max(weights[-8:]) - min(weights[:8]) > 2.0  # the heart-failure decline shows
