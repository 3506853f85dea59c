"""What the pages show, from plain values: the worklist's order and filters, what
triggered an alert, chart data with limit bands, the NEWS2 breakdown and the plan.

Pure functions (no I/O), so the pages' logic is tested without a browser or a database.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from egenmon.alerts.plans import QUANTITIES, Plan, Threshold, parse_thresholds
from egenmon.alerts.rules.findings import RULES
from egenmon.alerts.rules.news2 import PARAMETERS as NEWS2_PARAMETERS
from egenmon.domain.measurements import TYPES
from egenmon.domain.severity import SEVERITIES as DOMAIN_SEVERITIES
from egenmon.domain.severity import SEVERITY_RANK
from egenmon.web.i18n import UNIT_DISPLAY, age, local_time, number, translate, value_text

# The most severe first, as the worklist shows them.
SEVERITIES = tuple(reversed(DOMAIN_SEVERITIES))
ACTIVE_STATUSES = ("open", "acknowledged")
STATUSES = ("open", "acknowledged", "resolved", "dismissed")
ACTIONS = ("acknowledge", "resolve", "dismiss")
TECHNICAL_RULES = frozenset({"device_inactive"})
CLINICAL_RULES = tuple(r for r in RULES if r not in TECHNICAL_RULES)
RANGES = (7, 30, 90)
DEFAULT_RANGE = 30

# Charts in the order a clinician scans them; blood pressure draws both pressures.
CHART_TYPES = (
    "blood_pressure",
    "body_weight",
    "spo2",
    "heart_rate",
    "body_temperature",
    "blood_glucose",
    "respiratory_rate",
)
# The types the issue asks a chart of even without data in range (others only with data).
ALWAYS_CHARTED = frozenset(CHART_TYPES) - {"respiratory_rate"}
SERIES: dict[str, tuple[tuple[str, str], ...]] = {
    t: tuple((q, col) for q, (tt, col) in QUANTITIES.items() if tt == t) for t in CHART_TYPES
}
CHART_DECIMALS = {"body_temperature": 1, "body_weight": 1, "blood_glucose": 1}
# Which charts an alert is marked on.
_ALERT_TYPES = {
    "trend_weight": ("body_weight",),
    "trend_bp_mean": ("blood_pressure",),
    "spo2_drop": ("spo2",),
    "news2": ("respiratory_rate", "spo2", "blood_pressure", "heart_rate", "body_temperature"),
}
# At most this many points per series are drawn raw; beyond it, means per time bucket.
MAX_POINTS = 720


# --- the worklist -------------------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    """The worklist's filters, from the query string (unknown values are ignored)."""

    tab: str = "clinical"
    severity: str = ""
    rule: str = ""
    status: str = ""
    mine: bool = False

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> Filters:
        tab = "technical" if query.get("tab") == "technical" else "clinical"
        severity = query.get("severity", "")
        rule = query.get("rule", "")
        status = query.get("status", "")
        rules = TECHNICAL_RULES if tab == "technical" else CLINICAL_RULES
        return cls(
            tab=tab,
            severity=severity if severity in SEVERITIES else "",
            rule=rule if rule in rules else "",
            status=status if status in ACTIVE_STATUSES else "",
            mine=query.get("mine") in ("1", "on", "true"),
        )

    def query(self, **changes: Any) -> str:
        """This filter as a query string, with some values changed."""
        values = {
            "tab": self.tab,
            "severity": self.severity,
            "rule": self.rule,
            "status": self.status,
            "mine": "1" if self.mine else "",
        }
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v})

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(TECHNICAL_RULES) if self.tab == "technical" else CLINICAL_RULES


def is_technical(alert: Mapping[str, Any]) -> bool:
    return alert["rule"] in TECHNICAL_RULES


def acted_by(alert: Mapping[str, Any], action: str) -> set[str]:
    """Who has taken `action` on the alert, from its notes."""
    out = set()
    for n in alert.get("notes") or ():
        if (
            isinstance(n, Mapping)
            and n.get("action") in (action, _STATUS_OF[action])
            and n.get("by")
        ):
            out.add(str(n["by"]))
    if action == "acknowledge" and alert.get("acknowledged_by"):
        out.add(str(alert["acknowledged_by"]))
    return out


def urgency_key(alert: Mapping[str, Any]) -> tuple[int, dt.datetime, str]:
    """Most urgent first: the highest severity, then the one waiting longest."""
    return (-SEVERITY_RANK.get(alert["severity"], 0), alert["opened_at"], str(alert["id"]))


def worklist(
    alerts: Iterable[Mapping[str, Any]], filters: Filters, me: str
) -> tuple[list[Mapping[str, Any]], dict[str, Any]]:
    """The alerts to list under `filters`, most urgent first, and the counts to show.

    counts: {"clinical": n, "technical": n, "by_severity": {severity: n}, "shown": n}; the
    tab totals and severities count every active alert of the tab, whatever the filters.
    """
    active = [a for a in alerts if a["status"] in ACTIVE_STATUSES]
    tab = [a for a in active if is_technical(a) == (filters.tab == "technical")]
    by_severity = {s: sum(1 for a in tab if a["severity"] == s) for s in SEVERITIES}
    shown = [
        a
        for a in tab
        if (not filters.severity or a["severity"] == filters.severity)
        and (not filters.rule or a["rule"] == filters.rule)
        and (not filters.status or a["status"] == filters.status)
        and (not filters.mine or me in acted_by(a, "acknowledge"))
    ]
    shown.sort(key=urgency_key)
    counts = {
        "clinical": sum(1 for a in active if not is_technical(a)),
        "technical": sum(1 for a in active if is_technical(a)),
        "by_severity": by_severity,
        "shown": len(shown),
        "total": len(tab),
    }
    return shown, counts


def _op(op: str) -> str:
    return {"<": "<", "<=": "≤", ">": ">", ">=": "≥"}.get(op, op)


def trigger_text(alert: Mapping[str, Any], locale: str) -> tuple[str, str]:
    """(the value that triggered the alert, a short explanation), as a clinician reads it."""
    d = alert.get("details") or {}
    rule = alert["rule"]
    try:
        if rule == "threshold":
            type_ = d["type"]
            unit = TYPES[type_].unit if type_ in TYPES else ""
            value = value_text(type_, d.get("value"), d.get("value2"), unit, locale)
            crossed = d.get("crossed") or []
            why = ", ".join(
                f"{translate(locale, 'quantity.' + c['quantity'])} {_op(c['op'])} "
                f"{number(c['limit'], locale)}"
                for c in crossed[:2]
            )
            return value, why
        if rule == "news2":
            threes = [
                translate(locale, "news2." + p)
                for p, v in (d.get("parameters") or {}).items()
                if v.get("points") == 3
            ]
            why = ("3 p: " + ", ".join(threes)) if threes else ""
            return translate(locale, "patient.news2_score", score=d.get("score")), why
        if rule == "trend_weight":
            gain = d.get("gain_kg")
            hours = d.get("hours_between")
            return (
                f"+{number(gain, locale)} kg",
                f"{number(hours, locale, 0)} h, > {number(d.get('limit_kg'), locale)} kg",
            )
        if rule == "trend_bp_mean":
            limit = d.get("limit") or [None, None]
            return (
                f"{number(d.get('systolic_mean'), locale, 0)}/"
                f"{number(d.get('diastolic_mean'), locale, 0)} mmHg",
                f"n={d.get('readings_averaged')}, ≥ {number(limit[0], locale, 0)}/"
                f"{number(limit[1], locale, 0)}",
            )
        if rule == "spo2_drop":
            current = d.get("current") or {}
            reasons = []
            if d.get("drop") is not None and "drop" in (d.get("reasons") or ()):
                reasons.append(
                    f"−{number(d['drop'], locale)} ({number(d.get('baseline'), locale)})"
                )
            target = d.get("target")
            if target and "below_target" in (d.get("reasons") or ()):
                reasons.append(f"< {number(target[0], locale, 0)}")
            return f"{number(current.get('value'), locale, 0)} %", ", ".join(reasons)
        if rule == "missing_data":
            parts = []
            for m in d.get("missing") or ():
                name = translate(locale, "type." + m.get("type", ""))
                h = m.get("hours_since")
                parts.append(f"{name} ({number(h, locale, 0)} h)" if h is not None else name)
            return ", ".join(parts), ""
        if rule == "device_inactive":
            return (f"{number(d.get('silent_hours'), locale, 0)} h", str(d.get("device_id", "")))
    except (KeyError, TypeError, ValueError, IndexError):
        pass  # details of an unexpected shape: fall back to the rule's own summary
    return str(alert.get("summary") or ""), ""


def alert_row(
    alert: Mapping[str, Any],
    patient: Mapping[str, Any] | None,
    locale: str,
    tz: Any,
    now: dt.datetime,
) -> dict[str, Any]:
    """One alert as the worklist and the patient view show it."""
    value, why = trigger_text(alert, locale)
    due = alert.get("due_at")
    notes = []
    for n in alert.get("notes") or ():
        if not isinstance(n, Mapping):
            continue
        at = n.get("at")
        if isinstance(at, str):
            try:
                at = dt.datetime.fromisoformat(at)
            except ValueError:
                at = None
        act = str(n.get("action") or "")
        status = _STATUS_OF.get(act, act)
        notes.append(
            {
                "action": act,
                "action_text": translate(locale, "status." + status) if status in STATUSES else act,
                "by": n.get("by") or "",
                "at": local_time(at, tz) if isinstance(at, dt.datetime) else "",
                "text": n.get("note") or "",
            }
        )
    return {
        "id": alert["id"],
        "patient_id": alert["patient_id"],
        "patient_name": (patient or {}).get("display_name") or "",
        "personnummer": format_identifier((patient or {}).get("personnummer")),
        "rule": alert["rule"],
        "rule_text": translate(locale, "rule." + alert["rule"]),
        "severity": alert["severity"],
        "severity_text": translate(locale, "severity." + alert["severity"]),
        "status": alert["status"],
        "status_text": translate(locale, "status." + alert["status"]),
        "value": value,
        "why": why,
        "opened": local_time(alert["opened_at"], tz),
        "opened_age": age(alert["opened_at"], now, locale),
        "updated": local_time(alert.get("updated_at"), tz),
        "due": local_time(due, tz) if due else "",
        "overdue": bool(due and due < now and alert["status"] in ACTIVE_STATUSES),
        "active": alert["status"] in ACTIVE_STATUSES,
        "acknowledged_by": alert.get("acknowledged_by") or "",
        "notes": notes,
    }


_STATUS_OF = {
    "acknowledge": "acknowledged",
    "resolve": "resolved",
    "dismiss": "dismissed",
    "open": "open",
}


def format_identifier(number_: str | None) -> str:
    """A personnummer as people write it: YYYYMMDD-NNNC."""
    if not number_ or len(number_) != 12:
        return number_ or ""
    return f"{number_[:8]}-{number_[8:]}"


# --- limits and charts --------------------------------------------------------------------


def limits(threshold: Threshold | None) -> dict[str, Any]:
    """The band of values that do not deviate, and the guideline alarm levels.

    On each side the individual limit wins where set; otherwise the alarm nearest the
    normal range bounds the band.
    """
    if threshold is None:
        return {"low": None, "high": None, "lines": []}
    low_alarms = [a.limit for a in threshold.alarms if a.op in ("<", "<=")]
    high_alarms = [a.limit for a in threshold.alarms if a.op in (">", ">=")]
    low = threshold.low if threshold.low is not None else (max(low_alarms) if low_alarms else None)
    high = (
        threshold.high
        if threshold.high is not None
        else (min(high_alarms) if high_alarms else None)
    )
    lines = [{"op": a.op, "value": a.limit, "severity": a.severity} for a in threshold.alarms]
    lines.sort(key=lambda x: x["value"])
    return {"low": low, "high": high, "lines": lines}


def limits_text(lim: Mapping[str, Any], locale: str) -> str:
    low, high = lim["low"], lim["high"]
    if low is not None and high is not None:
        return f"{number(low, locale)}–{number(high, locale)}"
    if low is not None:
        return f"≥ {number(low, locale)}"
    if high is not None:
        return f"≤ {number(high, locale)}"
    return ""


def alert_types(alert: Mapping[str, Any]) -> tuple[str, ...]:
    """The measurement types whose chart marks this alert."""
    if alert["rule"] == "threshold":
        t = (alert.get("details") or {}).get("type") or str(alert.get("key", "")).partition(":")[2]
        return (t,) if t else ()
    return _ALERT_TYPES.get(alert["rule"], ())


def _ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def bucket_for(days: int) -> dt.timedelta:
    """The time bucket that keeps a dense series of `days` near MAX_POINTS points."""
    minutes = max(5, math.ceil(days * 24 * 60 / MAX_POINTS / 5) * 5)
    return dt.timedelta(minutes=minutes)


def chart_data(
    rows: Iterable[Mapping[str, Any]],
    plan: Plan,
    alerts: Iterable[Mapping[str, Any]],
    *,
    days: int,
    now: dt.datetime,
    locale: str,
    tz_name: str,
    bucketed: Mapping[str, dt.timedelta] | None = None,
) -> dict[str, Any]:
    """Everything the charts draw, JSON-ready: per type its series, bands, alarm lines and
    alert marks, times in milliseconds since the epoch.

    rows: {"ms", "type", "value", "value2"}, ms the measurement time in milliseconds.
    """
    start = now - dt.timedelta(days=days)
    thresholds = plan.effective_thresholds()
    by_type: dict[str, list[Mapping[str, Any]]] = {t: [] for t in CHART_TYPES}
    start_ms = _ms(start)
    for r in rows:
        if r["type"] in by_type and r["ms"] >= start_ms:
            by_type[r["type"]].append(r)
    marks: dict[str, list[dict[str, Any]]] = {t: [] for t in CHART_TYPES}
    for a in alerts:
        if a["opened_at"] < start:
            continue
        for t in alert_types(a):
            if t in marks:
                marks[t].append(
                    {
                        "time": _ms(a["opened_at"]),
                        "severity": a["severity"],
                        "time_text": local_time(a["opened_at"], ZoneInfo(tz_name)),
                        "label": f"{translate(locale, 'severity.' + a['severity'])}: "
                        f"{translate(locale, 'rule.' + a['rule'])}",
                    }
                )
    charts = []
    missing = []
    for t in CHART_TYPES:
        points = by_type[t]
        if not points and t not in plan.expected and t not in ALWAYS_CHARTED:
            continue
        if not points:
            missing.append(t)
            continue
        mtype = TYPES[t]
        decimals = CHART_DECIMALS.get(t, 0)
        series: list[dict[str, Any]] = []
        bands: list[dict[str, Any]] = []
        lines: list[dict[str, Any]] = []
        limit_texts: list[str] = []
        for quantity, column in SERIES[t]:
            key = "value" if column == "value" else "value2"
            pts = [[r["ms"], round(r[key], decimals + 1)] for r in points if r.get(key) is not None]
            label = (
                translate(locale, "series." + quantity)
                if t == "blood_pressure"
                else translate(locale, "type." + t)
            )
            series.append({"key": quantity, "label": label, "points": pts})
            lim = limits(thresholds.get(quantity))
            if lim["low"] is not None or lim["high"] is not None:
                bands.append({"series": quantity, "low": lim["low"], "high": lim["high"]})
                text = limits_text(lim, locale)
                limit_texts.append(f"{label} {text}" if t == "blood_pressure" else text)
            lines.extend({"series": quantity, **ln} for ln in lim["lines"])
        n = max(len(s["points"]) for s in series)
        bucket = (bucketed or {}).get(t)
        unit = UNIT_DISPLAY.get(mtype.unit, mtype.unit)
        title = translate(locale, "type." + t)
        label = translate(locale, "patient.chart_label", type=title, n=n, days=days)
        label += " " + (
            translate(locale, "patient.chart_limits", limits="; ".join(limit_texts))
            if limit_texts
            else translate(locale, "patient.chart_no_limits")
        )
        charts.append(
            {
                "type": t,
                "title": title,
                "unit": unit,
                "decimals": decimals,
                "series": series,
                "bands": bands,
                "lines": lines,
                "alerts": sorted(marks[t], key=lambda m: m["time"]),
                "bucket_minutes": int(bucket.total_seconds() // 60) if bucket else None,
                "label": label,
                "limits_text": "; ".join(limit_texts),
            }
        )
    return {
        "from": _ms(start),
        "to": _ms(now),
        "days": days,
        "locale": locale,
        "tz": tz_name,
        "charts": charts,
        "missing": missing,
    }


# --- latest values, NEWS2, plan -----------------------------------------------------------


def latest_values(
    rows: Iterable[Mapping[str, Any]], plan: Plan, now: dt.datetime, locale: str, tz: Any
) -> list[dict[str, Any]]:
    """The newest value of each type with its age; `stale` when older than the plan's
    window for that type."""
    out = []
    order = {t: i for i, t in enumerate(CHART_TYPES)}
    for r in sorted(rows, key=lambda r: order.get(r["type"], 99)):
        window = plan.expected.get(r["type"])
        text = value_text(r["type"], r["value"], r.get("value2"), r["unit"], locale)
        number_part, _, unit = text.partition("\u00a0")
        out.append(
            {
                "type": r["type"],
                "title": translate(locale, "type." + r["type"]),
                "value": text,
                "number": number_part,
                "unit": unit,
                "age": age(r["time"], now, locale),
                "time": local_time(r["time"], tz),
                "stale": bool(window and now - r["time"] > window),
            }
        )
    return out


def news2_rows(details: Mapping[str, Any], locale: str) -> dict[str, Any]:
    """The NEWS2 breakdown: one row per parameter (scored or missing) and the total."""
    params = details.get("parameters") or {}
    stale = details.get("stale") or {}
    rows = []
    for p in NEWS2_PARAMETERS:
        info = params.get(p)
        name = translate(locale, "news2." + p)
        if info is None and isinstance(stale.get(p), Mapping):
            # Older than the freshness window: shown with its value and age, not scored.
            info = {**stale[p], "points": None}
        if info is None:
            rows.append(
                {
                    "parameter": p,
                    "name": name,
                    "value": "",
                    "points": None,
                    "age": "",
                    "missing": True,
                }
            )
            continue
        v = info["value"]
        if p == "air_or_oxygen":
            shown = translate(locale, "news2." + str(v))
        else:
            unit = {
                "respiratory_rate": "/min",
                "spo2": "%",
                "systolic_bp": "mmHg",
                "pulse": "/min",
                "temperature": "°C",
            }[p]
            shown = f"{number(v, locale, 1 if p == 'temperature' else 0)}\u00a0{unit}"
        minutes = int(info.get("age_minutes") or 0)
        rows.append(
            {
                "parameter": p,
                "name": name,
                "value": shown,
                "points": info["points"],
                "age": _short_age(minutes, locale),
                "missing": False,
            }
        )
    missing = [
        translate(locale, "news2." + p)
        for p in NEWS2_PARAMETERS
        if p in (details.get("missing") or ()) or p in stale
    ]
    return {
        "score": details.get("score", 0),
        "scale": details.get("scale", 1),
        "rows": rows,
        "missing_text": translate(
            locale,
            "patient.news2_missing_list",
            hours=number(details.get("freshness_hours", 24), locale, 0),
            names=", ".join(missing),
        )
        if missing
        else "",
    }


def _short_age(minutes: int, locale: str) -> str:
    if minutes < 90:
        text = translate(locale, "age.short_minutes", n=minutes)
    elif minutes < 48 * 60:
        text = translate(locale, "age.short_hours", n=minutes // 60)
    else:
        text = translate(locale, "age.short_days", n=minutes // 1440)
    return text.replace(" ", "\u00a0")  # "4 h" stays on one line in a narrow column


def plan_view(plan: Plan, stored: bool, locale: str, tz: Any) -> dict[str, Any]:
    """The monitoring plan as the page lists it, and the rows of the thresholds form."""
    effective = plan.effective_thresholds()
    expected = [
        translate(
            locale,
            "patient.plan_window",
            type=translate(locale, "type." + t),
            hours=number(w.total_seconds() / 3600, locale, 0),
        )
        for t, w in plan.expected.items()
    ]
    rows = []
    for quantity, (type_, _col) in QUANTITIES.items():
        own = plan.thresholds.get(quantity)
        lim = limits(effective.get(quantity))
        unit = UNIT_DISPLAY.get(TYPES[type_].unit, TYPES[type_].unit)
        rows.append(
            {
                "quantity": quantity,
                "name": translate(locale, "quantity." + quantity),
                "unit": unit,
                "low": _plain(own.low) if own else "",
                "high": _plain(own.high) if own else "",
                "default": limits_text(
                    limits(Threshold(alarms=effective[quantity].alarms))
                    if quantity in effective
                    else lim,
                    locale,
                ),
            }
        )
    set_text = ""
    if stored and plan.set_at:
        by = translate(locale, "action.by", user=plan.set_by) if plan.set_by else ""
        set_text = translate(
            locale, "patient.plan_set", time=local_time(plan.set_at, tz), by=by
        ).strip()
    lo, hi = plan.spo2_range
    return {
        "stored": stored,
        "protocol": plan.protocol,
        "protocol_text": translate(locale, "protocol." + plan.protocol),
        "expected": expected,
        "scale2": plan.news2_scale2,
        "spo2_target": f"{number(lo, locale, 0)}–{number(hi, locale, 0)} %",
        "set_text": set_text,
        "thresholds": rows,
    }


def _plain(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:g}"


def thresholds_from_form(form: Mapping[str, str]) -> dict[str, Threshold]:
    """Individual limits from the thresholds form (fields low_Q and high_Q per quantity);
    ValueError naming the field that is wrong. A decimal comma is accepted."""
    texts = []
    for quantity in QUANTITIES:
        low = (form.get(f"low_{quantity}") or "").strip().replace(",", ".").replace("−", "-")
        high = (form.get(f"high_{quantity}") or "").strip().replace(",", ".").replace("−", "-")
        if ":" in low or ":" in high:
            raise ValueError(f"{quantity}: a limit is a number")
        if low or high:
            texts.append(f"{quantity}:{low}:{high}")
    return parse_thresholds(texts)


def local_path(target: str | None, default: str = "/ui/") -> str:
    """A redirect target only if it stays on this site (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(ord(c) < 32 for c in target):
        return default
    return target
