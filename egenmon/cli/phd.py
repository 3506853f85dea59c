"""Commands for Personal Health Device gateways: phd map."""

from __future__ import annotations

import argparse

from egenmon.cli.common import CommandError, command, db, emit
from egenmon.fhir.phd_registry import PhdRegistryError, map_system_id
from egenmon.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    ph = sub.add_parser("phd", help="Personal Health Device gateways (HL7 PHD IG)")
    actions = ph.add_subparsers(dest="action", required=True)
    p = command(
        actions,
        "map",
        cmd_phd_map,
        "record that a PHD's IEEE 11073 system id (EUI-64) is a device registered here",
    )
    p.add_argument("--device", required=True, help="the egenmon device id")
    p.add_argument("--system-id", required=True, help="the EUI-64, e.g. 00-1C-05-04-00-00-78-25")


def cmd_phd_map(args: argparse.Namespace, settings: Settings) -> None:
    with db(settings) as conn:
        try:
            result = map_system_id(conn, args.device, args.system_id)
        except PhdRegistryError as e:
            raise CommandError(str(e)) from None
    emit(args, result, f"{result['system_id']} is Device/{result['device']}")
