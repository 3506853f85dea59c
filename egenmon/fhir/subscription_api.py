"""FHIR Subscriptions (R5 Backport IG on R4) under /fhir: thin edges over
`fhir.subscriptions` (the pure core) and `store.subscriptions`.

- `POST /fhir/Subscription`: a clinician's or integrator's token (an admin's too) makes a
  subscription to one of egenmon's topics; it starts `requested`, a handshake is sent at
  once, and a delivered handshake makes it `active`. The owner's care unit (its token's
  `care_unit` claim) bounds it for good: filters naming another unit's patient or unit
  are refused (403), and events are only ever raised for that unit's patients. Creating
  needs the read scope of the topic's focus resource (Flag, Task or Observation).
- `GET /fhir/Subscription[/{id}]`, `DELETE /fhir/Subscription/{id}` (status off): the
  owner's own subscriptions (an admin's: all); another's is a 404.
- `GET /fhir/Subscription/{id}/$status` (and `/fhir/Subscription/$status?id=`, or all
  the caller's), `GET /fhir/Subscription/{id}/$events` (`eventsSinceNumber`,
  `eventsUntilNumber`, `content`): the status and the past events by number, each event
  access-logged for its patient.
- `GET /fhir/Basic?code=SubscriptionTopic` and `/fhir/Basic/topic-<name>`: the topics.

Routes here come before the FHIR router's catch-all (see `egenmon.app`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import Response

from egenmon.auth import authenticate
from egenmon.deps import get_runtime
from egenmon.domain.principals import AuthError, Principal
from egenmon.fhir.api import _base, _body, _check_json, fhir_response, fhir_route
from egenmon.fhir.notifications import focus_resource, restrict_of
from egenmon.fhir.outcome import FhirError, bad_request, not_found
from egenmon.fhir.subscriptions import (
    CONTENTS,
    TOPICS,
    Event,
    SubscriptionError,
    notification_bundle,
    parse_subscription,
    render_subscription,
    status_parameters,
    topic_list,
)
from egenmon.store import patients, subscriptions
from egenmon.store.access_log import log_access, param_names

__all__ = ["router"]

router = APIRouter(tags=["fhir"])

MAY_SUBSCRIBE = ("clinician", "integrator", "admin")
MAX_EVENTS = 1000
_COUNTS_URL = "https://egenmon.example.org/fhir/StructureDefinition/subscription-delivery-counts"
_SEARCH_PARAMS = ("status", "url", "_count", "_format")


def _scope_unit(principal: Principal) -> uuid.UUID | None:
    """The care unit a principal is bound to (a clinician always is, an integrator when
    its token names one); None: it sees every unit (an admin, an unbound integrator)."""
    if principal.role == "admin":
        return None
    return principal.care_unit_id


def _subscriber(principal: Principal) -> None:
    if principal.role not in MAY_SUBSCRIBE:
        raise AuthError(403, f"the role {principal.role} may not manage subscriptions")
    if principal.role == "clinician" and principal.care_unit_id is None:
        raise AuthError(403, "a clinician token without a care unit may not subscribe")


def _sub_id(text: str) -> uuid.UUID:
    try:
        if len(text) == 36:
            return uuid.UUID(text)
    except ValueError:
        pass
    raise not_found(f"Subscription/{text[:64]} is not known")


async def _own(conn: Any, principal: Principal, text: str) -> dict[str, Any]:
    """The caller's subscription (an admin's: any); another's looks unknown."""
    row = await subscriptions.get(conn, _sub_id(text))
    if row is None or (principal.role != "admin" and row["owner"] != principal.subject):
        raise not_found(f"Subscription/{text[:64]} is not known")
    return row


async def create(request: Request) -> Response:
    principal = await authenticate(request)
    _subscriber(principal)
    _check_json(request)
    runtime = get_runtime(request)
    base = _base(request)
    try:
        doc = orjson.loads(await _body(request))
    except orjson.JSONDecodeError as e:
        raise bad_request(f"the body is not JSON: {e.msg}") from None
    try:
        req = parse_subscription(doc)
    except SubscriptionError as e:
        raise bad_request(str(e), "Subscription") from None
    topic = TOPICS[req.topic]
    principal.require(topic.resource, "r")
    if req.end_at is not None and req.end_at <= datetime.now(UTC):
        raise bad_request("Subscription.end is in the past", "Subscription.end")
    if runtime.settings.production and not req.endpoint.startswith("https://"):
        raise bad_request("channel.endpoint must be https in production", "Subscription.channel")
    scope = _scope_unit(principal)
    async with runtime.pool.connection() as conn:
        if req.patient_id is not None:
            unit = await patients.patient_care_unit(conn, req.patient_id)
            if unit is None or (scope is not None and unit != scope):
                await log_access(
                    runtime.pool,
                    principal,
                    "subscribe-refused",
                    "Subscription",
                    [req.patient_id] if unit is not None else [],
                    {"outcome": "refused", "status": 403, "topic": req.topic},
                )
                raise AuthError(403, f"this token may not see the data of Patient/{req.patient_id}")
        if req.care_unit_id is not None and scope is not None and req.care_unit_id != scope:
            raise AuthError(403, "this token may not see another care unit's patients")
        new = subscriptions.NewSubscription(
            topic=req.topic,
            patient_id=req.patient_id,
            care_unit_id=req.care_unit_id,
            codes=req.codes,
            scope_unit_id=scope,
            owner=principal.subject,
            owner_role=principal.role,
            endpoint=req.endpoint,
            content=req.content,
            headers=req.headers,
            hmac_secret=req.hmac_secret,
            heartbeat_s=req.heartbeat_s,
            timeout_s=req.timeout_s,
            max_count=req.max_count,
            end_at=req.end_at,
            reason=req.reason,
            criteria=req.criteria,
            fhir_base=base,
            filter=req.filter,
        )
        try:
            row = await subscriptions.create(conn, new)
        except psycopg.errors.ForeignKeyViolation:
            raise bad_request(
                "filter care-unit: no such care unit", "Subscription._criteria"
            ) from None
    await log_access(
        runtime.pool,
        principal,
        "subscribe",
        "Subscription",
        [req.patient_id] if req.patient_id else [],
        {"subscription": str(row["id"]), "topic": req.topic, "content": req.content},
    )
    location = f"{base}/Subscription/{row['id']}"
    return fhir_response(render_subscription(row, base), 201, {"Location": location})


async def read(request: Request) -> Response:
    principal = await authenticate(request)
    _subscriber(principal)
    runtime = get_runtime(request)
    async with runtime.pool.connection() as conn:
        row = await _own(conn, principal, request.path_params["id"])
    return fhir_response(render_subscription(row, _base(request)))


async def search(request: Request) -> Response:
    principal = await authenticate(request)
    _subscriber(principal)
    runtime = get_runtime(request)
    base = _base(request)
    params = list(request.query_params.multi_items())
    unknown = [n for n, _ in params if n not in _SEARCH_PARAMS]
    if unknown:
        raise bad_request(
            f"unknown search parameter {unknown[0][:40]!r} (known: {', '.join(_SEARCH_PARAMS)})"
        )
    query = dict(params)
    statuses = query["status"].split(",") if query.get("status") else None
    if statuses and any(s not in ("requested", "active", "error", "off") for s in statuses):
        raise bad_request("status must be requested, active, error or off")
    topic = None
    if query.get("url"):
        found = [t.name for t in TOPICS.values() if t.url == query["url"]]
        if not found:
            raise bad_request("url: not one of egenmon's topics")
        topic = found[0]
    count = _int(query.get("_count"), "_count", 1, 1000) or 100
    owner = None if principal.role == "admin" else principal.subject
    async with runtime.pool.connection() as conn:
        rows = await subscriptions.search(
            conn, owner=owner, statuses=statuses, topic=topic, limit=count
        )
    return fhir_response(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(rows),
            "entry": [
                {
                    "fullUrl": f"{base}/Subscription/{r['id']}",
                    "resource": render_subscription(r, base),
                    "search": {"mode": "match"},
                }
                for r in rows
            ],
        }
    )


async def delete(request: Request) -> Response:
    principal = await authenticate(request)
    _subscriber(principal)
    runtime = get_runtime(request)
    async with runtime.pool.connection() as conn:
        row = await _own(conn, principal, request.path_params["id"])
        await subscriptions.switch_off(conn, row["id"])
    await log_access(
        runtime.pool, principal, "unsubscribe", "Subscription", [], {"subscription": str(row["id"])}
    )
    return Response(status_code=204)


def _int(text: str | None, name: str, lo: int, hi: int) -> int | None:
    if text is None:
        return None
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise bad_request(f"{name} must be a whole number from {lo} to {hi}")
    return int(text)


def _status_entry(row: dict[str, Any], base: str, figures: dict[str, int]) -> dict[str, Any]:
    """A query-status entry; the outbox's counts ride on events-since-subscription-start
    as an extension (Parameters itself has none)."""
    params = status_parameters(row, base, "query-status")
    counts = {
        "url": _COUNTS_URL,
        "extension": [{"url": k, "valueUnsignedInt": v} for k, v in sorted(figures.items())],
    }
    for p in params["parameter"]:
        if p["name"] == "events-since-subscription-start":
            p["extension"] = [counts]
    return {"fullUrl": f"urn:uuid:{params['id']}", "resource": params, "search": {"mode": "match"}}


def _searchset(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}


async def status(request: Request) -> Response:
    """`$status` of one subscription (instance level)."""
    principal = await authenticate(request)
    _subscriber(principal)
    runtime = get_runtime(request)
    async with runtime.pool.connection() as conn:
        row = await _own(conn, principal, request.path_params["id"])
        figures = await subscriptions.counts(conn, row["id"])
    return fhir_response(_searchset([_status_entry(row, _base(request), figures)]))


async def statuses(request: Request) -> Response:
    """`$status` at type level: the named subscriptions (`id`, repeatable or
    comma-separated), or all of the caller's (`status` narrows them)."""
    principal = await authenticate(request)
    _subscriber(principal)
    runtime = get_runtime(request)
    params = [(n, v) for n, v in request.query_params.multi_items() if n != "_format"]
    unknown = [n for n, _ in params if n not in ("id", "status")]
    if unknown:
        raise bad_request(f"unknown parameter {unknown[0][:40]!r} (known: id, status)")
    ids = [i for n, v in params if n == "id" for i in v.split(",") if i]
    wanted = [v for n, v in params if n == "status" for v in v.split(",") if v]
    entries = []
    async with runtime.pool.connection() as conn:
        if ids:
            rows = [await _own(conn, principal, i) for i in ids[:100]]
        else:
            owner = None if principal.role == "admin" else principal.subject
            rows = await subscriptions.search(
                conn, owner=owner, statuses=wanted or None, topic=None, limit=100
            )
        for row in rows:
            if wanted and row["status"] not in wanted:
                continue
            figures = await subscriptions.counts(conn, row["id"])
            entries.append(_status_entry(row, _base(request), figures))
    return fhir_response(_searchset(entries))


_EVENTS_PARAMS = ("eventsSinceNumber", "eventsUntilNumber", "content", "_format")


async def events(request: Request) -> Response:
    principal = await authenticate(request)
    _subscriber(principal)
    runtime = get_runtime(request)
    base = _base(request)
    params = list(request.query_params.multi_items())
    unknown = [n for n, _ in params if n not in _EVENTS_PARAMS]
    if unknown:
        raise bad_request(
            f"unknown parameter {unknown[0][:40]!r} (known: {', '.join(_EVENTS_PARAMS)})"
        )
    query = dict(params)
    since = _int(query.get("eventsSinceNumber"), "eventsSinceNumber", 0, 2**62)
    until = _int(query.get("eventsUntilNumber"), "eventsUntilNumber", 0, 2**62)
    content = query.get("content")
    if content is not None and content not in CONTENTS:
        raise bad_request(f"content must be one of {', '.join(CONTENTS)}")
    async with runtime.pool.connection() as conn:
        row = await _own(conn, principal, request.path_params["id"])
        # Never more than the subscription itself gets: full-resource only if it asked.
        shown = content if content is not None else row["content"]
        if shown == "full-resource" and row["content"] != "full-resource":
            shown = "id-only"
        await subscriptions.number_events(conn)
        row = await _own(conn, principal, request.path_params["id"])
        found = await subscriptions.events(conn, row["id"], since, until, MAX_EVENTS)
        resources: dict[str, dict[str, Any]] = {}
        if shown == "full-resource":
            for e in found:
                res = await focus_resource(conn, e["focus"], restrict_of(row), base)
                if res is not None:
                    resources[e["focus"]] = res
    evs = [Event(int(e["event_number"]), e["created_at"], e["focus"]) for e in found]
    bundle = notification_bundle(row, base, "query-event", evs, resources, content=shown)
    await log_access(
        runtime.pool,
        principal,
        "search",
        "Subscription/$events",
        {e["patient_id"] for e in found if e["patient_id"] is not None},
        {
            "subscription": str(row["id"]),
            "params": param_names(params),
            "returned": len(evs),
            "content": shown,
        },
    )
    return fhir_response(bundle)


async def topics(request: Request) -> Response:
    principal = await authenticate(request)
    _subscriber(principal)
    params = list(request.query_params.multi_items())
    params = [(n, v) for n, v in params if n != "_format"]
    unknown = [n for n, _ in params if n != "code"]
    if unknown:
        raise bad_request(f"unknown search parameter {unknown[0][:40]!r} (known: code)")
    if not params:
        raise bad_request("search Basic with code=SubscriptionTopic (the topics)")
    bundle = topic_list(_base(request))
    if not any(v.rpartition("|")[2] == "SubscriptionTopic" for _, v in params):
        bundle.update(total=0, entry=[])  # only topics are served as Basic
    return fhir_response(bundle)


async def topic(request: Request) -> Response:
    principal = await authenticate(request)
    _subscriber(principal)
    ident = request.path_params["id"]
    bundle = topic_list(_base(request))
    for entry in bundle["entry"]:
        if entry["resource"]["id"] == ident:
            return fhir_response(entry["resource"])
    raise not_found(f"Basic/{ident[:64]} is not known")


_ALLOWED = {"/fhir/Subscription": "GET, POST", "/fhir/Subscription/{id}": "DELETE, GET"}


async def not_allowed(request: Request) -> Response:
    """405 with Allow for the other methods on a Subscription's paths (no update)."""
    route = request.scope.get("route")
    allow = _ALLOWED.get(getattr(route, "path", ""), "GET")
    error = FhirError(
        405, "not-supported", f"{request.method} is not supported here (allowed: {allow})"
    )
    return fhir_response(error.outcome(), 405, {"Allow": allow})


def _register() -> None:
    add = router.add_api_route
    for path, methods in (
        ("/fhir/Subscription", ["PUT", "PATCH", "DELETE"]),
        ("/fhir/Subscription/{id}", ["PUT", "PATCH", "POST"]),
    ):
        add(path, fhir_route(not_allowed), methods=methods, include_in_schema=False)
    add(
        "/fhir/Subscription",
        fhir_route(create),
        methods=["POST"],
        operation_id="create_subscription",
    )
    add(
        "/fhir/Subscription",
        fhir_route(search),
        methods=["GET"],
        operation_id="search_subscription",
    )
    add(
        "/fhir/Subscription/$status",
        fhir_route(statuses),
        methods=["GET"],
        operation_id="statuses_subscription",
    )
    add(
        "/fhir/Subscription/{id}/$status",
        fhir_route(status),
        methods=["GET"],
        operation_id="status_subscription",
    )
    add(
        "/fhir/Subscription/{id}/$events",
        fhir_route(events),
        methods=["GET"],
        operation_id="events_subscription",
    )
    add(
        "/fhir/Subscription/{id}",
        fhir_route(read),
        methods=["GET"],
        operation_id="read_subscription",
    )
    add(
        "/fhir/Subscription/{id}",
        fhir_route(delete),
        methods=["DELETE"],
        operation_id="delete_subscription",
    )
    add("/fhir/Basic", fhir_route(topics), methods=["GET"], operation_id="search_basic_topics")
    add("/fhir/Basic/{id}", fhir_route(topic), methods=["GET"], operation_id="read_basic_topic")


_register()
