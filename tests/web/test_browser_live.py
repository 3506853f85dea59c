"""The worklist learns of a new alert from the server's event stream: in a real headless
Chromium against a real `egenmon serve` (its scan once an hour, so the alert comes from
the commit path), a critical reading appears in the open worklist within seconds, with
no reload and no 15 s poll."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest

from tests.web.test_browser import browser, log_in, playwright, watch  # noqa: F401  fixtures

STREAM_WAIT_MS = 10_000


@pytest.fixture
def slow_scan(monkeypatch):
    monkeypatch.setenv("EGENMON_SCHEDULER_INTERVAL_S", "3600")


def test_a_new_alert_appears_in_the_open_worklist_by_server_sent_events(
    slow_scan,
    browser,  # noqa: F811  the fixture imported above
    serve,
    make_user,
    care_unit,
    device,
):
    make_user("berit", care_unit, name="Berit Sjuksköterska")
    base, _ = serve("--no-mqtt")
    page = browser().new_page()
    problems = watch(page)
    log_in(page, base, "berit")
    page.wait_for_selector('#worklist-live[data-live="events"]', timeout=STREAM_WAIT_MS)
    row = f'#worklist tbody tr[data-patient-id="{device["patient"]}"]'
    assert page.locator(row).count() == 0
    loaded = page.get_attribute("#worklist-live", "data-refreshed")

    now = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    r = httpx.post(
        base + "/api/v1/readings",
        json={"readings": [{"type": "spo2", "time": now, "value": 84, "unit": "%"}]},
        headers={"Authorization": "Bearer " + device["secret"]},
    )
    assert r.status_code == 200, r.text
    page.wait_for_selector(row, timeout=STREAM_WAIT_MS)
    assert page.get_attribute("#worklist-live", "data-refreshed") != loaded
    assert page.get_attribute(row, "data-severity") == "high"
    assert problems == []
