"""The patient page's use case: what a clinician sees of one patient, gathered and shaped.

The route (`egenmon.web.routes`) checks the session and who may see the patient, and
renders; this module reads the patient's readings, alerts, plan and devices, assesses
NEWS2, shapes the charts and tables (`egenmon.web.views`) and logs the read. The plan in
force comes from `egenmon.alerts.monitoring`, the same as the Alerts API shows it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from egenmon.alerts import monitoring
from egenmon.alerts.plans import NEWS2_FRESHNESS, Plan
from egenmon.alerts.rules.findings import Reading
from egenmon.alerts.rules.news2 import news2_assess
from egenmon.domain.ids import observation_id
from egenmon.domain.measurements import TYPES
from egenmon.domain.principals import Principal
from egenmon.domain.severity import SEVERITY_RANK
from egenmon.runtime import Runtime
from egenmon.store import access_log, plans, readings
from egenmon.store import alerts as alerts_store
from egenmon.store import devices as devices_store
from egenmon.web import views
from egenmon.web.i18n import age, local_time, number, translate

__all__ = ["NEWS2_TYPES", "load"]

NEWS2_TYPES = ("respiratory_rate", "spo2", "blood_pressure", "heart_rate", "body_temperature")


async def load(
    runtime: Runtime,
    principal: Principal,
    header: dict[str, Any],
    days: int,
    locale: str,
    *,
    form_plan: Plan | None = None,
) -> dict[str, Any]:
    """The page's context for a patient `principal` may see (the route checked), over the
    last `days`; `form_plan` shows limits as typed when a form is answered with an error.
    The read is logged."""
    settings = runtime.settings
    tz = settings.tz
    pid = header["id"]
    now = dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(days=days)
    codes = {TYPES[t].loinc: t for t in views.CHART_TYPES}
    async with runtime.pool.connection() as conn:
        plan_row = await plans.aget_plan(conn, pid)
        alerts = await alerts_store.list_alerts(conn, patient_id=pid, limit=200)
        counts = await readings.reading_counts(conn, pid, list(codes), since)
        dense = [c for c, n in counts.items() if n > views.MAX_POINTS]
        sparse = [c for c in counts if c not in dense]
        rows = await readings.readings_raw(conn, pid, sparse, since)
        bucket = views.bucket_for(days)
        rows += await readings.readings_bucketed(conn, pid, dense, since, bucket)
        latest = await readings.latest_readings(conn, pid, [TYPES[t].loinc for t in TYPES])
        recent = await readings.recent_readings(
            conn, pid, [TYPES[t].loinc for t in NEWS2_TYPES], now - dt.timedelta(hours=48)
        )
        devices = await devices_store.patient_devices(conn, pid)
    stored = plan_row is not None
    plan = form_plan if form_plan is not None else monitoring.from_row(plan_row)
    news2_details, _ = news2_assess(
        [
            Reading(
                observation_id(r["time"], r["dedup_key"]),
                r["time"],
                r["type"],
                r["value"],
                r["value2"],
                r["on_oxygen"],
            )
            for r in recent
        ],
        now,
        scale2=plan.news2_scale2,
        freshness=plan.news2_freshness or NEWS2_FRESHNESS,
    )
    charts = views.chart_data(
        rows,
        plan,
        alerts,
        days=days,
        now=now,
        locale=locale,
        tz_name=settings.timezone,
        bucketed={codes[c]: bucket for c in dense},
    )
    rows_view = [views.alert_row(a, header, locale, tz, now) for a in alerts]
    current = sorted(
        (r for r, a in zip(rows_view, alerts, strict=True) if a["status"] in views.ACTIVE_STATUSES),
        key=lambda r: (-SEVERITY_RANK[r["severity"]], r["opened"]),
    )
    history = [r for r in rows_view if not r["active"]]
    await access_log.log_access(
        runtime.pool, principal, "read", "ui/patient", [pid], {"days": days}
    )
    return {
        "patient": {
            "id": pid,
            "name": header["display_name"] or "",
            "identifier": views.format_identifier(header["personnummer"]),
            "identifier_kind": header["identifier_kind"],
            "care_unit_name": header["care_unit_name"],
        },
        "current": current,
        "history": history,
        "latest": views.latest_values(latest, plan, now, locale, tz),
        "charts": charts,
        "missing_text": ", ".join(translate(locale, "type." + t) for t in charts["missing"]),
        "news2": views.news2_rows(news2_details, locale),
        "plan": views.plan_view(plan, stored, locale, tz),
        "devices": [_device_view(d, now, locale, tz) for d in devices],
        "ranges": views.RANGES,
        "days": days,
    }


def _device_view(d: dict[str, Any], now: dt.datetime, locale: str, tz: Any) -> dict[str, Any]:
    battery = d["battery"]
    return {
        "id": d["id"],
        "model": " ".join(x for x in (d["manufacturer"], d["model"]) if x),
        "last_seen": age(d["last_seen"], now, locale) if d["last_seen"] else "",
        "last_seen_time": local_time(d["last_seen"], tz),
        "battery": number(battery * 100, locale, 0) if battery is not None else None,
        "battery_low": battery is not None and battery < 0.2,
        "status_text": translate(locale, "patient.device_status." + d["status"]),
        "bound_until": local_time(d["bound_until"], tz) if d["bound_until"] else "",
    }
