"""Commands of ingest: `quarantine list`, `quarantine replay ID...` and `simulate`."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
from pathlib import Path

import psycopg

from egenmon import progress
from egenmon.cli import CommandError, command, emit
from egenmon.ingest import quarantine as q
from egenmon.ingest.pipeline import Pipeline
from egenmon.ingest.simulate import SCENARIOS, SimDevice
from egenmon.ingest.simulate_run import (
    HttpTransport,
    Summary,
    Transport,
    backfill,
    live,
    load_devices,
)
from egenmon.settings import Settings
from egenmon.store.db import make_pool

SIM_HSA_ID = "SE2321000016-SIM"
SIM_UNIT = "Simulerade patienter"


def register(sub: argparse._SubParsersAction) -> None:
    qu = sub.add_parser("quarantine", help="rejected bodies and readings").add_subparsers(
        dest="action", required=True
    )
    p = command(qu, "list", cmd_list, "list what was rejected, with reasons (newest first)")
    p.add_argument("--all", action="store_true", help="resolved entries too")
    p.add_argument("--device", help="only this device's entries")
    p.add_argument("--source", choices=("http", "mqtt", "fhir", "replay"))
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--full", action="store_true", help="whole raw bodies, not a preview")
    p = command(
        qu,
        "replay",
        cmd_replay,
        "run entries through the pipeline again and resolve what is stored now",
    )
    p.add_argument("ids", nargs="+", type=int, metavar="ID")

    p = command(
        sub,
        "simulate",
        cmd_simulate,
        "simulate patients' devices sending readings (back-fill and live)",
    )
    p.add_argument("--via", choices=("http", "mqtt"), default="http")
    p.add_argument(
        "--url", default="http://127.0.0.1:8000", help="the platform's base URL (--via http)"
    )
    p.add_argument(
        "--patients",
        type=int,
        help="how many patients (default: every device in --devices-file, or 5 "
        "created in the database)",
    )
    p.add_argument(
        "--rate", type=float, default=1.0, help="readings a second in all while live (default 1)"
    )
    p.add_argument(
        "--scenario",
        choices=SCENARIOS,
        help="for every patient (default: each device's own from the file, else stable)",
    )
    p.add_argument(
        "--days",
        type=float,
        default=0,
        help="back-fill this many days of history first (twice-daily sessions)",
    )
    p.add_argument(
        "--duration",
        type=float,
        help="seconds to run live after the back-fill (default: until stopped; 0: back-fill only)",
    )
    p.add_argument(
        "--devices-file",
        type=Path,
        help="JSON with device_id and secret per device (as .egenmon/"
        "demo-devices.json); without it devices are created in the database",
    )
    p.add_argument(
        "--save-devices", type=Path, help="where to write the credentials of devices created here"
    )
    p.add_argument("--batch", type=int, default=500, help="readings per back-fill message")
    p.add_argument("--seed", type=int, default=0)


def _run(coro):
    try:
        return asyncio.run(coro)
    except (psycopg.OperationalError, OSError) as e:
        raise CommandError(f"database: {str(e).strip().splitlines()[0]}") from None


async def _with_pipeline(settings: Settings, work):
    pool = make_pool(settings.require_database(), 1, 4)
    await pool.open(wait=True, timeout=10)
    pipeline = Pipeline(settings, pool)
    try:
        await pipeline.start()
        try:
            return await work(pipeline)
        finally:
            await pipeline.stop()
    finally:
        await pool.close()


def cmd_list(args: argparse.Namespace, settings: Settings) -> None:
    async def work() -> list[dict]:
        async with await psycopg.AsyncConnection.connect(
            settings.require_database(), autocommit=True
        ) as conn:
            return await q.list_entries(
                conn,
                include_resolved=args.all,
                device_id=args.device,
                source=args.source,
                limit=args.limit,
            )

    entries = [q.entry_json(e, full=args.full) for e in _run(work())]
    lines = [
        f"#{e['id']} {e['received_at'][:19]} {e['source']} {e['device_id'] or '-'} "
        f"{e['kind']}{'' if e['reading_index'] is None else '[' + str(e['reading_index']) + ']'}"
        f" {'resolved' if e['resolved_at'] else 'open'}: {e['reason']}"
        for e in entries
    ]
    emit(args, {"entries": entries}, "\n".join(lines) if lines else "quarantine is empty")


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    async def work(pipeline: Pipeline) -> list[q.Replayed]:
        if not progress.wanted(args.json):
            return await q.replay(pipeline, args.ids)
        # One entry at a time, so a bar can follow a long replay on a terminal.
        out: list[q.Replayed] = []
        with progress.bar(len(args.ids), "replay", unit="entry") as shown:
            for entry_id in args.ids:
                out += await q.replay(pipeline, [entry_id])
                shown.update(1)
        return out

    results = _run(_with_pipeline(settings, work))
    out = [r.json() for r in results]
    emit(
        args,
        {"replayed": out},
        "\n".join(
            f"#{r['id']} {'resolved' if r['resolved'] else 'open'}: {r['note']}" for r in out
        ),
    )
    return 0 if all(r.resolved for r in results) else 1


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> None:
    devices = _devices(args, settings)
    if args.days < 0 or (args.duration is not None and args.duration < 0):
        raise CommandError("--days and --duration must not be negative")
    if args.rate <= 0:
        raise CommandError("--rate must be positive")
    now = dt.datetime.now(dt.UTC)
    # A deteriorating patient's decline starts four days back when there is history to
    # show it, so the back-filled data already crosses the thresholds; else it starts now.
    onset_at = now - dt.timedelta(days=min(args.days, 4.0))

    def scenario(d: SimDevice) -> str:
        return args.scenario or d.scenario or "stable"

    async def work() -> Summary:
        transport = _transport(args, settings)
        summary = Summary()
        try:
            if args.days > 0:
                summary = await backfill(
                    devices,
                    transport,
                    start=now - dt.timedelta(days=args.days),
                    end=now,
                    scenario=scenario,
                    seed=args.seed,
                    onset=lambda d: onset_at,
                    batch=args.batch,
                    tz=settings.tz,
                    progress=progress.wanted(args.json),
                )
            if args.duration is None or args.duration > 0:
                try:
                    await live(
                        devices,
                        transport,
                        rate=args.rate,
                        duration=args.duration,
                        scenario=scenario,
                        seed=args.seed,
                        onset=lambda d: onset_at,
                        summary=summary,
                        tz=settings.tz,
                    )
                except asyncio.CancelledError:
                    pass
        finally:
            await transport.close()
        return summary

    try:
        summary = asyncio.run(work())
    except KeyboardInterrupt:
        return
    result = {"devices": len(devices), **summary.json()}
    emit(
        args,
        result,
        f"sent {summary.readings} readings in {summary.messages} messages: "
        f"{summary.accepted} accepted, {summary.duplicates} duplicates, "
        f"{summary.rejected} rejected, {summary.failed_messages} undelivered",
    )


def _transport(args: argparse.Namespace, settings: Settings) -> Transport:
    if args.via == "http":
        return HttpTransport(args.url)
    # The MQTT side supplies its transport: MqttTransport(settings), implementing
    # simulate_run.Transport (send one message as the device, return the result object).
    try:
        from egenmon.ingest.simulate_mqtt import MqttTransport
    except ImportError:
        raise CommandError("--via mqtt: the MQTT transport is not available yet") from None
    if not settings.mqtt:
        raise CommandError("--via mqtt needs EGENMON_MQTT_URL")
    return MqttTransport(settings)


def _devices(args: argparse.Namespace, settings: Settings) -> list[SimDevice]:
    if args.devices_file is not None:
        try:
            devices = load_devices(args.devices_file)
        except (OSError, ValueError) as e:
            raise CommandError(f"--devices-file: {e}") from None
        if args.patients is not None:
            if args.patients > len(devices):
                raise CommandError(
                    f"--patients {args.patients}: the file has only {len(devices)} devices"
                )
            devices = devices[: args.patients]
        if not devices:
            raise CommandError("--devices-file holds no devices")
        return devices
    if not settings.database_url:
        raise CommandError(
            "give --devices-file, or set EGENMON_DATABASE_URL so that "
            "simulated patients and devices can be created"
        )
    devices = create_devices(settings, args.patients or 5, args.scenario or "stable", args.seed)
    if args.save_devices is not None:
        fd = os.open(args.save_devices, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump([d.__dict__ for d in devices], f)
    return devices


def create_devices(settings: Settings, n: int, scenario: str, seed: int) -> list[SimDevice]:
    """n simulated patients in a simulator care unit, each with a device bound 30 days back."""
    from egenmon.devices import registry
    from egenmon.identifiers import luhn_digit
    from egenmon.store import care_units, db, patients
    from egenmon.store.db import connect

    rng = random.Random(f"{seed}|{os.getpid()}|{dt.datetime.now().timestamp()}")  # noqa: S311
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    devices: list[SimDevice] = []
    with connect(settings.require_database(), autocommit=True) as conn:
        try:
            unit = care_units.find_care_unit(conn, SIM_HSA_ID)
        except db.NotFound:
            unit = care_units.add_care_unit(conn, SIM_UNIT, SIM_HSA_ID)
        while len(devices) < n:
            birth = dt.date(1935, 1, 1) + dt.timedelta(days=rng.randrange(50 * 365))
            nine = birth.strftime("%y%m%d") + f"{rng.randrange(1000):03d}"
            number = birth.strftime("%Y") + nine[2:] + str(luhn_digit(nine))
            try:
                patient = patients.add_patient(
                    conn, number, "personnummer", unit, f"Simulerad patient {len(devices) + 1}"
                )
            except db.Conflict:
                continue
            try:
                added = registry.add_device(
                    conn,
                    settings,
                    patient_id=str(patient),
                    model="Simulated Hub",
                    since=since,
                    manufacturer="egenmon",
                )
            except registry.DeviceError as e:
                raise CommandError(str(e)) from None
            devices.append(SimDevice(added.device_id, added.secret, str(patient), scenario))
    return devices
