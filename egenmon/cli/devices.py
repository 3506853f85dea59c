"""Commands for devices and the broker: device add/revoke, broker config."""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path

from egenmon.cli.common import CommandError, command, db, emit, parse_time
from egenmon.devices import registry
from egenmon.devices.broker import BrokerConfigError, write_config
from egenmon.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    dv = sub.add_parser("device", help="devices").add_subparsers(dest="action", required=True)
    p = command(dv, "add", cmd_device_add, "register a device bound to a patient")
    p.add_argument("--patient", required=True, help="patient id")
    p.add_argument("--model", required=True)
    p.add_argument("--manufacturer")
    p.add_argument("--id", dest="device_id", help="device id (default: from the model)")
    p.add_argument(
        "--self-bought", action="store_true", help="bought by the patient rather than prescribed"
    )
    p.add_argument(
        "--since",
        type=parse_time,
        help="RFC 3339; readings measured before it are refused (default now)",
    )
    p = command(dv, "revoke", cmd_device_revoke, "revoke a device's credentials at once")
    p.add_argument("device_id")

    br = sub.add_parser("broker", help="the MQTT broker").add_subparsers(
        dest="action", required=True
    )
    p = command(br, "config", cmd_broker_config, "write the Mosquitto configuration")
    p.add_argument("--out", required=True, type=Path, help="folder for mosquitto.conf")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--host", default="localhost", help="host egenmon reaches the broker on")
    p.add_argument("--bind", help="address the listener binds (default: all)")
    p.add_argument("--plugin", help="path of mosquitto_dynamic_security.so")
    p.add_argument("--mount-dir", help="where the broker sees --out (in a container)")


def cmd_device_add(args: argparse.Namespace, settings: Settings) -> None:
    since = args.since or dt.datetime.now(dt.UTC)
    with db(settings) as conn:
        try:
            added = registry.add_device(
                conn,
                settings,
                patient_id=args.patient,
                model=args.model,
                manufacturer=args.manufacturer,
                device_id=args.device_id,
                since=since,
                acquisition="self_bought" if args.self_bought else "prescribed",
            )
        except registry.DeviceError as e:
            raise CommandError(str(e)) from None
    emit(
        args,
        {"id": added.device_id, "secret": added.secret, "mqtt": added.mqtt},
        f"device {added.device_id}\nsecret {added.secret}  (shown once only)",
    )


def cmd_device_revoke(args: argparse.Namespace, settings: Settings) -> None:
    with db(settings) as conn:
        try:
            mqtt = registry.revoke_device(conn, settings, args.device_id)
        except registry.DeviceError as e:
            raise CommandError(str(e)) from None
    emit(
        args,
        {"id": args.device_id, "status": "revoked", "mqtt": mqtt},
        f"device {args.device_id} revoked (broker: {mqtt})",
    )


def cmd_broker_config(args: argparse.Namespace, settings: Settings) -> None:
    try:
        cfg = write_config(
            args.out,
            port=args.port,
            host=args.host,
            bind=args.bind,
            prefix=settings.mqtt_topic_prefix,
            plugin=args.plugin,
            mount_dir=args.mount_dir,
        )
    except BrokerConfigError as e:
        raise CommandError(str(e)) from None
    emit(
        args,
        {"conf": str(cfg.conf), "mqtt_url": cfg.mqtt_url},
        f"wrote {cfg.conf}\nEGENMON_MQTT_URL={cfg.mqtt_url}",
    )
