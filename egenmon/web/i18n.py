"""Words of the clinician UI in Swedish (the default) and English, and how values read.

A plain dictionary per language: every key exists in both (a test checks), and a missing
key shows itself as the key rather than failing a clinician's page.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from zoneinfo import ZoneInfo

DEFAULT_LOCALE = "sv"
LOCALES = ("sv", "en")
LOCALE_NAMES = {"sv": "Svenska", "en": "English"}

MESSAGES: dict[str, dict[str, str]] = {
    "sv": {
        "app.name": "egenmon",
        "app.tagline": "Egenmonitorering",
        "nav.worklist": "Arbetslista",
        "nav.skip": "Hoppa till innehållet",
        "nav.language": "Språk",
        "nav.change_language": "Byt språk",
        "nav.logout": "Logga ut",
        "nav.signed_in_as": "Inloggad som {user}",
        "nav.unit": "Vårdenhet",
        "nav.all_units": "Alla vårdenheter",
        "login.title": "Logga in",
        "login.username": "Användarnamn",
        "login.password": "Lösenord",
        "login.submit": "Logga in",
        "login.failed": "Inloggningen misslyckades. Kontrollera användarnamn och lösenord.",
        "login.lockout_rule": "Efter {n} misslyckade försök pausas inloggningen från den här "
        "enheten i {minutes} minuter.",
        "login.throttled": "För många misslyckade inloggningar härifrån. Försök igen om "
        "{seconds} sekunder.",
        "login.expired_form": "Formuläret hade gått ut. Försök igen.",
        "login.logged_out": "Du är utloggad.",
        "worklist.title": "Arbetslista",
        "worklist.tab_clinical": "Kliniska avvikelser",
        "worklist.tab_technical": "Tekniska avvikelser",
        "worklist.tabs": "Typ av avvikelse",
        "worklist.filters": "Filter",
        "worklist.filter_severity": "Allvarlighetsgrad",
        "worklist.filter_rule": "Regel",
        "worklist.filter_status": "Status",
        "worklist.filter_mine": "Bara kvitterade av mig",
        "worklist.filter_apply": "Filtrera",
        "worklist.filter_clear": "Rensa filter",
        "worklist.any": "Alla",
        "worklist.active": "Öppna och kvitterade",
        "worklist.counts": "Antal per allvarlighetsgrad",
        "worklist.total": "Totalt",
        "worklist.empty": "Inga avvikelser att visa.",
        "worklist.updated": "Uppdaterad {time}",
        "worklist.live_note": "Listan uppdateras automatiskt.",
        "worklist.col_severity": "Allvarlighet",
        "worklist.col_patient": "Patient",
        "worklist.col_alert": "Avvikelse",
        "worklist.col_value": "Utlösande värde",
        "worklist.col_when": "När",
        "worklist.col_due": "Vårdkontakt senast",
        "worklist.col_status": "Status",
        "worklist.col_action": "Åtgärd",
        "worklist.opened": "Öppnad {time}",
        "worklist.updated_at": "Uppdaterad {time}",
        "worklist.overdue": "Försenad",
        "worklist.no_due": "Ingen tid satt",
        "worklist.unnamed": "Namn saknas",
        "severity.high": "Hög",
        "severity.medium": "Medel",
        "severity.low": "Låg",
        "status.open": "Öppen",
        "status.acknowledged": "Kvitterad",
        "status.resolved": "Åtgärdad",
        "status.dismissed": "Avfärdad",
        "rule.threshold": "Gränsvärde",
        "rule.trend_weight": "Viktökning",
        "rule.trend_bp_mean": "Blodtrycksmedelvärde",
        "rule.spo2_drop": "Sjunkande syremättnad",
        "rule.news2": "NEWS2",
        "rule.missing_data": "Uteblivna mätningar",
        "rule.device_inactive": "Enheten rapporterar inte",
        "action.open": "Hantera",
        "action.note": "Anteckning",
        "action.note_hint": "T.ex. vad som sades vid kontakten med patienten.",
        "action.acknowledge": "Kvittera",
        "action.resolve": "Åtgärdad",
        "action.dismiss": "Avfärda",
        "action.done.acknowledge": "Avvikelsen är kvitterad.",
        "action.done.resolve": "Avvikelsen är markerad som åtgärdad.",
        "action.done.dismiss": "Avvikelsen är avfärdad.",
        "action.failed.transition": "Åtgärden kunde inte utföras: avvikelsens status tillåter "
        "den inte längre (någon annan kan ha hanterat den). Sidan visar läget nu.",
        "action.failed.note_too_long": "Åtgärden kunde inte utföras: anteckningen får vara "
        "högst {n} tecken.",
        "action.failed.invalid": "Åtgärden kunde inte utföras.",
        "action.by": "av {user}",
        "type.blood_pressure": "Blodtryck",
        "type.heart_rate": "Puls",
        "type.spo2": "Syremättnad (SpO2)",
        "type.body_temperature": "Kroppstemperatur",
        "type.body_weight": "Vikt",
        "type.respiratory_rate": "Andningsfrekvens",
        "type.blood_glucose": "Blodglukos",
        "quantity.systolic": "Systoliskt blodtryck",
        "quantity.diastolic": "Diastoliskt blodtryck",
        "quantity.heart_rate": "Puls",
        "quantity.spo2": "Syremättnad",
        "quantity.body_temperature": "Kroppstemperatur",
        "quantity.body_weight": "Vikt",
        "quantity.respiratory_rate": "Andningsfrekvens",
        "quantity.blood_glucose": "Blodglukos",
        "series.systolic": "Systoliskt",
        "series.diastolic": "Diastoliskt",
        "patient.back": "Tillbaka till arbetslistan",
        "patient.identifier.personnummer": "Personnummer",
        "patient.identifier.samordningsnummer": "Samordningsnummer",
        "patient.range": "Tidsperiod",
        "patient.days": "{n} dagar",
        "patient.current_alerts": "Aktuella avvikelser",
        "patient.no_current_alerts": "Inga öppna avvikelser.",
        "patient.latest": "Senaste värden",
        "patient.latest_none": "Inga mätningar ännu.",
        "patient.measured": "Mätt {time}",
        "patient.charts": "Mätningar",
        "patient.chart_label": "{type}: {n} mätningar de senaste {days} dagarna.",
        "patient.chart_limits": "Gränser: {limits}.",
        "patient.chart_no_limits": "Inga gränser satta.",
        "patient.no_data_types": "Inga mätningar under perioden: {types}.",
        "patient.bucketed": "Medelvärden per {minutes} minuter (många mätningar).",
        "patient.legend_band": "Inom gränserna",
        "patient.legend_alert": "Avvikelse öppnad",
        "patient.news2": "NEWS2",
        "patient.news2_caveat": "Beslutsstöd, inte diagnos: NEWS2 är validerat för akut sjuka "
        "vuxna på sjukhus, inte för mätningar i hemmet. Bedöm alltid "
        "de uppmätta värdena.",
        "patient.news2_score": "Poäng {score}",
        "patient.news2_scale": "SpO2-skala {scale}",
        "patient.news2_parameter": "Parameter",
        "patient.news2_value": "Värde",
        "patient.news2_points": "Poäng",
        "patient.news2_age": "Ålder",
        "patient.news2_missing": "Saknas",
        "patient.news2_missing_list": "Saknas eller äldre än {hours} timmar: {names}.",
        "patient.news2_total": "Summa",
        "news2.respiratory_rate": "Andningsfrekvens",
        "news2.spo2": "Syremättnad",
        "news2.air_or_oxygen": "Luft eller syrgas",
        "news2.systolic_bp": "Systoliskt blodtryck",
        "news2.pulse": "Puls",
        "news2.consciousness": "Medvetandegrad",
        "news2.temperature": "Temperatur",
        "news2.air": "luft",
        "news2.oxygen": "syrgas",
        "patient.plan": "Övervakningsplan",
        "patient.plan_none": "Ingen plan satt; standardgränser gäller.",
        "patient.plan_protocol": "Protokoll",
        "patient.plan_expected": "Förväntade mätningar",
        "patient.plan_window": "{type}: minst var {hours}:e timme",
        "patient.plan_scale2": "SpO2-skala 2 (hyperkapni)",
        "patient.plan_spo2_target": "Målintervall SpO2",
        "patient.plan_set": "Satt {time} {by}",
        "patient.thresholds": "Individuella gränser",
        "patient.thresholds_hint": "Lämna tomt för att använda protokollets standard. "
        "Ett värde utanför gränserna ger en avvikelse.",
        "patient.thresholds_low": "Nedre gräns",
        "patient.thresholds_high": "Övre gräns",
        "patient.thresholds_default": "Standard",
        "patient.thresholds_save": "Spara gränser",
        "patient.thresholds_saved": "Gränserna är sparade.",
        "patient.thresholds_error": "Gränserna sparades inte: {reason}",
        "thresholds.limit_low": "den nedre gränsen",
        "thresholds.limit_high": "den övre gränsen",
        "thresholds.not_a_number": "{quantity}: {limit} ({value}) är inget tal.",
        "thresholds.implausible": "{quantity}: {limit} {value} ligger utanför det rimliga "
        "intervallet {low}–{high} {unit}.",
        "thresholds.low_not_below_high": "{quantity}: den nedre gränsen {low} måste vara lägre "
        "än den övre {high}.",
        "thresholds.invalid": "kontrollera värdena och försök igen.",
        "patient.history": "Historik",
        "patient.history_none": "Inga tidigare avvikelser.",
        "patient.devices": "Enheter",
        "patient.devices_none": "Ingen enhet kopplad.",
        "patient.device_model": "Modell",
        "patient.device_last_seen": "Senast hörd",
        "patient.device_never": "aldrig",
        "patient.device_battery": "Batteri",
        "patient.device_status": "Status",
        "patient.device_status.active": "aktiv",
        "patient.device_status.revoked": "spärrad",
        "patient.device_unbound": "Kopplad till {time}",
        "protocol.hypertension": "Hypertoni",
        "protocol.heart_failure": "Hjärtsvikt",
        "protocol.copd": "KOL",
        "protocol.diabetes": "Diabetes",
        "protocol.general": "Allmän",
        "age.just_now": "nyss",
        "age.minutes": "för {n} min sedan",
        "age.hours": "för {n} h sedan",
        "age.days": "för {n} d sedan",
        "age.short_minutes": "{n} min",
        "age.short_hours": "{n} h",
        "age.short_days": "{n} d",
        "error.title": "Något gick fel",
        "error.not_found": "Sidan eller patienten finns inte, eller så har du inte behörighet "
        "att se den.",
        "error.forbidden": "Begäran avvisades (ogiltig eller utgången säkerhetstoken). Ladda "
        "om sidan och försök igen.",
        "error.bad_action": "Felaktig begäran: okänd åtgärd.",
    },
    "en": {
        "app.name": "egenmon",
        "app.tagline": "Self-monitoring",
        "nav.worklist": "Worklist",
        "nav.skip": "Skip to content",
        "nav.language": "Language",
        "nav.change_language": "Change language",
        "nav.logout": "Log out",
        "nav.signed_in_as": "Signed in as {user}",
        "nav.unit": "Care unit",
        "nav.all_units": "All care units",
        "login.title": "Log in",
        "login.username": "Username",
        "login.password": "Password",
        "login.submit": "Log in",
        "login.failed": "Login failed. Check your username and password.",
        "login.lockout_rule": "After {n} failed attempts, logging in from this device is "
        "paused for {minutes} minutes.",
        "login.throttled": "Too many failed logins from here. Try again in {seconds} seconds.",
        "login.expired_form": "The form had expired. Please try again.",
        "login.logged_out": "You are logged out.",
        "worklist.title": "Worklist",
        "worklist.tab_clinical": "Clinical deviations",
        "worklist.tab_technical": "Technical deviations",
        "worklist.tabs": "Kind of deviation",
        "worklist.filters": "Filters",
        "worklist.filter_severity": "Severity",
        "worklist.filter_rule": "Rule",
        "worklist.filter_status": "Status",
        "worklist.filter_mine": "Only acknowledged by me",
        "worklist.filter_apply": "Filter",
        "worklist.filter_clear": "Clear filters",
        "worklist.any": "All",
        "worklist.active": "Open and acknowledged",
        "worklist.counts": "Count by severity",
        "worklist.total": "Total",
        "worklist.empty": "No deviations to show.",
        "worklist.updated": "Updated {time}",
        "worklist.live_note": "The list updates itself.",
        "worklist.col_severity": "Severity",
        "worklist.col_patient": "Patient",
        "worklist.col_alert": "Deviation",
        "worklist.col_value": "Triggering value",
        "worklist.col_when": "When",
        "worklist.col_due": "Care contact due",
        "worklist.col_status": "Status",
        "worklist.col_action": "Action",
        "worklist.opened": "Opened {time}",
        "worklist.updated_at": "Updated {time}",
        "worklist.overdue": "Overdue",
        "worklist.no_due": "No time set",
        "worklist.unnamed": "No name",
        "severity.high": "High",
        "severity.medium": "Medium",
        "severity.low": "Low",
        "status.open": "Open",
        "status.acknowledged": "Acknowledged",
        "status.resolved": "Resolved",
        "status.dismissed": "Dismissed",
        "rule.threshold": "Threshold",
        "rule.trend_weight": "Weight gain",
        "rule.trend_bp_mean": "Blood pressure mean",
        "rule.spo2_drop": "Falling SpO2",
        "rule.news2": "NEWS2",
        "rule.missing_data": "Missing measurements",
        "rule.device_inactive": "Device not reporting",
        "action.open": "Handle",
        "action.note": "Note",
        "action.note_hint": "For example what was said when you contacted the patient.",
        "action.acknowledge": "Acknowledge",
        "action.resolve": "Resolved",
        "action.dismiss": "Dismiss",
        "action.done.acknowledge": "The deviation is acknowledged.",
        "action.done.resolve": "The deviation is marked as resolved.",
        "action.done.dismiss": "The deviation is dismissed.",
        "action.failed.transition": "The action could not be done: the alert's status no "
        "longer allows it (someone else may have handled it). The page shows it as it is now.",
        "action.failed.note_too_long": "The action could not be done: a note may have at most "
        "{n} characters.",
        "action.failed.invalid": "The action could not be done.",
        "action.by": "by {user}",
        "type.blood_pressure": "Blood pressure",
        "type.heart_rate": "Pulse",
        "type.spo2": "Oxygen saturation (SpO2)",
        "type.body_temperature": "Body temperature",
        "type.body_weight": "Weight",
        "type.respiratory_rate": "Respiratory rate",
        "type.blood_glucose": "Blood glucose",
        "quantity.systolic": "Systolic blood pressure",
        "quantity.diastolic": "Diastolic blood pressure",
        "quantity.heart_rate": "Pulse",
        "quantity.spo2": "Oxygen saturation",
        "quantity.body_temperature": "Body temperature",
        "quantity.body_weight": "Weight",
        "quantity.respiratory_rate": "Respiratory rate",
        "quantity.blood_glucose": "Blood glucose",
        "series.systolic": "Systolic",
        "series.diastolic": "Diastolic",
        "patient.back": "Back to the worklist",
        "patient.identifier.personnummer": "Personal identity number",
        "patient.identifier.samordningsnummer": "Coordination number",
        "patient.range": "Period",
        "patient.days": "{n} days",
        "patient.current_alerts": "Current deviations",
        "patient.no_current_alerts": "No open deviations.",
        "patient.latest": "Latest values",
        "patient.latest_none": "No measurements yet.",
        "patient.measured": "Measured {time}",
        "patient.charts": "Measurements",
        "patient.chart_label": "{type}: {n} measurements in the last {days} days.",
        "patient.chart_limits": "Limits: {limits}.",
        "patient.chart_no_limits": "No limits set.",
        "patient.no_data_types": "No measurements in this period: {types}.",
        "patient.bucketed": "Means per {minutes} minutes (many measurements).",
        "patient.legend_band": "Within limits",
        "patient.legend_alert": "Deviation opened",
        "patient.news2": "NEWS2",
        "patient.news2_caveat": "Decision support, not a diagnosis: NEWS2 is validated for "
        "acutely ill adults in hospital, not for measurements at home. "
        "Always judge the measured values.",
        "patient.news2_score": "Score {score}",
        "patient.news2_scale": "SpO2 scale {scale}",
        "patient.news2_parameter": "Parameter",
        "patient.news2_value": "Value",
        "patient.news2_points": "Points",
        "patient.news2_age": "Age",
        "patient.news2_missing": "Missing",
        "patient.news2_missing_list": "Missing or older than {hours} hours: {names}.",
        "patient.news2_total": "Total",
        "news2.respiratory_rate": "Respiratory rate",
        "news2.spo2": "Oxygen saturation",
        "news2.air_or_oxygen": "Air or oxygen",
        "news2.systolic_bp": "Systolic blood pressure",
        "news2.pulse": "Pulse",
        "news2.consciousness": "Consciousness",
        "news2.temperature": "Temperature",
        "news2.air": "air",
        "news2.oxygen": "oxygen",
        "patient.plan": "Monitoring plan",
        "patient.plan_none": "No plan set; default limits apply.",
        "patient.plan_protocol": "Protocol",
        "patient.plan_expected": "Expected measurements",
        "patient.plan_window": "{type}: at least every {hours} hours",
        "patient.plan_scale2": "SpO2 scale 2 (hypercapnia)",
        "patient.plan_spo2_target": "SpO2 target range",
        "patient.plan_set": "Set {time} {by}",
        "patient.thresholds": "Individual limits",
        "patient.thresholds_hint": "Leave empty to use the protocol's default. A value "
        "outside the limits is a deviation.",
        "patient.thresholds_low": "Lower limit",
        "patient.thresholds_high": "Upper limit",
        "patient.thresholds_default": "Default",
        "patient.thresholds_save": "Save limits",
        "patient.thresholds_saved": "The limits are saved.",
        "patient.thresholds_error": "The limits were not saved: {reason}",
        "thresholds.limit_low": "the lower limit",
        "thresholds.limit_high": "the upper limit",
        "thresholds.not_a_number": "{quantity}: {limit} ({value}) is not a number.",
        "thresholds.implausible": "{quantity}: {limit} {value} is outside the plausible range "
        "{low}–{high} {unit}.",
        "thresholds.low_not_below_high": "{quantity}: the lower limit {low} must be below the "
        "upper limit {high}.",
        "thresholds.invalid": "check the values and try again.",
        "patient.history": "History",
        "patient.history_none": "No earlier deviations.",
        "patient.devices": "Devices",
        "patient.devices_none": "No device bound.",
        "patient.device_model": "Model",
        "patient.device_last_seen": "Last heard from",
        "patient.device_never": "never",
        "patient.device_battery": "Battery",
        "patient.device_status": "Status",
        "patient.device_status.active": "active",
        "patient.device_status.revoked": "revoked",
        "patient.device_unbound": "Bound until {time}",
        "protocol.hypertension": "Hypertension",
        "protocol.heart_failure": "Heart failure",
        "protocol.copd": "COPD",
        "protocol.diabetes": "Diabetes",
        "protocol.general": "General",
        "age.just_now": "just now",
        "age.minutes": "{n} min ago",
        "age.hours": "{n} h ago",
        "age.days": "{n} d ago",
        "age.short_minutes": "{n} min",
        "age.short_hours": "{n} h",
        "age.short_days": "{n} d",
        "error.title": "Something went wrong",
        "error.not_found": "The page or patient does not exist, or you may not see it.",
        "error.forbidden": "The request was refused (missing or expired security token). "
        "Reload the page and try again.",
        "error.bad_action": "Bad request: unknown action.",
    },
}

# Units as a clinician reads them (the stored ones are UCUM codes).
UNIT_DISPLAY = {
    "mm[Hg]": "mmHg",
    "/min": "/min",
    "%": "%",
    "Cel": "°C",
    "kg": "kg",
    "mmol/L": "mmol/L",
}


def choose_locale(*candidates: str | None) -> str:
    """The first supported locale among the candidates, else Swedish."""
    for c in candidates:
        if c in LOCALES:
            return c
    return DEFAULT_LOCALE


def translate(locale: str, key: str, **values: object) -> str:
    """The text for `key` in `locale`, with {placeholders} filled in."""
    table = MESSAGES.get(locale, MESSAGES[DEFAULT_LOCALE])
    text = table.get(key) or MESSAGES[DEFAULT_LOCALE].get(key) or key
    return text.format(**values) if values else text


def number(value: float | None, locale: str, decimals: int = 1) -> str:
    """A number as the locale writes it (Swedish uses a decimal comma); trailing zeros
    after the point are dropped."""
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    if locale == "sv":
        text = text.replace(".", ",").replace("-", "−")
    return text


def local_time(t: dt.datetime | None, tz: ZoneInfo) -> str:
    """A time in the display zone, ISO-like (the Swedish convention, read in both locales)."""
    if t is None:
        return "–"
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M")


def age(t: dt.datetime | None, now: dt.datetime, locale: str, short: bool = False) -> str:
    """How long ago `t` was: "för 3 h sedan" / "3 h ago" (or "3 h" when short)."""
    if t is None:
        return "–"
    minutes = max(0, int((now - t).total_seconds() // 60))
    prefix = "age.short_" if short else "age."
    if minutes < 1 and not short:
        return translate(locale, "age.just_now")
    if minutes < 90:
        return translate(locale, prefix + "minutes", n=minutes)
    hours = minutes // 60
    if hours < 48:
        return translate(locale, prefix + "hours", n=hours)
    return translate(locale, prefix + "days", n=hours // 24)


def value_text(
    type_: str, value: float | None, value2: float | None, unit: str, locale: str
) -> str:
    """A stored value as a clinician reads it: "142/91 mmHg", "37,9 °C"."""
    shown_unit = UNIT_DISPLAY.get(unit, unit)
    decimals = {"body_temperature": 1, "body_weight": 1, "blood_glucose": 1}.get(type_, 0)
    # A no-break space keeps a value and its unit on one line.
    if type_ == "blood_pressure" and value2 is not None:
        return f"{number(value, locale, 0)}/{number(value2, locale, 0)}\u00a0{shown_unit}"
    return f"{number(value, locale, decimals)}\u00a0{shown_unit}"


def translator(locale: str) -> Mapping[str, str]:
    """The table of one locale (for a check that both have the same keys)."""
    return MESSAGES[locale]


# --- sign-in through the OpenID provider and the patient app's first pages (issue 14) ----

MESSAGES["sv"].update(
    {
        "login.sso": "Logga in med SITHS eID",
        "login.local_off": "Inloggning med lösenord är avstängd. Logga in med SITHS eID.",
        "app.patient_name": "Mina mätningar",
        "app.patient": "patienten",
        "app.login_title": "Logga in",
        "app.login_intro": "Logga in med BankID eller Freja eID för att se dina uppgifter.",
        "app.login_button": "Logga in med e-legitimation",
        "extract.title": "Vem har sett mina uppgifter",
        "extract.intro": "Här ser du vem som har läst eller ändrat dina uppgifter, vid "
        "vilken vårdenhet och när, även försök som nekades.",
        "extract.col_when": "När",
        "extract.col_who": "Vem",
        "extract.col_unit": "Vårdenhet",
        "extract.col_what": "Vad",
        "extract.more": "Visar de senaste händelserna. Hela utdraget finns i appens API.",
        "extract.empty": "Ingen har läst dina uppgifter ännu.",
        "extract.you": "Du själv",
        "extract.role.clinician": "vårdpersonal",
        "extract.role.admin": "administratör",
        "extract.role.integrator": "ett anslutet system",
        "extract.role.patient": "du själv",
        "extract.action.read": "Läste",
        "extract.action.search": "Sökte",
        "extract.action.create": "Lade till",
        "extract.action.update": "Ändrade",
        "extract.action.delete": "Tog bort",
        "extract.action.read-refused": "Nekades att läsa",
        "extract.action.login": "Loggade in",
        "extract.action.login-refused": "Nekad inloggning",
        "extract.action.other": "Annan åtgärd",
        "sso.refused_title": "Inloggningen godtogs inte",
        "sso.try_again": "Försök igen",
        "sso.refused.state": "Inloggningen hade gått ut eller kom från en annan webbläsare. "
        "Börja om.",
        "sso.refused.provider": "Inloggningstjänsten avbröt inloggningen.",
        "sso.refused.exchange": "Inloggningstjänsten godkände inte inloggningen. Försök igen.",
        "sso.refused.id_token": "Inloggningstjänstens svar var inte giltigt.",
        "sso.refused.aud": "Inloggningstjänstens svar var avsett för en annan tjänst.",
        "sso.refused.nonce": "Inloggningstjänstens svar hörde till en annan inloggning.",
        "sso.refused.acr": "Legitimeringen har för låg tillitsnivå för egenmon. Logga in "
        "med en e-legitimation med högre tillitsnivå (som SITHS eID eller BankID).",
        "sso.refused.no_identifier": "Inloggningen saknade HSA-id eller personnummer.",
        "sso.refused.unknown_user": "Ditt HSA-id har inget konto i egenmon. Kontakta din "
        "administratör.",
        "sso.refused.unknown_unit": "Vårdenheten du loggade in för finns inte i egenmon.",
        "sso.refused.wrong_unit": "Ditt konto hör till en annan vårdenhet än den du loggade "
        "in för.",
        "sso.refused.unknown_patient": "Du är inte registrerad för egenmonitorering i "
        "egenmon. Kontakta din vårdenhet.",
        "sso.refused.not_configured": "Inloggning med e-legitimation är inte inställd.",
        "sso.refused.unavailable": "Inloggningstjänsten svarar inte just nu. Försök igen "
        "om en stund.",
    }
)
MESSAGES["en"].update(
    {
        "login.sso": "Log in with SITHS eID",
        "login.local_off": "Password login is switched off. Log in with SITHS eID.",
        "app.patient_name": "My measurements",
        "app.patient": "patient",
        "app.login_title": "Log in",
        "app.login_intro": "Log in with BankID or Freja eID to see your information.",
        "app.login_button": "Log in with e-ID",
        "extract.title": "Who has seen my information",
        "extract.intro": "Here you see who has read or changed your information, at which "
        "care unit and when, refused attempts included.",
        "extract.col_when": "When",
        "extract.col_who": "Who",
        "extract.col_unit": "Care unit",
        "extract.col_what": "What",
        "extract.more": "Showing the latest events. The full extract is in the app's API.",
        "extract.empty": "Nobody has read your information yet.",
        "extract.you": "You",
        "extract.role.clinician": "care staff",
        "extract.role.admin": "administrator",
        "extract.role.integrator": "a connected system",
        "extract.role.patient": "you",
        "extract.action.read": "Read",
        "extract.action.search": "Searched",
        "extract.action.create": "Added",
        "extract.action.update": "Changed",
        "extract.action.delete": "Removed",
        "extract.action.read-refused": "Was refused reading",
        "extract.action.login": "Logged in",
        "extract.action.login-refused": "Login refused",
        "extract.action.other": "Other action",
        "sso.refused_title": "The login was not accepted",
        "sso.try_again": "Try again",
        "sso.refused.state": "The login had expired or came from another browser. Start again.",
        "sso.refused.provider": "The login service cancelled the login.",
        "sso.refused.exchange": "The login service did not confirm the login. Try again.",
        "sso.refused.id_token": "The login service's answer was not valid.",
        "sso.refused.aud": "The login service's answer was meant for another service.",
        "sso.refused.nonce": "The login service's answer belonged to another login.",
        "sso.refused.acr": "Your e-ID's assurance level is too low for egenmon. Log in with "
        "an e-ID of a higher level (such as SITHS eID or BankID).",
        "sso.refused.no_identifier": "The login carried no HSA-id or personal identity number.",
        "sso.refused.unknown_user": "Your HSA-id has no account in egenmon. Contact your "
        "administrator.",
        "sso.refused.unknown_unit": "The care unit you logged in for is not in egenmon.",
        "sso.refused.wrong_unit": "Your account belongs to another care unit than the one "
        "you logged in for.",
        "sso.refused.unknown_patient": "You are not registered for self-monitoring in "
        "egenmon. Contact your care unit.",
        "sso.refused.not_configured": "Login with e-ID is not set up.",
        "sso.refused.unavailable": "The login service does not answer right now. Try again "
        "in a while.",
    }
)
