"""The UI's pages and form actions against the real app and database (no browser):
worklist order, filters and polling, the patient view and its access log, refusal across
care units, alert actions, threshold editing, security headers and static files."""

from __future__ import annotations

import re
import uuid

from tests.web.conftest import csrf_of, login

RANK = {"high": 3, "medium": 2, "low": 1}
ROW = re.compile(
    r'<tr class="row-\w+" data-alert-id="([^"]+)" data-patient-id="([^"]+)" '
    r'data-severity="(\w+)" data-rule="(\w+)"'
)


def rows_of(html: str) -> list[tuple[str, str, str, str]]:
    return ROW.findall(html)


def test_worklist_lists_the_units_open_alerts_most_urgent_first(client, make_user, ward, conn):
    make_user("anna", ward.unit)
    login(client, "anna")
    page = client.get("/ui/")
    assert page.status_code == 200
    rows = rows_of(page.text)
    expected = conn.execute(
        "SELECT a.id::text, a.severity FROM alerts a WHERE a.status IN ('open', 'acknowledged')"
        " AND a.category = 'clinical' ORDER BY array_position(ARRAY['high','medium','low'],"
        " a.severity), a.opened_at, a.id"
    ).fetchall()
    assert [(r[0], r[2]) for r in rows] == [(i, s) for i, s in expected]
    assert rows[0][1] == ward.deteriorating and rows[0][2] == "high"
    assert all(r[3] != "device_inactive" for r in rows)
    # Counts per severity, and the tab totals.
    for s in ("high", "medium", "low"):
        n = sum(1 for r in rows if r[2] == s)
        assert re.search(rf'data-severity-count="{s}">.*?<strong>{n}</strong>', page.text, re.S)
    assert f'data-count="clinical">{len(rows)}<' in page.text
    assert 'data-count="technical">1<' in page.text
    # The personnummer is shown to the clinician but never put in a link.
    assert "/ui/patients/" + ward.deteriorating in page.text
    for (pnr,) in conn.execute("SELECT personnummer FROM patients"):
        assert f"{pnr}" not in " ".join(re.findall(r'href="([^"]+)"', page.text))


def test_worklist_filters_by_severity_rule_status_and_mine(client, make_user, ward, conn):
    make_user("anna", ward.unit)
    login(client, "anna")
    high = rows_of(client.get("/ui/?severity=high").text)
    assert high and {r[2] for r in high} == {"high"}
    news2 = rows_of(client.get("/ui/?rule=news2").text)
    assert [r[3] for r in news2] == ["news2"]
    token = csrf_of(client.get("/ui/").text)
    alert_id = news2[0][0]
    r = client.post(
        f"/ui/alerts/{alert_id}/action",
        data={"csrf_token": token, "action": "acknowledge", "note": "ringer", "next": "/ui/"},
    )
    assert r.status_code == 303 and "done=acknowledge" in r.headers["location"]
    mine = rows_of(client.get("/ui/?mine=1").text)
    assert [r[0] for r in mine] == [alert_id]
    acknowledged = rows_of(client.get("/ui/?status=acknowledged").text)
    assert [r[0] for r in acknowledged] == [alert_id]
    open_only = rows_of(client.get("/ui/?status=open").text)
    assert alert_id not in [r[0] for r in open_only] and open_only
    technical = rows_of(client.get("/ui/?tab=technical").text)
    assert [(r[1], r[3]) for r in technical] == [(ward.silent, "device_inactive")]
    # Unknown filter values are ignored, not an error.
    assert client.get("/ui/?severity=urgent&rule=%3Cscript%3E").status_code == 200


def test_worklist_polling_answers_304_until_something_changes(client, make_user, ward, conn):
    make_user("anna", ward.unit)
    login(client, "anna")
    first = client.get("/ui/worklist/table", headers={"X-Egenmon-Poll": "1"})
    assert first.status_code == 200 and "<table" in first.text
    etag = first.headers["etag"]
    same = client.get("/ui/worklist/table", headers={"X-Egenmon-Poll": "1", "If-None-Match": etag})
    assert same.status_code == 304
    conn.execute(
        "UPDATE alerts SET status = 'dismissed', dismissed_at = now(),"
        " dismissed_by = 'someone' WHERE patient_id = %s AND rule = 'news2'",
        (ward.deteriorating,),
    )
    changed = client.get(
        "/ui/worklist/table", headers={"X-Egenmon-Poll": "1", "If-None-Match": etag}
    )
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert "news2" not in [r[3] for r in rows_of(changed.text)]


def test_every_patient_view_writes_the_access_log(client, make_user, ward, conn):
    make_user("anna", ward.unit)
    login(client, "anna")
    for days in (7, 30, 90):
        page = client.get(f"/ui/patients/{ward.deteriorating}?range={days}")
        assert page.status_code == 200
        assert "Astrid Andersson" in page.text
    logged = conn.execute(
        "SELECT actor, role, care_unit_id::text, action, detail->>'days' FROM access_log"
        " WHERE resource = 'ui/patient' AND patient_ids = ARRAY[%s::uuid] ORDER BY id",
        (ward.deteriorating,),
    ).fetchall()
    assert logged == [("anna", "clinician", ward.unit, "read", d) for d in ("7", "30", "90")]


def test_patient_view_shows_charts_latest_values_news2_plan_devices_and_history(
    client, make_user, ward
):
    make_user("anna", ward.unit)
    login(client, "anna")
    page = client.get(f"/ui/patients/{ward.deteriorating}").text
    data = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', page, re.S)
    assert data
    import json

    charts = {c["type"]: c for c in json.loads(data.group(1))["charts"]}
    bp = charts["blood_pressure"]
    assert [s["key"] for s in bp["series"]] == ["systolic", "diastolic"]
    assert all(len(s["points"]) > 20 for s in bp["series"])
    assert {"series": "systolic", "low": 90, "high": 180} in bp["bands"]
    assert charts["spo2"]["alerts"] and charts["spo2"]["bands"] == [
        {"series": "spo2", "low": 92, "high": None}
    ]
    assert 'id="latest-values"' in page and re.search(r"för \d+ (min|h) sedan", page)
    assert 'data-parameter="consciousness"' in page and "Saknas" in page
    assert "Beslutsstöd" in page  # NEWS2 shown as decision support beside raw values
    assert "Hjärtsvikt" in page and "Hub M1" in page
    assert 'id="thresholds-form"' in page


def test_a_clinician_of_another_unit_gets_404_everywhere(client, make_user, ward, cli, conn):
    r = cli("care-unit", "add", "--name", "Annan", "--hsa-id", "SE2321000016-ANNN", "--json")
    make_user("olle", r.json["id"])
    login(client, "olle")
    page = client.get("/ui/")
    assert rows_of(page.text) == [] and "Astrid" not in page.text
    token = csrf_of(page.text)
    assert client.get(f"/ui/patients/{ward.deteriorating}").status_code == 404
    assert client.get(f"/ui/patients/{uuid.uuid4()}").status_code == 404
    assert client.get("/ui/patients/not-an-id").status_code == 404
    alert_id, status = conn.execute("SELECT id::text, status FROM alerts LIMIT 1").fetchone()
    r = client.post(
        f"/ui/alerts/{alert_id}/action",
        data={"csrf_token": token, "action": "resolve", "note": "x"},
    )
    assert r.status_code == 404
    assert (
        conn.execute("SELECT status FROM alerts WHERE id = %s", (alert_id,)).fetchone()[0] == status
    )
    r = client.post(
        f"/ui/patients/{ward.deteriorating}/thresholds",
        data={"csrf_token": token, "high_body_weight": "90"},
    )
    assert r.status_code == 404
    plan = conn.execute(
        "SELECT plan FROM monitoring_plans WHERE patient_id = %s", (ward.deteriorating,)
    ).fetchone()[0]
    assert plan["thresholds"] == {}
    # The JSON API with the same session answers as for an unknown patient too.
    assert client.get(f"/api/v1/alerts?patient={ward.deteriorating}").status_code == 404


def test_acknowledge_then_resolve_with_notes_and_a_refused_transition(
    client, make_user, ward, conn
):
    make_user("anna", ward.unit)
    login(client, "anna")
    page = client.get(f"/ui/patients/{ward.deteriorating}")
    token = csrf_of(page.text)
    alert_id = conn.execute(
        "SELECT id::text FROM alerts WHERE patient_id = %s AND rule = 'news2'",
        (ward.deteriorating,),
    ).fetchone()[0]
    back = f"/ui/patients/{ward.deteriorating}?range=7"
    r = client.post(
        f"/ui/alerts/{alert_id}/action",
        data={"csrf_token": token, "action": "acknowledge", "note": "Ringer nu", "next": back},
    )
    assert r.status_code == 303 and r.headers["location"] == back + "&done=acknowledge"
    r = client.post(
        f"/ui/alerts/{alert_id}/action",
        data={
            "csrf_token": token,
            "action": "resolve",
            "note": "Klart",
            "next": back + "&done=acknowledge",
        },
    )
    assert r.headers["location"] == back + "&done=resolve"
    status, by, notes = conn.execute(
        "SELECT status, resolved_by, notes FROM alerts WHERE id = %s", (alert_id,)
    ).fetchone()
    assert (status, by) == ("resolved", "anna")
    assert [(n["by"], n["note"]) for n in notes] == [("anna", "Ringer nu"), ("anna", "Klart")]
    assert [n["action"].rstrip("d") for n in notes] == ["acknowledge", "resolve"]
    again = client.post(
        f"/ui/alerts/{alert_id}/action",
        data={"csrf_token": token, "action": "acknowledge", "next": back},
    )
    assert again.status_code == 303 and "failed=" in again.headers["location"]
    shown = client.get(again.headers["location"]).text
    assert "Åtgärden kunde inte utföras" in shown
    assert "Ringer nu" in shown and "Klart" in shown  # the history with its notes
    changes = conn.execute(
        "SELECT count(*) FROM access_log WHERE action = 'update' AND resource = 'Alert'"
    ).fetchone()[0]
    assert changes == 2
    forged = client.post(
        f"/ui/alerts/{alert_id}/action", data={"csrf_token": "nope", "action": "dismiss"}
    )
    assert forged.status_code == 403


def test_editing_individual_thresholds_stores_a_new_plan_version(client, make_user, ward, conn):
    make_user("anna", ward.unit)
    login(client, "anna")
    page = client.get(f"/ui/patients/{ward.deteriorating}")
    token = csrf_of(page.text)
    r = client.post(
        f"/ui/patients/{ward.deteriorating}/thresholds",
        data={
            "csrf_token": token,
            "range": "7",
            "low_spo2": "93",
            "high_body_weight": "85,5",
            "low_systolic": "",
            "high_systolic": "",
        },
    )
    assert r.status_code == 303
    assert r.headers["location"] == f"/ui/patients/{ward.deteriorating}?range=7&done=thresholds"
    version, set_by, plan = conn.execute(
        "SELECT version, set_by, plan FROM monitoring_plans WHERE patient_id = %s",
        (ward.deteriorating,),
    ).fetchone()
    assert (version, set_by) == (2, "anna")
    assert plan["protocol"] == "heart_failure"
    assert plan["thresholds"] == {
        "spo2": {"low": 93.0, "high": None, "severity": "medium"},
        "body_weight": {"low": None, "high": 85.5, "severity": "medium"},
    }
    shown = client.get(r.headers["location"]).text
    assert "Gränserna är sparade" in shown and 'value="85.5"' in shown
    assert '"series":"body_weight","low":null,"high":85.5' in shown
    bad = client.post(
        f"/ui/patients/{ward.deteriorating}/thresholds",
        data={"csrf_token": token, "low_spo2": "120"},
    )
    assert bad.status_code == 400 and "sparades inte" in bad.text and "rimliga" in bad.text
    inverted = client.post(
        f"/ui/patients/{ward.deteriorating}/thresholds",
        data={"csrf_token": token, "low_heart_rate": "90", "high_heart_rate": "50"},
    )
    assert inverted.status_code == 400
    assert (
        conn.execute(
            "SELECT version FROM monitoring_plans WHERE patient_id = %s", (ward.deteriorating,)
        ).fetchone()[0]
        == 2
    )


def test_pages_carry_a_strict_csp_and_no_inline_script(client, make_user, ward):
    make_user("anna", ward.unit)
    for response in (client.get("/login"),):
        assert "default-src 'self'" in response.headers["content-security-policy"]
    login(client, "anna")
    for path in ("/ui/", f"/ui/patients/{ward.deteriorating}"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-content-type-options"] == "nosniff"
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", r.text, re.S)
        for attrs, _body in scripts:
            assert "src=" in attrs or 'type="application/json"' in attrs, attrs
        assert "http://" not in " ".join(re.findall(r'(?:src|href)="([^"]+)"', r.text))
        assert "https://" not in " ".join(re.findall(r'(?:src|href)="([^"]+)"', r.text))


def test_static_files_are_served_by_egenmon_with_long_caching_when_versioned(client):
    login_page = client.get("/login").text
    css = re.search(r'href="(/ui/static/app\.css\?v=\w+)"', login_page).group(1)
    r = client.get(css)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")
    assert "immutable" in r.headers["cache-control"]
    chart = client.get("/ui/static/vendor/chart.umd.min.js")
    assert chart.status_code == 200 and "Chart.js v4" in chart.text[:200]
    assert chart.headers["cache-control"] == "no-cache"
    for bad in (
        "/ui/static/../routes.py",
        "/ui/static/%2e%2e/routes.py",
        "/ui/static/vendor/.lock-sha256",
        "/ui/static/nothing.js",
        "/ui/static/vendor/chart.js.LICENSE.md",
    ):
        assert client.get(bad).status_code == 404, bad


def test_language_switch_is_remembered_for_the_user(client, make_user, care_unit, conn):
    make_user("anna", care_unit)
    login(client, "anna")
    page = client.get("/ui/")
    assert 'lang="sv"' in page.text and "Arbetslista" in page.text
    r = client.post(
        "/ui/locale",
        data={"csrf_token": csrf_of(page.text), "locale": "en", "next": "/ui/?tab=technical"},
    )
    assert r.status_code == 303 and r.headers["location"] == "/ui/?tab=technical"
    english = client.get("/ui/?tab=technical")
    assert 'lang="en"' in english.text and "Technical deviations" in english.text
    assert conn.execute("SELECT locale FROM users").fetchone()[0] == "en"


def test_login_page_language_choice_carries_into_the_session(client, make_user, care_unit, conn):
    make_user("anna", care_unit)
    page = client.get("/login?lang=en")
    assert "Username" in page.text
    r = client.post(
        "/login",
        data={
            "username": "anna",
            "password": "correct-horse-battery-staple",
            "csrf_token": csrf_of(page.text),
        },
    )
    assert r.status_code == 303
    assert "Worklist" in client.get("/ui/").text
    assert conn.execute("SELECT locale FROM users").fetchone()[0] == "en"


def test_an_admin_login_sees_every_units_worklist(client, make_user, ward, cli):
    make_user("root.admin", None, role="admin")
    login(client, "root.admin")
    rows = rows_of(client.get("/ui/").text)
    assert rows and rows[0][1] == ward.deteriorating
    assert client.get(f"/ui/patients/{ward.deteriorating}").status_code == 200


def test_a_failure_message_in_the_url_is_a_key_never_shown_text(client, make_user, care_unit):
    make_user("anna", care_unit)
    login(client, "anna")
    planted = "Systemet är hackat. Ring 0701234567 och uppge ditt lösenord"
    for page in ("/ui/", f"/ui/?failed={planted}", "/ui/?failed=action.failed.transition"):
        r = client.get(page.replace(" ", "+"))
        assert r.status_code == 200
        shown = re.sub(r"<[^>]*>", " ", r.text)  # the text on the page, not attributes
        assert "0701234567" not in shown and "hackat" not in shown
        assert "flash-error" not in r.text
    r = client.get("/ui/?failed=transition")
    assert "Åtgärden kunde inte utföras: avvikelsens status tillåter den inte" in r.text
