"""The Alerts API, plans and webhooks over HTTP against a real database: filters, the
contract's fields, actions, care-unit refusal and the access log."""

from __future__ import annotations

import datetime as dt
import uuid
import warnings

import psycopg
import pytest

from egenmon.app import Roles, create_app
from egenmon.auth import issue_token
from tests.conftest import make_personnummer

H = dt.timedelta(hours=1)


@pytest.fixture
def client(settings):
    """The app in-process (no MQTT, no scheduler) on the test's database."""
    with warnings.catch_warnings():
        # Starlette's test client asks for its httpx fork, which is not installed; the
        # plain httpx it falls back to works the same here.
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    app = create_app(settings, Roles(mqtt=False, scheduler=False))
    with TestClient(app) as c:
        yield c


def bearer(settings, role: str, **kw) -> dict:
    return {
        "Authorization": "Bearer " + issue_token(settings, role=role, subject=f"{role}-1", **kw)
    }


@pytest.fixture
def world(cli, device, care_unit, store, now):
    """A patient with a high-BP alert and a NEWS2 alert in `care_unit`."""
    p, dev = device["patient"], device["id"]
    assert cli("plan", "set", "--patient", p, "--protocol", "copd").code == 0
    store.add(p, dev, "blood_pressure", now - H, 186, 100)
    store.add(p, dev, "respiratory_rate", now - H, 26)  # 3 points
    store.add(p, dev, "spo2", now - H, 93, on_oxygen=False)  # 2 points
    store.add(p, dev, "heart_rate", now - H, 115)  # 2 points
    store.cycle(now)
    return {"patient": p, "unit": care_unit}


def access_rows(settings) -> list[tuple]:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "SELECT actor, role, action, resource, patient_ids, detail FROM access_log ORDER BY id"
        ).fetchall()


def test_list_has_the_contract_fields_and_news2_details(client, settings, world):
    headers = bearer(settings, "clinician", care_unit_id=uuid.UUID(world["unit"]))
    r = client.get("/api/v1/alerts", params={"patient": world["patient"]}, headers=headers)
    assert r.status_code == 200, r.text
    alerts = {a["rule"]: a for a in r.json()["alerts"]}
    assert set(alerts) >= {"threshold", "news2"}
    for a in alerts.values():
        assert {
            "id",
            "patient_id",
            "rule",
            "severity",
            "status",
            "opened_at",
            "updated_at",
            "evidence",
            "details",
        } <= set(a)
        assert a["patient_id"] == world["patient"] and a["status"] == "open"
        assert a["category"] == "clinical"
    news2 = alerts["news2"]["details"]
    assert news2["score"] == 7 and alerts["news2"]["severity"] == "high"
    assert news2["parameters"]["respiratory_rate"] == {
        "value": 26.0,
        "points": 3,
        "age_minutes": 60,
    }
    assert "consciousness" in news2["missing"]
    assert len(alerts["news2"]["evidence"]) == 4  # RR, SpO2, pulse, systolic


@pytest.mark.parametrize(
    ("params", "rules"),
    [
        ({"rule": "threshold"}, {"threshold"}),
        ({"severity": "high", "status": "open"}, {"threshold", "news2"}),
        ({"status": "resolved"}, set()),
        ({"rule": "news2,threshold"}, {"news2", "threshold"}),
    ],
)
def test_filters(client, settings, world, params, rules):
    r = client.get(
        "/api/v1/alerts",
        params={**params, "care_unit": world["unit"]},
        headers=bearer(settings, "admin"),
    )
    assert r.status_code == 200
    assert {a["rule"] for a in r.json()["alerts"]} == rules


def test_unknown_filter_values_are_named(client, settings, world):
    r = client.get("/api/v1/alerts", params={"status": "closed"}, headers=bearer(settings, "admin"))
    assert r.status_code == 400
    assert "closed" in r.json()["error"]


def test_actions_through_the_api_with_notes_and_access_log(client, settings, world):
    headers = bearer(settings, "clinician", care_unit_id=uuid.UUID(world["unit"]))
    alerts = client.get("/api/v1/alerts", params={"rule": "threshold"}, headers=headers).json()[
        "alerts"
    ]
    aid = alerts[0]["id"]
    r = client.post(
        f"/api/v1/alerts/{aid}/acknowledge", json={"note": "ringer upp"}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "acknowledged"
    assert r.json()["acknowledged_by"] == "clinician-1"
    r = client.post(f"/api/v1/alerts/{aid}/resolve", json={"note": "klart"}, headers=headers)
    assert r.json()["status"] == "resolved" and r.json()["resolved_by"] == "clinician-1"
    again = client.post(f"/api/v1/alerts/{aid}/dismiss", json={}, headers=headers)
    assert again.status_code == 409
    detail = client.get(f"/api/v1/alerts/{aid}", headers=headers).json()
    assert [e["event"] for e in detail["events"]] == ["opened", "acknowledged", "resolved"]
    assert [e["note"] for e in detail["events"]][1:] == ["ringer upp", "klart"]
    log = access_rows(settings)
    updates = [row for row in log if row[2] == "update"]
    assert [(u[0], u[3], u[5]["action"]) for u in updates] == [
        ("clinician-1", f"alerts/{aid}", "acknowledge"),
        ("clinician-1", f"alerts/{aid}", "resolve"),
    ]
    assert all(u[4] == [uuid.UUID(world["patient"])] for u in updates)
    reads = [row for row in log if row[2] == "read" and row[3] == "alerts"]
    assert reads and reads[0][4] == [uuid.UUID(world["patient"])]


def test_another_units_patient_and_alert_answer_as_unknown_ones(client, settings, cli, world):
    r = cli("care-unit", "add", "--name", "Annan", "--hsa-id", "SE2321000016-OTHER", "--json")
    other = r.json["id"]
    headers = bearer(settings, "clinician", care_unit_id=uuid.UUID(other))
    unknown = str(uuid.uuid4())

    def same(path: str, method: str = "get", **kw) -> None:
        theirs = client.request(
            method, path.format(p=world["patient"], a=aid), headers=headers, **kw
        )
        absent = client.request(method, path.format(p=unknown, a=unknown), headers=headers, **kw)
        assert theirs.status_code == absent.status_code == 404, (path, theirs.text)
        assert set(theirs.json()) == set(absent.json()) == {"error"}

    aid = client.get("/api/v1/alerts", headers=bearer(settings, "admin")).json()["alerts"][0]["id"]
    same("/api/v1/alerts?patient={p}")
    same("/api/v1/alerts/{a}")
    same("/api/v1/alerts/{a}/dismiss", "post", json={"note": "x"})
    same("/api/v1/patients/{p}/plan")
    same("/api/v1/patients/{p}/plan", "put", json={"protocol": "general"})
    # Listing another unit's alerts by naming the unit is still refused.
    r = client.get("/api/v1/alerts", params={"care_unit": world["unit"]}, headers=headers)
    assert r.status_code == 403
    # Their own list does not show the other unit's alerts.
    r = client.get("/api/v1/alerts", headers=headers)
    assert r.status_code == 200 and r.json()["alerts"] == []
    with psycopg.connect(settings.database_url) as conn:
        status = conn.execute("SELECT status FROM alerts WHERE id = %s", (aid,)).fetchone()[0]
        versions = conn.execute(
            "SELECT count(*) FROM monitoring_plan_history WHERE patient_id = %s",
            (world["patient"],),
        ).fetchone()[0]
    assert status == "open" and versions == 1  # the copd plan of `world` only
    # Every refusal is in the access log with its outcome, the patient tried included.
    refused = [row for row in access_rows(settings) if row[2].endswith("-refused")]
    pid = uuid.UUID(world["patient"])
    tried = [row for row in refused if row[4] == [pid]]
    assert {row[2] for row in tried} == {"read-refused", "update-refused"}
    assert len(tried) == 5, tried
    assert all(row[5]["outcome"] == "refused" and row[5]["status"] in (403, 404) for row in refused)
    assert any(row[5]["status"] == 403 for row in refused)


def test_refusals_by_role_and_scope_are_logged(client, settings, world):
    patient = bearer(settings, "patient", patient_id=uuid.UUID(world["patient"]))
    assert client.get("/api/v1/alerts?status=open", headers=patient).status_code == 403
    narrow = bearer(
        settings, "clinician", care_unit_id=uuid.UUID(world["unit"]), scope="user/Patient.r"
    )
    assert client.get("/api/v1/alerts", headers=narrow).status_code == 403
    rows = [row for row in access_rows(settings) if row[2] == "read-refused"]
    assert [(row[1], row[5]["status"], row[5]["params"]) for row in rows] == [
        ("patient", 403, ["status"]),
        ("clinician", 403, []),
    ]


def test_the_access_log_keeps_no_raw_query_values(client, settings, world):
    pnr = "19121212-1212"
    headers = bearer(settings, "admin")
    r = client.get(
        "/api/v1/alerts",
        params={"status": "open", "nickname": pnr, "199001011234": "x"},
        headers=headers,
    )
    assert r.status_code == 200
    detail = [row for row in access_rows(settings) if row[3] == "alerts"][-1][5]
    assert detail["params"] == ["(other)", "nickname", "status"]
    assert detail["filters"]["status"] == ["open"]
    text = str(access_rows(settings))
    assert pnr not in text and "1212" not in text and "199001011234" not in text


def test_integrator_reads_but_cannot_act_and_patients_have_no_access(client, settings, world):
    r = client.get("/api/v1/alerts", headers=bearer(settings, "integrator"))
    assert r.status_code == 200 and len(r.json()["alerts"]) >= 2
    aid = r.json()["alerts"][0]["id"]
    r = client.post(
        f"/api/v1/alerts/{aid}/resolve", json={}, headers=bearer(settings, "integrator")
    )
    assert r.status_code == 403
    patient = bearer(settings, "patient", patient_id=uuid.UUID(world["patient"]))
    assert client.get("/api/v1/alerts", headers=patient).status_code == 403
    assert client.get("/api/v1/alerts").status_code == 401


def test_unknown_alert_is_404(client, settings, world):
    headers = bearer(settings, "admin")
    assert (
        client.post(f"/api/v1/alerts/{uuid.uuid4()}/resolve", json={}, headers=headers).status_code
        == 404
    )
    assert (
        client.post("/api/v1/alerts/not-an-id/resolve", json={}, headers=headers).status_code == 404
    )


def test_plan_put_and_get_with_history(client, settings, cli, care_unit):
    r = cli(
        "patient", "add", "--personnummer", make_personnummer(), "--care-unit", care_unit, "--json"
    )
    pid = r.json["id"]
    headers = bearer(settings, "clinician", care_unit_id=uuid.UUID(care_unit))
    r = client.get(f"/api/v1/patients/{pid}/plan", headers=headers)
    assert r.status_code == 200
    assert (r.json()["protocol"], r.json()["default"]) == ("general", True)
    body = {"protocol": "heart_failure", "thresholds": ["body_weight::95", "systolic:95:150"]}
    r = client.put(f"/api/v1/patients/{pid}/plan", json=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["thresholds"]["body_weight"]["high"] == 95
    assert r.json()["set_by"] == "clinician-1" and r.json()["version"] == 1
    r = client.put(
        f"/api/v1/patients/{pid}/plan",
        headers=headers,
        json={"protocol": "copd", "news2_scale2": True, "thresholds": {"spo2": {"low": 86}}},
    )
    assert r.json()["spo2_target"] == [88.0, 92.0] and r.json()["version"] == 2
    got = client.get(f"/api/v1/patients/{pid}/plan", headers=headers).json()
    assert got["protocol"] == "copd" and got["news2_scale2"] is True
    assert [h["version"] for h in got["history"]] == [2, 1]
    assert got["history"][1]["protocol"] == "heart_failure"
    assert got["effective_thresholds"]["systolic"]["alarms"][0]["limit"] == 180
    bad = client.put(f"/api/v1/patients/{pid}/plan", json={"protocol": "asthma"}, headers=headers)
    assert bad.status_code == 400 and "asthma" in bad.json()["error"]
    bad = client.put(
        f"/api/v1/patients/{pid}/plan",
        headers=headers,
        json={"protocol": "general", "thresholds": ["pulse:1:2"]},
    )
    assert bad.status_code == 400 and "pulse" in bad.json()["error"]


def test_webhooks_are_for_admins(client, settings, care_unit):
    body = {"url": "http://127.0.0.1:9/hook", "secret": "a-secret-of-16-chars"}
    clin = bearer(settings, "clinician", care_unit_id=uuid.UUID(care_unit))
    assert client.post("/api/v1/webhooks", json=body, headers=clin).status_code == 403
    admin = bearer(settings, "admin")
    r = client.post("/api/v1/webhooks", json=body, headers=admin)
    assert r.status_code == 201 and "secret" not in r.json()
    hooks = client.get("/api/v1/webhooks", headers=admin).json()["webhooks"]
    assert [h["url"] for h in hooks] == [body["url"]]
    r = client.delete(f"/api/v1/webhooks/{hooks[0]['id']}", headers=admin)
    assert r.json()["active"] is False


# --- issue 12, finding 5: plans need a write scope, one validation, unknown fields refused --


@pytest.fixture
def plan_patient(cli, care_unit) -> str:
    r = cli(
        "patient", "add", "--personnummer", make_personnummer(), "--care-unit", care_unit, "--json"
    )
    pid = r.json["id"]
    assert cli("plan", "set", "--patient", pid, "--protocol", "copd").code == 0
    return pid


def _versions(settings, pid: str) -> int:
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(
            "SELECT count(*) FROM monitoring_plan_history WHERE patient_id = %s", (pid,)
        ).fetchone()[0]


def test_a_plan_change_needs_the_careplan_write_scope(client, settings, care_unit, plan_patient):
    unit = uuid.UUID(care_unit)
    body = {"protocol": "copd", "thresholds": {"spo2": {"low": 50, "high": 100}}}
    url = f"/api/v1/patients/{plan_patient}/plan"
    read_only = bearer(settings, "clinician", care_unit_id=unit, scope="user/Patient.r")
    r = client.put(url, json=body, headers=read_only)
    assert r.status_code == 403 and "CarePlan" in r.json()["error"]
    reader = bearer(settings, "clinician", care_unit_id=unit, scope="user/*.rs")
    assert client.put(url, json=body, headers=reader).status_code == 403
    assert client.get(url, headers=reader).status_code == 200
    assert _versions(settings, plan_patient) == 1
    refused = [row for row in access_rows(settings) if row[2] == "update-refused"]
    assert [row[5]["status"] for row in refused] == [403, 403]
    # The default clinician token and an explicit CarePlan write scope may.
    for scope in (None, "user/CarePlan.u", "user/CarePlan.write"):
        r = client.put(
            url, json=body, headers=bearer(settings, "clinician", care_unit_id=unit, scope=scope)
        )
        assert r.status_code == 200, (scope, r.text)
    assert _versions(settings, plan_patient) == 4


@pytest.mark.parametrize(
    ("thresholds", "message"),
    [
        ({"spo2": {"low": -5, "high": 400}}, "spo2: low limit -5 is outside the plausible range"),
        ({"spo2": {"low": 88, "high": 400}}, "spo2: high limit 400 is outside the plausible range"),
        ({"body_weight": {"high": 900}}, "body_weight: high limit 900 is outside"),
        ({"systolic": {"low": 150, "high": 90}}, "low limit 150 must be below high limit 90"),
        ({"heart_rate": {"low": None, "high": None}}, "give a low limit, a high limit or both"),
        ({"pulse": {"low": 40}}, "unknown threshold type 'pulse'"),
        (["spo2:-5:400"], "outside the plausible range"),
        (["body_weight::900"], "outside the plausible range"),
    ],
)
def test_the_plan_api_checks_limits_as_the_cli_and_ui_do(
    client, settings, care_unit, plan_patient, cli, thresholds, message
):
    headers = bearer(settings, "clinician", care_unit_id=uuid.UUID(care_unit))
    r = client.put(
        f"/api/v1/patients/{plan_patient}/plan",
        json={"protocol": "copd", "thresholds": thresholds},
        headers=headers,
    )
    assert r.status_code == 400 and message in r.json()["error"], r.text
    assert _versions(settings, plan_patient) == 1
    # The CLI refuses the same with the same words.
    if isinstance(thresholds, list):
        r = cli(
            "plan",
            "set",
            "--patient",
            plan_patient,
            "--protocol",
            "copd",
            "--threshold",
            thresholds[0],
        )
        assert r.code == 2 and message in r.err


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"protocol": "copd", "threshold": ["spo2:88:100"]}, "threshold"),
        ({"protocol": "copd", "thresholds": {"spo2": {"low": 88, "hihg": 99}}}, "hihg"),
        ({"protocol": "copd", "news2_scale_2": True}, "news2_scale_2"),
    ],
)
def test_unknown_plan_fields_are_refused_by_name_and_nothing_is_stored(
    client, settings, care_unit, plan_patient, body, field
):
    headers = bearer(settings, "clinician", care_unit_id=uuid.UUID(care_unit))
    before = client.get(f"/api/v1/patients/{plan_patient}/plan", headers=headers).json()
    r = client.put(f"/api/v1/patients/{plan_patient}/plan", json=body, headers=headers)
    assert r.status_code == 422, r.text
    assert field in r.text
    after = client.get(f"/api/v1/patients/{plan_patient}/plan", headers=headers).json()
    assert after["version"] == before["version"] == 1
    assert after["thresholds"] == before["thresholds"]


def test_expected_windows_must_be_positive_and_bounded(client, settings, care_unit, plan_patient):
    headers = bearer(settings, "clinician", care_unit_id=uuid.UUID(care_unit))
    url = f"/api/v1/patients/{plan_patient}/plan"
    for hours, ok in ((-1, False), (0, False), (10**9, False), (24, True)):
        r = client.put(url, json={"protocol": "copd", "expected": {"spo2": hours}}, headers=headers)
        assert (r.status_code == 200) is ok, (hours, r.text)
    r = client.put(url, json={"protocol": "copd", "expected": {"ecg": 24}}, headers=headers)
    assert r.status_code == 400 and "ecg" in r.json()["error"]


def test_the_access_log_masks_what_looks_like_a_personnummer_and_keeps_ids():
    from egenmon.store.access_log import MASK, OTHER, param_names, scrub

    pid = "12345678-1234-4234-8234-123456789012"
    obs = "00060012345678-0123456789abcdef"
    detail = {"note": "ring 19121212-1212 eller 191212121212", "id": obs, "r": f"p/{pid}"}
    assert scrub(detail) == {"note": f"ring {MASK} eller {MASK}", "id": obs, "r": f"p/{pid}"}
    assert scrub(["a\x00b", 3, None]) == ["ab", 3, None]
    assert param_names(
        [("status", "x"), ("19121212-1212", ""), ("a b", ""), ("code:text", "")]
    ) == [
        OTHER,
        "code:text",
        "status",
    ]


def test_the_plan_api_sets_the_news2_freshness_window_within_its_bounds(
    client, settings, care_unit, plan_patient
):
    headers = bearer(settings, "clinician", care_unit_id=uuid.UUID(care_unit))
    url = f"/api/v1/patients/{plan_patient}/plan"
    r = client.put(url, json={"protocol": "copd", "news2_freshness_hours": 12}, headers=headers)
    assert r.status_code == 200, r.text
    assert client.get(url, headers=headers).json()["news2_freshness_hours"] == 12
    # A plan may shorten the window, never widen it past the guideline's 24 hours.
    for hours in (48, 0):
        r = client.put(
            url, json={"protocol": "copd", "news2_freshness_hours": hours}, headers=headers
        )
        assert r.status_code == 400, (hours, r.text)
    assert client.get(url, headers=headers).json()["news2_freshness_hours"] == 12
