"""Quarantine: what was refused, listed for admins and replayed through the pipeline.

Entries are written by the pipeline (`Pipeline.quarantine` and the rejects of `ingest`).
A replay runs an entry through the pipeline again, for example after the missing binding
was added: what is stored now resolves the entry; what is still refused leaves it open
with a note of the new reason.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import psycopg

from egenmon.ingest import ble, omh
from egenmon.ingest.normalise import parse_time
from egenmon.ingest.payloads import ingest_payload
from egenmon.ingest.pipeline import IngestResult, Pipeline
from egenmon.ingest.translated import FormatError
from egenmon.store import quarantine
from egenmon.store.quarantine import QuarantineEntry

RAW_PREVIEW = 4096  # characters of the raw body shown in a listing unless asked for all


async def list_entries(conn: psycopg.AsyncConnection, **filters: Any) -> list[dict[str, Any]]:
    """Quarantine entries, newest first (filters as in
    `egenmon.store.quarantine.list_quarantine`)."""
    return await quarantine.list_quarantine(conn, **filters)


def entry_json(entry: dict[str, Any], full: bool = False) -> dict[str, Any]:
    """An entry as JSON for admins: times in RFC 3339, the raw body as text."""
    out = {
        k: (v.isoformat() if isinstance(v, dt.datetime) else v)
        for k, v in entry.items()
        if k != "raw"
    }
    if "raw" in entry:
        text = bytes(entry["raw"]).decode("utf-8", errors="replace")
        out["raw_truncated"] = not full and len(text) > RAW_PREVIEW
        out["raw"] = text if full else text[:RAW_PREVIEW]
    return out


@dataclass(frozen=True)
class Replayed:
    id: int
    resolved: bool
    note: str

    def json(self) -> dict[str, Any]:
        return {"id": self.id, "resolved": self.resolved, "note": self.note}


class FhirReplayer(Protocol):
    """Runs a quarantined FHIR body through FHIR ingest again: (stored, what happened),
    e.g. `egenmon.fhir.ingest.replay_quarantined`."""

    async def __call__(
        self, pipeline: Pipeline, raw: bytes, gateway: str | None = None
    ) -> tuple[bool, str]: ...


async def replay(
    pipeline: Pipeline, ids: list[int], *, fhir: FhirReplayer | None = None
) -> list[Replayed]:
    """Run entries through the pipeline again and record what happened to each; entries
    that came in over FHIR go through `fhir` (left open with a note when not given)."""
    async with pipeline.pool.connection() as conn:
        entries = await quarantine.get_quarantine(conn, ids)
    found = {e["id"] for e in entries}
    out = [Replayed(i, False, "no such quarantine entry") for i in ids if i not in found]
    for entry in entries:
        out.append(await _replay_one(pipeline, entry, fhir))
    order = {i: n for n, i in enumerate(ids)}
    return sorted(out, key=lambda r: order.get(r.id, 0))


async def _replay_one(
    pipeline: Pipeline, entry: dict[str, Any], fhir: FhirReplayer | None
) -> Replayed:
    entry_id = entry["id"]
    if entry["resolved_at"] is not None:
        return Replayed(entry_id, True, f"already resolved: {entry['resolution']}")
    if entry["source"] in ("fhir", "phd"):
        return await _replay_fhir(pipeline, entry, fhir)
    device_id = entry["device_id"]
    if device_id is None:
        note = "cannot replay: no device is known for this entry"
        await _record(pipeline, entry_id, note, False)
        return Replayed(entry_id, False, note)
    raw = bytes(entry["raw"])
    if entry["source"] in ("omh", "ble"):
        return await _replay_translated(pipeline, entry, raw)
    if entry["source"] == "template" and entry["kind"] == "message":
        # A vendor payload: through its model's templates again (added since, perhaps).
        result = await ingest_payload(
            pipeline,
            raw,
            device_id=device_id,
            received_at=entry["received_at"],
            source="replay",
            quarantine=False,
        )
        return await _outcome(pipeline, entry, result, raw, split=False)
    if entry["kind"] == "reading":
        try:
            reading = orjson.loads(raw)
        except orjson.JSONDecodeError:
            reading = None
        body = orjson.dumps({"message_id": entry["message_id"], "readings": [reading]})
    else:
        body = raw
    # Not quarantined again: the entry is the quarantine; it stays open if still refused.
    result = await pipeline.ingest(
        body,
        device_id=device_id,
        source="replay",
        received_at=entry["received_at"],
        quarantine=False,
    )
    return await _outcome(pipeline, entry, result, raw)


async def _outcome(
    pipeline: Pipeline, entry: dict[str, Any], result: IngestResult, raw: bytes, split: bool = True
) -> Replayed:
    """Record what a replay did to the entry; `split`: readings still refused become
    entries of their own (a vendor payload's measurements are noted instead)."""
    entry_id, device_id = entry["id"], entry["device_id"]
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if result.error is not None:
        note = f"replayed {stamp}: still refused ({result.status}): {result.error}"
        await _record(pipeline, entry_id, note, False)
        return Replayed(entry_id, False, note)
    if result.status != 200:
        reasons = "; ".join(f"readings[{r['index']}]: {r['error']}" for r in result.rejected)
        note = f"replayed {stamp}: still refused: {reasons}"
        await _record(pipeline, entry_id, note, False)
        return Replayed(entry_id, False, note)
    note = f"replayed {stamp}: accepted {result.accepted}, duplicates {result.duplicates}"
    if result.rejected and not split:
        note += f"; {len(result.rejected)} measurement(s) still refused"
        await _record(pipeline, entry_id, note, False)
        return Replayed(entry_id, False, note)
    elif result.rejected:
        # Part of a message went in; what is still refused becomes entries of its own.
        rejects = [
            QuarantineEntry(
                entry["received_at"],
                entry["source"],
                r["error"],
                _reading_raw(raw, r["index"]),
                device_id,
                entry["topic"],
                "reading",
                result.message_id,
                r["index"],
            )
            for r in result.rejected
        ]
        new_ids = await pipeline.store_quarantine(rejects)
        note += f"; {len(rejects)} reading(s) still refused, now entries " + ", ".join(
            f"#{i}" for i in new_ids
        )
    await _record(pipeline, entry_id, note, True)
    return Replayed(entry_id, True, note)


async def _replay_translated(pipeline: Pipeline, entry: dict[str, Any], raw: bytes) -> Replayed:
    """An Open mHealth data point or Bluetooth measurement (or a whole body of them),
    translated again and run through the pipeline."""
    entry_id = entry["id"]
    at = entry["received_at"]
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        if entry["kind"] == "reading":
            item = orjson.loads(raw)
            items = (
                [omh.translate_item(item, parse_time=parse_time)]
                if entry["source"] == "omh"
                else [
                    ble.translate_item(
                        item, received_at=at, tz=pipeline.settings.tz, parse_time=parse_time
                    )
                ]
            )
        elif entry["source"] == "omh":
            items = omh.translate_body(raw, parse_time=parse_time)
        else:
            items = ble.translate_body(
                raw, received_at=at, tz=pipeline.settings.tz, parse_time=parse_time
            )
    except (FormatError, orjson.JSONDecodeError) as e:
        note = f"replayed {stamp}: still refused: {e}"
        await _record(pipeline, entry_id, note, False)
        return Replayed(entry_id, False, note)
    result = await pipeline.ingest_translated(
        items, device_id=entry["device_id"], source="replay", received_at=at, quarantine=False
    )
    if result.error is not None or result.rejected:
        reasons = result.error or "; ".join(
            f"[{r['index']}]: {r['error']}" for r in result.rejected
        )
        note = f"replayed {stamp}: accepted {result.accepted}; still refused: {reasons}"
        await _record(pipeline, entry_id, note, False)
        return Replayed(entry_id, False, note)
    note = f"replayed {stamp}: accepted {result.accepted}, duplicates {result.duplicates}"
    await _record(pipeline, entry_id, note, True)
    return Replayed(entry_id, True, note)


async def _replay_fhir(
    pipeline: Pipeline, entry: dict[str, Any], fhir: FhirReplayer | None
) -> Replayed:
    """FHIR content goes back through FHIR ingest (its own mapping and checks), which the
    caller passes in: FHIR ingest builds on the pipeline, not the other way round."""
    entry_id = entry["id"]
    if fhir is None:
        note = "cannot replay: FHIR content needs FHIR ingest, which this replay was not given"
        await _record(pipeline, entry_id, note, False)
        return Replayed(entry_id, False, note)
    # A PHD gateway's Bundle is replayed as that gateway (its device id is the entry's).
    gateway = entry["device_id"] if entry["source"] == "phd" else None
    resolved, outcome = await fhir(pipeline, bytes(entry["raw"]), gateway)
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    note = f"replayed {stamp}: {outcome}"
    await _record(pipeline, entry_id, note, resolved)
    return Replayed(entry_id, resolved, note)


def _reading_raw(body: bytes, index: int) -> bytes:
    try:
        return orjson.dumps(orjson.loads(body)["readings"][index])
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return body


async def _record(pipeline: Pipeline, entry_id: int, note: str, resolved: bool) -> None:
    async with pipeline.pool.connection() as conn:
        await quarantine.record_replay(conn, entry_id, note, resolved)
