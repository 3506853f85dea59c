"""Running the simulator: devices' credentials, a transport, back-fill and live sending.

The values come from the pure `simulate` module; a transport only sends a message and
returns the platform's answer. `HttpTransport` posts to `/api/v1/readings`; an MQTT
transport implements the same `Transport` protocol.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import httpx
import orjson

from egenmon.dev.simulate import SimDevice, generate, live_interval, messages
from egenmon.devices import registry
from egenmon.domain.identifiers import luhn_digit
from egenmon.progress import bar as progress_bar
from egenmon.settings import DEFAULT_TIMEZONE, Settings
from egenmon.store import care_units, patients
from egenmon.store import db as db_store
from egenmon.store.db import connect

log = logging.getLogger("egenmon.simulate")

# Where `egenmon simulate` puts the patients it creates.
SIM_HSA_ID = "SE2321000016-SIM"
SIM_UNIT = "Simulerade patienter"

BACKFILL_EVERY = dt.timedelta(hours=12)


class TransportError(Exception):
    """The platform could not be reached or did not store the message (try again)."""


class Transport(Protocol):
    """Sends one Reading message v1 for a device; returns the platform's result object."""

    async def send(self, device: SimDevice, message: dict) -> dict: ...

    async def close(self) -> None: ...


class HttpTransport:
    """POST /api/v1/readings with the device's secret as Bearer token."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout)

    async def send(self, device: SimDevice, message: dict) -> dict:
        try:
            r = await self.client.post(
                "/api/v1/readings",
                content=orjson.dumps(message),
                headers={
                    "Authorization": f"Bearer {device.secret}",
                    "Content-Type": "application/json",
                },
            )
        except httpx.HTTPError as e:
            raise TransportError(f"{type(e).__name__}: {e}") from None
        if r.status_code in (200, 422):
            return r.json()
        if r.status_code >= 500:
            raise TransportError(f"{r.status_code}: {r.text[:200]}")
        # 400/401/403/413: the platform refused the whole message; nothing to retry.
        return {"accepted": 0, "duplicates": 0, "status": r.status_code, "error": _error(r)}

    async def close(self) -> None:
        await self.client.aclose()


def _error(r: httpx.Response) -> str:
    try:
        return str(r.json().get("error"))
    except ValueError:
        return r.text[:200]


@dataclass
class Summary:
    messages: int = 0
    readings: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    refused_messages: int = 0
    failed_messages: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, sent: int, result: dict) -> None:
        self.messages += 1
        self.readings += sent
        self.accepted += int(result.get("accepted", 0))
        self.duplicates += int(result.get("duplicates", 0))
        self.rejected += len(result.get("rejected", []))
        if "error" in result:
            self.refused_messages += 1
            self._note(f"refused ({result.get('status')}): {result['error']}")

    def _note(self, text: str) -> None:
        if len(self.errors) < 10 and text not in self.errors:
            self.errors.append(text)

    def json(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "messages",
                "readings",
                "accepted",
                "duplicates",
                "rejected",
                "refused_messages",
                "failed_messages",
                "errors",
            )
        }


def load_devices(path: Path) -> list[SimDevice]:
    """Devices from a JSON file: a list (or {"devices": [...]}) of objects with device_id
    (or id) and secret, optionally patient_id, scenario and protocol (as `egenmon dev`
    writes .egenmon/demo-devices.json)."""
    data = json.loads(path.read_text())
    if isinstance(data, dict):
        data = data.get("devices", [])
    out = []
    for item in data:
        device_id = item.get("device_id") or item.get("id")
        if not device_id or not item.get("secret"):
            raise ValueError(f"{path}: every device needs device_id and secret")
        out.append(
            SimDevice(
                device_id,
                item["secret"],
                item.get("patient_id") or item.get("patient"),
                item.get("scenario") or "stable",
                item.get("protocol"),
            )
        )
    return out


async def _send(
    transport: Transport, device: SimDevice, message: dict, summary: Summary, retries: int = 5
) -> None:
    delay = 0.2
    for attempt in range(retries + 1):
        try:
            result = await transport.send(device, message)
        except TransportError as e:
            if attempt == retries:
                summary.failed_messages += 1
                summary._note(f"not delivered: {e}")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        summary.add(len(message["readings"]), result)
        return


async def backfill(
    devices: Sequence[SimDevice],
    transport: Transport,
    *,
    start: dt.datetime,
    end: dt.datetime,
    scenario: Callable[[SimDevice], str],
    seed: int = 0,
    onset: Callable[[SimDevice], dt.datetime | None] = lambda d: None,
    batch: int = 500,
    concurrency: int = 8,
    tz: ZoneInfo = ZoneInfo(DEFAULT_TIMEZONE),
    progress: bool = False,
) -> Summary:
    """Send every device's readings of [start, end) in batches, a few devices at a time.
    `progress`: a bar of readings sent on standard error (counted first, in a dry pass)."""
    summary = Summary()
    gate = asyncio.Semaphore(concurrency)

    def readings_of(device: SimDevice) -> Iterable[dict]:
        rng = random.Random(f"{seed}|{device.device_id}")  # noqa: S311
        return generate(
            device,
            scenario(device),
            start,
            end,
            rng,
            every=BACKFILL_EVERY,
            onset=onset(device),
            tz=tz,
        )

    total = sum(sum(1 for _ in readings_of(d)) for d in devices) if progress else None
    with progress_bar(total, "back-fill", enabled=progress) as shown:

        async def one(device: SimDevice) -> None:
            async with gate:
                for message in messages(device, readings_of(device), batch):
                    await _send(transport, device, message, summary)
                    shown.update(len(message["readings"]))

        await asyncio.gather(*(one(d) for d in devices))
    return summary


async def live(
    devices: Sequence[SimDevice],
    transport: Transport,
    *,
    rate: float,
    duration: float | None,
    scenario: Callable[[SimDevice], str],
    seed: int = 0,
    onset: Callable[[SimDevice], dt.datetime | None] = lambda d: None,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    summary: Summary | None = None,
    tz: ZoneInfo = ZoneInfo(DEFAULT_TIMEZONE),
) -> Summary:
    """Send readings as they are 'measured', `rate` readings a second in all, until the
    duration has passed (None: until cancelled)."""
    summary = summary or Summary()
    every = live_interval(len(devices), rate)
    rngs = {d.device_id: random.Random(f"{seed}|live|{d.device_id}") for d in devices}  # noqa: S311
    last = clock()
    stop_at = None if duration is None else time.monotonic() + duration
    pending: set[asyncio.Task] = set()
    try:
        while stop_at is None or time.monotonic() < stop_at:
            await asyncio.sleep(min(1.0, every.total_seconds() / 4))
            now = clock()
            for device in devices:
                readings = list(
                    generate(
                        device,
                        scenario(device),
                        last,
                        now,
                        rngs[device.device_id],
                        every=every,
                        onset=onset(device),
                        tz=tz,
                    )
                )
                for message in messages(device, readings):
                    task = asyncio.create_task(_send(transport, device, message, summary))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            last = now
    finally:
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
    return summary


def create_devices(settings: Settings, n: int, scenario: str, seed: int) -> list[SimDevice]:
    """n simulated patients in a simulator care unit, each with a device bound 30 days back
    (raises registry.DeviceError when a device cannot be added)."""
    rng = random.Random(f"{seed}|{os.getpid()}|{dt.datetime.now().timestamp()}")  # noqa: S311
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    devices: list[SimDevice] = []
    with connect(settings.require_database(), autocommit=True) as conn:
        try:
            unit = care_units.find_care_unit(conn, SIM_HSA_ID)
        except db_store.NotFound:
            unit = care_units.add_care_unit(conn, SIM_UNIT, SIM_HSA_ID)
        while len(devices) < n:
            birth = dt.date(1935, 1, 1) + dt.timedelta(days=rng.randrange(50 * 365))
            nine = birth.strftime("%y%m%d") + f"{rng.randrange(1000):03d}"
            number = birth.strftime("%Y") + nine[2:] + str(luhn_digit(nine))
            try:
                patient = patients.add_patient(
                    conn, number, "personnummer", unit, f"Simulerad patient {len(devices) + 1}"
                )
            except db_store.Conflict:
                continue
            added = registry.add_device(
                conn,
                settings,
                patient_id=str(patient),
                model="Simulated Hub",
                since=since,
                manufacturer="egenmon",
            )
            devices.append(SimDevice(added.device_id, added.secret, str(patient), scenario))
    return devices
