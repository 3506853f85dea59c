"""Every message the clinician UI can show comes from web/i18n.py in Swedish and English:
the threshold editor's and the alert actions' errors included."""

from __future__ import annotations

import html
import re
import string

from egenmon.web import i18n
from tests.web.conftest import csrf_of, login

# Words that read the same in both languages (names, abbreviations, loanwords).
SAME_IN_BOTH = {
    "app.name",
    "worklist.filter_status",
    "worklist.col_patient",
    "worklist.col_status",
    "rule.news2",
    "patient.news2",
    "patient.news2_parameter",
    "patient.device_status",
    "protocol.diabetes",
    "age.short_minutes",
    "age.short_hours",
    "age.short_days",
}


def test_every_message_key_renders_in_both_languages():
    sv, en = i18n.translator("sv"), i18n.translator("en")
    assert set(sv) == set(en)
    assert len(sv) > 150
    for key in sorted(sv):
        fields = {f for _, f, _, _ in string.Formatter().parse(sv[key]) if f}
        values = {f: f"<{f}>" for f in fields}
        for locale in i18n.LOCALES:
            text = i18n.translate(locale, key, **values) if values else i18n.translate(locale, key)
            assert text.strip() and text != key, (locale, key)
            assert "{" not in text and "}" not in text, (locale, key)
            assert all(v in text for v in values.values()), (locale, key)
        if key not in SAME_IN_BOTH:
            assert sv[key] != en[key], f"{key} is not translated"


def test_the_ui_code_never_shows_an_exception_text():
    """No str(e) or raw query text reaches a flash or an error page."""
    routes = (i18n.__file__.replace("i18n.py", "routes.py"),)
    for path in routes:
        code = open(path, encoding="utf-8").read()
        assert not re.search(r"reason=str\(e\)|failed=str\(e\)|reason=failed", code)


def post_thresholds(client, ward, token, **fields):
    return client.post(
        f"/ui/patients/{ward.deteriorating}/thresholds",
        data={"csrf_token": token, **fields},
    )


def flash_of(page: str) -> str:
    m = re.search(r'<p class="flash flash-error"[^>]*>(.*?)</p>', page, re.S)
    assert m, "no error shown"
    return html.unescape(m.group(1))


def switch_to_english(client, token):
    r = client.post("/ui/locale", data={"csrf_token": token, "locale": "en", "next": "/ui/"})
    assert r.status_code == 303


def test_threshold_editor_errors_in_swedish_and_english(client, make_user, ward, conn):
    make_user("anna", ward.unit)
    login(client, "anna")
    token = csrf_of(client.get(f"/ui/patients/{ward.deteriorating}").text)

    r = post_thresholds(client, ward, token, low_spo2="120")
    assert r.status_code == 400
    assert flash_of(r.text) == (
        "Gränserna sparades inte: Syremättnad: den nedre gränsen 120 ligger utanför det "
        "rimliga intervallet 50–100 %."
    )
    r = post_thresholds(client, ward, token, high_body_weight="åttio")
    assert flash_of(r.text) == (
        "Gränserna sparades inte: Vikt: den övre gränsen (åttio) är inget tal."
    )
    r = post_thresholds(client, ward, token, low_heart_rate="90,5", high_heart_rate="50")
    assert flash_of(r.text) == (
        "Gränserna sparades inte: Puls: den nedre gränsen 90,5 måste vara lägre än den övre 50."
    )
    r = post_thresholds(client, ward, token, low_systolic="1:2")
    assert "är inget tal" in flash_of(r.text)

    switch_to_english(client, token)
    r = post_thresholds(client, ward, token, low_heart_rate="90.5", high_heart_rate="50")
    assert r.status_code == 400
    assert flash_of(r.text) == (
        "The limits were not saved: Pulse: the lower limit 90.5 must be below the upper limit 50."
    )
    r = post_thresholds(client, ward, token, high_body_weight="inf")
    assert flash_of(r.text) == (
        "The limits were not saved: Weight: the upper limit (inf) is not a number."
    )
    versions = conn.execute(
        "SELECT version FROM monitoring_plans WHERE patient_id = %s", (ward.deteriorating,)
    ).fetchone()[0]
    assert versions == 1  # nothing refused was stored


def test_alert_action_failures_are_worded_by_the_ui_not_the_url(client, make_user, ward, conn):
    make_user("anna", ward.unit)
    login(client, "anna")
    token = csrf_of(client.get("/ui/").text)
    # A link with text of someone else's choosing shows no such text.
    page = client.get("/ui/?failed=Ring+0701234567+och+uppge+ditt+l%C3%B6senord").text
    assert "flash-error" not in page  # an unknown code shows nothing, least of all the link's text

    alert_id = conn.execute(
        "SELECT id::text FROM alerts WHERE patient_id = %s AND rule = 'news2'",
        (ward.deteriorating,),
    ).fetchone()[0]
    back = f"/ui/patients/{ward.deteriorating}"
    for _ in range(2):
        r = client.post(
            f"/ui/alerts/{alert_id}/action",
            data={"csrf_token": token, "action": "resolve", "next": back},
        )
    assert r.headers["location"] == back + "?failed=transition"
    shown = flash_of(client.get(r.headers["location"]).text)
    assert shown.startswith("Åtgärden kunde inte utföras: avvikelsens status tillåter den inte")

    long_note = client.post(
        f"/ui/alerts/{alert_id}/action",
        data={"csrf_token": token, "action": "dismiss", "note": "x" * 5000, "next": back},
    )
    assert long_note.headers["location"].endswith("failed=note_too_long")
    assert "högst 4000 tecken" in flash_of(client.get(long_note.headers["location"]).text)

    bad = client.post(
        f"/ui/alerts/{alert_id}/action",
        data={"csrf_token": token, "action": "<b>drop</b>", "next": back},
    )
    assert bad.status_code == 400
    assert "okänd åtgärd" in bad.text and "drop" not in bad.text

    switch_to_english(client, token)
    shown = flash_of(client.get(back + "?failed=transition").text)
    assert shown.startswith("The action could not be done: the alert's status no longer")
