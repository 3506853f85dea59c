"""What rules read (readings) and what they return (findings), and the time helpers
every rule shares.

Time: every window is real elapsed time anchored on `now`, computed in UTC. Python
subtracts two datetimes that share a tzinfo by wall clock (ignoring a DST change between
them), so every time is converted to UTC before any arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from egenmon.domain.severity import SEVERITIES, Severity

# The contract's rule names ("Alerts API"), in the order findings are listed.
RULES = (
    "threshold",
    "trend_weight",
    "trend_bp_mean",
    "spo2_drop",
    "news2",
    "missing_data",
    "device_inactive",
)

# Ingest accepts readings up to 5 minutes in the future (contract: clock skew); later ones
# cannot exist, and ignoring them keeps an evaluation "as of now" repeatable.
CLOCK_SKEW = timedelta(minutes=5)


class Reading(NamedTuple):
    """One stored observation as the rules see it (a row of the readings table)."""

    id: str  # observation id
    time: datetime  # measurement time, aware
    type: str
    value: float  # the single value, or systolic
    value2: float | None = None  # diastolic
    on_oxygen: bool | None = None


@dataclass(frozen=True)
class Finding:
    """A deviation a rule found for one patient.

    key: the lifecycle's identity, one open alert per (patient, key). It is the rule name,
    except ``threshold:<type>`` (each measurement type its own alert) and
    ``device_inactive:<device id>`` (each device its own alert).
    """

    rule: str
    severity: Severity
    evidence: tuple[str, ...]
    details: dict[str, Any] = field(hash=False)  # JSON-serialisable
    summary: str
    key: str = ""

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown rule {self.rule!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")
        if not self.key:
            object.__setattr__(self, "key", self.rule)


_ZONE_UTC = ZoneInfo("UTC")  # psycopg's tzinfo for a UTC session; ZoneInfo caches it


def as_utc(t: datetime, what: str = "time") -> datetime:
    """`t` in UTC; a naive datetime is refused (it has no place on a timeline)."""
    if t.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {t.isoformat()}")
    return t.astimezone(UTC)


def prepare(readings: Iterable[Reading], now: datetime) -> tuple[datetime, list[Reading]]:
    """`now` and the readings in UTC, oldest first, without readings after now + skew.

    Sorting by measurement time (not arrival order) is what makes late data count where
    it belongs.
    """
    now = as_utc(now, "now")
    latest = now + CLOCK_SKEW
    out = []
    for r in readings:
        tz = r.time.tzinfo
        if tz is UTC or tz is _ZONE_UTC:
            # The database hands over UTC already: no copy (the scan's hottest line).
            if r.time <= latest:
                out.append(r)
            continue
        t = as_utc(r.time, f"time of reading {r.id}")
        if t <= latest:
            out.append(r._replace(time=t))
    out.sort(key=lambda r: (r.time, r.id))
    return now, out


def of_type(readings: Iterable[Reading], type_: str) -> list[Reading]:
    return [r for r in readings if r.type == type_]


def between(readings: Iterable[Reading], start: datetime, end: datetime) -> list[Reading]:
    """Readings measured in [start, end]."""
    return [r for r in readings if start <= r.time <= end]


def since(readings: Iterable[Reading], start: datetime) -> list[Reading]:
    """Readings measured at or after start (prepare() has dropped any after now)."""
    return [r for r in readings if r.time >= start]


def newest(readings: list[Reading]) -> Reading | None:
    """The last of readings sorted oldest first."""
    return readings[-1] if readings else None


def age_minutes(t: datetime, now: datetime) -> int:
    """Whole minutes from t to now (0 for a reading a little in the future)."""
    return max(0, int((now - t).total_seconds() // 60))


def hours(d: timedelta) -> float:
    return round(d.total_seconds() / 3600, 2)


def iso(t: datetime) -> str:
    return as_utc(t).isoformat()


def reading_dict(r: Reading) -> dict[str, Any]:
    """A reading for a finding's details."""
    d: dict[str, Any] = {"id": r.id, "time": iso(r.time), "value": r.value}
    if r.value2 is not None:
        d["value2"] = r.value2
    return d
