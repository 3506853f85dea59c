"""Vendor payloads through their model's templates into the pipeline (HTTP and MQTT alike).

The device is authenticated by the transport; its model's template set
(`egenmon.ingest.templates`, stored per model) turns the payload into readings of a
Reading message v1, which the pipeline stores with source ``template``: the same
normalisation, dedup and quarantine as any reading. A payload that is not JSON, whose
model has no templates, or that no template matches is kept whole in quarantine with
the reason; measurements the templates found but could not map are kept with theirs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson

from egenmon import jsonbody
from egenmon.ingest.message import MAX_READINGS
from egenmon.ingest.pipeline import IngestResult, Pipeline, safe_reason
from egenmon.ingest.templates import TemplateError, TemplateSet, evaluate, parse_template_set
from egenmon.ingest.writer import WriteError
from egenmon.store import device_templates

__all__ = ["SOURCE", "ingest_payload"]

SOURCE = "template"

# Parsed template sets by model, with the time they were added: a set added again is
# parsed again on the next payload, in every process.
_parsed: dict[str, tuple[dt.datetime, TemplateSet]] = {}


async def _templates(pipeline: Pipeline, device_id: str) -> tuple[str, TemplateSet | str]:
    """(model, its template set) or (model, why there is none)."""
    try:
        async with pipeline.pool.connection() as conn:
            found = await device_templates.template_for_device(conn, device_id)
    except Exception as e:  # noqa: BLE001  an outage: the sender tries again
        raise WriteError(f"templates cannot be read: {type(e).__name__}") from None
    if found is None:
        return "?", "unknown device"
    model, content, fhir, added_at = found
    if content is None:
        return model, f"no templates for device model {model[:80]!r} (egenmon template add)"
    cached = _parsed.get(model)
    if cached is not None and cached[0] == added_at:
        return model, cached[1]
    try:
        parsed = parse_template_set(content, fhir)
    except TemplateError as e:  # checked when added; a later egenmon may be stricter
        return model, f"the templates of model {model[:80]!r} are no longer valid: {e}"
    _parsed[model] = (added_at, parsed)
    return model, parsed


async def ingest_payload(
    pipeline: Pipeline,
    body: bytes,
    *,
    device_id: str,
    topic: str | None = None,
    received_at: dt.datetime | None = None,
    source: str = SOURCE,
    quarantine: bool = True,
) -> IngestResult:
    """Store what a device's vendor payload holds; raises WriteError in an outage.

    The answer is the Reading message result; `rejected` indexes the measurements the
    templates found, in order. `quarantine` false: a replay of a payload that is in
    quarantine already (source ``replay``)."""

    async def refuse(status: int, reason: str) -> IngestResult:
        reason = safe_reason(reason)
        if not quarantine:
            return IngestResult(status=status, error=reason)
        await pipeline.quarantine(
            source=SOURCE,
            reason=reason,
            raw=body,
            device_id=device_id,
            topic=topic,
            received_at=received_at,
        )
        return IngestResult(status=status, error=reason)

    try:
        payload = jsonbody.loads(body)
    except jsonbody.JsonBodyError as e:
        return await refuse(400, f"the payload {e}")
    model, templates = await _templates(pipeline, device_id)
    if isinstance(templates, str):
        return await refuse(422, templates)
    measurements = evaluate(templates, payload)
    good = [(i, m.reading) for i, m in enumerate(measurements) if m.reading is not None]
    bad: list[dict[str, Any]] = [
        {"index": i, "error": safe_reason(f"{m.type_name}: {m.error}")}
        for i, m in enumerate(measurements)
        if m.error is not None
    ]
    if not measurements:
        return await refuse(422, f"no template of device model {model[:80]!r} matches the payload")
    if bad and quarantine:
        reason = "; ".join(f"[{b['index']}] {b['error']}" for b in bad[:10])
        await pipeline.quarantine(
            source=SOURCE,
            reason=f"measurements the templates could not map: {reason}",
            raw=body,
            device_id=device_id,
            topic=topic,
            received_at=received_at,
        )
    if not good:
        return IngestResult(status=422, rejected=bad)
    accepted = duplicates = 0
    rejected: list[dict[str, Any]] = list(bad)
    for start in range(0, len(good), MAX_READINGS):
        chunk = good[start : start + MAX_READINGS]
        message = orjson.dumps({"readings": [r for _, r in chunk]})
        result = await pipeline.ingest(
            message,
            device_id=device_id,
            source=source,
            topic=topic,
            received_at=received_at,
            quarantine=quarantine,
        )
        accepted += result.accepted
        duplicates += result.duplicates
        if result.error is not None:
            rejected += [{"index": i, "error": result.error} for i, _ in chunk]
        rejected += [{"index": chunk[r["index"]][0], "error": r["error"]} for r in result.rejected]
    rejected.sort(key=lambda r: int(r["index"]))
    status = 200 if accepted or duplicates else 422
    return IngestResult(status=status, accepted=accepted, duplicates=duplicates, rejected=rejected)
