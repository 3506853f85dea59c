"""Observation read, search and $lastn through a real `egenmon serve`, as integrators use them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from fhirtest import FhirServer, reading_row

from egenmon.domain.ids import observation_id

T0 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)


def ids(bundle: dict[str, Any]) -> list[str]:
    return [
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e["resource"]["resourceType"] == "Observation"
    ]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    for item in bundle.get("link", []):
        if item["relation"] == relation:
            return item["url"]
    return None


def search(fhir: FhirServer, token: str, *params: tuple[str, str], **headers: str) -> dict:
    with fhir.client(token, **headers) as c:
        r = c.get("/Observation", params=list(params))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    return r.json()


def walk(fhir: FhirServer, token: str, first: dict) -> list[str]:
    """Follow Bundle.link next to the end; the ids in the order served."""
    seen = ids(first)
    nxt = link(first, "next")
    with fhir.client(token) as c:
        while nxt:
            r = c.get(nxt)
            assert r.status_code == 200, r.text
            page = r.json()
            seen += ids(page)
            nxt = link(page, "next")
    return seen


@pytest.fixture
def pat(fhir: FhirServer) -> dict[str, Any]:
    return fhir.setup()


@pytest.fixture
def token(fhir: FhirServer) -> str:
    return fhir.token()


# --- a real FHIR client ----------------------------------------------------------------


def test_fhirpy_pages_through_everything_and_the_count_matches_the_store(
    fhir: FhirServer, pat: dict, token: str
) -> None:
    p, d = pat["patient"], pat["device"]
    hr = fhir.readings(p, d, "heart_rate", [T0 + timedelta(minutes=7 * i) for i in range(137)])
    half = timedelta(seconds=30)
    sp = fhir.readings(p, d, "spo2", [T0 + timedelta(minutes=7 * i) + half for i in range(41)], 96)
    client = fhir.fhirpy(token)
    found = client.resources("Observation").search(patient=str(pat["patient"])).limit(20)
    got = [o.id for o in found.fetch_all()]
    stored = fhir.count("SELECT count(*) FROM readings WHERE patient_id = %s", [pat["patient"]])
    assert len(got) == stored == 178
    assert len(set(got)) == len(got)
    assert set(got) == set(hr) | set(sp)
    # Newest first by default: ids sort by measurement time.
    assert got == sorted(got, reverse=True)
    heart = client.resources("Observation").search(
        patient=str(pat["patient"]), code="http://loinc.org|8867-4"
    )
    assert sorted(o.id for o in heart.fetch_all()) == sorted(hr)
    # fhirpy's count() asks with _count=0 (and a vendor parameter, ignored when lenient).
    lenient = fhir.fhirpy(token, Prefer="handling=lenient")
    assert lenient.resources("Observation").search(patient=str(pat["patient"])).count() == 178
    # What fhirpy reads back is the resource the store holds.
    first = client.reference("Observation", hr[0]).to_resource()
    assert first["effectiveDateTime"] == "2026-03-10T10:00:00Z"
    assert first["valueQuantity"]["value"] == 70


def test_every_served_bundle_and_observation_is_valid_fhir(
    fhir: FhirServer, pat: dict, token: str
) -> None:
    rows = [
        reading_row(pat["patient"], pat["device"], t, T0 + timedelta(minutes=i), v)
        for i, (t, v) in enumerate(
            [("blood_pressure", 142), ("heart_rate", 72), ("spo2", 96),
             ("body_temperature", 37.9), ("body_weight", 81.4), ("respiratory_rate", 18),
             ("blood_glucose", 6.1)]
        )
    ]  # fmt: skip
    rows[2]["on_oxygen"] = True
    rows[3]["note"] = "Feeling warm"
    fhir.insert(rows)
    bundle = search(fhir, token, ("patient", str(pat["patient"])))
    Bundle.model_validate(bundle)
    assert bundle["total"] == 7
    for entry in bundle["entry"]:
        Observation.model_validate(entry["resource"])
        assert entry["fullUrl"] == f"{fhir.base}/Observation/{entry['resource']['id']}"
    with fhir.client(token) as c:
        for entry in bundle["entry"]:
            r = c.get(f"/Observation/{entry['resource']['id']}")
            assert r.status_code == 200
            assert r.json() == entry["resource"]


# --- date: prefixes at their edges, time zones, precision -----------------------------

EDGE_TIMES = {
    "before": datetime(2026, 3, 10, 9, 59, 59, tzinfo=UTC),
    "at": datetime(2026, 3, 10, 10, 0, 0, tzinfo=UTC),
    "half": datetime(2026, 3, 10, 10, 0, 0, 500000, tzinfo=UTC),
    "next": datetime(2026, 3, 10, 10, 0, 1, tzinfo=UTC),
    "minute": datetime(2026, 3, 10, 10, 1, 0, tzinfo=UTC),
}


@pytest.fixture
def edges(fhir: FhirServer, pat: dict) -> dict[str, str]:
    names = list(EDGE_TIMES)
    made = fhir.readings(pat["patient"], pat["device"], "heart_rate",
                         [EDGE_TIMES[n] for n in names])  # fmt: skip
    return {**pat, **dict(zip(names, made, strict=True))}


@pytest.mark.parametrize(
    ("date", "expected"),
    [
        ("eq2026-03-10T10:00:00Z", {"at", "half"}),
        ("2026-03-10T10:00:00Z", {"at", "half"}),
        ("ge2026-03-10T10:00:00Z", {"at", "half", "next", "minute"}),
        ("gt2026-03-10T10:00:00Z", {"next", "minute"}),
        ("le2026-03-10T10:00:00Z", {"before", "at", "half"}),
        ("lt2026-03-10T10:00:00Z", {"before"}),
        ("ge2026-03-10T10:00:00.5Z", {"half", "next", "minute"}),
        ("eq2026-03-10T10:00Z", {"at", "half", "next"}),
        ("gt2026-03-10T10:00Z", {"minute"}),
        # The same instants written in other time zones.
        ("ge2026-03-10T11:00:00+01:00", {"at", "half", "next", "minute"}),
        ("lt2026-03-10T05:00:00-05:00", {"before"}),
        # Without an offset: Stockholm local time (CET in March before the 29th).
        ("ge2026-03-10T11:00:00", {"at", "half", "next", "minute"}),
        ("eq2026-03-10", {"before", "at", "half", "next", "minute"}),
        ("lt2026-03-10", set()),
        ("gt2026-03-10", set()),
    ],
)
def test_date_prefixes_at_their_edges(
    fhir: FhirServer, edges: dict, token: str, date: str, expected: set[str]
) -> None:
    got = set(ids(search(fhir, token, ("patient", str(edges["patient"])), ("date", date))))
    assert got == {edges[n] for n in expected}


def test_repeated_dates_intersect(fhir: FhirServer, edges: dict, token: str) -> None:
    p = ("patient", str(edges["patient"]))
    got = ids(search(fhir, token, p, ("date", "gt2026-03-10T09:59:59Z"),
                     ("date", "lt2026-03-10T10:00:01Z")))  # fmt: skip
    assert set(got) == {edges["at"], edges["half"]}
    none = search(fhir, token, ("patient", str(edges["patient"])),
                  ("date", "ge2026-03-11"), ("date", "lt2026-03-10"))  # fmt: skip
    assert none["total"] == 0 and "entry" not in none


def test_an_unencoded_plus_in_the_offset_is_read_as_plus(
    fhir: FhirServer, edges: dict, token: str
) -> None:
    with fhir.client(token) as c:
        r = c.get(f"/Observation?patient={edges['patient']}&date=ge2026-03-10T11:00:00+01:00")
    assert r.status_code == 200, r.text
    assert set(ids(r.json())) == {edges[n] for n in ("at", "half", "next", "minute")}


@pytest.mark.parametrize(
    ("day", "inside", "outside"),
    [
        # An ordinary CET day is [23:00Z the day before, 23:00Z).
        ("2026-03-10", ["2026-03-09T23:00:00", "2026-03-10T22:59:59"],
         ["2026-03-09T22:59:59", "2026-03-10T23:00:00"]),
        # Daylight saving starts on 29 March 2026: a day of 23 hours.
        ("2026-03-29", ["2026-03-28T23:00:00", "2026-03-29T21:59:59"],
         ["2026-03-28T22:59:59", "2026-03-29T22:00:00"]),
        # And ends on 25 October 2026: a day of 25 hours.
        ("2026-10-25", ["2026-10-24T22:00:00", "2026-10-25T22:59:59"],
         ["2026-10-24T21:59:59", "2026-10-25T23:00:00"]),
    ],
)  # fmt: skip
def test_a_day_is_a_stockholm_day_across_daylight_saving(
    fhir: FhirServer, pat: dict, token: str, day: str, inside: list[str], outside: list[str]
) -> None:
    def utc(text: str) -> datetime:
        return datetime.fromisoformat(text).replace(tzinfo=UTC)

    yes = fhir.readings(pat["patient"], pat["device"], "body_weight", [utc(t) for t in inside])
    fhir.readings(pat["patient"], pat["device"], "body_weight", [utc(t) for t in outside])
    got = ids(search(fhir, token, ("patient", str(pat["patient"])), ("date", day)))
    assert set(got) == set(yes)


def test_a_date_that_is_not_one_is_an_error_naming_date(
    fhir: FhirServer, pat: dict, token: str
) -> None:
    with fhir.client(token) as c:
        for bad in ("2026-13-01", "yesterday", "sa2026-01-01", "ne2026-01-01"):
            r = c.get("/Observation", params={"patient": str(pat["patient"]), "date": bad})
            assert r.status_code == 400, bad
            outcome = r.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert outcome["issue"][0]["diagnostics"].startswith("date")


# --- code, category, device, subject ---------------------------------------------------


@pytest.fixture
def mixed(fhir: FhirServer, pat: dict) -> dict[str, Any]:
    p, d = pat["patient"], pat["device"]
    second = fhir.device(p, model="Nonin 3230")
    return {
        **pat,
        "device2": second,
        "hr": fhir.readings(p, d, "heart_rate", [T0 + timedelta(hours=i) for i in range(3)]),
        "spo2": fhir.readings(
            p, second, "spo2", [T0 + timedelta(hours=i, minutes=1) for i in range(2)], 95
        ),  # fmt: skip
        "glucose": fhir.readings(p, d, "blood_glucose", [T0 + timedelta(minutes=5)], 6.1),
        "bp": fhir.readings(p, d, "blood_pressure", [T0 + timedelta(minutes=9)], 140),
    }


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("http://loinc.org|8867-4", ["hr"]),
        ("8867-4", ["hr"]),
        ("urn:iso:std:iso:11073:10101|149546", ["hr"]),
        ("149546", ["hr"]),
        ("urn:iso:std:iso:11073:10101|149530", ["hr"]),  # the oximeter's pulse code
        ("http://loinc.org|59408-5", ["spo2"]),
        ("150456", ["spo2"]),
        ("8867-4,2708-6", ["hr", "spo2"]),
        ("http://loinc.org|85354-9", ["bp"]),
        ("urn:iso:std:iso:11073:10101|150020", ["bp"]),
        ("http://snomed.info/sct|8867-4", []),
        ("http://loinc.org|1234-5", []),
    ],
)
def test_code_with_or_without_system_and_mdc_find_the_same(
    fhir: FhirServer, mixed: dict, token: str, code: str, expected: list[str]
) -> None:
    got = ids(search(fhir, token, ("patient", str(mixed["patient"])), ("code", code)))
    assert sorted(got) == sorted(i for k in expected for i in mixed[k])


def test_an_unknown_code_matches_nothing_and_says_so(
    fhir: FhirServer, mixed: dict, token: str
) -> None:
    bundle = search(fhir, token, ("patient", str(mixed["patient"])), ("code", "1234-5"))
    assert bundle["total"] == 0
    outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert "1234-5" in outcome[0]["resource"]["issue"][0]["diagnostics"]


def test_repeated_codes_and_and_commas_or(fhir: FhirServer, mixed: dict, token: str) -> None:
    p = ("patient", str(mixed["patient"]))
    both = search(fhir, token, p, ("code", "8867-4"), ("code", "8867-4,2708-6"))
    assert sorted(ids(both)) == sorted(mixed["hr"])
    assert search(fhir, token, p, ("code", "8867-4"), ("code", "2708-6"))["total"] == 0


@pytest.mark.parametrize(
    ("category", "expected"),
    [
        ("vital-signs", ["hr", "spo2", "bp"]),
        ("http://terminology.hl7.org/CodeSystem/observation-category|vital-signs",
         ["hr", "spo2", "bp"]),
        ("laboratory", ["glucose"]),
        ("vital-signs,laboratory", ["hr", "spo2", "bp", "glucose"]),
        ("exam", []),
    ],
)  # fmt: skip
def test_category(fhir: FhirServer, mixed: dict, token: str, category: str,
                  expected: list[str]) -> None:  # fmt: skip
    got = ids(search(fhir, token, ("patient", str(mixed["patient"])), ("category", category)))
    assert sorted(got) == sorted(i for k in expected for i in mixed[k])


def test_category_and_code_narrow_together(fhir: FhirServer, mixed: dict, token: str) -> None:
    p = ("patient", str(mixed["patient"]))
    assert search(fhir, token, p, ("category", "laboratory"), ("code", "8867-4"))["total"] == 0
    got = ids(search(fhir, token, p, ("category", "vital-signs"), ("code", "8867-4,14743-9")))
    assert sorted(got) == sorted(mixed["hr"])


def test_device_and_subject(fhir: FhirServer, mixed: dict, token: str) -> None:
    p = str(mixed["patient"])
    by_device = ids(search(fhir, token, ("patient", p), ("device", f"Device/{mixed['device2']}")))
    assert sorted(by_device) == sorted(mixed["spo2"])
    bare = ids(search(fhir, token, ("device", mixed["device2"])))
    assert sorted(bare) == sorted(mixed["spo2"])
    by_subject = ids(search(fhir, token, ("subject", f"Patient/{p}")))
    by_patient = ids(search(fhir, token, ("patient", p)))
    assert by_subject == by_patient and len(by_patient) == 7
    with fhir.client(token) as c:
        r = c.get("/Observation", params={"patient": p, "subject": str(uuid.uuid4())})
        assert r.status_code == 400
        assert "subject" in r.json()["issue"][0]["diagnostics"]
        r = c.get("/Observation", params={"patient": "Group/1"})
        assert r.status_code == 400
        assert r.json()["issue"][0]["diagnostics"].startswith("patient")


# --- _count, _sort, _summary, total, paging --------------------------------------------


def test_count_default_max_and_zero(fhir: FhirServer, pat: dict, token: str) -> None:
    p = ("patient", str(pat["patient"]))
    made = fhir.readings(pat["patient"], pat["device"], "heart_rate",
                         [T0 + timedelta(seconds=i) for i in range(1003)])  # fmt: skip
    first = search(fhir, token, p)
    assert len(ids(first)) == 50 and "total" not in first
    assert link(first, "next")
    big = search(fhir, token, p, ("_count", "5000"))
    assert len(ids(big)) == 1000  # at most 1000 a page
    assert len(walk(fhir, token, big)) == 1003
    counted = search(fhir, token, p, ("_count", "0"))
    assert counted["total"] == 1003 and "entry" not in counted
    summary = search(fhir, token, p, ("_summary", "count"))
    assert summary["total"] == 1003 and "entry" not in summary
    accurate = search(fhir, token, p, ("_count", "10"), ("_total", "accurate"))
    assert accurate["total"] == 1003 and len(ids(accurate)) == 10
    one_page = search(fhir, token, p, ("date", "lt2026-03-10T10:00:03Z"))
    assert one_page["total"] == 3  # cheap: the first page holds every match
    assert ids(one_page) == made[2::-1]


def test_sort_both_ways_and_ties_broken_by_dedup_key(
    fhir: FhirServer, pat: dict, token: str
) -> None:
    p, d = pat["patient"], pat["device"]
    other = fhir.device(p)
    # Readings at the same instant from two devices: the keyset must not lose one.
    same = [T0 + timedelta(minutes=i // 2) for i in range(12)]
    made = fhir.insert(
        [reading_row(p, d if i % 2 else other, "heart_rate", t) for i, t in enumerate(same)]
    )
    down = walk(fhir, token, search(fhir, token, ("patient", str(p)), ("_count", "3")))
    up = walk(fhir, token, search(fhir, token, ("patient", str(p)), ("_count", "3"),
                                  ("_sort", "date")))  # fmt: skip
    assert sorted(down) == sorted(made) and len(down) == 12
    assert up == down[::-1]
    with fhir.client(token) as c:
        r = c.get("/Observation", params={"patient": str(p), "_sort": "value"})
        assert r.status_code == 400 and r.json()["issue"][0]["diagnostics"].startswith("_sort")


def test_paging_while_readings_arrive_sees_each_observation_once(
    fhir: FhirServer, pat: dict, token: str
) -> None:
    p, d = pat["patient"], pat["device"]
    arrived: list[str] = []
    before = fhir.readings(p, d, "heart_rate", [T0 + timedelta(minutes=2 * i) for i in range(40)])
    for sort in ("-date", "date"):
        before += arrived if sort == "date" else []
        seen: list[str] = []
        page = search(fhir, token, ("patient", str(p)), ("code", "8867-4"), ("_count", "7"),
                      ("_sort", sort))  # fmt: skip
        seen += ids(page)
        arrived = []
        with fhir.client(token) as c:
            n = 0
            while nxt := link(page, "next"):
                # New readings land between pages: newer than all, older than all, and in
                # the middle of what is still to come and of what was already served.
                n += 1
                stamp = timedelta(seconds=n, microseconds=1 if sort == "date" else 2)
                arrived += fhir.readings(p, d, "heart_rate", [
                    T0 + timedelta(days=1) + stamp,
                    T0 - timedelta(days=1) + stamp,
                    T0 + timedelta(minutes=41) + stamp,
                    T0 + timedelta(minutes=3) + stamp,
                ])  # fmt: skip
                r = c.get(nxt)
                assert r.status_code == 200, r.text
                page = r.json()
                seen += ids(page)
        assert len(seen) == len(set(seen)), "an observation was served twice"
        assert set(before) <= set(seen), "an observation was missed"
        assert set(seen) <= set(before) | set(arrived)


def test_multiple_codes_page_in_merged_time_order(fhir: FhirServer, pat: dict, token: str) -> None:
    p, d = pat["patient"], pat["device"]
    hr = fhir.readings(p, d, "heart_rate", [T0 + timedelta(minutes=3 * i) for i in range(20)])
    sp = fhir.readings(p, d, "spo2", [T0 + timedelta(minutes=5 * i + 1) for i in range(12)], 95)
    fhir.readings(p, d, "body_weight", [T0 + timedelta(minutes=i) for i in range(5)], 80)
    got = walk(fhir, token, search(fhir, token, ("patient", str(p)),
                                   ("code", "8867-4,2708-6"), ("_count", "6")))  # fmt: skip
    assert sorted(got) == sorted(hr + sp)
    times = [g.split("-")[0] for g in got]  # ids begin with the measurement time
    assert times == sorted(times, reverse=True)


def test_post_search_with_a_form_body_equals_get(fhir: FhirServer, pat: dict, token: str) -> None:
    fhir.readings(pat["patient"], pat["device"], "heart_rate",
                  [T0 + timedelta(minutes=i) for i in range(12)])  # fmt: skip
    params = {"patient": str(pat["patient"]), "code": "8867-4", "_count": "5",
              "date": "ge2026-03-10T10:02:00+01:00"}  # fmt: skip
    get = search(fhir, token, *params.items())
    with fhir.client(token) as c:
        r = c.post("/Observation/_search", data=params)
        assert r.status_code == 200, r.text
        posted = r.json()
        assert ids(posted) == ids(get)
        assert walk(fhir, token, posted) == walk(fhir, token, get)
        r = c.post("/Observation/_search", content=b'{"patient": "x"}',
                   headers={"Content-Type": "application/json"})  # fmt: skip
        assert r.status_code == 415


def test_links_carry_the_search_and_a_signed_cursor(
    fhir: FhirServer, pat: dict, token: str
) -> None:
    fhir.readings(pat["patient"], pat["device"], "heart_rate",
                  [T0 + timedelta(minutes=i) for i in range(5)])  # fmt: skip
    page = search(fhir, token, ("patient", str(pat["patient"])), ("code", "8867-4"),
                  ("_count", "2"))  # fmt: skip
    nxt = link(page, "next")
    assert nxt and link(page, "self")
    query = parse_qs(urlsplit(nxt).query)
    assert query["patient"] == [str(pat["patient"])] and query["code"] == ["8867-4"]
    assert query["_count"] == ["2"]
    cursor = query["_cursor"][0]
    with fhir.client(token) as c:
        forged = cursor[:-3] + ("AAA" if not cursor.endswith("AAA") else "BBB")
        for bad in (forged, "not-a-cursor", cursor.split(".")[0]):
            r = c.get("/Observation", params={"patient": str(pat["patient"]), "_cursor": bad})
            assert r.status_code == 400
            assert r.json()["issue"][0]["diagnostics"].startswith("_cursor")


# --- unknown parameters, lenient handling ----------------------------------------------


def test_unknown_parameters_are_refused_unless_lenient(
    fhir: FhirServer, pat: dict, token: str
) -> None:
    ids_ = fhir.readings(pat["patient"], pat["device"], "heart_rate", [T0])
    with fhir.client(token) as c:
        r = c.get("/Observation", params={"patient": str(pat["patient"]), "value-quantity": "70"})
        assert r.status_code == 400
        outcome = r.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["diagnostics"].startswith("value-quantity")
        r = c.get("/Observation", params={"patient": str(pat["patient"]), "code:text": "heart"})
        assert r.status_code == 400  # an unsupported modifier, whatever the handling
    bundle = search(fhir, token, ("patient", str(pat["patient"])), ("value-quantity", "70"),
                    Prefer="handling=lenient")  # fmt: skip
    assert ids(bundle) == ids_
    assert "value-quantity" not in (link(bundle, "self") or "")
    warning = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"][0]["resource"]
    assert warning["issue"][0]["severity"] == "warning"
    assert "value-quantity" in warning["issue"][0]["diagnostics"]


# --- read -----------------------------------------------------------------------------


def test_read_by_id_and_unknown_ids(fhir: FhirServer, pat: dict, token: str) -> None:
    made = fhir.readings(pat["patient"], pat["device"], "spo2", [T0, T0 + timedelta(seconds=1)], 97)
    with fhir.client(token) as c:
        r = c.get(f"/Observation/{made[1]}")
        assert r.status_code == 200
        obs = r.json()
        assert obs["id"] == made[1]
        assert obs["effectiveDateTime"] == "2026-03-10T10:00:01Z"
        assert obs["valueQuantity"] == {"value": 97, "unit": "%", "system":
                                        "http://unitsofmeasure.org", "code": "%"}  # fmt: skip
        # Same instant, another digest; a malformed id; an id of nothing.
        other = made[1].split("-")[0] + "-" + "0" * 16
        for missing in (other, "not-an-id", observation_id(T0, "nothing|here")):
            r = c.get(f"/Observation/{missing}")
            assert r.status_code == 404
            assert r.json()["resourceType"] == "OperationOutcome"


# --- $lastn ----------------------------------------------------------------------------


def test_lastn_gives_the_newest_per_code(fhir: FhirServer, pat: dict, token: str) -> None:
    p, d = pat["patient"], pat["device"]
    hr = fhir.readings(p, d, "heart_rate", [T0 + timedelta(hours=i) for i in range(5)])
    sp = fhir.readings(p, d, "spo2", [T0 + timedelta(hours=i, minutes=1) for i in range(4)], 95)
    wt = fhir.readings(p, d, "body_weight", [T0 + timedelta(days=i) for i in range(3)], 81)
    with fhir.client(token) as c:
        r = c.get("/Observation/$lastn", params={"patient": str(p)})
        assert r.status_code == 200, r.text
        bundle = r.json()
        Bundle.model_validate(bundle)
        assert set(ids(bundle)) == {hr[-1], sp[-1], wt[-1]}
        r = c.get("/Observation/$lastn", params=[("patient", str(p)), ("code", "8867-4"),
                                                 ("code", "150456"), ("max", "2")])  # fmt: skip
        got = ids(r.json())
        assert sorted(got) == sorted([hr[-1], hr[-2], sp[-1], sp[-2]])
        r = c.get("/Observation/$lastn", params={"patient": str(p), "code": "8867-4",
                                                 "max": "100"})  # fmt: skip
        assert ids(r.json()) == hr[::-1]
        r = c.get("/Observation/$lastn", params={"code": "8867-4"})
        assert r.status_code == 400
        assert r.json()["issue"][0]["diagnostics"].startswith("patient")
        r = c.get("/Observation/$lastn", params={"patient": str(p), "max": "0"})
        assert r.status_code == 400 and "max" in r.json()["issue"][0]["diagnostics"]
        r = c.post("/Observation/$lastn", data={"patient": str(p), "code": "29463-7"})
        assert ids(r.json()) == [wt[-1]]
