"""One rule cycle: fetch every patient's recent readings set-based, evaluate, reconcile.

Fetching: one server-side cursor streams the readings each type's rules look at (SpO2 for
the 14-day baseline, blood pressure for the 7-day home series, weight for 3 days, the rest
for 36 hours, each widened by LATE_AFTER), sorted by patient, each marked new when it
arrived after the last cycle's high-water mark; patients with a new reading measured
before that (a late upload) have their earlier readings fetched in one more query; plans
and bound devices come in one query each; the newest reading of an expected type that has
none in its window comes from one lateral query per few thousand patients, and so do
NEWS2 values too old to score. Never one query per patient. Readings are grouped by
patient in Python and the pure rules run on each group: `evaluate_patient` at the scan
time, and `evaluate_at` at the measurement time of each new reading (the windows ending
there), so a late reading is judged as if it had arrived on time; the worst finding per
alert key is kept.

With many patients the id space is split into ranges evaluated by worker processes (the
rules are CPU-bound Python); their findings are reconciled together in one transaction,
with the new high-water mark, so a failed scan changes no alert and reads the same
readings again.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import itertools
import logging
import multiprocessing
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import psycopg

from egenmon.alerts import lifecycle, notify
from egenmon.alerts.plans import Plan, build_plan
from egenmon.alerts.rules import (
    DEVICE_WINDOW,
    DeviceStatus,
    Finding,
    Reading,
    evaluate_at,
    evaluate_patient,
    merge_findings,
)
from egenmon.alerts.rules.findings import CLOCK_SKEW
from egenmon.alerts.rules.news2 import FRESHNESS, news2_summary, with_stale
from egenmon.alerts.rules.news2 import SOURCES as NEWS2_SOURCES
from egenmon.alerts.rules.spo2 import BASELINE_WINDOW
from egenmon.alerts.rules.threshold import THRESHOLD_WINDOW
from egenmon.alerts.rules.trend import BP_SERIES_DAYS, WEIGHT_LOOKBACK
from egenmon.domain.ids import observation_id
from egenmon.domain.measurements import TYPES
from egenmon.domain.readings import entered_source
from egenmon.store import alerts, scheduler
from egenmon.store import devices as devices_store
from egenmon.store import patients as patients_store
from egenmon.store import plans as plans_store
from egenmon.store import readings as readings_store

log = logging.getLogger("egenmon.alerts.engine")

# Readings new since the last cycle (by arrival) are anchors: every windowed rule is also
# evaluated at their measurement time. A new reading measured within LATE_AFTER of the
# scan finds everything its windows need in the streamed window below; an older one
# ("late") has its patient's earlier readings fetched as well (LATE_LOOKBACK before it).
LATE_AFTER = dt.timedelta(hours=12)
LATE_LOOKBACK = BASELINE_WINDOW + dt.timedelta(days=1)
# An anchor that is the newest reading of its type, measured this close to the scan, is
# judged by the scan-time evaluation already.
ON_TIME = dt.timedelta(minutes=15)
# Arrivals this close before the last cycle's high-water mark count as new again: a
# transaction may commit a reading received a little before another one already seen.
# Evaluating a reading twice changes nothing.
ARRIVAL_OVERLAP = dt.timedelta(minutes=5)
# With no cycle recorded yet (a new installation, or the first cycle after this version),
# readings received this long before the scan are new; earlier ones had their cycles.
FIRST_LOOKBACK = dt.timedelta(minutes=15)
# How far back each type's rules look (by measurement time), widened by LATE_AFTER for the
# anchors; other types: threshold and NEWS2 windows. Missing data finds older readings
# through the `latest` lookup.
WINDOWS: dict[str, dt.timedelta] = {
    "spo2": BASELINE_WINDOW + LATE_AFTER,
    # 7 calendar days before an anchor's day (23- to 25-hour days).
    "blood_pressure": dt.timedelta(days=BP_SERIES_DAYS + 1, hours=2),
    "body_weight": WEIGHT_LOOKBACK + LATE_AFTER,
}
DEFAULT_WINDOW = max(THRESHOLD_WINDOW, FRESHNESS + LATE_AFTER)
# NEWS2 reads the newest of each of these types.
NEWS2_TYPES = frozenset(
    {"respiratory_rate", "spo2", "blood_pressure", "heart_rate", "body_temperature"}
)
# Types whose rules read a series rather than the newest reading, by protocol
# (evaluate_patient: spo2_drop for everyone, trend_bp_mean for hypertension, trend_weight
# for heart failure).
_SERIES: dict[str | None, frozenset[str]] = {
    None: frozenset({"spo2"}),
    "hypertension": frozenset({"spo2", "blood_pressure"}),
    "heart_failure": frozenset({"spo2", "body_weight"}),
}
# Devices whose last message the registry knows as recent need no lookup in readings.
DEVICE_LOOKBACK = dt.timedelta(days=14)
LATEST_BATCH = 2000
# Worker processes pay off only when there are many patients to evaluate.
PARALLEL_FROM_PATIENTS = 20_000
MAX_WORKERS = 4


@dataclass
class Scan:
    """Findings of one scan: (patient id, finding), and how much was looked at."""

    findings: list[tuple[uuid.UUID, Finding]] = field(default_factory=list)
    patients: int = 0
    readings: int = 0
    errors: int = 0
    anchors: int = 0  # measurement times evaluated besides the scan time
    # (patient, key) of findings made only at an earlier measurement time, not now.
    past: set[tuple[uuid.UUID, str]] = field(default_factory=set)

    def add(self, other: Scan) -> None:
        self.findings += other.findings
        self.past |= other.past
        self.patients += other.patients
        self.readings += other.readings
        self.errors += other.errors
        self.anchors += other.anchors


@dataclass
class CycleResult:
    opened: list[dict[str, Any]]
    updated: list[dict[str, Any]]
    escalated: list[dict[str, Any]]
    cleared: list[dict[str, Any]]
    patients: int
    readings_in_window: int
    anchors: int
    findings: int
    errors: int
    workers: int
    seconds: float
    scan_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> dict[str, Any]:
        """Counts only, for the scheduler's run log."""
        return {
            "opened": len(self.opened),
            "updated": len(self.updated),
            "escalated": len(self.escalated),
            "cleared": len(self.cleared),
            "patients": self.patients,
            "readings_in_window": self.readings_in_window,
            "anchors": self.anchors,
            "findings": self.findings,
            "errors": self.errors,
            "workers": self.workers,
            "seconds": round(self.seconds, 3),
        }


class PlanCache:
    """Plans from their stored documents; identical documents are parsed once."""

    def __init__(self) -> None:
        self._base: dict[str, Plan] = {}
        self.general = build_plan("general")

    def plan(self, doc: str) -> Plan:
        """The plan of a document, without who set it and when (shared, do not change)."""
        base = self._base.get(doc)
        if base is None:
            base = Plan.from_dict(orjson.loads(doc))
            self._base[doc] = base
        return base


def _dated(plan: Plan, set_at: dt.datetime | None) -> Plan:
    # The rules read when a plan was set only to give a type never measured its grace
    # (missing data counted from the plan's start): only then is the shared plan copied.
    return plan if set_at is None else dataclasses.replace(plan, set_at=set_at)


def _connect(url: str) -> psycopg.Connection:
    # UTC session: times arrive as UTC datetimes, the cheapest form for the rules.
    return psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC")


def scan(
    url: str,
    now: dt.datetime,
    tz: dt.tzinfo,
    lo: uuid.UUID | None = None,
    hi: uuid.UUID | None = None,
    new_since: dt.datetime | None = None,
) -> Scan:
    """Evaluate every patient with a plan or recent readings whose id is in [lo, hi).

    Readings received after `new_since` are new: every windowed rule is evaluated at
    their measurement times too (None: those received in the FIRST_LOOKBACK before now).
    """
    now = now.astimezone(dt.UTC)
    until = now + CLOCK_SKEW
    since = {t: now - w for t, w in WINDOWS.items()}
    if new_since is None:
        new_since = now - FIRST_LOOKBACK
    result = Scan()
    plans_cache = PlanCache()
    with _connect(url) as conn, _connect(url) as side:
        plans = {pid: (doc, at) for pid, doc, _, at in plans_store.load_plans(conn, lo, hi)}
        devices: dict[str, list[DeviceStatus]] = defaultdict(list)
        for pid, device_id, last_seen, bound_since in devices_store.load_devices(
            conn, now, now - DEVICE_WINDOW, now - DEVICE_LOOKBACK, lo, hi
        ):
            devices[pid].append(DeviceStatus(device_id, last_seen, bound_since))
        # Patients with new readings measured before the window: their earlier readings.
        late: dict[str, list[tuple]] = defaultdict(list)
        for row in readings_store.late_rows(
            conn,
            since,
            now - DEFAULT_WINDOW,
            until,
            new_since,
            now - LATE_AFTER,
            LATE_LOOKBACK,
            lo,
            hi,
        ):
            late[row[0]].append(row)
        pending: list[tuple] = []
        set_at: dict[str, dt.datetime] = {}

        def plan_of(pid: str) -> Plan:
            stored = plans.pop(pid, None)
            if stored is None:
                return plans_cache.general
            set_at[pid] = stored[1]
            return plans_cache.plan(stored[0])

        def evaluate(
            pid: str,
            plan: Plan,
            readings: list[Reading],
            stored: list[tuple],
            latest: dict[str, dt.datetime] | None,
            anchors: list[tuple[dt.datetime, set[str]]],
        ) -> None:
            result.patients += 1
            try:
                found = evaluate_patient(
                    readings, plan, now, devices.get(pid, ()), tz=tz, latest=latest
                )
                past: set[str] = set()
                if anchors:
                    present = {f.key for f in found}
                    pairs = [(f, now) for f in found]
                    for at, types in anchors:
                        pairs += [(f, at) for f in evaluate_at(readings, plan, at, types, tz=tz)]
                    found = merge_findings(pairs)
                    past = {f.key for f in found} - present
                if found:
                    patient = uuid.UUID(pid)
                    result.findings.extend((patient, _with_ids(f, stored)) for f in found)
                    result.past.update((patient, key) for key in past)
            except Exception as e:  # noqa: BLE001  one patient's bad data must not hide everyone else's
                result.errors += 1
                log.error("rules failed for patient %s: %s", pid, type(e).__name__)

        def consider(pid: str, plan: Plan, stored: list[tuple]) -> None:
            anchors = _anchors(stored, now)
            result.anchors += len(anchors)
            readings = _every(stored) if anchors else _relevant(stored, plan)
            if plan.expected:
                present = {r.type for r in readings}
                absent = [t for t in plan.expected if t not in present]
                if absent:
                    plan = _dated(plan, set_at.get(pid))
                    pending.append((pid, plan, readings, stored, absent, anchors))
                    if len(pending) >= LATEST_BATCH:
                        flush()
                    return
            evaluate(pid, plan, readings, stored, None, anchors)

        def flush() -> None:
            pairs = [(p[0], t, TYPES[t].loinc) for p in pending for t in p[4]]
            latest = readings_store.latest_times(side, pairs, until)
            for pid, plan, readings, stored, absent, anchors in pending:
                found = {t: latest[(pid, t)] for t in absent if (pid, t) in latest}
                evaluate(pid, plan, readings, stored, found, anchors)
            pending.clear()

        rows = readings_store.stream_window(
            conn, since, now - DEFAULT_WINDOW, until, lo, hi, new_since
        )
        for pid, group in itertools.groupby(rows, key=itemgetter(0)):
            stored = late.pop(pid, [])
            stored.extend(group)
            result.readings += len(stored)
            consider(pid, plan_of(pid), stored)
        # Patients whose only readings in reach came late.
        for pid in list(late):
            stored = late.pop(pid)
            result.readings += len(stored)
            consider(pid, plan_of(pid), stored)
        # Patients with a plan and nothing in the window: missing data, silent devices.
        for pid in list(plans):
            consider(pid, plan_of(pid), [])
        if pending:
            flush()
        _add_stale(side, result, now, until)
    return result


def _add_stale(
    conn: psycopg.Connection, result: Scan, now: dt.datetime, until: dt.datetime
) -> None:
    """NEWS2 findings at scan time show parameters measured before the window as stale,
    with their value and age, instead of missing: one query for all of them."""
    pairs: list[tuple[str, str, str]] = []
    todo: list[int] = []
    for i, (pid, f) in enumerate(result.findings):
        if f.rule != "news2" or (pid, f.key) in result.past:
            continue
        params = [p for p in f.details.get("missing", ()) if p in NEWS2_SOURCES]
        if params:
            todo.append(i)
            pairs += [(str(pid), NEWS2_SOURCES[p], TYPES[NEWS2_SOURCES[p]].loinc) for p in params]
    if not pairs:
        return
    found = readings_store.latest_values(conn, pairs, until)
    for i in todo:
        pid, f = result.findings[i]
        older = {
            p: found[(str(pid), t)]
            for p, t in NEWS2_SOURCES.items()
            if p in f.details["missing"] and (str(pid), t) in found
        }
        if older:
            details = with_stale(f.details, older, now)
            result.findings[i] = (
                pid,
                dataclasses.replace(f, details=details, summary=news2_summary(details)),
            )


def _anchors(stored: list[tuple], now: dt.datetime) -> list[tuple[dt.datetime, set[str]]]:
    """The measurement times to evaluate the windowed rules at: those of new readings
    (row[7]), with the types measured then. The newest reading of a type measured within
    ON_TIME of the scan is left to the scan-time evaluation."""
    if not any(r[7] for r in stored):
        return []
    newest: dict[str, dt.datetime] = {}
    for r in stored:
        t = newest.get(r[2])
        if t is None or r[1] > t:
            newest[r[2]] = r[1]
    latest = now + CLOCK_SKEW
    out: dict[dt.datetime, set[str]] = {}
    for r in stored:
        if not r[7] or r[1] > latest:
            continue
        if r[1] == newest[r[2]] and now - r[1] <= ON_TIME:
            continue
        out.setdefault(r[1], set()).add(r[2])
    return sorted(out.items(), key=itemgetter(0))


# Readings carry a stand-in id during evaluation ("\0" and their place in the patient's
# rows; PostgreSQL text cannot hold NUL, so a stand-in that escaped would fail loudly);
# only the findings' ids are turned into observation ids, which spares hashing every
# reading's dedup key.
_STAND_INS = [f"\0{i}" for i in range(4096)]


def _stand_in(i: int) -> str:
    return _STAND_INS[i] if i < len(_STAND_INS) else f"\0{i}"


def _every(stored: list[tuple]) -> list[Reading]:
    """Every reading, as rule readings with stand-in ids (a patient with anchors)."""
    return [Reading(_stand_in(i), r[1], r[2], r[3], r[4], r[5]) for i, r in enumerate(stored)]


def _relevant(stored: list[tuple], plan: Plan) -> list[Reading]:
    """The readings the rules can use, as rule readings with stand-in ids.

    Every reading of a type whose rule looks at a series (SpO2 for everyone, blood
    pressure for hypertension, weight for heart failure); of any other type only the
    newest, the one threshold, NEWS2 and missing data read. Sparing the rest their
    conversions is most of the cost of a cycle.
    """
    series = _SERIES.get(plan.protocol, _SERIES[None])
    out = []
    newest: dict[str, int] = {}
    for i, r in enumerate(stored):
        type_ = r[2]
        if type_ in series:
            out.append(Reading(_stand_in(i), r[1], r[2], r[3], r[4], r[5]))
            continue
        j = newest.get(type_)
        # Two readings at the same instant: the one stored first (rare: two devices).
        if j is None or r[1] > stored[j][1]:
            newest[type_] = i
    for i in newest.values():
        r = stored[i]
        out.append(Reading(_stand_in(i), r[1], r[2], r[3], r[4], r[5]))
    return out


def _with_ids(finding: Finding, stored: list[tuple]) -> Finding:
    """The finding with observation ids in place of stand-ins (evidence and details)."""

    def real(value: Any) -> Any:
        if isinstance(value, str):
            if value.startswith("\0"):
                row = stored[int(value[1:])]
                return observation_id(row[1], row[6])
            return value
        if isinstance(value, dict):
            return {k: real(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(real(v) for v in value)
        return value

    details = real(finding.details)
    # Readings entered without a device say so (patient-entered, staff-entered, fhir).
    entered = {
        entered_source(stored[int(e[1:])][6]) for e in finding.evidence if e.startswith("\0")
    }
    if len(entered) == 1 and None not in entered:
        details = {**details, "source": entered.pop()}
    return dataclasses.replace(finding, evidence=real(finding.evidence), details=details)


def _scan_range(args: tuple) -> Scan:
    url, now, tz, lo, hi, new_since = args
    return scan(url, now, ZoneInfo(tz), lo, hi, new_since)


def partitions(n: int) -> list[tuple[uuid.UUID | None, uuid.UUID | None]]:
    """n contiguous ranges of the uuid space, [lo, hi) (None: unbounded)."""
    if n <= 1:
        return [(None, None)]
    bounds = [uuid.UUID(int=i * (1 << 128) // n) for i in range(1, n)]
    return list(zip([None, *bounds], [*bounds, None], strict=True))


def choose_workers(url: str) -> int:
    """1, or worker processes (up to the CPUs) when there are many patients."""
    cpus = os.cpu_count() or 1
    if cpus < 2:
        return 1
    with _connect(url) as conn:
        n = patients_store.count_patients(conn)
    return min(cpus, MAX_WORKERS) if n >= PARALLEL_FROM_PATIENTS else 1


def scan_all(
    url: str,
    now: dt.datetime,
    tz: ZoneInfo,
    workers: int,
    new_since: dt.datetime | None = None,
) -> Scan:
    """Every patient, in `workers` processes (1: in this thread)."""
    if workers <= 1:
        return scan(url, now, tz, new_since=new_since)
    total = Scan()
    ctx = multiprocessing.get_context("spawn")  # no fork of a threaded, async process
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        jobs = [(url, now, tz.key, lo, hi, new_since) for lo, hi in partitions(workers)]
        for part in pool.map(_scan_range, jobs):
            total.add(part)
    return total


def finding_rows(
    findings: Iterable[tuple[uuid.UUID, Finding]],
    now: dt.datetime,
    tz: dt.tzinfo,
    past: set[tuple[uuid.UUID, str]] | frozenset = frozenset(),
) -> list[tuple]:
    """Findings as rows of alerts.FINDING_COLUMNS (`past`: those not found at scan time)."""
    rows = []
    for pid, f in findings:
        until = lifecycle.evidence_until(f.evidence)
        details = f.details
        if until is not None and "measured_at" not in details:
            # When the deviation happened (its newest evidence), not when it was noticed.
            details = {**details, "measured_at": until.astimezone(dt.UTC).isoformat()}
        rows.append(
            (
                pid,
                f.key,
                f.rule,
                lifecycle.category(f.rule),
                f.severity,
                f.summary,
                details,
                list(f.evidence),
                list(lifecycle.basis(f)),
                until,
                lifecycle.due_at(f.severity, now, tz),
                (pid, f.key) not in past,
            )
        )
    return rows


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    out = {
        "id": str(row["id"]),
        "patient_id": str(row["patient_id"]),
        "rule": row["rule"],
        "key": row["key"],
        "category": row["category"],
        "severity": row["severity"],
    }
    if row.get("open_reason") and row["open_reason"] != "first":
        out["reason"] = row["open_reason"]
        out["previous"] = str(row["previous_id"]) if row.get("previous_id") else None
    if row.get("old_severity") and row["old_severity"] != row["severity"]:
        out["from"] = row["old_severity"]
    return out


def run_cycle(
    url: str,
    *,
    tz: ZoneInfo,
    now: dt.datetime | None = None,
    workers: int | None = None,
) -> CycleResult:
    """Scan every patient and reconcile the alerts with what was found."""
    from egenmon import metrics

    start = time.perf_counter()
    now = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    n = choose_workers(url) if workers is None else max(1, workers)
    with _connect(url) as conn:
        seen_until, received_until = scheduler.scan_marks(conn, now)
    # New: received since the last cycle's high-water mark (with an overlap for readings
    # committed late), or in the first lookback when no cycle has run.
    new_since = now - FIRST_LOOKBACK if seen_until is None else seen_until - ARRIVAL_OVERLAP
    found = scan_all(url, now, tz, n, new_since)
    scanned = time.perf_counter()
    # Deduplicate per (patient, key): the rules give one finding per key already.
    unique: dict[tuple[uuid.UUID, str], Finding] = {}
    for pid, f in found.findings:
        unique.setdefault((pid, f.key), f)
    rows = finding_rows(((pid, f) for (pid, _), f in unique.items()), now, tz, found.past)
    with _connect(url) as conn:
        changes = alerts.reconcile(
            conn, rows, now, notify.payload, lifecycle.EPISODE_GAPS, received_until=received_until
        )
    for r in changes["opened"]:
        metrics.ALERTS_OPENED.labels(rule=r["rule"]).inc()
        event = "reopened" if r.get("previous_id") else "opened"
        metrics.ALERT_CHANGES.labels(rule=r["rule"], event=event).inc()
        log.info(
            "alert %s rule=%s severity=%s alert=%s patient=%s reason=%s",
            event,
            r["rule"],
            r["severity"],
            r["id"],
            r["patient_id"],
            r.get("open_reason"),
        )
    for r in changes["escalated"]:
        metrics.ALERT_CHANGES.labels(rule=r["rule"], event="escalated").inc()
        log.info(
            "alert escalated rule=%s severity=%s from=%s alert=%s patient=%s",
            r["rule"],
            r["severity"],
            r["old_severity"],
            r["id"],
            r["patient_id"],
        )
    return CycleResult(
        opened=[_brief(r) for r in changes["opened"]],
        updated=[_brief(r) for r in changes["updated"]],
        escalated=[_brief(r) for r in changes["escalated"]],
        cleared=[_brief(r) for r in changes["cleared"]],
        patients=found.patients,
        readings_in_window=found.readings,
        anchors=found.anchors,
        findings=len(rows),
        errors=found.errors,
        workers=n,
        seconds=time.perf_counter() - start,
        scan_seconds=scanned - start,
    )
