"""Swedish by default, English selectable: both languages complete, and values written
as each language writes them."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from zoneinfo import ZoneInfo

from egenmon.web import i18n

TEMPLATES = Path(__file__).resolve().parents[2] / "egenmon" / "web" / "templates"
WEB = TEMPLATES.parent


def test_both_languages_have_exactly_the_same_keys():
    sv, en = set(i18n.translator("sv")), set(i18n.translator("en"))
    assert sv == en, sv ^ en


def test_every_key_the_templates_and_code_use_exists():
    used = set()
    for path in [*TEMPLATES.glob("*.html"), *WEB.glob("*.py")]:
        used |= set(re.findall(r"""_\(\s*["']([a-z0-9_.]+)["']""", path.read_text()))
        used |= set(re.findall(r"""translate\(\s*\w+,\s*["']([a-z0-9_.]+)["']""", path.read_text()))
    assert len(used) > 60
    keys = i18n.translator("sv")
    missing = sorted(k for k in used if not k.endswith((".", "_")) and k not in keys)
    assert not missing
    prefixes = {k for k in used if k.endswith((".", "_"))}
    assert all(any(key.startswith(p) for key in keys) for p in prefixes)


def test_every_name_a_key_is_built_from_has_its_words():
    from egenmon.alerts.plans import PROTOCOLS, QUANTITIES
    from egenmon.alerts.rules.findings import RULES
    from egenmon.alerts.rules.news2 import PARAMETERS
    from egenmon.domain.measurements import TYPES
    from egenmon.web.routes import ACTION_FAILURES

    names = (
        [f"rule.{r}" for r in RULES]
        + [f"type.{t}" for t in TYPES]
        + [f"quantity.{q}" for q in QUANTITIES]
        + [f"news2.{p}" for p in PARAMETERS]
        + [f"protocol.{p}" for p in PROTOCOLS]
        + [f"severity.{s}" for s in ("high", "medium", "low")]
        + [f"status.{s}" for s in ("open", "acknowledged", "resolved", "dismissed")]
        + [f"action.{a}" for a in ("acknowledge", "resolve", "dismiss")]
        + [f"action.done.{a}" for a in ("acknowledge", "resolve", "dismiss")]
        + [f"action.failed.{f}" for f in ACTION_FAILURES]
        + [
            "news2.air",
            "news2.oxygen",
            "patient.device_status.active",
            "patient.device_status.revoked",
            "patient.identifier.personnummer",
            "patient.identifier.samordningsnummer",
        ]
    )
    for locale in i18n.LOCALES:
        assert [n for n in names if n not in i18n.translator(locale)] == [], locale


def test_placeholders_agree_between_languages():
    for key, sv in i18n.translator("sv").items():
        en = i18n.translator("en")[key]
        assert set(re.findall(r"{(\w+)}", sv)) == set(re.findall(r"{(\w+)}", en)), key


def test_swedish_is_the_default_and_unknown_locales_fall_back_to_it():
    assert i18n.choose_locale(None, "de", "") == "sv"
    assert i18n.choose_locale("en", "sv") == "en"
    assert i18n.translate("xx", "nav.logout") == "Logga ut"
    assert i18n.translate("en", "nav.logout") == "Log out"
    assert i18n.translate("en", "no.such.key") == "no.such.key"
    assert i18n.translate("sv", "nav.signed_in_as", user="Anna") == "Inloggad som Anna"


def test_numbers_use_a_decimal_comma_in_swedish():
    assert i18n.number(37.86, "sv") == "37,9"
    assert i18n.number(38.0, "sv") == "38"
    assert i18n.number(-0.4, "sv", 1) == "−0,4"
    assert i18n.number(81.44, "en") == "81.4"
    assert i18n.number(None, "sv") == "–"
    assert i18n.value_text("blood_pressure", 142, 91, "mm[Hg]", "sv") == "142/91\u00a0mmHg"
    assert i18n.value_text("body_temperature", 37.9, None, "Cel", "sv") == "37,9\u00a0°C"
    assert i18n.value_text("spo2", 96, None, "%", "en") == "96\u00a0%"


def test_times_show_in_the_display_zone_and_ages_read_naturally():
    tz = ZoneInfo("Europe/Stockholm")
    winter = dt.datetime(2026, 1, 15, 6, 30, tzinfo=dt.UTC)
    summer = dt.datetime(2026, 7, 15, 6, 30, tzinfo=dt.UTC)
    assert i18n.local_time(winter, tz) == "2026-01-15 07:30"
    assert i18n.local_time(summer, tz) == "2026-07-15 08:30"
    now = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
    assert i18n.age(now - dt.timedelta(seconds=20), now, "sv") == "nyss"
    assert i18n.age(now - dt.timedelta(minutes=12), now, "sv") == "för 12 min sedan"
    assert i18n.age(now - dt.timedelta(hours=5), now, "en") == "5 h ago"
    assert i18n.age(now - dt.timedelta(days=3), now, "sv") == "för 3 d sedan"
    assert i18n.age(now - dt.timedelta(hours=5), now, "sv", short=True) == "5 h"
