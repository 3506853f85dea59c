"""The pure page logic: worklist order and filters, trigger texts, limit bands, chart data,
the NEWS2 breakdown, the thresholds form, and safe redirects."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from egenmon.alerts.plans import Threshold, build_plan
from egenmon.alerts.rules.findings import Reading
from egenmon.alerts.rules.news2 import news2_assess
from egenmon.web import views
from egenmon.web.routes import _json_script

NOW = dt.datetime(2026, 3, 29, 12, 0, tzinfo=dt.UTC)  # the day summer time starts
TZ = ZoneInfo("Europe/Stockholm")


def ms(t: dt.datetime) -> int:
    return int(t.timestamp() * 1000)


def alert(
    i: int,
    severity: str,
    rule: str = "threshold",
    hours_ago: float = 1,
    status: str = "open",
    **kw: object,
) -> dict:
    return {
        "id": f"a{i}",
        "patient_id": f"p{i}",
        "rule": rule,
        "severity": severity,
        "status": status,
        "opened_at": NOW - dt.timedelta(hours=hours_ago),
        "updated_at": NOW,
        "details": {},
        "notes": [],
        **kw,
    }


def test_worklist_orders_by_severity_then_longest_waiting():
    alerts = [
        alert(1, "low", hours_ago=30),
        alert(2, "high", hours_ago=1),
        alert(3, "medium", hours_ago=5),
        alert(4, "high", hours_ago=3),
        alert(5, "medium", hours_ago=9),
    ]
    shown, counts = views.worklist(alerts, views.Filters(), "anna")
    assert [a["id"] for a in shown] == ["a4", "a2", "a5", "a3", "a1"]
    assert counts["by_severity"] == {"high": 2, "medium": 2, "low": 1}
    assert counts["clinical"] == 5 and counts["technical"] == 0


def test_worklist_leaves_out_closed_alerts_and_puts_devices_on_their_own_tab():
    alerts = [
        alert(1, "high", status="resolved"),
        alert(2, "low", status="dismissed"),
        alert(3, "medium", status="acknowledged"),
        alert(4, "low", rule="device_inactive"),
    ]
    clinical, counts = views.worklist(alerts, views.Filters(), "anna")
    assert [a["id"] for a in clinical] == ["a3"]
    technical, _ = views.worklist(alerts, views.Filters(tab="technical"), "anna")
    assert [a["id"] for a in technical] == ["a4"]
    assert (counts["clinical"], counts["technical"]) == (1, 1)


def test_worklist_filters_combine():
    alerts = [
        alert(1, "high", rule="news2"),
        alert(2, "high", status="acknowledged", acknowledged_by="anna"),
        alert(
            3,
            "medium",
            status="acknowledged",
            notes=[{"action": "acknowledged", "by": "bo", "note": "x"}],
        ),
        alert(
            4,
            "medium",
            status="acknowledged",
            notes=[{"action": "acknowledge", "by": "anna", "note": "y"}],
        ),
    ]
    f = views.Filters.parse
    assert {a["id"] for a in views.worklist(alerts, f({"severity": "high"}), "anna")[0]} == {
        "a1",
        "a2",
    }
    assert [a["id"] for a in views.worklist(alerts, f({"rule": "news2"}), "anna")[0]] == ["a1"]
    assert {a["id"] for a in views.worklist(alerts, f({"mine": "1"}), "anna")[0]} == {"a2", "a4"}
    mine_high = views.worklist(alerts, f({"mine": "1", "severity": "high"}), "anna")[0]
    assert [a["id"] for a in mine_high] == ["a2"]
    assert [a["id"] for a in views.worklist(alerts, f({"status": "open"}), "anna")[0]] == ["a1"]


def test_filters_ignore_unknown_values_and_rules_of_the_other_tab():
    f = views.Filters.parse(
        {
            "tab": "technical",
            "severity": "urgent",
            "rule": "news2",
            "status": "resolved",
            "mine": "yes",
        }
    )
    assert (f.tab, f.severity, f.rule, f.status, f.mine) == ("technical", "", "", "", False)
    assert views.Filters.parse({"rule": "device_inactive"}).rule == ""
    assert (
        views.Filters(severity="high", mine=True).query(tab="technical")
        == "tab=technical&severity=high&mine=1"
    )


@pytest.mark.parametrize(
    "rule,details,value,why",
    [
        (
            "threshold",
            {
                "type": "blood_pressure",
                "value": 182,
                "value2": 111,
                "crossed": [
                    {"quantity": "systolic", "op": ">=", "limit": 180},
                    {"quantity": "diastolic", "op": ">=", "limit": 110},
                ],
            },
            "182/111\u00a0mmHg",
            "Systoliskt blodtryck ≥ 180, Diastoliskt blodtryck ≥ 110",
        ),
        (
            "threshold",
            {
                "type": "body_temperature",
                "value": 38.25,
                "crossed": [{"quantity": "body_temperature", "op": ">=", "limit": 38}],
            },
            "38,2\u00a0°C",
            "Kroppstemperatur ≥ 38",
        ),
        (
            "news2",
            {
                "score": 7,
                "parameters": {
                    "spo2": {"value": 90, "points": 3},
                    "pulse": {"value": 95, "points": 1},
                },
            },
            "Poäng 7",
            "3 p: Syremättnad",
        ),
        (
            "trend_weight",
            {"gain_kg": 2.4, "limit_kg": 2, "hours_between": 52.3},
            "+2,4 kg",
            "52 h, > 2 kg",
        ),
        (
            "trend_bp_mean",
            {
                "systolic_mean": 141.2,
                "diastolic_mean": 88.9,
                "readings_averaged": 14,
                "limit": [135, 85],
            },
            "141/89 mmHg",
            "n=14, ≥ 135/85",
        ),
        (
            "spo2_drop",
            {
                "current": {"value": 91},
                "drop": 4,
                "baseline": 95,
                "reasons": ["drop", "below_target"],
                "target": [94, 98],
            },
            "91 %",
            "−4 (95), < 94",
        ),
        (
            "missing_data",
            {
                "missing": [
                    {"type": "body_weight", "hours_since": 40.2},
                    {"type": "blood_pressure", "hours_since": None},
                ]
            },
            "Vikt (40 h), Blodtryck",
            "",
        ),
        ("device_inactive", {"device_id": "hub-1", "silent_hours": 80.4}, "80 h", "hub-1"),
    ],
)
def test_trigger_text_names_the_value_and_why(rule, details, value, why):
    got = views.trigger_text({"rule": rule, "details": details, "summary": "s"}, "sv")
    assert got == (value, why)


def test_trigger_text_falls_back_to_the_summary_for_unexpected_details():
    assert views.trigger_text(
        {"rule": "threshold", "details": {"x": 1}, "summary": "systolic 190"}, "sv"
    ) == ("systolic 190", "")


def test_limits_take_the_individual_range_else_the_nearest_alarm():
    plan = build_plan("general", ["systolic:85:150"])
    t = plan.effective_thresholds()
    assert views.limits(t["systolic"])["low"] == 85 and views.limits(t["systolic"])["high"] == 150
    glucose = views.limits(t["blood_glucose"])
    assert (glucose["low"], glucose["high"]) == (3.9, 13.9)
    assert [ln["value"] for ln in glucose["lines"]] == [3.0, 3.9, 13.9]
    assert views.limits(t["body_temperature"])["low"] is None
    assert views.limits(None) == {"low": None, "high": None, "lines": []}
    assert views.limits(Threshold(low=60, high=100))["lines"] == []


def test_chart_data_has_series_bands_and_alert_marks_in_milliseconds():
    plan = build_plan("heart_failure", ["body_weight::82"])
    rows = [
        {
            "ms": ms(NOW - dt.timedelta(days=d)),
            "type": "blood_pressure",
            "value": 130 + d,
            "value2": 80.0,
        }
        for d in range(3)
    ] + [
        {
            "ms": ms(NOW - dt.timedelta(days=1)),
            "type": "body_weight",
            "value": 80.44,
            "value2": None,
        },
        {
            "ms": ms(NOW - dt.timedelta(days=60)),
            "type": "body_weight",
            "value": 79.0,
            "value2": None,
        },
    ]
    alerts = [
        alert(
            1,
            "high",
            rule="threshold",
            key="threshold:body_weight",
            details={"type": "body_weight"},
        ),
        alert(2, "medium", rule="news2"),
        alert(3, "low", rule="missing_data", hours_ago=24 * 40),
    ]
    data = views.chart_data(
        rows, plan, alerts, days=30, now=NOW, locale="sv", tz_name="Europe/Stockholm"
    )
    assert data["to"] == int(NOW.timestamp() * 1000)
    assert data["from"] == int((NOW - dt.timedelta(days=30)).timestamp() * 1000)
    charts = {c["type"]: c for c in data["charts"]}
    bp = charts["blood_pressure"]
    assert [len(s["points"]) for s in bp["series"]] == [3, 3]
    assert bp["series"][0]["points"][0] == [rows[0]["ms"], 130]
    assert {"series": "systolic", "low": 90, "high": 180} in bp["bands"]
    assert {"series": "diastolic", "low": None, "high": 110} in bp["bands"]
    assert [m["severity"] for m in bp["alerts"]] == ["medium"]  # news2 marks BP
    weight = charts["body_weight"]
    assert weight["bands"] == [{"series": "body_weight", "low": None, "high": 82}]
    assert [m["severity"] for m in weight["alerts"]] == ["high"]
    assert weight["series"][0]["points"][0][1] == 80.44
    # Types the issue asks for are named as having no data; others are left out.
    assert set(data["missing"]) == {"spo2", "heart_rate", "body_temperature", "blood_glucose"}
    assert "respiratory_rate" not in charts and "respiratory_rate" not in data["missing"]
    assert "gränser" in weight["label"].lower() and "1 mätningar" in weight["label"]


def test_bucket_keeps_long_dense_ranges_near_the_point_budget():
    for days in views.RANGES:
        bucket = views.bucket_for(days)
        assert days * 86400 / bucket.total_seconds() <= views.MAX_POINTS
        assert bucket.total_seconds() % 300 == 0


def test_news2_rows_list_every_parameter_scored_or_missing():
    readings = [
        Reading("r1", NOW - dt.timedelta(hours=2), "spo2", 91, on_oxygen=False),
        Reading("r2", NOW - dt.timedelta(hours=3), "heart_rate", 112),
        Reading("r3", NOW - dt.timedelta(hours=30), "body_temperature", 38.5),
    ]
    details, _ = news2_assess(readings, NOW)
    view = views.news2_rows(details, "sv")
    rows = {r["parameter"]: r for r in view["rows"]}
    assert list(rows) == [
        "respiratory_rate",
        "spo2",
        "air_or_oxygen",
        "systolic_bp",
        "pulse",
        "consciousness",
        "temperature",
    ]
    assert rows["spo2"]["points"] == 3 and rows["spo2"]["value"] == "91\u00a0%"
    assert rows["air_or_oxygen"]["value"] == "luft" and rows["air_or_oxygen"]["points"] == 0
    assert rows["pulse"]["points"] == 2 and rows["pulse"]["age"] == "3\u00a0h"
    # Older than the freshness window: shown with its value and age, not scored.
    assert not rows["temperature"]["missing"] and rows["temperature"]["points"] is None
    assert rows["temperature"]["value"] == "38,5\u00a0°C" and rows["temperature"]["age"]
    assert rows["consciousness"]["missing"]
    assert view["score"] == 5
    assert "Temperatur" in view["missing_text"] and "24 timmar" in view["missing_text"]


def test_thresholds_form_accepts_decimal_commas_and_names_bad_fields():
    got = views.thresholds_from_form(
        {"low_spo2": "92", "high_body_weight": "85,5", "low_systolic": " ", "high_systolic": ""}
    )
    assert got == {"spo2": Threshold(low=92.0), "body_weight": Threshold(high=85.5)}
    with pytest.raises(ValueError, match="plausible"):
        views.thresholds_from_form({"high_spo2": "150"})
    with pytest.raises(ValueError, match="below"):
        views.thresholds_from_form({"low_heart_rate": "90", "high_heart_rate": "60"})
    with pytest.raises(ValueError, match="not a number"):
        views.thresholds_from_form({"low_heart_rate": "sextio"})
    with pytest.raises(ValueError):
        views.thresholds_from_form({"low_heart_rate": "1:2"})


def test_plan_view_lists_limits_with_defaults():
    plan = build_plan("copd", ["heart_rate:50:110"], news2_scale2=True)
    view = views.plan_view(plan, True, "en", TZ)
    rows = {r["quantity"]: r for r in view["thresholds"]}
    assert (rows["heart_rate"]["low"], rows["heart_rate"]["high"]) == ("50", "110")
    assert rows["spo2"]["default"] == "≥ 86"  # scale 2 target 88-92, urgent 2 under
    assert rows["systolic"]["default"] == "90–180"
    assert view["protocol_text"] == "COPD" and view["scale2"]
    assert view["spo2_target"] == "88–92 %"


@pytest.mark.parametrize(
    "target,expected",
    [
        ("/ui/patients/x?range=7", "/ui/patients/x?range=7"),
        ("//evil.example/", "/ui/"),
        ("https://evil.example/", "/ui/"),
        ("/\\evil.example", "/ui/"),
        ("/ui/\r\nSet-Cookie: x", "/ui/"),
        (None, "/ui/"),
    ],
)
def test_redirect_targets_stay_on_this_site(target, expected):
    assert views.local_path(target) == expected


def test_json_for_a_script_block_cannot_close_it():
    text = _json_script({"name": "</script><script>alert(1)</script>", "a": "&"})
    assert "</" not in text and "<" not in text and "&" not in text
    import json

    assert json.loads(text)["name"] == "</script><script>alert(1)</script>"


def test_alert_row_shows_notes_and_overdue_care_contacts():
    a = alert(
        1,
        "high",
        status="acknowledged",
        due_at=NOW - dt.timedelta(minutes=5),
        acknowledged_by="anna",
        notes=[
            {
                "at": "2026-03-29T11:30:00+00:00",
                "by": "anna",
                "action": "acknowledged",
                "note": "Ringer",
            }
        ],
    )
    row = views.alert_row(
        a, {"display_name": "Tolvan", "personnummer": "191212121212"}, "sv", TZ, NOW
    )
    assert row["personnummer"] == "19121212-1212"
    assert row["overdue"] and row["due"] == "2026-03-29 13:55"  # summer time, +02:00
    assert row["notes"] == [
        {
            "action": "acknowledged",
            "action_text": "Kvitterad",
            "by": "anna",
            "at": "2026-03-29 13:30",
            "text": "Ringer",
        }
    ]
    assert row["status_text"] == "Kvitterad" and row["severity_text"] == "Hög"
