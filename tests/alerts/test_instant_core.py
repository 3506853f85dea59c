"""The pure parts of the instant rules: the sweep judges exactly what the scan's
`evaluate_at` judges at each new reading's time, and the NOTIFY payload survives any
patients and times and refuses garbage."""

from __future__ import annotations

import datetime as dt
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from egenmon.alerts import engine, instant
from egenmon.alerts.plans import build_plan
from egenmon.alerts.rules import evaluate_at, merge_findings

T0 = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)
TYPES = {
    "spo2": (80, 100),
    "heart_rate": (35, 140),
    "respiratory_rate": (6, 30),
    "body_temperature": (34.5, 40.5),
    "blood_pressure": (85, 230),
    "body_weight": (60, 90),
}

reading = st.tuples(
    st.sampled_from(sorted(TYPES)),
    st.integers(min_value=-3000, max_value=600),  # minutes from T0
    st.floats(min_value=0, max_value=1),
    st.booleans(),  # new (arrived now) or already stored
)


def _rows(spec: list[tuple[str, int, float, bool]]) -> list[tuple]:
    rows = []
    for n, (type_, minutes, frac, new) in enumerate(spec):
        lo, hi = TYPES[type_]
        value = round(lo + (hi - lo) * frac, 1)
        value2 = round(value * 0.6) if type_ == "blood_pressure" else None
        t = T0 + dt.timedelta(minutes=minutes)
        rows.append(("p", t, type_, value, value2, None, f"key-{n}", new))
    rows.sort(key=lambda r: r[1])
    return rows


def _scan_way(rows: list[tuple], plan, lo, hi) -> list:
    """What the scan's anchors would find: evaluate_at at every new reading's time."""
    readings = engine._every(rows)
    anchors: dict[dt.datetime, set[str]] = {}
    for r in rows:
        if r[7] and lo <= r[1] <= hi:
            anchors.setdefault(r[1], set()).add(r[2])
    pairs = []
    for at, kinds in sorted(anchors.items()):
        pairs += [
            (f, at)
            for f in evaluate_at(readings, plan, at, kinds)
            if f.rule in instant.INSTANT_RULES
        ]
    return [engine._with_ids(f, rows) for f in merge_findings(pairs)]


@settings(max_examples=150, deadline=None)
@given(st.lists(reading, min_size=1, max_size=30), st.sampled_from(["general", "copd"]))
def test_the_sweep_finds_what_the_scan_finds_at_each_new_reading(spec, protocol):
    rows = _rows(spec)
    new_times = [r[1] for r in rows if r[7]]
    if not new_times:
        return
    lo, hi = min(new_times), max(new_times)
    plan = build_plan(protocol)
    found, _ = instant.findings_for(rows, plan, lo, hi)
    expected = _scan_way(rows, plan, lo, hi)

    def shape(fs):
        return sorted((f.key, f.severity, f.details.get("score"), f.evidence) for f in fs)

    assert shape(found) == shape(expected)


def test_a_live_round_is_one_evaluation_however_many_readings():
    spec = [("heart_rate", 0, 0.3, True)] * 1 + [("spo2", 0, 0.9, True) for _ in range(50)]
    rows = [
        (*r[:1], r[1] + dt.timedelta(microseconds=i), *r[2:]) for i, r in enumerate(_rows(spec))
    ]
    _, evaluated = instant.findings_for(rows, build_plan("general"), rows[0][1], rows[-1][1])
    assert evaluated <= 2


@given(
    st.dictionaries(
        st.uuids(),
        st.tuples(
            st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(9000, 1, 1)),
            st.timedeltas(min_value=dt.timedelta(0), max_value=dt.timedelta(days=30)),
        ),
        max_size=150,
    )
)
@settings(max_examples=40, deadline=None)
def test_payloads_carry_every_patient_within_the_notify_limit(spec):
    windows = {
        pid: [t.replace(tzinfo=dt.UTC), t.replace(tzinfo=dt.UTC) + d]
        for pid, (t, d) in spec.items()
    }
    payloads = instant.encode(windows)
    assert all(len(p.encode()) <= instant.PAYLOAD_LIMIT for p in payloads)
    back: dict[uuid.UUID, tuple] = {}
    for p in payloads:
        back.update(instant.decode(p))
    assert set(back) == set(windows)
    for pid, (lo, hi) in back.items():
        # Milliseconds, widened outwards: the window read covers the readings.
        assert lo <= windows[pid][0] < lo + dt.timedelta(milliseconds=1)
        assert hi - dt.timedelta(milliseconds=1) < windows[pid][1] <= hi


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=300))
def test_garbage_payloads_name_no_patient(text):
    decoded = instant.decode(text)
    for pid, (lo, hi) in decoded.items():
        assert isinstance(pid, uuid.UUID) and lo <= hi


def test_a_payload_with_bad_entries_keeps_the_good_ones():
    pid = uuid.uuid4()
    good = f"{pid.hex}:1000:2000"
    payload = ";".join(
        [
            "r1",
            "zz:1:2",
            f"{pid.hex}:5:",
            f"{pid.hex}:9:1",
            f"{pid.hex}:-1:5",
            "x" * 32 + ":1:2",
            good,
        ]
    )
    assert instant.decode(payload) == {
        pid: (
            dt.datetime.fromtimestamp(1, dt.UTC),
            dt.datetime.fromtimestamp(2, dt.UTC),
        )
    }
    assert instant.decode("r2;" + good) == {}
