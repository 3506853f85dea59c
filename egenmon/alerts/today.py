"""Today: the measurements a patient's monitoring plan expects today, and where each stands
(pure: `now` and the time zone are passed in, the readings given as times).

The plan says how often a type is expected (`Plan.expected`, from the protocol in
clinical.md); the routine says when in the day:

- twice daily (a window of 18 hours or less, 1.5 times the interval as clinical.md's
  missing data rule sets it; ESH home blood pressure): a morning and an evening one;
- daily body weight (heart failure): in the morning, after the toilet and before
  breakfast; a daily blood pressure in the morning too;
- any other daily measurement: once during the day;
- less often than daily: a day task, done while the last reading is within the interval
  (the window / 1.5) less half a day.

Each task is `done` (a reading in its part of today), `overdue` (not done and past its
due time) or `not_yet_due`. Texts come as message keys with Swedish and English words.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo

__all__ = ["SLOTS", "TEXTS", "Task", "today"]

# slot → (counts from, starts, due, counts until), local clock times; `until` None: midnight.
SLOTS: dict[str, tuple[time, time, time, time | None]] = {
    "morning": (time(0), time(6), time(10), time(14)),
    "evening": (time(14), time(18), time(22), None),
    "day": (time(0), time(6), time(20), None),
}

_WHAT = {
    "blood_pressure": ("Mät ditt blodtryck", "Measure your blood pressure"),
    "body_weight": ("Väg dig", "Weigh yourself"),
    "spo2": ("Mät din syremättnad", "Measure your oxygen saturation"),
    "heart_rate": ("Mät din puls", "Measure your pulse"),
    "respiratory_rate": ("Räkna dina andetag under en minut", "Count your breaths for a minute"),
    "body_temperature": ("Ta din temperatur", "Take your temperature"),
    "blood_glucose": ("Mät ditt blodsocker", "Measure your blood glucose"),
}
_WHEN = {
    "morning": ("på morgonen", "in the morning"),
    "evening": ("på kvällen", "in the evening"),
    "day": ("i dag", "today"),
}

# Message key → (Swedish, English); the app shows the one for the patient's language.
TEXTS: dict[str, tuple[str, str]] = {
    f"today.{type_}.{slot}": (f"{sv} {sv_when}", f"{en} {en_when}")
    for type_, (sv, en) in _WHAT.items()
    for slot, (sv_when, en_when) in _WHEN.items()
}
TEXTS["today.body_weight.morning"] = (
    "Väg dig på morgonen innan frukost, efter toalettbesöket",
    "Weigh yourself in the morning before breakfast, after using the toilet",
)
TEXTS["today.blood_pressure.morning"] = (
    "Mät ditt blodtryck på morgonen, sittande efter fem minuters vila",
    "Measure your blood pressure in the morning, seated after five minutes' rest",
)
TEXTS["today.blood_pressure.evening"] = (
    "Mät ditt blodtryck på kvällen, sittande efter fem minuters vila",
    "Measure your blood pressure in the evening, seated after five minutes' rest",
)
STATUS_TEXTS: dict[str, tuple[str, str]] = {
    "done": ("Klart", "Done"),
    "overdue": ("Försenad – mät så snart du kan", "Overdue – measure as soon as you can"),
    "not_yet_due": ("Inte dags än", "Not yet due"),
}

# The plan's windows are 1.5 times the interval (clinical.md, missing data).
_TWICE_DAILY = timedelta(hours=18)
_DAILY = timedelta(hours=36)
_MORNING_TYPES = frozenset({"body_weight", "blood_pressure"})


@dataclass(frozen=True)
class Task:
    """One expected measurement today."""

    type: str
    slot: str  # morning, evening or day
    status: str  # done, overdue or not_yet_due
    starts: datetime  # local, aware
    due: datetime  # local, aware
    done_at: datetime | None

    @property
    def key(self) -> str:
        return f"today.{self.type}.{self.slot}"

    def as_dict(self) -> dict[str, object]:
        sv, en = TEXTS[self.key]
        status_sv, status_en = STATUS_TEXTS[self.status]
        return {
            "type": self.type,
            "slot": self.slot,
            "status": self.status,
            "starts": self.starts.isoformat(),
            "due": self.due.isoformat(),
            "done_at": self.done_at.isoformat() if self.done_at else None,
            "key": self.key,
            "text": {"sv": sv, "en": en},
            "status_text": {"sv": status_sv, "en": status_en},
        }


def _slots(type_: str, window: timedelta) -> tuple[str, ...]:
    if window <= _TWICE_DAILY:
        return ("morning", "evening")
    if window <= _DAILY:
        return ("morning",) if type_ in _MORNING_TYPES else ("day",)
    return ("day",)


def today(
    expected: Mapping[str, timedelta],
    readings: Mapping[str, Iterable[datetime]],
    now: datetime,
    tz: tzinfo,
) -> list[Task]:
    """The tasks of the day `now` falls on in `tz`: per expected type (in the plan's order)
    and slot. `readings`: type → measurement times (aware) of recent readings."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    local_now = now.astimezone(tz)
    day = local_now.date()

    def at(t: time | None) -> datetime:
        if t is None:
            return datetime.combine(day + timedelta(days=1), time(0), tz)
        return datetime.combine(day, t, tz)

    tasks: list[Task] = []
    for type_, window in expected.items():
        if type_ not in _WHAT:
            continue
        times = sorted(t.astimezone(tz) for t in readings.get(type_, ()))
        for slot in _slots(type_, window):
            counts_from, starts, due, until = SLOTS[slot]
            lo, hi = at(counts_from), at(until)
            if window > _DAILY:
                # Less often than daily: done while the last reading is within the interval
                # (less half a day, so the routine's hour may drift).
                lo = min(lo, local_now - (window / 1.5 - timedelta(hours=12)))
            done = [t for t in times if lo <= t < hi and t <= local_now + timedelta(minutes=5)]
            done_at = done[-1] if done else None
            if done_at is not None:
                status = "done"
            elif local_now >= at(due):
                status = "overdue"
            else:
                status = "not_yet_due"
            tasks.append(Task(type_, slot, status, at(starts), at(due), done_at))
    return tasks
