import uuid
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from egenmon.domain.ids import encode_cursor
from egenmon.domain.measurements import TYPES
from egenmon.fhir.outcome import FhirError
from egenmon.fhir.search import (
    MAX_COUNT,
    ObservationQuery,
    SearchError,
    date_range,
    parse_alert_search,
    parse_device_search,
    parse_lastn,
    parse_observation_search,
    parse_patient_search,
)

PID = "6f1c7a52-3c4e-4f7e-9d1a-2b3c4d5e6f70"
STHLM = ZoneInfo("Europe/Stockholm")
VITALS = frozenset(n for n, t in TYPES.items() if t.category == "vital-signs")


def obs(*pairs: tuple[str, str], **kw: object) -> ObservationQuery:
    return parse_observation_search(list(pairs), **kw)  # type: ignore[arg-type]


def matches(q: ObservationQuery, t: datetime) -> bool:
    return (q.date_low is None or q.date_low <= t) and (q.date_high is None or t < q.date_high)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def error_param(exc: pytest.ExceptionInfo[SearchError]) -> str:
    err = exc.value
    assert isinstance(err, FhirError)
    assert err.status == 400
    assert err.diagnostics.startswith(f"{err.param}:")
    return err.param


# --- defaults, patient, subject -------------------------------------------------------


def test_empty_search_has_the_documented_defaults() -> None:
    q = obs()
    assert q == ObservationQuery()
    assert q.count == 50
    assert q.descending is True
    assert q.types is None and q.loinc_codes is None
    assert not q.empty and not q.count_only


@pytest.mark.parametrize("name", ["patient", "subject"])
@pytest.mark.parametrize("value", [PID, f"Patient/{PID}", PID.upper()])
def test_patient_accepts_reference_or_bare_uuid(name: str, value: str) -> None:
    assert obs((name, value)).patient == uuid.UUID(PID)


@pytest.mark.parametrize(
    "value",
    ["191212121212", "Patient/191212121212", f"Group/{PID}", "abc", f"{PID},{PID}",
     f"urn:uuid:{PID}", PID.replace("-", "")],
)  # fmt: skip
def test_patient_must_be_one_patient_uuid(value: str) -> None:
    with pytest.raises(SearchError) as exc:
        obs(("patient", value))
    assert error_param(exc) == "patient"


def test_patient_and_subject_must_agree() -> None:
    assert obs(("patient", PID), ("subject", f"Patient/{PID}")).patient == uuid.UUID(PID)
    with pytest.raises(SearchError) as exc:
        obs(("patient", PID), ("subject", str(uuid.uuid4())))
    assert error_param(exc) == "subject"
    with pytest.raises(SearchError) as exc:
        obs(("patient", PID), ("patient", str(uuid.uuid4())))
    assert error_param(exc) == "patient"


def test_empty_parameter_values_are_ignored() -> None:
    assert obs(("patient", ""), ("code", ""), ("date", "")) == ObservationQuery()


# --- code and category ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "types"),
    [
        ("8867-4", {"heart_rate"}),
        ("http://loinc.org|8867-4", {"heart_rate"}),
        ("urn:iso:std:iso:11073:10101|149546", {"heart_rate"}),
        ("149530", {"heart_rate"}),  # the oximeter's pulse rate finds heart rates too
        ("http://loinc.org|59408-5", {"spo2"}),
        ("2708-6", {"spo2"}),
        ("85354-9", {"blood_pressure"}),
        ("urn:iso:std:iso:11073:10101|150020", {"blood_pressure"}),
        ("8867-4,http://loinc.org|29463-7", {"heart_rate", "body_weight"}),
        ("14743-9", {"blood_glucose"}),
    ],
)
def test_code_resolves_loinc_and_mdc_to_types(value: str, types: set[str]) -> None:
    q = obs(("code", value))
    assert q.types == types
    assert q.unknown_codes == ()
    assert not q.empty


def test_loinc_codes_are_the_column_values_of_the_types() -> None:
    assert obs(("code", "150456")).loinc_codes == {"2708-6", "59408-5"}
    assert obs(("code", "149546")).loinc_codes == {"8867-4"}


@pytest.mark.parametrize(
    "value",
    ["12345-6", "http://snomed.info/sct|8867-4", "|8867-4", "urn:iso:std:iso:11073:10101|8867-4",
     "8480-6"],  # a component code is not an Observation code
)  # fmt: skip
def test_unknown_code_is_an_empty_result_not_an_error(value: str) -> None:
    q = obs(("code", value))
    assert q.types == frozenset()
    assert q.empty
    assert q.unknown_codes == (value,)


def test_unknown_code_in_an_or_list_is_recorded_and_the_rest_still_match() -> None:
    q = obs(("code", "8867-4,99999-9"))
    assert q.types == {"heart_rate"}
    assert q.unknown_codes == ("99999-9",)


def test_repeated_code_parameters_and() -> None:
    assert obs(("code", "8867-4,29463-7"), ("code", "29463-7,9279-1")).types == {"body_weight"}
    assert obs(("code", "8867-4"), ("code", "29463-7")).empty


@pytest.mark.parametrize(
    ("value", "types"),
    [
        ("vital-signs", VITALS),
        ("http://terminology.hl7.org/CodeSystem/observation-category|vital-signs", VITALS),
        ("laboratory", {"blood_glucose"}),
        ("laboratory,vital-signs", set(TYPES)),
    ],
)
def test_category_narrows_to_types(value: str, types: set[str]) -> None:
    q = obs(("category", value))
    assert q.types == types
    assert "blood_glucose" not in VITALS


def test_category_and_code_intersect() -> None:
    assert obs(("category", "vital-signs"), ("code", "8867-4")).types == {"heart_rate"}
    q = obs(("category", "vital-signs"), ("code", "14743-9"))
    assert q.empty


@pytest.mark.parametrize("value", ["exam", "http://other.example|vital-signs"])
def test_unknown_category_matches_nothing(value: str) -> None:
    q = obs(("category", value))
    assert q.empty
    assert q.unknown_codes == (f"category={value}",)


# --- device, _count, _sort, _summary, _cursor -----------------------------------------


@pytest.mark.parametrize("value", ["omron-7361t-0042", "Device/omron-7361t-0042"])
def test_device_accepts_reference_or_bare_id(value: str) -> None:
    assert obs(("device", value)).device == "omron-7361t-0042"


@pytest.mark.parametrize("value", ["Patient/omron", "-bad", "a b", "a,b", "x" * 129])
def test_device_must_be_one_device_id(value: str) -> None:
    with pytest.raises(SearchError) as exc:
        obs(("device", value))
    assert error_param(exc) == "device"


@pytest.mark.parametrize(
    ("value", "count"), [("0", 0), ("1", 1), ("1000", 1000), ("1001", MAX_COUNT), ("99999", 1000)]
)
def test_count_is_capped_at_the_maximum(value: str, count: int) -> None:
    assert obs(("_count", value)).count == count


def test_count_zero_and_summary_count_ask_only_for_the_total() -> None:
    assert obs(("_count", "0")).count_only
    assert obs(("_summary", "count")).count_only
    assert not obs(("_summary", "false")).count_only
    assert not obs(("_count", "1")).count_only


@pytest.mark.parametrize("value", ["-1", "ten", "1.5", "+5", " 5", "1e3", "１０"])
def test_count_must_be_a_whole_number(value: str) -> None:
    with pytest.raises(SearchError) as exc:
        obs(("_count", value))
    assert error_param(exc) == "_count"


def test_count_given_twice_differently_is_an_error() -> None:
    assert obs(("_count", "5"), ("_count", "5")).count == 5
    with pytest.raises(SearchError) as exc:
        obs(("_count", "5"), ("_count", "6"))
    assert error_param(exc) == "_count"


@pytest.mark.parametrize(("value", "descending"), [("date", False), ("-date", True)])
def test_sort_by_date_either_way(value: str, descending: bool) -> None:
    assert obs(("_sort", value)).descending is descending


@pytest.mark.parametrize("value", ["code", "-_lastUpdated", "date,-date", "Date"])
def test_other_sorts_are_errors(value: str) -> None:
    with pytest.raises(SearchError) as exc:
        obs(("_sort", value))
    assert error_param(exc) == "_sort"


@pytest.mark.parametrize("value", ["true", "text", "data", "COUNT"])
def test_other_summaries_are_errors(value: str) -> None:
    with pytest.raises(SearchError) as exc:
        obs(("_summary", value))
    assert error_param(exc) == "_summary"


def test_cursor_is_decoded_with_the_key() -> None:
    t = utc(2026, 11, 24, 6, 31)
    token = encode_cursor(t, "dev|k", key=b"s3cret")
    assert obs(("_cursor", token), cursor_key=b"s3cret").cursor == (t, "dev|k")


@pytest.mark.parametrize("token", ["garbage", "eyJ2IjoxfQ"])
def test_bad_or_tampered_cursor_is_an_error(token: str) -> None:
    with pytest.raises(SearchError) as exc:
        obs(("_cursor", token), cursor_key=b"s3cret")
    assert error_param(exc) == "_cursor"
    signed = encode_cursor(utc(2026, 1, 1), "dev|k", key=b"s3cret")
    with pytest.raises(SearchError):
        obs(("_cursor", signed), cursor_key=b"another")


def test_format_and_pretty_are_ignored() -> None:
    q = obs(("_format", "json"), ("_pretty", "true"))
    assert q == ObservationQuery()
    assert q.ignored == ()


# --- unknown parameters and modifiers -------------------------------------------------


def test_unknown_parameter_is_an_error_naming_it() -> None:
    with pytest.raises(SearchError) as exc:
        obs(("patient", PID), ("value-quantity", "gt100"))
    assert error_param(exc) == "value-quantity"
    assert exc.value.code == "not-supported"


def test_lenient_handling_collects_unknown_parameters() -> None:
    q = obs(("patient", PID), ("foo", "1"), ("_elements", "id"), ("foo", "2"), lenient=True)
    assert q.ignored == ("foo", "_elements")
    assert q.patient == uuid.UUID(PID)


@pytest.mark.parametrize("lenient", [False, True])
def test_modifiers_are_refused_even_when_lenient(lenient: bool) -> None:
    with pytest.raises(SearchError) as exc:
        obs(("code:text", "pulse"), lenient=lenient)
    assert error_param(exc) == "code:text"


# --- dates ----------------------------------------------------------------------------


def test_a_date_is_the_local_day() -> None:
    low, high = date_range("2026-11-24")
    assert low == datetime(2026, 11, 24, tzinfo=STHLM) == utc(2026, 11, 23, 23)
    assert high == utc(2026, 11, 24, 23)


def test_the_day_daylight_saving_starts_has_23_hours() -> None:
    low, high = date_range("2026-03-29", "Europe/Stockholm")
    assert low == utc(2026, 3, 28, 23)
    assert high is not None and high - low == timedelta(hours=23)


def test_the_day_daylight_saving_ends_has_25_hours() -> None:
    low, high = date_range("2026-10-25", STHLM)
    assert low == utc(2026, 10, 24, 22)
    assert high is not None and high - low == timedelta(hours=25)


def test_other_time_zones_are_honoured() -> None:
    assert date_range("2026-11-24", "UTC") == (utc(2026, 11, 24), utc(2026, 11, 25))
    assert date_range("2026-11-24", "America/New_York")[0] == utc(2026, 11, 24, 5)
    q = obs(("date", "2026-11-24"), tz="UTC")
    assert (q.date_low, q.date_high) == (utc(2026, 11, 24), utc(2026, 11, 25))


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2026", utc(2025, 12, 31, 23), utc(2026, 12, 31, 23)),
        ("2026-02", utc(2026, 1, 31, 23), utc(2026, 2, 28, 23)),
        ("2026-12", utc(2026, 11, 30, 23), utc(2026, 12, 31, 23)),
        ("2026-03", utc(2026, 2, 28, 23), utc(2026, 3, 31, 22)),  # DST inside the month
        ("2026-11-24T07:31+01:00", utc(2026, 11, 24, 6, 31), utc(2026, 11, 24, 6, 32)),
        ("2026-11-24T07:31:05Z", utc(2026, 11, 24, 7, 31, 5), utc(2026, 11, 24, 7, 31, 6)),
        ("2026-11-24T07:31:05-05:00", utc(2026, 11, 24, 12, 31, 5), utc(2026, 11, 24, 12, 31, 6)),
        (
            "2026-11-24T07:31:05.5Z",
            utc(2026, 11, 24, 7, 31, 5, 500000),
            utc(2026, 11, 24, 7, 31, 5, 600000),
        ),
        (
            "2026-11-24T07:31:05.123456Z",
            utc(2026, 11, 24, 7, 31, 5, 123456),
            utc(2026, 11, 24, 7, 31, 5, 123457),
        ),
        # Without an offset a time is local (Stockholm: +01:00 in November).
        ("2026-11-24T07:31:05", utc(2026, 11, 24, 6, 31, 5), utc(2026, 11, 24, 6, 31, 6)),
        # An unencoded + arrives as a space.
        ("2026-11-24T07:31:05 01:00", utc(2026, 11, 24, 6, 31, 5), utc(2026, 11, 24, 6, 31, 6)),
    ],
)
def test_precision_sets_the_range(text: str, low: datetime, high: datetime) -> None:
    assert date_range(text) == (low, high)


@pytest.mark.parametrize(
    "text",
    ["", "26", "2026-13", "2026-02-30", "2026-11-24T07", "2026-11-24T25:00",
     "2026-11-24T07:31:60Z", "2026-11-24T07:31:05+15:00", "2026-11-24T07:31:05.1234567Z",
     "2026-11-24 07:31", "0000", "2026-1-5", "tomorrow"],
)  # fmt: skip
def test_malformed_dates_are_errors_naming_date(text: str) -> None:
    with pytest.raises(ValueError):
        date_range(text)
    with pytest.raises(SearchError) as exc:
        obs(("date", "ge" + text))
    assert error_param(exc) == "date"


S = "2026-11-24T07:31:05Z"
AT = utc(2026, 11, 24, 7, 31, 5)
US = timedelta(microseconds=1)
SEC = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("value", "inside", "outside"),
    [
        (S, [AT, AT + SEC - US], [AT - US, AT + SEC]),
        ("eq" + S, [AT, AT + SEC - US], [AT - US, AT + SEC]),
        ("ge" + S, [AT, AT + timedelta(days=999)], [AT - US]),
        ("gt" + S, [AT + SEC], [AT, AT + SEC - US]),
        ("le" + S, [AT + SEC - US, utc(1990, 1, 1)], [AT + SEC]),
        ("lt" + S, [AT - US], [AT, AT + SEC - US]),
    ],
)
def test_prefix_bounds_at_second_precision(
    value: str, inside: list[datetime], outside: list[datetime]
) -> None:
    q = obs(("date", value))
    assert all(matches(q, t) for t in inside)
    assert not any(matches(q, t) for t in outside)


DAY_START = utc(2026, 11, 23, 23)  # 2026-11-24 00:00 in Stockholm
NEXT_DAY = utc(2026, 11, 24, 23)


@pytest.mark.parametrize(
    ("prefix", "low", "high"),
    [
        ("eq", DAY_START, NEXT_DAY),
        ("ge", DAY_START, None),
        ("gt", NEXT_DAY, None),
        ("le", None, NEXT_DAY),
        ("lt", None, DAY_START),
    ],
)
def test_prefix_bounds_of_a_partial_date(
    prefix: str, low: datetime | None, high: datetime | None
) -> None:
    q = obs(("date", prefix + "2026-11-24"))
    assert (q.date_low, q.date_high) == (low, high)


def test_gt_a_year_starts_the_next_year() -> None:
    q = obs(("date", "gt2025"))
    assert q.date_low == utc(2025, 12, 31, 23)
    assert not matches(q, utc(2025, 12, 31, 22, 59, 59))


@pytest.mark.parametrize("prefix", ["ne", "sa", "eb", "ap"])
def test_other_fhir_prefixes_are_unsupported(prefix: str) -> None:
    with pytest.raises(SearchError) as exc:
        obs(("date", prefix + "2026-11-24"))
    assert error_param(exc) == "date"
    assert "unsupported" in exc.value.diagnostics


def test_unknown_prefix_is_an_error() -> None:
    with pytest.raises(SearchError) as exc:
        obs(("date", "xx2026-11-24"))
    assert error_param(exc) == "date"


def test_repeated_dates_intersect() -> None:
    q = obs(("date", "ge2026-11-01"), ("date", "lt2026-12-01"))
    assert q.date_low == utc(2026, 10, 31, 23)
    assert q.date_high == utc(2026, 11, 30, 23)
    q = obs(("date", "2026-11"), ("date", "ge2026-11-24T12:00:00+01:00"), ("date", "le2026-12"))
    assert (q.date_low, q.date_high) == (utc(2026, 11, 24, 11), utc(2026, 11, 30, 23))
    assert not q.empty


def test_empty_intersection_is_an_empty_result() -> None:
    q = obs(("date", "ge2026-11-25"), ("date", "lt2026-11-24"))
    assert q.empty
    # Touching half-open ranges are empty too: [x, x).
    assert obs(("date", "ge2026-11-24"), ("date", "lt2026-11-24")).empty
    assert not obs(("date", "ge2026-11-24"), ("date", "le2026-11-24")).empty


def test_offsets_in_dates_are_exact_whatever_the_tz() -> None:
    a = obs(("date", "ge2026-11-24T07:31:00+01:00"), tz="UTC")
    b = obs(("date", "ge2026-11-24T06:31:00Z"), tz="America/New_York")
    assert a.date_low == b.date_low == utc(2026, 11, 24, 6, 31)
    c = obs(("date", "ge2026-11-24T06:31:00"), tz=timezone(timedelta(hours=-2)))
    assert c.date_low == utc(2026, 11, 24, 8, 31)


# --- $lastn ---------------------------------------------------------------------------


def test_lastn_needs_a_patient() -> None:
    with pytest.raises(SearchError) as exc:
        parse_lastn([("code", "8867-4")])
    assert error_param(exc) == "patient"


def test_lastn_defaults_to_one_per_type_and_codes_or() -> None:
    q = parse_lastn(
        [("patient", PID), ("code", "8867-4"), ("code", "urn:iso:std:iso:11073:10101|150020")]
    )
    assert q.patient == uuid.UUID(PID)
    assert q.max == 1
    assert q.types == {"heart_rate", "blood_pressure"}
    assert parse_lastn([("subject", f"Patient/{PID}")]).types is None


@pytest.mark.parametrize(("value", "n"), [("1", 1), ("5", 5), ("1000", 1000)])
def test_lastn_max(value: str, n: int) -> None:
    assert parse_lastn([("patient", PID), ("max", value)]).max == n


@pytest.mark.parametrize("value", ["0", "-1", "x", "1001"])
def test_lastn_max_must_be_at_least_one(value: str) -> None:
    with pytest.raises(SearchError) as exc:
        parse_lastn([("patient", PID), ("max", value)])
    assert error_param(exc) == "max"


def test_lastn_unknown_code_and_unknown_parameter() -> None:
    q = parse_lastn([("patient", PID), ("code", "0000-0")])
    assert q.empty and q.unknown_codes == ("0000-0",)
    with pytest.raises(SearchError) as exc:
        parse_lastn([("patient", PID), ("date", "2026")])
    assert error_param(exc) == "date"
    assert parse_lastn([("patient", PID), ("date", "2026")], lenient=True).ignored == ("date",)


# --- Patient --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("http://electronichealth.se/identifier/personnummer|191212121212", "personnummer"),
        ("urn:oid:1.2.752.129.2.1.3.1|191212121212", "personnummer"),
        (
            "http://electronichealth.se/identifier/samordningsnummer|199001722389",
            "samordningsnummer",
        ),
        ("urn:oid:1.2.752.129.2.1.3.3|199001722389", "samordningsnummer"),
        ("191212121212", None),
        ("19121212-1212", None),
    ],
)
def test_patient_identifier_systems(value: str, kind: str | None) -> None:
    q = parse_patient_search([("identifier", value)])
    assert q.identifier_kind == kind
    assert q.personnummer in ("191212121212", "199001722389")
    assert not q.no_match


@pytest.mark.parametrize(
    "value",
    ["http://electronichealth.se/identifier/personnummer|1912121212", "19121212121",
     "urn:oid:1.2.752.129.2.1.3.1|19121212121x", "1912121212123", "a,b"],
)  # fmt: skip
def test_patient_identifier_value_must_be_12_digits(value: str) -> None:
    with pytest.raises(SearchError) as exc:
        parse_patient_search([("identifier", value)])
    assert error_param(exc) == "identifier"


def test_patient_identifier_of_another_system_matches_nothing() -> None:
    q = parse_patient_search([("identifier", "http://other.example|42")])
    assert q.no_match
    assert q.personnummer is None


def test_patient_search_unknown_parameter() -> None:
    with pytest.raises(SearchError) as exc:
        parse_patient_search([("name", "Tolvan")])
    assert error_param(exc) == "name"
    assert parse_patient_search([("name", "Tolvan")], lenient=True).ignored == ("name",)


# --- Device ---------------------------------------------------------------------------


def test_device_search_by_patient_and_identifier() -> None:
    q = parse_device_search(
        [("patient", f"Patient/{PID}"), ("identifier", "urn:egenmon:device|omron-1")]
    )
    assert q.patient == uuid.UUID(PID)
    assert q.device_id == "omron-1"
    assert parse_device_search([("identifier", "omron-1")]).device_id == "omron-1"
    assert parse_device_search([("identifier", "http://serials.example|123")]).no_match


@pytest.mark.parametrize(
    ("name", "value"), [("patient", "x"), ("identifier", "bad id"), ("model", "x")]
)
def test_device_search_errors_name_the_parameter(name: str, value: str) -> None:
    with pytest.raises(SearchError) as exc:
        parse_device_search([(name, value)])
    assert error_param(exc) == name


# --- Flag and Task --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "value", "statuses"),
    [
        ("Flag", "active", {"open", "acknowledged"}),
        ("Flag", "inactive", {"resolved", "dismissed"}),
        ("Flag", "http://hl7.org/fhir/flag-status|active", {"open", "acknowledged"}),
        ("Flag", "entered-in-error", set()),
        ("Task", "requested", {"open"}),
        ("Task", "accepted", {"acknowledged"}),
        ("Task", "completed,cancelled", {"resolved", "dismissed"}),
        ("Task", "draft", set()),
    ],
)
def test_alert_status_maps_to_alert_statuses(resource: str, value: str, statuses: set[str]) -> None:
    q = parse_alert_search([("patient", PID), ("status", value)], resource)
    assert q.statuses == statuses
    assert q.empty is (not statuses)
    assert q.patient == uuid.UUID(PID)


def test_repeated_status_parameters_and() -> None:
    q = parse_alert_search([("status", "requested,accepted"), ("status", "accepted")], "Task")
    assert q.statuses == {"acknowledged"}


@pytest.mark.parametrize(
    ("resource", "value"),
    [("Flag", "requested"), ("Task", "active"), ("Task", "http://other|requested")],
)
def test_status_of_another_value_set_is_an_error(resource: str, value: str) -> None:
    with pytest.raises(SearchError) as exc:
        parse_alert_search([("status", value)], resource)
    assert error_param(exc) == "status"


def test_alert_search_only_for_flag_and_task() -> None:
    with pytest.raises(ValueError):
        parse_alert_search([], "Observation")
    assert parse_alert_search([], "Flag").statuses is None
