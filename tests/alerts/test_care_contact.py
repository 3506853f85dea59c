"""Pure lifecycle rules: care-contact due times (across daylight saving), categories, the
basis that keeps closed alerts closed, and which actions apply to which status."""

from __future__ import annotations

import datetime as dt

import pytest

from egenmon.alerts import lifecycle
from egenmon.alerts.rules import Finding
from egenmon.domain.ids import observation_id
from tests.alerts.conftest import STOCKHOLM

UTC = dt.UTC


def at(local: str) -> dt.datetime:
    """A Stockholm wall-clock time, in UTC."""
    return dt.datetime.fromisoformat(local).replace(tzinfo=STOCKHOLM).astimezone(UTC)


@pytest.mark.parametrize(
    ("severity", "opened", "due"),
    [
        ("high", "2026-03-10T09:00", "2026-03-10T10:00"),
        ("low", "2026-03-10T09:00", "2026-03-13T09:00"),
        # Medium: the end of the local day...
        ("medium", "2026-03-10T09:00", "2026-03-11T00:00"),
        ("medium", "2026-03-10T19:59", "2026-03-11T00:00"),
        # ...but never less than 4 hours, so never before a high one would be due.
        ("medium", "2026-03-10T20:30", "2026-03-11T00:30"),
        ("medium", "2026-03-10T23:50", "2026-03-11T03:50"),
    ],
)
def test_due_times(severity, opened, due):
    assert lifecycle.due_at(severity, at(opened), STOCKHOLM) == at(due)


def test_due_times_count_real_hours_across_daylight_saving():
    # 29 March 2026: clocks go from 02:00 to 03:00 in Stockholm (a 23-hour day).
    opened = at("2026-03-29T01:30")
    assert lifecycle.due_at("high", opened, STOCKHOLM) == opened + dt.timedelta(hours=1)
    assert lifecycle.due_at("high", opened, STOCKHOLM).astimezone(STOCKHOLM).hour == 3
    # The end of that local day is 21.5 real hours away, not 22.5.
    assert lifecycle.due_at("medium", opened, STOCKHOLM) - opened == dt.timedelta(hours=21.5)
    # 25 October 2026: back from 03:00 to 02:00 (a 25-hour day).
    opened = at("2026-10-25T00:30")
    assert lifecycle.due_at("medium", opened, STOCKHOLM) - opened == dt.timedelta(hours=24.5)
    low = lifecycle.due_at("low", opened, STOCKHOLM)
    assert low - opened == dt.timedelta(days=3)
    assert low.astimezone(STOCKHOLM).hour == 23  # 72 real hours, not three calendar days


def test_unknown_severity_is_refused():
    with pytest.raises(ValueError, match="severity"):
        lifecycle.due_at("urgent", at("2026-03-10T09:00"), STOCKHOLM)


def test_device_silence_is_technical_everything_else_clinical():
    assert lifecycle.category("device_inactive") == "technical"
    for rule in (
        "threshold",
        "trend_weight",
        "trend_bp_mean",
        "spo2_drop",
        "news2",
        "missing_data",
    ):
        assert lifecycle.category(rule) == "clinical"


def test_basis_of_findings_with_and_without_readings():
    t = at("2026-03-10T09:00")
    oid = observation_id(t, "dev|spo2|x")
    f = Finding("spo2_drop", "medium", (oid,), {}, "s")
    assert lifecycle.basis(f) == (oid,)
    silent = Finding(
        "device_inactive",
        "low",
        (),
        {"device_id": "d1", "last_seen": None, "bound_since": "2020-01-01T00:00:00+00:00"},
        "s",
        key="device_inactive:d1",
    )
    assert lifecycle.basis(silent) == ("device:d1:seen:never:bound:2020-01-01T00:00:00+00:00",)
    missing = Finding(
        "missing_data",
        "low",
        (),
        {
            "missing": [
                {"type": "body_weight", "since": "2026-03-08T07:00:00+00:00"},
                {"type": "blood_pressure", "since": None},
            ]
        },
        "s",
    )
    assert lifecycle.basis(missing) == (
        "missing:blood_pressure:never",
        "missing:body_weight:2026-03-08T07:00:00+00:00",
    )


def test_evidence_until_is_the_newest_measurement_time():
    t1, t2 = at("2026-03-10T09:00"), at("2026-03-10T21:00")
    ids = [observation_id(t2, "a"), observation_id(t1, "b"), "not-an-id"]
    assert lifecycle.evidence_until(ids) == t2
    assert lifecycle.evidence_until([]) is None


@pytest.mark.parametrize(
    ("action", "status", "result"),
    [
        ("acknowledge", "open", "acknowledged"),
        ("resolve", "open", "resolved"),
        ("resolve", "acknowledged", "resolved"),
        ("dismiss", "open", "dismissed"),
        ("dismiss", "acknowledged", "dismissed"),
    ],
)
def test_allowed_transitions(action, status, result):
    assert lifecycle.next_status(action, status) == result


@pytest.mark.parametrize(
    ("action", "status"),
    [
        ("acknowledge", "acknowledged"),
        ("acknowledge", "resolved"),
        ("resolve", "dismissed"),
        ("dismiss", "resolved"),
        ("resolve", "resolved"),
    ],
)
def test_refused_transitions(action, status):
    with pytest.raises(lifecycle.TransitionError, match=action):
        lifecycle.next_status(action, status)


def test_unknown_action():
    with pytest.raises(ValueError, match="unknown action"):
        lifecycle.next_status("close", "open")
