"""The Subscriptions core without a server: parsing what subscribers post (hostile input
is a SubscriptionError naming the element, never another exception), the Subscription as
served (no secrets), and notification Bundles that validate as FHIR R4(B)."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.subscription import Subscription
from hypothesis import given, settings
from hypothesis import strategies as st

from egenmon.fhir.subscriptions import (
    BACKPORT,
    HMAC_EXT,
    TOPICS,
    Event,
    SubscriptionError,
    notification_bundle,
    parse_subscription,
    render_subscription,
    topic_list,
)

BASE = "http://fhir.example.org/fhir"
PID = uuid.uuid4()


def doc(
    topic: str = "alert-flag",
    filter_: str | None = None,
    content: str | None = "id-only",
    **channel: object,
) -> dict:
    ch: dict = {"type": "rest-hook", "endpoint": "https://hooks.example.org/egenmon"}
    if content is not None:
        ch["payload"] = "application/fhir+json"
        ch["_payload"] = {
            "extension": [{"url": BACKPORT + "backport-payload-content", "valueCode": content}]
        }
    ch.update(channel)
    d: dict = {
        "resourceType": "Subscription",
        "status": "requested",
        "reason": "test",
        "criteria": TOPICS[topic].url,
        "channel": ch,
    }
    if filter_ is not None:
        d["_criteria"] = {
            "extension": [{"url": BACKPORT + "backport-filter-criteria", "valueString": filter_}]
        }
    return d


def test_a_backport_subscription_parses_with_its_filters_and_channel():
    d = doc(
        "observation",
        f"Observation?patient=Patient/{PID}&code=http://loinc.org|8867-4,150456",
        "full-resource",
        header=["Authorization: Bearer abc.def"],
        extension=[
            {"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": 30},
            {"url": BACKPORT + "backport-timeout", "valueUnsignedInt": 5},
            {"url": HMAC_EXT, "valueString": "s" * 20},
        ],
    )
    Subscription.model_validate(d)  # what the tests post is valid FHIR itself
    r = parse_subscription(d)
    assert (r.topic, r.patient_id, r.codes, r.content) == (
        "observation",
        PID,
        ["8867-4", "150456"],
        "full-resource",
    )
    assert (r.heartbeat_s, r.timeout_s, r.hmac_secret) == (30, 5, "s" * 20)
    assert r.headers == ["Authorization: Bearer abc.def"]


def test_care_unit_filter_takes_organization_too():
    unit = uuid.uuid4()
    assert parse_subscription(doc(filter_=f"organization=Organization/{unit}")).care_unit_id == unit
    assert parse_subscription(doc(filter_=f"Flag?care-unit={unit}")).care_unit_id == unit


def test_without_payload_the_content_is_empty():
    assert parse_subscription(doc(content=None)).content == "empty"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d.update(criteria="http://example.org/other-topic"), "criteria"),
        (lambda d: d["channel"].update(type="websocket"), "rest-hook"),
        (lambda d: d["channel"].update(endpoint="ftp://x.example.org/"), "endpoint"),
        (lambda d: d["channel"].update(endpoint=12), "endpoint"),
        (lambda d: d["channel"].update(header=["Content-Type: text/plain"]), "set by egenmon"),
        (lambda d: d["channel"].update(header=["X-A: b\r\nX-Injected: 1"]), "header"),
        (lambda d: d["channel"].update(payload="text/xml"), "payload"),
        (lambda d: d.update(status="active", end="2026-13-01T00:00:00Z"), "end"),
        (lambda d: d.update(end="2026-12-01T00:00:00"), "end"),
        (lambda d: d.update(contact=[{"system": 5}]), "contact"),
        (lambda d: d.pop("reason"), "reason"),
        (
            lambda d: d["channel"].update(
                extension=[{"url": BACKPORT + "backport-heartbeat-period", "valueUnsignedInt": "5"}]
            ),
            "integer",
        ),
        (
            lambda d: d["channel"].update(extension=[{"url": HMAC_EXT, "valueString": "short"}]),
            "hmac-secret",
        ),
        (
            lambda d: d.update(
                _criteria={
                    "extension": [
                        {"url": BACKPORT + "backport-filter-criteria", "valueString": "foo=1"}
                    ]
                }
            ),
            "not one of the topic's filters",
        ),
        (
            lambda d: d.update(
                _criteria={
                    "extension": [
                        {
                            "url": BACKPORT + "backport-filter-criteria",
                            "valueString": "Observation?patient=x",
                        }
                    ]
                }
            ),
            "topic's resource is Flag",
        ),
    ],
)
def test_what_is_wrong_is_named(change, named):
    d = doc()
    change(d)
    with pytest.raises(SubscriptionError, match=named):
        parse_subscription(d)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=80, deadline=None)
@given(
    field=st.sampled_from(["criteria", "channel", "_criteria", "end", "status", "reason"]),
    value=json_values,
)
def test_hostile_values_are_refused_by_name_never_crash(field, value):
    d = doc(filter_=f"patient={PID}")
    d[field] = value
    try:
        parse_subscription(d)
    except SubscriptionError as e:
        assert str(e)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=120))
def test_any_filter_text_parses_or_is_refused(text):
    d = doc(filter_=text)
    try:
        r = parse_subscription(d)
    except SubscriptionError:
        return
    assert r.filter == text


def _row(**kw: object) -> dict:
    now = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
    row = {
        "id": uuid.uuid4(),
        "status": "active",
        "topic": "alert-flag",
        "content": "id-only",
        "events_since_start": 3,
        "endpoint": "https://hooks.example.org/x",
        "headers": ["Authorization: Bearer secret-token"],
        "hmac_secret": "a-very-secret-hmac-key",
        "heartbeat_s": 60,
        "timeout_s": None,
        "max_count": None,
        "reason": "r",
        "criteria": TOPICS["alert-flag"].url,
        "filter": f"patient={PID}",
        "end_at": None,
        "error": None,
        "updated_at": now,
    }
    row.update(kw)
    return row


def test_a_served_subscription_never_shows_header_values_or_the_secret():
    sub = render_subscription(_row(), BASE)
    Subscription.model_validate(sub)
    text = str(sub)
    assert "secret-token" not in text and "a-very-secret-hmac-key" not in text
    assert sub["channel"]["header"] == ["Authorization: (not shown)"]


@pytest.mark.parametrize("content", ["empty", "id-only", "full-resource"])
def test_notification_bundles_validate_and_carry_what_the_content_says(content):
    row = _row(content=content)
    flag = {"resourceType": "Flag", "id": "f1", "status": "active", "code": {"text": "x"},
            "subject": {"reference": "Patient/p"}}  # fmt: skip
    e = Event(3, dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC), "Flag/f1")
    b = notification_bundle(row, BASE, "event-notification", [e], {"Flag/f1": flag})
    Bundle.model_validate(b)
    assert b["type"] == "history"
    status = b["entry"][0]["resource"]
    params = {p["name"]: p for p in status["parameter"]}
    assert params["type"]["valueCode"] == "event-notification"
    assert params["events-since-subscription-start"]["valueString"] == "3"
    [event] = [p for p in status["parameter"] if p["name"] == "notification-event"]
    parts = {p["name"]: p for p in event["part"]}
    assert parts["event-number"]["valueString"] == "3"
    if content == "empty":
        assert "focus" not in parts and len(b["entry"]) == 1
    else:
        assert parts["focus"]["valueReference"]["reference"] == f"{BASE}/Flag/f1"
        assert b["entry"][1]["fullUrl"] == f"{BASE}/Flag/f1"
        assert ("resource" in b["entry"][1]) == (content == "full-resource")


def test_heartbeat_and_handshake_bundles_have_no_events():
    for kind in ("handshake", "heartbeat"):
        b = notification_bundle(_row(), BASE, kind)
        Bundle.model_validate(b)
        assert len(b["entry"]) == 1
        names = [p["name"] for p in b["entry"][0]["resource"]["parameter"]]
        assert "notification-event" not in names


def test_topics_are_listed_as_basic_resources_with_their_canonical():
    b = topic_list(BASE)
    Bundle.model_validate(b)
    urls = {e["resource"]["extension"][0]["valueCanonical"] for e in b["entry"]}
    assert urls == {t.url for t in TOPICS.values()}
