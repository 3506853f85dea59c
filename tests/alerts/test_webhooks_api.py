"""Webhooks an integrator registers with its own token: its own hooks only, bound to its
care unit (another unit's alerts are never queued for it), a secret of its own, and each
delivery that names a patient in the access log."""

from __future__ import annotations

import asyncio
import uuid
import warnings
from datetime import timedelta

import psycopg
import pytest

from egenmon.alerts import notify
from egenmon.app import Roles, create_app
from egenmon.auth import issue_token
from egenmon.store.db import make_pool
from tests.alerts.conftest import hmac_hex
from tests.conftest import make_personnummer

H = timedelta(hours=1)


@pytest.fixture
def client(settings):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test client's httpx fork is not installed
        from starlette.testclient import TestClient

    app = create_app(settings, Roles(mqtt=False, scheduler=False))
    with TestClient(app) as c:
        yield c


def token(settings, role: str, subject: str, unit: str | None = None) -> dict:
    t = issue_token(
        settings, role=role, subject=subject, care_unit_id=uuid.UUID(unit) if unit else None
    )
    return {"Authorization": f"Bearer {t}"}


def second_unit(cli) -> tuple[str, str, str]:
    """Another care unit with a patient and a device: (unit, patient, device)."""
    unit = cli(
        "care-unit",
        "add",
        "--name",
        "Other",
        "--hsa-id",
        f"SE2321000016-{uuid.uuid4().hex[:6]}",
        "--json",
    )
    u = unit.json["id"]
    p = cli(
        "patient",
        "add",
        "--personnummer",
        make_personnummer("19610203"),
        "--care-unit",
        u,
        "--json",
    )
    assert p.code == 0, p.err
    d = cli("device", "add", "--patient", p.json["id"], "--model", "M7", "--id", "dev-other",
            "--since", "2020-01-01T00:00:00Z", "--json")  # fmt: skip
    assert d.code == 0, d.err
    return u, p.json["id"], d.json["id"]


def test_an_integrator_manages_its_own_hooks_only(client, settings, care_unit):
    mine = token(settings, "integrator", "integrator-a", care_unit)
    other = token(settings, "integrator", "integrator-b", str(uuid.uuid4()))
    r = client.post("/api/v1/webhooks", json={"url": "http://127.0.0.1:9/a"}, headers=mine)
    assert r.status_code == 201, r.text
    hook = r.json()
    assert hook["care_unit"] == care_unit and len(hook["secret"]) >= 32  # shown once
    assert "secret" not in client.get(f"/api/v1/webhooks/{hook['id']}", headers=mine).json()
    # Bound to its unit: it may not register a hook for another.
    r = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/x", "care_unit": str(uuid.uuid4())},
        headers=mine,
    )
    assert r.status_code == 403
    bad = client.post("/api/v1/webhooks", json={"url": "ftp://x", "extra": 1}, headers=mine)
    assert bad.status_code == 422 and "url" in bad.text and "extra" in bad.text
    # Another integrator sees nothing of it and cannot change it.
    assert client.get("/api/v1/webhooks", headers=other).json() == {"webhooks": []}
    for call in (client.get, client.delete):
        assert call(f"/api/v1/webhooks/{hook['id']}", headers=other).status_code == 404
    r = client.patch(f"/api/v1/webhooks/{hook['id']}", json={"active": False}, headers=other)
    assert r.status_code == 404
    # The owner changes and disables it; an admin sees every hook.
    r = client.patch(
        f"/api/v1/webhooks/{hook['id']}", json={"description": "journal"}, headers=mine
    )
    assert r.json()["description"] == "journal" and r.json()["active"] is True
    assert client.delete(f"/api/v1/webhooks/{hook['id']}", headers=mine).json()["active"] is False
    admin = token(settings, "admin", "admin-1")
    assert [h["id"] for h in client.get("/api/v1/webhooks", headers=admin).json()["webhooks"]] == [
        hook["id"]
    ]
    clinician = token(settings, "clinician", "dr-1", care_unit)
    assert client.get("/api/v1/webhooks", headers=clinician).status_code == 403


def test_a_units_hook_gets_only_its_units_alerts_signed_and_logged(
    client, settings, cli, care_unit, device, store, now, receiver
):
    mine = token(settings, "integrator", "integrator-a", care_unit)
    hook = client.post("/api/v1/webhooks", json={"url": receiver.url}, headers=mine).json()
    other_unit, other_patient, other_device = second_unit(cli)
    other = token(settings, "integrator", "integrator-b", other_unit)
    other_hook = client.post(
        "/api/v1/webhooks", json={"url": receiver.url + "/b"}, headers=other
    ).json()
    store.add(device["patient"], device["id"], "blood_glucose", now - H, 2.5)
    assert len(store.cycle(now).opened) == 1
    with psycopg.connect(settings.database_url) as conn:
        queued = conn.execute(
            "SELECT webhook_id::text, patient_id::text FROM webhook_deliveries"
        ).fetchall()
    assert queued == [(hook["id"], device["patient"])]  # nothing for the other unit's hook

    async def deliver() -> notify.DeliveryReport:
        pool = make_pool(settings.database_url, 1, 2)
        await pool.open(wait=True)
        try:
            return await notify.deliver_due(pool, default_secret=None, base_backoff_s=60)
        finally:
            await pool.close()

    assert asyncio.run(deliver()).delivered == 1
    [req] = receiver.requests
    assert req.headers["X-Egenmon-Signature"] == hmac_hex(hook["secret"], req.body)
    with psycopg.connect(settings.database_url) as conn:
        logged = conn.execute(
            "SELECT actor, role, care_unit_id::text, patient_ids::text[] FROM access_log"
            " WHERE action = 'notify'"
        ).fetchall()
    assert logged == [("integrator-a", "integrator", care_unit, [device["patient"]])]
    # The other unit's alert goes to the other unit's hook only.
    store.add(other_patient, other_device, "blood_glucose", now - H, 2.5)
    store.cycle(now)
    with psycopg.connect(settings.database_url) as conn:
        later = conn.execute(
            "SELECT webhook_id::text FROM webhook_deliveries WHERE patient_id = %s",
            (other_patient,),
        ).fetchall()
    assert later == [(other_hook["id"],)]
