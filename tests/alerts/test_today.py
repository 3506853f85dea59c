"""Today's tasks (egenmon.alerts.today): a pure function of the plan's windows, the
patient's reading times, `now` and the time zone. Table tests, no server."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from egenmon.alerts.plans import PROTOCOLS
from egenmon.alerts.today import TEXTS, today

STHLM = ZoneInfo("Europe/Stockholm")


def local(day: str, clock: str) -> datetime:
    return datetime.fromisoformat(f"{day}T{clock}").replace(tzinfo=STHLM)


D = "2026-11-24"


@pytest.mark.parametrize(
    ("protocol", "readings", "now", "expected"),
    [
        # Hypertension: morning and evening blood pressure.
        ("hypertension", {}, local(D, "07:00"),
         [("blood_pressure", "morning", "not_yet_due"),
          ("blood_pressure", "evening", "not_yet_due")]),
        ("hypertension", {"blood_pressure": [local(D, "07:31")]}, local(D, "11:00"),
         [("blood_pressure", "morning", "done"), ("blood_pressure", "evening", "not_yet_due")]),
        ("hypertension", {}, local(D, "10:00"),
         [("blood_pressure", "morning", "overdue"),
          ("blood_pressure", "evening", "not_yet_due")]),
        ("hypertension", {"blood_pressure": [local(D, "07:31")]}, local(D, "23:00"),
         [("blood_pressure", "morning", "done"), ("blood_pressure", "evening", "overdue")]),
        # An evening reading does not do the morning's measurement.
        ("hypertension", {"blood_pressure": [local(D, "19:00")]}, local(D, "20:00"),
         [("blood_pressure", "morning", "overdue"), ("blood_pressure", "evening", "done")]),
        # Yesterday's reading does not count today.
        ("heart_failure", {"body_weight": [local("2026-11-23", "07:00")]}, local(D, "09:00"),
         [("body_weight", "morning", "not_yet_due"),
          ("blood_pressure", "morning", "not_yet_due")]),
        ("heart_failure", {"body_weight": [local(D, "06:45")]}, local(D, "12:00"),
         [("body_weight", "morning", "done"), ("blood_pressure", "morning", "overdue")]),
        # COPD: daily, any time of the day, due at 20.
        ("copd", {"spo2": [local(D, "15:00")]}, local(D, "20:30"),
         [("spo2", "day", "done"), ("heart_rate", "day", "overdue"),
          ("respiratory_rate", "day", "overdue")]),
        ("general", {}, local(D, "12:00"), []),
    ],
)  # fmt: skip
def test_tasks(
    protocol: str,
    readings: dict[str, list[datetime]],
    now: datetime,
    expected: list[tuple[str, str, str]],
) -> None:
    tasks = today(PROTOCOLS[protocol], readings, now, STHLM)
    assert [(t.type, t.slot, t.status) for t in tasks] == expected


def test_words_are_plain_swedish_and_english() -> None:
    [task] = today({"body_weight": timedelta(hours=36)}, {}, local(D, "07:00"), STHLM)
    shown = task.as_dict()
    assert shown["text"]["sv"].startswith("Väg dig på morgonen innan frukost")
    assert shown["text"]["en"].startswith("Weigh yourself in the morning")
    assert shown["status_text"]["sv"] == "Inte dags än"
    assert shown["due"] == "2026-11-24T10:00:00+01:00"
    assert all(sv and en for sv, en in TEXTS.values())


def test_the_day_is_the_patients_local_day_across_dst() -> None:
    """On the night summer time ends, 'morning' is still 06-10 by the clock."""
    now = local("2026-10-25", "09:30")
    [morning, _] = today(PROTOCOLS["hypertension"], {}, now, STHLM)
    assert morning.starts.isoformat() == "2026-10-25T06:00:00+01:00"
    assert morning.status == "not_yet_due"
    # A reading at 00:30 UTC is 02:30 local summer time: that day, not the day before.
    done = today(
        PROTOCOLS["hypertension"],
        {"blood_pressure": [datetime.fromisoformat("2026-10-25T00:30:00+00:00")]},
        now,
        STHLM,
    )
    assert done[0].status == "done"


def test_less_often_than_daily_is_done_while_within_the_interval() -> None:
    every_three_days = {"body_weight": timedelta(hours=108)}  # window = 1.5 x 72 h
    now = local(D, "12:00")
    recent = today(every_three_days, {"body_weight": [now - timedelta(days=2)]}, now, STHLM)
    old = today(every_three_days, {"body_weight": [now - timedelta(days=3)]}, now, STHLM)
    assert [t.status for t in recent] == ["done"]
    assert [t.status for t in old] == ["not_yet_due"]


def test_now_must_be_aware() -> None:
    with pytest.raises(ValueError, match="aware"):
        today({}, {}, datetime(2026, 11, 24, 12), STHLM)
