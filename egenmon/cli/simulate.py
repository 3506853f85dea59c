"""`egenmon simulate`: patients' devices sending readings, back-fill and live (egenmon.dev)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
from pathlib import Path

from egenmon import progress
from egenmon.cli.common import CommandError, command, emit
from egenmon.dev.simulate import SCENARIOS, SimDevice
from egenmon.dev.simulate_run import (
    HttpTransport,
    Summary,
    Transport,
    backfill,
    create_devices,
    live,
    load_devices,
)
from egenmon.devices.registry import DeviceError
from egenmon.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
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
        from egenmon.dev.simulate_mqtt import MqttTransport
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
    try:
        devices = create_devices(settings, args.patients or 5, args.scenario or "stable", args.seed)
    except DeviceError as e:
        raise CommandError(str(e)) from None
    if args.save_devices is not None:
        fd = os.open(args.save_devices, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump([d.__dict__ for d in devices], f)
    return devices
