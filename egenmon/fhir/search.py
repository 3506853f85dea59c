"""FHIR search parameters to plain, frozen queries the store can run.

Input is the query as (name, value) pairs in order, repeats allowed, already
percent-decoded (a GET query string or a POST ``_search`` form body alike). Repeated
parameters AND, comma-separated values OR, as FHIR search says. A parameter given with an
empty value is ignored. Modifiers (``code:text``, ``date:missing``...) are refused
whatever the handling, as FHIR requires of unsupported modifiers. `_format` and `_pretty`
are the route's business and ignored here.

Every error is a `SearchError`: a FhirError with status 400 whose diagnostics start with
the name of the offending parameter.

Dates (parameter `date`) follow FHIR's precision rules: a value stands for the whole
range its precision implies (``2026`` a year, ``2026-11`` a month, ``2026-11-24`` a day,
``2026-11-24T07:31+01:00`` a minute, ``...T07:31:00Z`` a second, ``...T07:31:00.5Z`` a
tenth of one), and a reading's instant t matches

    eq  low <= t < high        ge  t >= low        gt  t >= high
    le  t < high               lt  t < low

Values without a time zone (every date, and times without an offset) are local time in
the `tz` given (the server's EGENMON_TIMEZONE), so a day is 23 or 25 hours long on the days
daylight saving time starts or ends. A space where the offset's ``+`` should be (an
unencoded ``+`` in a URL decodes to a space) is read as ``+``. All date parameters
intersect into one half-open UTC range [date_low, date_high). `_lastUpdated` (when the
reading was stored: its meta.lastUpdated) takes the same values and prefixes into
[updated_low, updated_high).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from egenmon.domain.ids import decode_cursor
from egenmon.domain.measurements import CATEGORY_SYSTEM, TYPES, type_for_code
from egenmon.fhir.outcome import FhirError
from egenmon.fhir.phd import EUI64_SYSTEM
from egenmon.fhir.render import (
    DEVICE_ID_SYSTEM,
    FLAG_STATUS,
    PERSONNUMMER_OID,
    PERSONNUMMER_SYSTEM,
    SAMORDNINGSNUMMER_OID,
    SAMORDNINGSNUMMER_SYSTEM,
    TASK_STATUS,
)
from egenmon.settings import DEFAULT_TIMEZONE

__all__ = [
    "AlertQuery",
    "AuditQuery",
    "DeviceQuery",
    "LastnQuery",
    "ObservationQuery",
    "PatientQuery",
    "SearchError",
    "date_range",
    "parse_alert_search",
    "parse_audit_search",
    "parse_device_search",
    "parse_lastn",
    "parse_observation_search",
    "parse_patient_search",
]

Params = Iterable[tuple[str, str]]

DEFAULT_COUNT = 50
MAX_COUNT = 1000
MAX_LASTN = 1000
DEFAULT_TZ = DEFAULT_TIMEZONE  # the API passes the server's (Settings.tz)

_IGNORED = frozenset({"_format", "_pretty"})
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_DEVICE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_COUNT_RE = re.compile(r"[0-9]{1,9}")
_DATE_RE = re.compile(
    r"(?P<y>[0-9]{4})(?:-(?P<m>[0-9]{2})(?:-(?P<d>[0-9]{2})"
    r"(?:T(?P<H>[0-9]{2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:\.(?P<f>[0-9]{1,6}))?)?"
    r"(?P<tz>Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?"
)
_PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
_SUPPORTED_PREFIXES = frozenset({"eq", "gt", "lt", "ge", "le"})
_CATEGORY_TYPES = {
    cat: frozenset(t.name for t in TYPES.values() if t.category == cat)
    for cat in {t.category for t in TYPES.values()}
}
_PNR_SYSTEMS = {
    PERSONNUMMER_SYSTEM: "personnummer",
    PERSONNUMMER_OID: "personnummer",
    SAMORDNINGSNUMMER_SYSTEM: "samordningsnummer",
    SAMORDNINGSNUMMER_OID: "samordningsnummer",
}
_PNR_RE = re.compile(r"[0-9]{12}|[0-9]{8}-[0-9]{4}")
_STATUS_SYSTEMS = {
    "Flag": "http://hl7.org/fhir/flag-status",
    "Task": "http://hl7.org/fhir/task-status",
}
_RESOURCE_STATUSES = {
    "Flag": frozenset({"active", "inactive", "entered-in-error"}),
    "Task": frozenset(
        {
            "draft", "requested", "received", "accepted", "rejected", "ready", "cancelled",
            "in-progress", "on-hold", "failed", "completed", "entered-in-error",
        }
    ),
}  # fmt: skip
_ALERT_STATUSES_FOR = {
    "Flag": {
        s: frozenset(a for a, f in FLAG_STATUS.items() if f == s) for s in FLAG_STATUS.values()
    },
    "Task": {
        s: frozenset(a for a, t in TASK_STATUS.items() if t == s) for s in TASK_STATUS.values()
    },
}


class SearchError(FhirError):
    """A search request egenmon refuses; `param` names the parameter at fault."""

    def __init__(self, param: str, message: str, code: str = "invalid") -> None:
        super().__init__(400, code, f"{param}: {message}")
        self.param = param


# --- the queries ----------------------------------------------------------------------


@dataclass(frozen=True)
class ObservationQuery:
    """An Observation search.

    `types` is None when no code or category narrows the search, and empty when they
    can match nothing (an unknown code is recorded in `unknown_codes`, not an error).
    [date_low, date_high) is the UTC range (None: unbounded). `cursor` is the decoded
    (time, dedup_key) keyset position to continue after, in `descending` order.
    """

    patient: uuid.UUID | None = None
    types: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    unknown_codes: tuple[str, ...] = ()
    device: str | None = None
    date_low: datetime | None = None
    date_high: datetime | None = None
    count: int = DEFAULT_COUNT
    descending: bool = True
    summary_count: bool = False
    cursor: tuple[datetime, str] | None = None
    ignored: tuple[str, ...] = ()
    # [updated_low, updated_high): when the reading was stored (_lastUpdated), UTC.
    updated_low: datetime | None = None
    updated_high: datetime | None = None

    @property
    def count_only(self) -> bool:
        """Only the total is asked for (`_summary=count` or `_count=0`)."""
        return self.summary_count or self.count == 0

    @property
    def empty(self) -> bool:
        """Nothing can match: answer with an empty Bundle without asking the store."""
        if self.types is not None and not self.types:
            return True
        return any(
            low is not None and high is not None and low >= high
            for low, high in (
                (self.date_low, self.date_high),
                (self.updated_low, self.updated_high),
            )
        )

    @property
    def loinc_codes(self) -> frozenset[str] | None:
        """The LOINC codes (the `code` column) of `types`; None when not narrowed."""
        if self.types is None:
            return None
        return frozenset(c for n in self.types for c in (TYPES[n].loinc, *TYPES[n].extra_loinc))


@dataclass(frozen=True)
class LastnQuery:
    """Observation/$lastn: the `max` most recent readings per type of one patient."""

    patient: uuid.UUID
    types: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    unknown_codes: tuple[str, ...] = ()
    max: int = 1
    ignored: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.types is not None and not self.types


@dataclass(frozen=True)
class PatientQuery:
    """A Patient search by identifier.

    `identifier_kind` is personnummer, samordningsnummer or None (any); `personnummer`
    the 12 digits. `no_match` when the identifier's system is not one egenmon holds.
    """

    personnummer: str | None = None
    identifier_kind: str | None = None
    no_match: bool = False
    count: int = DEFAULT_COUNT
    summary_count: bool = False
    ignored: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceQuery:
    """A Device search by bound patient and/or identifier (the device id)."""

    patient: uuid.UUID | None = None
    device_id: str | None = None
    no_match: bool = False
    count: int = DEFAULT_COUNT
    summary_count: bool = False
    ignored: tuple[str, ...] = ()
    identifier: tuple[str, str] | None = None  # another system's, such as a PHD system id


@dataclass(frozen=True)
class AlertQuery:
    """A Flag or Task search; `statuses` are alert statuses (open, acknowledged, ...).

    `statuses` is None when not narrowed and empty when the FHIR status asked for has no
    alert behind it (e.g. Task `draft`).
    """

    patient: uuid.UUID | None = None
    statuses: frozenset[str] | None = None
    count: int = DEFAULT_COUNT
    summary_count: bool = False
    ignored: tuple[str, ...] = ()
    # [updated_low, updated_high): when the alert last changed (_lastUpdated), UTC.
    updated_low: datetime | None = None
    updated_high: datetime | None = None

    @property
    def empty(self) -> bool:
        if (
            self.updated_low is not None
            and self.updated_high is not None
            and self.updated_low >= self.updated_high
        ):
            return True
        return self.statuses is not None and not self.statuses


# --- shared pieces --------------------------------------------------------------------


def _collect(
    params: Params, known: frozenset[str], lenient: bool
) -> tuple[dict[str, list[str]], tuple[str, ...]]:
    values: dict[str, list[str]] = {}
    ignored: list[str] = []
    for name, value in params:
        if name in _IGNORED:
            continue
        base, colon, modifier = name.partition(":")
        if base in known:
            if colon:
                raise SearchError(
                    name, f"the :{modifier} modifier is not supported", "not-supported"
                )
            if value != "":
                values.setdefault(base, []).append(value)
        elif lenient:
            ignored.append(name)
        else:
            raise SearchError(name, "unknown search parameter", "not-supported")
    return values, tuple(dict.fromkeys(ignored))


def _single(name: str, values: list[str]) -> str:
    if len(set(values)) > 1:
        raise SearchError(name, "given more than once with different values")
    return values[0]


def _reference(name: str, values: list[str], kind: str) -> str:
    value = _single(name, values)
    if "," in value:
        raise SearchError(name, f"one {kind} per search")
    head, slash, ident = value.rpartition("/")
    if slash and head != kind:
        raise SearchError(name, f"must reference a {kind}: {kind}/<id> or the bare id")
    return ident if slash else value


def _patient(values: dict[str, list[str]]) -> uuid.UUID | None:
    found: uuid.UUID | None = None
    for name in ("patient", "subject"):
        if name not in values:
            continue
        ident = _reference(name, values[name], "Patient")
        if not _UUID_RE.fullmatch(ident):
            raise SearchError(name, "a patient id is a UUID")
        pid = uuid.UUID(ident)
        if found is not None and pid != found:
            raise SearchError(name, "patient and subject name different patients")
        found = pid
    return found


def _count(
    values: dict[str, list[str]],
    name: str = "_count",
    default: int = DEFAULT_COUNT,
    low: int = 0,
    high: int | None = MAX_COUNT,
    clamp: bool = True,
) -> int:
    if name not in values:
        return default
    text = _single(name, values[name])
    if not _COUNT_RE.fullmatch(text):
        raise SearchError(name, f"must be a whole number, not {text!r}")
    n = int(text)
    if n < low:
        raise SearchError(name, f"must be at least {low}")
    if high is not None and n > high:
        if not clamp:
            raise SearchError(name, f"must be at most {high}")
        n = high
    return n


def _summary(values: dict[str, list[str]]) -> bool:
    if "_summary" not in values:
        return False
    text = _single("_summary", values["_summary"])
    if text == "count":
        return True
    if text == "false":
        return False
    raise SearchError(
        "_summary", f"only count and false are supported, not {text!r}", "not-supported"
    )


def _split(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def _code_types(values: list[str], unknown: list[str], union: bool) -> frozenset[str]:
    """Types the `code` values find: OR within a value, AND (or OR if `union`) across."""
    result: frozenset[str] | None = None
    for value in values:
        found: set[str] = set()
        for token in _split(value):
            system, bar, code = token.rpartition("|")
            name = type_for_code(code, system) if bar else type_for_code(code)
            if name is None:
                unknown.append(token)
            else:
                found.add(name)
        if result is None:
            result = frozenset(found)
        else:
            result = result | found if union else result & found
    return result if result is not None else frozenset()


def _category_types(values: list[str], unknown: list[str]) -> tuple[frozenset[str], frozenset[str]]:
    types: frozenset[str] | None = None
    categories: set[str] = set()
    for value in values:
        found: set[str] = set()
        for token in _split(value):
            system, bar, code = token.rpartition("|")
            if (not bar or system == CATEGORY_SYSTEM) and code in _CATEGORY_TYPES:
                found |= _CATEGORY_TYPES[code]
                categories.add(code)
            else:
                unknown.append(f"category={token}")
        types = frozenset(found) if types is None else types & found
    return types or frozenset(), frozenset(categories)


def _narrow(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    return a if b is None else a & b


def _zone(tz: str | tzinfo) -> tzinfo:
    return ZoneInfo(tz) if isinstance(tz, str) else tz


# --- dates ----------------------------------------------------------------------------


def _localise(naive: datetime, zone: tzinfo) -> datetime:
    return naive.replace(tzinfo=zone).astimezone(UTC)


def date_range(text: str, tz: str | tzinfo = DEFAULT_TZ) -> tuple[datetime, datetime | None]:
    """The UTC range [low, high) a FHIR date search value (no prefix) stands for.

    `high` is None past the year 9999. Raises ValueError when `text` is not a date.
    """
    zone = _zone(tz)
    text = re.sub(r" ([0-9]{2}:[0-9]{2})$", r"+\1", text)
    m = _DATE_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not a FHIR date or dateTime")
    y = int(m["y"])
    try:
        if m["H"] is None:
            if m["m"] is None:
                start, nxt = date(y, 1, 1), (y + 1, 1, 1)
            elif m["d"] is None:
                mo = int(m["m"])
                start = date(y, mo, 1)
                nxt = (y + 1, 1, 1) if mo == 12 else (y, mo + 1, 1)
            else:
                start = date(y, int(m["m"]), int(m["d"]))
                after = start + timedelta(days=1) if start < date.max else None
                nxt = (after.year, after.month, after.day) if after else (10_000, 1, 1)
            low = _localise(datetime(start.year, start.month, start.day), zone)
            high = _localise(datetime(*nxt), zone) if nxt[0] <= 9999 else None
            return low, high
        if m["tz"] is None:
            when_zone: tzinfo = zone
        elif m["tz"] == "Z":
            when_zone = UTC
        else:
            sign = -1 if m["tz"][0] == "-" else 1
            hours, minutes = int(m["tz"][1:3]), int(m["tz"][4:6])
            if hours > 14 or minutes > 59:
                raise ValueError(f"{text!r} has an impossible offset")
            when_zone = timezone(sign * timedelta(hours=hours, minutes=minutes))
        fraction = m["f"]
        micro = int(fraction.ljust(6, "0")) if fraction else 0
        naive = datetime(
            y, int(m["m"]), int(m["d"]), int(m["H"]), int(m["M"]), int(m["S"] or 0), micro
        )
        low = _localise(naive, when_zone)
        if m["S"] is None:
            step = timedelta(minutes=1)
        elif fraction is None:
            step = timedelta(seconds=1)
        else:
            step = timedelta(microseconds=10 ** (6 - len(fraction)))
        try:
            return low, low + step
        except OverflowError:
            return low, None
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"{text!r} is not a valid date: {exc}") from exc


def _date_bounds(
    values: list[str], zone: tzinfo, name: str = "date"
) -> tuple[datetime | None, datetime | None]:
    low: datetime | None = None
    high: datetime | None = None
    for value in values:
        prefix = value[:2] if value[:2].isalpha() else "eq"
        text = value[2:] if value[:2].isalpha() else value
        if prefix not in _PREFIXES:
            raise SearchError(name, f"unknown prefix {prefix!r}")
        if prefix not in _SUPPORTED_PREFIXES:
            raise SearchError(
                name,
                f"the prefix {prefix!r} is unsupported (use eq, ge, gt, le or lt)",
                "not-supported",
            )
        try:
            start, end = date_range(text, zone)
        except ValueError as exc:
            raise SearchError(name, str(exc)) from exc
        lo: datetime | None
        hi: datetime | None
        if prefix == "eq":
            lo, hi = start, end
        elif prefix == "ge":
            lo, hi = start, None
        elif prefix == "gt":
            lo, hi = (end, None) if end is not None else (datetime.max.replace(tzinfo=UTC), None)
        elif prefix == "le":
            lo, hi = None, end
        else:  # lt
            lo, hi = None, start
        if lo is not None and (low is None or lo > low):
            low = lo
        if hi is not None and (high is None or hi < high):
            high = hi
    return low, high


# --- Observation ----------------------------------------------------------------------

_OBSERVATION_PARAMS = frozenset(
    {"patient", "subject", "code", "date", "category", "device", "_count", "_sort",
     "_summary", "_cursor", "_lastUpdated"}
)  # fmt: skip


def parse_observation_search(
    params: Params,
    *,
    tz: str | tzinfo = DEFAULT_TZ,
    lenient: bool = False,
    cursor_key: bytes | str | None = None,
) -> ObservationQuery:
    """Parse an Observation search; unknown parameters are errors unless `lenient`."""
    zone = _zone(tz)
    values, ignored = _collect(params, _OBSERVATION_PARAMS, lenient)
    unknown: list[str] = []
    types = _code_types(values["code"], unknown, union=False) if "code" in values else None
    categories = None
    if "category" in values:
        cat_types, categories = _category_types(values["category"], unknown)
        types = _narrow(types, cat_types)
    device = None
    if "device" in values:
        device = _reference("device", values["device"], "Device")
        if not _DEVICE_ID_RE.fullmatch(device):
            raise SearchError("device", "not a device id")
    low, high = _date_bounds(values.get("date", []), zone)
    updated_low, updated_high = _date_bounds(values.get("_lastUpdated", []), zone, "_lastUpdated")
    descending = True
    if "_sort" in values:
        sort = _single("_sort", values["_sort"])
        if sort not in ("date", "-date"):
            raise SearchError(
                "_sort", f"only date and -date are supported, not {sort!r}", "not-supported"
            )
        descending = sort == "-date"
    cursor = None
    if "_cursor" in values:
        try:
            cursor = decode_cursor(_single("_cursor", values["_cursor"]), cursor_key)
        except ValueError as exc:
            raise SearchError("_cursor", "not a valid paging cursor") from exc
    return ObservationQuery(
        patient=_patient(values),
        types=types,
        categories=categories,
        unknown_codes=tuple(dict.fromkeys(unknown)),
        device=device,
        date_low=low,
        date_high=high,
        count=_count(values),
        descending=descending,
        summary_count=_summary(values),
        cursor=cursor,
        ignored=ignored,
        updated_low=updated_low,
        updated_high=updated_high,
    )


_LASTN_PARAMS = frozenset({"patient", "subject", "code", "category", "max"})


def parse_lastn(params: Params, *, lenient: bool = False) -> LastnQuery:
    """Parse Observation/$lastn: patient required; codes (repeated or comma) OR; max >= 1."""
    values, ignored = _collect(params, _LASTN_PARAMS, lenient)
    patient = _patient(values)
    if patient is None:
        raise SearchError("patient", "$lastn needs a patient", "required")
    unknown: list[str] = []
    types = _code_types(values["code"], unknown, union=True) if "code" in values else None
    categories = None
    if "category" in values:
        cat_types, categories = _category_types(values["category"], unknown)
        types = _narrow(types, cat_types)
    return LastnQuery(
        patient=patient,
        types=types,
        categories=categories,
        unknown_codes=tuple(dict.fromkeys(unknown)),
        max=_count(values, "max", default=1, low=1, high=MAX_LASTN, clamp=False),
        ignored=ignored,
    )


# --- Patient, Device, Flag, Task ------------------------------------------------------

_PATIENT_PARAMS = frozenset({"identifier", "_count", "_summary"})


def parse_patient_search(params: Params, *, lenient: bool = False) -> PatientQuery:
    """Parse a Patient search: ``identifier=<system>|<12 digits>`` or the digits alone.

    The personnummer and samordningsnummer URIs and their ``urn:oid:`` forms are
    accepted; ``YYYYMMDD-NNNN`` is read as the 12 digits.
    """
    values, ignored = _collect(params, _PATIENT_PARAMS, lenient)
    kind = pnr = None
    no_match = False
    if "identifier" in values:
        value = _single("identifier", values["identifier"])
        if "," in value:
            raise SearchError("identifier", "one identifier per search")
        system, bar, ident = value.rpartition("|")
        if bar and system not in _PNR_SYSTEMS:
            no_match = True
        else:
            kind = _PNR_SYSTEMS.get(system) if bar else None
            if not _PNR_RE.fullmatch(ident):
                raise SearchError(
                    "identifier", "a personnummer or samordningsnummer has 12 digits (YYYYMMDDNNNC)"
                )
            pnr = ident.replace("-", "")
    return PatientQuery(
        personnummer=pnr,
        identifier_kind=kind,
        no_match=no_match,
        count=_count(values),
        summary_count=_summary(values),
        ignored=ignored,
    )


_DEVICE_PARAMS = frozenset({"patient", "identifier", "_count", "_summary"})


def parse_device_search(params: Params, *, lenient: bool = False) -> DeviceQuery:
    """Parse a Device search: ``patient`` and ``identifier`` (``urn:egenmon:device|<id>``)."""
    values, ignored = _collect(params, _DEVICE_PARAMS, lenient)
    device_id = None
    no_match = False
    identifier = None
    if "identifier" in values:
        value = _single("identifier", values["identifier"])
        if "," in value:
            raise SearchError("identifier", "one identifier per search")
        system, bar, ident = value.rpartition("|")
        if bar and value.startswith(EUI64_SYSTEM + "|"):
            # A PHD's IEEE 11073 system id, as gateways name devices (issue 17).
            ident = value[len(EUI64_SYSTEM) + 1 :]
            if not ident or len(ident) > 200:
                raise SearchError("identifier", "a system id of at most 200 characters")
            identifier = (EUI64_SYSTEM, ident)
        elif bar and system != DEVICE_ID_SYSTEM:
            no_match = True
        elif not _DEVICE_ID_RE.fullmatch(ident):
            raise SearchError("identifier", "not a device id")
        else:
            device_id = ident
    return DeviceQuery(
        patient=_patient(values),
        device_id=device_id,
        no_match=no_match,
        count=_count(values),
        summary_count=_summary(values),
        ignored=ignored,
        identifier=identifier,
    )


_ALERT_PARAMS = frozenset({"patient", "status", "_count", "_summary", "_lastUpdated"})


def parse_alert_search(
    params: Params, resource: str, *, lenient: bool = False, tz: str | tzinfo = DEFAULT_TZ
) -> AlertQuery:
    """Parse a Flag or Task search (`resource`): ``patient``, ``status``, ``_lastUpdated``.

    The FHIR statuses are turned into the alert statuses behind them (see
    `egenmon.fhir.render.FLAG_STATUS` and `TASK_STATUS`).
    """
    if resource not in _RESOURCE_STATUSES:
        raise ValueError(f"alerts are served as Flag or Task, not {resource}")
    values, ignored = _collect(params, _ALERT_PARAMS, lenient)
    statuses: frozenset[str] | None = None
    valid = _RESOURCE_STATUSES[resource]
    for value in values.get("status", []):
        found: set[str] = set()
        for token in _split(value):
            system, bar, code = token.rpartition("|")
            if bar and system not in ("", _STATUS_SYSTEMS[resource]):
                raise SearchError("status", f"unknown code system {system!r}")
            if code not in valid:
                raise SearchError("status", f"{code!r} is not a {resource} status")
            found |= _ALERT_STATUSES_FOR[resource].get(code, frozenset())
        statuses = frozenset(found) if statuses is None else statuses & found
    low, high = _date_bounds(values.get("_lastUpdated", []), _zone(tz), "_lastUpdated")
    return AlertQuery(
        patient=_patient(values),
        statuses=statuses,
        count=_count(values),
        summary_count=_summary(values),
        ignored=ignored,
        updated_low=low,
        updated_high=high,
    )


# --- AuditEvent -----------------------------------------------------------------------

AUDIT_ACTION_SYSTEM = "http://hl7.org/fhir/audit-event-action"
AUDIT_ACTIONS = frozenset({"C", "R", "U", "D", "E"})
_AUDIT_PARAMS = frozenset({"patient", "agent", "date", "action", "_count", "_summary"})
_AGENT_RE = re.compile(r"[^\x00-\x1f\x7f]{1,256}")


@dataclass(frozen=True)
class AuditQuery:
    """An AuditEvent search: `actions` are FHIR action codes (C, R, U, D, E), None when
    not narrowed and empty when the codes asked for exclude each other."""

    patient: uuid.UUID | None = None
    agent: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    actions: frozenset[str] | None = None
    count: int = DEFAULT_COUNT
    summary_count: bool = False
    ignored: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return self.actions is not None and not self.actions


def parse_audit_search(
    params: Params, *, tz: str | tzinfo = DEFAULT_TZ, lenient: bool = False
) -> AuditQuery:
    """Parse an AuditEvent search: ``patient``, ``agent`` (the actor as the log names
    it: a user name, a token's subject or a client id), ``date`` (prefixes), ``action``
    (C, R, U, D, E; a comma is OR, repeating is AND)."""
    values, ignored = _collect(params, _AUDIT_PARAMS, lenient)
    agent = None
    if "agent" in values:
        agent = _single("agent", values["agent"])
        if not _AGENT_RE.fullmatch(agent):
            raise SearchError("agent", "must be 1 to 256 printable characters")
    actions: frozenset[str] | None = None
    for value in values.get("action", []):
        found: set[str] = set()
        for token in _split(value):
            system, bar, code = token.rpartition("|")
            if bar and system not in ("", AUDIT_ACTION_SYSTEM):
                raise SearchError("action", f"unknown code system {system!r}")
            if code not in AUDIT_ACTIONS:
                raise SearchError("action", f"{code!r} is not C, R, U, D or E")
            found.add(code)
        actions = frozenset(found) if actions is None else actions & found
    since, until = _date_bounds(values.get("date", []), _zone(tz))
    return AuditQuery(
        patient=_patient(values),
        agent=agent,
        since=since,
        until=until,
        actions=actions,
        count=_count(values),
        summary_count=_summary(values),
        ignored=ignored,
    )
