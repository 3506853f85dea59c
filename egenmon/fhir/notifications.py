"""The body of one Subscription notification, from an outbox row (see alerts.notify).

The focus of a `full-resource` notification is read again when it is sent, limited to
what the subscription's owner may see (its care unit), so a notification never carries
more than a read by the same integrator would; a focus it may no longer see goes out as
its reference only.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from egenmon.domain.ids import parse_observation_id
from egenmon.fhir.render import render_flag, render_observation, render_task
from egenmon.fhir.subscriptions import Event, notification_bundle
from egenmon.store import alerts, readings
from egenmon.store.query import Conn, Restrict

_KINDS = {"handshake": "handshake", "heartbeat": "heartbeat", "event": "event-notification"}


def restrict_of(row: Mapping[str, Any]) -> Restrict:
    """What the subscription's owner may see: its care unit's patients, or everyone."""
    unit = row.get("scope_unit_id")
    return ("care_unit", unit) if unit is not None else None


async def focus_resource(
    conn: Conn, focus: str, restrict: Restrict, base: str
) -> dict[str, Any] | None:
    """The focus resource as a read by the owner would serve it, or None."""
    kind, _, ident = focus.partition("/")
    if kind in ("Flag", "Task"):
        key = alerts.alert_id(ident)
        row = await alerts.read_alert(conn, key, restrict) if key else None
        if row is None:
            return None
        return render_flag(row, base) if kind == "Flag" else render_task(row, base)
    if kind == "Observation":
        try:
            time, digest = parse_observation_id(ident)
        except ValueError:
            return None
        obs = await readings.read_observation(conn, time, digest, restrict)
        return render_observation(obs, base) if obs is not None else None
    return None


async def notification(
    conn: Conn, d: Mapping[str, Any], now: dt.datetime | None = None
) -> dict[str, Any]:
    """The notification Bundle for a claimed outbox row of a subscription."""
    base = d["fhir_base"]
    row = {
        "id": d["sub_id"],
        "topic": d["topic"],
        "status": d["sub_status"],
        "content": d["content"],
        "events_since_start": d["events_since_start"],
    }
    kind = _KINDS.get(d["event"], "event-notification")
    events = []
    resources: dict[str, dict[str, Any]] = {}
    if d["focus"] is not None and d["event_number"] is not None:
        events.append(Event(int(d["event_number"]), d["created_at"], d["focus"]))
        if d["content"] == "full-resource":
            found = await focus_resource(conn, d["focus"], restrict_of(d), base)
            if found is not None:
                resources[d["focus"]] = found
    return notification_bundle(row, base, kind, events, resources, now=now)


def patient_of(d: Mapping[str, Any]) -> uuid.UUID | None:
    pid = d.get("patient_id")
    return pid if isinstance(pid, uuid.UUID) else None
