"""The clinician UI in a real headless Chromium (Debian's package, driven by Playwright)
against a real `egenmon serve` process and database.

Saves screenshots into test-results/screenshots/; `make screenshots` saves the ones the
README shows into docs/screenshots/ (so an ordinary test run leaves the tree clean).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, sync_playwright

from tests.web.conftest import PASSWORD, simulate_patient

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = (
    _ROOT / "docs" / "screenshots"
    if os.environ.get("SCREENSHOTS_TO_DOCS") == "1"
    else _ROOT / "test-results" / "screenshots"
)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture
def browser(playwright: Playwright) -> Iterator:
    """browser(viewport) -> a fresh Chromium with an empty profile of its own."""
    contexts: list[BrowserContext] = []
    dirs: list[tempfile.TemporaryDirectory] = []

    def start(width: int = 1366, height: int = 900) -> BrowserContext:
        profile = tempfile.TemporaryDirectory(prefix="egenmon-chromium-")
        dirs.append(profile)
        context = playwright.chromium.launch_persistent_context(
            profile.name,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
            locale="sv-SE",
            timezone_id="Europe/Stockholm",
            device_scale_factor=1,
        )
        contexts.append(context)
        return context

    yield start
    for c in contexts:
        c.close()
    for d in dirs:
        d.cleanup()


def watch(page: Page) -> list[str]:
    """Collects console errors and page errors (a CSP violation shows up here)."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


def unlabelled_controls(page: Page) -> list[str]:
    """Visible form controls without a label (every control needs one)."""
    return page.eval_on_selector_all(
        "input:not([type=hidden]), select, textarea",
        "els => els.filter(e => !e.labels || e.labels.length === 0).map(e => e.outerHTML)",
    )


def log_in(page: Page, base: str, username: str, password: str = PASSWORD) -> None:
    page.goto(base + "/ui/")
    assert "/login" in page.url
    page.get_by_label("Användarnamn").fill(username)
    page.get_by_label("Lösenord").fill(password)
    page.get_by_role("button", name="Logga in").click()
    page.wait_for_url(base + "/ui/")


def test_clinician_takes_the_deteriorating_patient_from_worklist_to_resolved(
    browser, serve, ward, make_user, conn, database_url
):
    make_user("anna", ward.unit, name="Anna Sköterska")
    base, _ = serve("--no-mqtt", "--no-scheduler")
    context = browser()
    page = context.new_page()
    problems = watch(page)

    log_in(page, base, "anna")
    rows = page.locator("#worklist tbody tr")
    assert rows.count() >= 3
    order = page.eval_on_selector_all(
        "#worklist tbody tr", "rs => rs.map(r => [r.dataset.patientId, r.dataset.severity])"
    )
    rank = {"high": 3, "medium": 2, "low": 1}
    assert [rank[s] for _, s in order] == sorted((rank[s] for _, s in order), reverse=True)
    assert ward.stable[1] in {p for p, _ in order}  # missing measurements are listed too
    first = rows.first
    assert first.get_attribute("data-patient-id") == ward.deteriorating
    assert first.get_attribute("data-severity") == "high"
    assert "Hög" in first.inner_text()  # severity in words, not colour alone
    assert page.locator("[data-count='technical']").inner_text().strip().isdigit()
    assert unlabelled_controls(page) == []
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "worklist.png"))

    first.locator("a.patient-link").click()
    page.wait_for_url(f"{base}/ui/patients/{ward.deteriorating}")
    page.wait_for_selector("body[data-charts-ready='true']")
    charts = page.eval_on_selector_all(
        "canvas[data-type]",
        """cs => cs.map(c => {
             const chart = Chart.getChart(c);
             return {type: c.dataset.type, points: chart.data.datasets
                       .reduce((n, d) => n + d.data.length, 0),
                     bands: chart.options.plugins.egenmonLimits.bands.length,
                     alerts: chart.options.plugins.egenmonLimits.alerts.length,
                     attr: Number(c.dataset.points), width: c.width};
           })""",
    )
    by_type = {c["type"]: c for c in charts}
    assert {"blood_pressure", "body_weight", "spo2", "heart_rate", "body_temperature"} <= set(
        by_type
    )
    for c in charts:
        assert c["points"] > 10 and c["points"] == c["attr"] and c["width"] > 100, c
    assert by_type["blood_pressure"]["bands"] == 2  # systolic and diastolic limits
    assert by_type["spo2"]["bands"] == 1 and by_type["body_temperature"]["bands"] == 1
    assert by_type["spo2"]["alerts"] >= 1  # the SpO2 alerts are marked on its chart
    assert "NEWS2" in page.locator("#news2").inner_text()
    assert page.locator("#news2 tbody tr").count() == 7
    assert "Hub M1" in page.locator("#devices").inner_text()
    assert "64 %" in page.locator("#devices").inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    assert unlabelled_controls(page) == []
    page.screenshot(path=str(SCREENSHOTS / "patient.png"), full_page=True)

    logged = conn.execute(
        "SELECT count(*) FROM access_log WHERE resource = 'ui/patient' AND actor = 'anna'"
        " AND %s = ANY(patient_ids)",
        (ward.deteriorating,),
    ).fetchone()[0]
    assert logged == 1

    # Acknowledge the most urgent alert with a note, then resolve it with another.
    card = page.locator("#current-alerts > li").first
    alert_id = card.get_attribute("data-alert-id")
    card.locator("summary").click()
    card.get_by_label("Anteckning").fill("Ringt patienten, ökad andfåddhet.")
    card.get_by_role("button", name="Kvittera").click()
    page.wait_for_selector(".flash-ok")
    row = conn.execute(
        "SELECT status, acknowledged_by, note FROM alerts WHERE id = %s", (alert_id,)
    ).fetchone()
    assert row == ("acknowledged", "anna", "Ringt patienten, ökad andfåddhet.")

    card = page.locator(f"#current-alerts > li[data-alert-id='{alert_id}']")
    assert card.get_attribute("data-status") == "acknowledged"
    card.locator("summary").click()
    card.get_by_label("Anteckning").fill("Bokad till mottagningen i dag.")
    card.get_by_role("button", name="Åtgärdad").click()
    page.wait_for_selector(".flash-ok")
    status, resolved_by, notes = conn.execute(
        "SELECT status, resolved_by, notes FROM alerts WHERE id = %s", (alert_id,)
    ).fetchone()
    assert (status, resolved_by) == ("resolved", "anna")
    assert [n["note"] for n in notes] == [
        "Ringt patienten, ökad andfåddhet.",
        "Bokad till mottagningen i dag.",
    ]
    history = page.locator(f"#history li[data-alert-id='{alert_id}']")
    assert "Bokad till mottagningen i dag." in history.inner_text()
    assert page.locator(f"#current-alerts > li[data-alert-id='{alert_id}']").count() == 0

    # Logout ends the session: the old cookie no longer opens anything.
    old = [c for c in context.cookies() if c["name"] == "egenmon_session"]
    assert old
    page.get_by_role("button", name="Logga ut").click()
    page.wait_for_url(base + "/login?bye=1")
    context.add_cookies(old)
    page.goto(f"{base}/ui/patients/{ward.deteriorating}")
    assert "/login" in page.url
    assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
    assert not problems, problems


def test_the_worklist_updates_itself_and_acts_with_a_note(
    browser, serve, ward, make_user, conn, database_url, cli
):
    make_user("anna", ward.unit)
    base, _ = serve("--no-mqtt", "--no-scheduler")
    page = browser(1024, 768).new_page()  # a tablet in landscape
    problems = watch(page)
    log_in(page, base, "anna")
    stable = ward.stable[0]
    assert page.locator(f"#worklist tr[data-patient-id='{stable}']").count() == 0

    # A stable patient turns: new readings, a cycle, and the list shows it without reload.
    r = cli(
        "device",
        "add",
        "--patient",
        stable,
        "--model",
        "Oximeter O2",
        "--id",
        "oximeter-turn",
        "--since",
        "2020-01-01T00:00:00Z",
        "--json",
    )
    assert r.code == 0, r.err
    # Sessions every quarter hour up to now: the new device's readings are the newest the
    # rules see. (Twice a day, like the ward's own device, which of the two measured last
    # depends on each device's random phase, and the stable values won about one run in
    # three.)
    simulate_patient(
        database_url,
        "oximeter-turn",
        stable,
        "deteriorating",
        "copd",
        days=6,
        onset_days_ago=5,
        silent_hours=0,
        every=dt.timedelta(minutes=15),
    )
    assert cli("alerts", "run-once", "--workers", "1").code == 0
    page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    page.wait_for_selector(f"#worklist tr[data-patient-id='{stable}']", timeout=10_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1

    # Dismiss one of the new alerts from the worklist itself, with a note, by keyboard.
    row = page.locator(f"#worklist tr[data-patient-id='{stable}']").first
    alert_id = row.get_attribute("data-alert-id")
    row.locator("summary").focus()
    page.keyboard.press("Enter")
    assert row.locator("details").get_attribute("open") is not None
    page.keyboard.press("Tab")
    page.keyboard.type("Mätfel, patienten mätte om.")
    row.get_by_role("button", name="Avfärda").focus()
    page.keyboard.press("Enter")
    page.wait_for_selector(".flash-ok")
    assert page.url.startswith(base + "/ui/")
    got = conn.execute(
        "SELECT status, dismissed_by, note FROM alerts WHERE id = %s", (alert_id,)
    ).fetchone()
    assert got == ("dismissed", "anna", "Mätfel, patienten mätte om.")
    assert page.locator(f"#worklist tr[data-alert-id='{alert_id}']").count() == 0

    # Filters: only high severity, then the technical tab.
    page.get_by_label("Allvarlighetsgrad", exact=True).select_option("high")
    page.get_by_role("button", name="Filtrera").click()
    severities = page.eval_on_selector_all(
        "#worklist tbody tr", "rs => rs.map(r => r.dataset.severity)"
    )
    assert severities and set(severities) == {"high"}
    page.locator("#tab-technical").click()
    assert page.locator("#tab-technical").get_attribute("aria-current") == "page"
    technical = page.locator("#worklist tbody tr")
    assert technical.count() == 1
    assert technical.first.get_attribute("data-patient-id") == ward.silent
    assert technical.first.get_attribute("data-rule") == "device_inactive"
    assert not problems, problems


def test_a_clinician_of_another_unit_cannot_open_the_patient_even_by_link(
    browser, serve, ward, make_user, cli, conn
):
    r = cli(
        "care-unit",
        "add",
        "--name",
        "Vårdcentralen Annan",
        "--hsa-id",
        "SE2321000016-OTHR",
        "--json",
    )
    make_user("olle", r.json["id"])
    base, _ = serve("--no-mqtt", "--no-scheduler")
    page = browser().new_page()
    log_in(page, base, "olle")
    assert page.locator("#worklist").count() == 0  # nothing of the other unit is listed
    response = page.goto(f"{base}/ui/patients/{ward.deteriorating}")
    assert response is not None and response.status == 404
    text = page.inner_text("main")
    assert "Astrid" not in text and "finns inte" in text
    refused = conn.execute(
        "SELECT count(*) FROM access_log WHERE actor = 'olle' AND action = 'read-refused'"
        " AND %s = ANY(patient_ids)",
        (ward.deteriorating,),
    ).fetchone()[0]
    assert refused == 1


def test_patient_view_in_english_on_a_tablet_in_portrait(browser, serve, ward, make_user):
    make_user("anna", ward.unit, locale="en")
    base, _ = serve("--no-mqtt", "--no-scheduler")
    page = browser(768, 1024).new_page()
    problems = watch(page)
    page.goto(base + "/login?lang=en")
    page.get_by_label("Username").fill("anna")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(base + "/ui/")
    assert page.locator("h1").inner_text() == "Worklist"
    page.goto(f"{base}/ui/patients/{ward.deteriorating}?range=7")
    page.wait_for_selector("body[data-charts-ready='true']")
    assert page.locator("#range-7").get_attribute("aria-current") == "true"
    assert "Latest values" in page.inner_text("main")
    # Nothing wider than the screen: usable without sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 768
    first_day = page.evaluate(
        "Chart.getChart(document.getElementById('chart-body_weight')).options.scales.x.min"
    )
    assert abs(first_day / 1000 - (dt.datetime.now(dt.UTC).timestamp() - 7 * 86400)) < 300
    page.screenshot(path=str(SCREENSHOTS / "patient-tablet-en.png"), full_page=False)
    # Keyboard: Tab reaches the skip link first, then the controls.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    assert not problems, problems
