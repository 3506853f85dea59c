"""FHIR Subscriptions as the R5 Subscriptions Backport IG has them on R4 (pure).

A subscriber posts an R4 `Subscription` whose `criteria` is one of egenmon's topic
canonicals (`TOPICS`), with filters in the `backport-filter-criteria` extension on
`_criteria` (``Observation?patient=Patient/<id>&code=http://loinc.org|8867-4``), a
`rest-hook` channel, `payload` application/fhir+json with `backport-payload-content`
(`empty`, `id-only`, `full-resource`), and optionally `backport-heartbeat-period`,
`backport-timeout`, `backport-max-count`, `channel.header` lines sent with every
notification (``Authorization: Bearer ...``) and egenmon's `hmac-secret` extension
(then every notification carries ``X-Egenmon-Signature: sha256=<HMAC-SHA256 of the body>``).

Everything here is plain values in, plain values out: parsing a posted Subscription into
a `SubscriptionRequest`, the Subscription as served, the status Parameters and the
notification Bundles (handshake, heartbeat, event-notification, query-status,
query-event).
"""

from __future__ import annotations

import datetime as dt
import html
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError

__all__ = [
    "BACKPORT",
    "HMAC_EXT",
    "TOPICS",
    "SubscriptionError",
    "SubscriptionRequest",
    "notification_bundle",
    "parse_subscription",
    "render_subscription",
    "status_parameters",
    "topic_list",
]

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
_FILTER_URL = BACKPORT + "backport-filter-criteria"
_CONTENT_URL = BACKPORT + "backport-payload-content"
_HEARTBEAT_URL = BACKPORT + "backport-heartbeat-period"
_TIMEOUT_URL = BACKPORT + "backport-timeout"
_MAX_COUNT_URL = BACKPORT + "backport-max-count"
_SUBSCRIPTION_PROFILE = BACKPORT + "backport-subscription"
_STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"
HMAC_EXT = "https://egenmon.example.org/fhir/StructureDefinition/subscription-hmac-secret"
TOPIC_BASE = "https://egenmon.example.org/fhir/SubscriptionTopic/"


@dataclass(frozen=True)
class Topic:
    name: str  # as stored: alert-flag, alert-task, observation
    resource: str  # the focus resource type
    title: str
    description: str
    filters: tuple[tuple[str, str], ...]  # (parameter, documentation)

    @property
    def url(self) -> str:
        return TOPIC_BASE + self.name


_UNIT_DOC = "The care unit (its egenmon id, or Organization/<id>): its patients only."
_PATIENT_DOC = "One patient: Patient/<id> or the bare id."
TOPICS: dict[str, Topic] = {
    t.name: t
    for t in (
        Topic(
            "alert-flag",
            "Flag",
            "Alert opened or changed (Flag)",
            "An alert (a deviation, served as a Flag) was opened, escalated, acknowledged, "
            "resolved or dismissed.",
            (
                ("patient", _PATIENT_DOC),
                ("care-unit", _UNIT_DOC),
                ("code", "The alert's rule (threshold, news2, ...); comma-separated."),
            ),
        ),
        Topic(
            "alert-task",
            "Task",
            "Care contact asked for or changed (Task)",
            "The care contact an alert asks for (a Task) was created or changed.",
            (
                ("patient", _PATIENT_DOC),
                ("care-unit", _UNIT_DOC),
                ("code", "The alert's rule (threshold, news2, ...); comma-separated."),
            ),
        ),
        Topic(
            "observation",
            "Observation",
            "New Observation",
            "A new Observation of a patient was stored (device readings, FHIR, the app).",
            (
                ("patient", _PATIENT_DOC),
                ("care-unit", _UNIT_DOC),
                ("code", "LOINC or IEEE 11073 MDC code, with or without system; comma-separated."),
            ),
        ),
    )
}
_BY_URL = {t.url: t for t in TOPICS.values()}
CONTENTS = ("empty", "id-only", "full-resource")
_PAYLOAD_TYPES = ("application/fhir+json", "application/json")
_HEADER = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}):[ \t]*([\x20-\x7e]{1,2048})$")
# Headers egenmon sets itself; a subscriber may not replace them.
_RESERVED = {
    "content-type", "content-length", "content-encoding", "transfer-encoding", "connection",
    "expect", "host", "te", "trailer", "upgrade", "user-agent", "x-egenmon-signature",
    "x-egenmon-event", "x-egenmon-delivery",
}  # fmt: skip
MAX_HEADERS = 8
MAX_HEARTBEAT_S = 86400
MAX_TIMEOUT_S = 60
MIN_SECRET = 16
_UNIT_PARAMS = ("care-unit", "organization")


class SubscriptionError(ValueError):
    """What is wrong with a posted Subscription (a 400 OperationOutcome naming it)."""


@dataclass(frozen=True)
class SubscriptionRequest:
    topic: str
    criteria: str
    filter: str | None
    patient_id: uuid.UUID | None
    care_unit_id: uuid.UUID | None
    codes: list[str] | None
    endpoint: str
    content: str
    headers: list[str]
    hmac_secret: str | None
    heartbeat_s: int | None
    timeout_s: int | None
    max_count: int | None
    end_at: dt.datetime | None
    reason: str | None


def _str(obj: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise SubscriptionError(f"{where}.{key} is required")
        return None
    if not isinstance(value, str) or not value.strip():
        raise SubscriptionError(f"{where}.{key} must be a non-empty string")
    return value


def _extensions(obj: Any, where: str) -> list[Mapping[str, Any]]:
    if obj is None:
        return []
    if not isinstance(obj, Mapping):
        raise SubscriptionError(f"{where} must be an object")
    ext = obj.get("extension", [])
    if not isinstance(ext, list) or not all(
        isinstance(e, Mapping) and isinstance(e.get("url"), str) for e in ext
    ):
        raise SubscriptionError(f"{where}.extension must be a list of extensions with a url")
    return ext


def _one(exts: list[Mapping[str, Any]], url: str, value: str, where: str) -> Any:
    found = [e for e in exts if e["url"] == url]
    if not found:
        return None
    if len(found) > 1:
        raise SubscriptionError(f"{where}: the extension {url} is given more than once")
    if value not in found[0]:
        raise SubscriptionError(f"{where}: the extension {url} needs {value}")
    return found[0][value]


def _uint(value: Any, where: str, lo: int, hi: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SubscriptionError(f"{where} must be an integer (a JSON number, not a string)")
    if not lo <= value <= hi:
        raise SubscriptionError(f"{where} must be between {lo} and {hi}")
    return value


def _instant(text: str | None, where: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SubscriptionError(f"{where} is not a FHIR instant") from None
    if t.tzinfo is None:
        raise SubscriptionError(f"{where} needs a time zone offset")
    return t.astimezone(dt.UTC)


def _ref_id(value: str, prefix: str, what: str) -> uuid.UUID:
    text = value.removeprefix(prefix + "/")
    try:
        return uuid.UUID(text) if len(text) == 36 else uuid.UUID("bad")
    except ValueError:
        raise SubscriptionError(f"filter {what}: {value[:80]!r} is not a {prefix} id") from None


def parse_filter(
    text: str | None, topic: Topic
) -> tuple[uuid.UUID | None, uuid.UUID | None, list[str] | None]:
    """(patient, care unit, codes) from a backport-filter-criteria value."""
    if text is None:
        return None, None, None
    query = text
    head, sep, tail = text.partition("?")
    if sep:
        if head and head != topic.resource:
            raise SubscriptionError(
                f"filter criteria are on {head}, but the topic's resource is {topic.resource}"
            )
        query = tail
    patient = unit = None
    codes: list[str] | None = None
    seen: set[str] = set()
    pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False)
    if not pairs and query.strip():
        raise SubscriptionError("filter criteria must be name=value pairs joined by &")
    for name, value in pairs:
        key = "care-unit" if name in _UNIT_PARAMS else "patient" if name == "subject" else name
        if key in seen:
            raise SubscriptionError(f"filter {name} is given more than once")
        seen.add(key)
        if not value:
            raise SubscriptionError(f"filter {name} has no value")
        if key == "patient":
            patient = _ref_id(value, "Patient", name)
        elif key == "care-unit":
            unit = _ref_id(value, "Organization", name)
        elif key == "code":
            codes = [c.rpartition("|")[2] for c in value.split(",")]
            if any(not c or len(c) > 64 for c in codes) or len(codes) > 50:
                raise SubscriptionError("filter code: empty or over-long codes")
        else:
            allowed = ", ".join(p for p, _ in topic.filters)
            raise SubscriptionError(
                f"filter {name[:40]!r} is not one of the topic's filters ({allowed})"
            )
    return patient, unit, codes


def _endpoint(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname or re.search(r"\s", text):
        raise SubscriptionError("channel.endpoint must be an http or https URL")
    if len(text) > 2048:
        raise SubscriptionError("channel.endpoint is longer than 2048 characters")
    return text


def _headers(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(h, str) for h in value):
        raise SubscriptionError("channel.header must be a list of strings")
    if len(value) > MAX_HEADERS:
        raise SubscriptionError(f"channel.header: at most {MAX_HEADERS} headers")
    out = []
    for h in value:
        m = _HEADER.match(h)
        if not m:
            raise SubscriptionError(
                "channel.header: each must be 'Name: value' (a token, printable ASCII)"
            )
        if m.group(1).lower() in _RESERVED:
            raise SubscriptionError(f"channel.header: {m.group(1)} is set by egenmon")
        out.append(f"{m.group(1)}: {m.group(2).strip()}")
    return out


def _check_fhir(doc: Mapping[str, Any]) -> None:
    """The whole resource is valid R4 (fhir.resources): the first errors, by element."""
    # Imported here: the model costs a third of a second to import, and only a POST of a
    # Subscription needs it (not every process that sends notifications).
    from fhir.resources.R4B.subscription import Subscription

    try:
        Subscription.model_validate(dict(doc))
    except ValidationError as exc:
        errors = exc.errors()
        parts = []
        for err in errors[:3]:
            path = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function"))
            msg = str(err["msg"]).removeprefix("Value error, ").split("\n")[0].strip()
            parts.append(f"Subscription.{path}: {msg}"[:300])
        if len(errors) > 3:
            parts.append(f"and {len(errors) - 3} more")
        raise SubscriptionError("; ".join(parts)) from None
    except Exception:  # noqa: BLE001  the models crash on some hostile values: still a 400
        raise SubscriptionError("Subscription: not a valid FHIR R4 Subscription") from None


def parse_subscription(doc: Any) -> SubscriptionRequest:
    """A posted R4 backport Subscription, checked; SubscriptionError names what is wrong."""
    if not isinstance(doc, Mapping):
        raise SubscriptionError("the body must be a JSON object")
    if doc.get("resourceType") != "Subscription":
        raise SubscriptionError("resourceType must be Subscription")
    status = doc.get("status", "requested")
    if status not in ("requested", "active"):
        raise SubscriptionError("status must be requested (the server activates it)")
    criteria = _str(doc, "criteria", "Subscription", required=True)
    assert criteria is not None
    topic = _BY_URL.get(criteria)
    if topic is None:
        known = ", ".join(_BY_URL)
        raise SubscriptionError(f"criteria must be one of egenmon's topics: {known}")
    crit_ext = _extensions(doc.get("_criteria"), "Subscription._criteria")
    filters = [e for e in crit_ext if e["url"] == _FILTER_URL]
    if len(filters) > 1:
        raise SubscriptionError("give the filter criteria in one extension, parameters joined by &")
    filter_text = None
    if filters:
        value = filters[0].get("valueString")
        if not isinstance(value, str) or not value.strip() or len(value) > 2000:
            raise SubscriptionError("backport-filter-criteria needs a valueString")
        filter_text = value
    patient, unit, codes = parse_filter(filter_text, topic)
    channel = doc.get("channel")
    if not isinstance(channel, Mapping):
        raise SubscriptionError("Subscription.channel is required")
    if channel.get("type") != "rest-hook":
        raise SubscriptionError("channel.type must be rest-hook (the only channel served)")
    endpoint = _endpoint(_str(channel, "endpoint", "channel", required=True) or "")
    payload = _str(channel, "payload", "channel")
    content_value = _one(
        _extensions(channel.get("_payload"), "channel._payload"),
        _CONTENT_URL,
        "valueCode",
        "channel._payload",
    )
    if payload is None:
        content = "empty"
        if content_value not in (None, "empty"):
            raise SubscriptionError("channel.payload is required for id-only or full-resource")
    else:
        if payload.split(";")[0].strip() not in _PAYLOAD_TYPES:
            raise SubscriptionError("channel.payload must be application/fhir+json")
        content = content_value if content_value is not None else "id-only"
    if content not in CONTENTS:
        raise SubscriptionError(f"backport-payload-content must be one of {', '.join(CONTENTS)}")
    chan_ext = _extensions(channel, "channel")
    heartbeat = _uint(
        _one(chan_ext, _HEARTBEAT_URL, "valueUnsignedInt", "channel"),
        "backport-heartbeat-period",
        1,
        MAX_HEARTBEAT_S,
    )
    timeout = _uint(
        _one(chan_ext, _TIMEOUT_URL, "valueUnsignedInt", "channel"),
        "backport-timeout",
        1,
        MAX_TIMEOUT_S,
    )
    max_count = _uint(
        _one(chan_ext, _MAX_COUNT_URL, "valuePositiveInt", "channel"),
        "backport-max-count",
        1,
        1000,
    )
    secret = _one(chan_ext, HMAC_EXT, "valueString", "channel")
    if secret is not None and (not isinstance(secret, str) or len(secret) < MIN_SECRET):
        raise SubscriptionError(f"the hmac-secret extension needs a string of {MIN_SECRET}+")
    if secret is not None and len(secret) > 256:
        raise SubscriptionError("the hmac-secret is longer than 256 characters")
    reason = _str(doc, "reason", "Subscription")
    end_at = _instant(_str(doc, "end", "Subscription"), "Subscription.end")
    _check_fhir(doc)  # after the checks above, which name what egenmon reads more precisely
    return SubscriptionRequest(
        topic=topic.name,
        criteria=criteria,
        filter=filter_text,
        patient_id=patient,
        care_unit_id=unit,
        codes=codes,
        endpoint=endpoint,
        content=content,
        headers=_headers(channel.get("header")),
        hmac_secret=secret,
        heartbeat_s=heartbeat,
        timeout_s=timeout,
        max_count=max_count,
        end_at=end_at,
        reason=reason[:1000] if reason else None,
    )


# --- what is served -------------------------------------------------------------------


def _instant_text(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def render_subscription(row: Mapping[str, Any], base: str) -> dict[str, Any]:
    """A subscriptions row as an R4 backport Subscription. Header values and the HMAC
    secret are never served back: a header shows its name only."""
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": row["endpoint"]}
    ext = []
    if row.get("heartbeat_s"):
        ext.append({"url": _HEARTBEAT_URL, "valueUnsignedInt": row["heartbeat_s"]})
    if row.get("timeout_s"):
        ext.append({"url": _TIMEOUT_URL, "valueUnsignedInt": row["timeout_s"]})
    if row.get("max_count"):
        ext.append({"url": _MAX_COUNT_URL, "valuePositiveInt": row["max_count"]})
    if ext:
        channel["extension"] = ext
    if row["content"] != "empty":
        channel["payload"] = "application/fhir+json"
    channel["_payload"] = {"extension": [{"url": _CONTENT_URL, "valueCode": row["content"]}]}
    if row.get("headers"):
        channel["header"] = [h.partition(":")[0] + ": (not shown)" for h in row["headers"]]
    sub: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": str(row["id"]),
        "meta": {
            "lastUpdated": _instant_text(row["updated_at"]),
            "profile": [_SUBSCRIPTION_PROFILE],
        },
        "status": row["status"],
        "reason": row.get("reason") or "egenmon notifications",
        "criteria": row["criteria"],
        "channel": channel,
    }
    if row.get("filter"):
        sub["_criteria"] = {"extension": [{"url": _FILTER_URL, "valueString": row["filter"]}]}
    if row.get("end_at"):
        sub["end"] = _instant_text(row["end_at"])
    if row["status"] == "error" and row.get("error"):
        sub["error"] = row["error"]
    return sub


@dataclass(frozen=True)
class Event:
    number: int
    at: dt.datetime
    focus: str  # Flag/<id>, Task/<id>, Observation/<id>


def status_parameters(
    row: Mapping[str, Any],
    base: str,
    kind: str,
    events: Sequence[Event] = (),
    *,
    content: str | None = None,
    events_since_start: int | None = None,
) -> dict[str, Any]:
    """The SubscriptionStatus (R4: a Parameters resource) of a notification or `$status`.
    kind: handshake, heartbeat, event-notification, query-status or query-event."""
    topic = TOPICS[row["topic"]]
    count = row["events_since_start"] if events_since_start is None else events_since_start
    params: list[dict[str, Any]] = [
        {
            "name": "subscription",
            "valueReference": {"reference": f"{base}/Subscription/{row['id']}"},
        },
        {"name": "topic", "valueCanonical": topic.url},
        {"name": "status", "valueCode": row["status"]},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(count)},
    ]
    shown = content or row["content"]
    for e in events:
        part: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(e.number)},
            {"name": "timestamp", "valueInstant": _instant_text(e.at)},
        ]
        if shown != "empty":
            part.append({"name": "focus", "valueReference": {"reference": f"{base}/{e.focus}"}})
        params.append({"name": "notification-event", "part": part})
    if row["status"] == "error" and row.get("error"):
        params.append({"name": "error", "valueCodeableConcept": {"text": row["error"][:500]}})
    return {
        "resourceType": "Parameters",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [_STATUS_PROFILE]},
        "parameter": params,
    }


def notification_bundle(
    row: Mapping[str, Any],
    base: str,
    kind: str,
    events: Sequence[Event] = (),
    resources: Mapping[str, dict[str, Any]] | None = None,
    *,
    content: str | None = None,
    now: dt.datetime | None = None,
    events_since_start: int | None = None,
) -> dict[str, Any]:
    """A notification Bundle (type history): the status first, then per event the focus
    (id-only: its fullUrl; full-resource: the resource too, where `resources` holds it)."""
    status = status_parameters(
        row, base, kind, events, content=content, events_since_start=events_since_start
    )
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{status['id']}",
            "resource": status,
            "request": {"method": "GET", "url": f"{base}/Subscription/{row['id']}/$status"},
            "response": {"status": "200"},
        }
    ]
    shown = content or row["content"]
    if shown != "empty":
        for e in events:
            resource_type = e.focus.partition("/")[0]
            entry: dict[str, Any] = {"fullUrl": f"{base}/{e.focus}"}
            full = (resources or {}).get(e.focus) if shown == "full-resource" else None
            if full is not None:
                entry["resource"] = full
            entry["request"] = {
                "method": "PUT" if resource_type != "Observation" else "POST",
                "url": e.focus if resource_type != "Observation" else "Observation",
            }
            entry["response"] = {"status": "200" if resource_type != "Observation" else "201"}
            entries.append(entry)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "history",
        "timestamp": _instant_text(now or dt.datetime.now(dt.UTC)),
        "entry": entries,
    }


def topic_list(base: str) -> dict[str, Any]:
    """The topics as a searchset of Basic resources (R4 has no SubscriptionTopic): each
    carries the canonical to put in `criteria` and its filters."""
    entries = []
    for t in TOPICS.values():
        basic = {
            "resourceType": "Basic",
            "id": f"topic-{t.name}",
            "code": {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/fhir-types",
                        "code": "SubscriptionTopic",
                    }
                ]
            },
            "extension": [
                {
                    "url": BACKPORT + "backport-topic-canonical",
                    "valueCanonical": t.url,
                },
            ],
            "text": {
                "status": "generated",
                "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>'
                + html.escape(f"{t.title}: {t.description} Topic: {t.url}. Focus: {t.resource}.")
                + "</p><p>"
                + html.escape("Filters: " + "; ".join(f"{p}: {d}" for p, d in t.filters))
                + "</p></div>",
            },
        }
        entries.append(
            {"fullUrl": f"{base}/Basic/topic-{t.name}", "resource": basic,
             "search": {"mode": "match"}}
        )  # fmt: skip
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
