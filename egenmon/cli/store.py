"""Commands for the database and the registry: migrate, care units, patients."""

from __future__ import annotations

import argparse

from egenmon.cli.common import CommandError, command, db, emit
from egenmon.domain.identifiers import IdentifierError, parse_personal_identity
from egenmon.settings import Settings
from egenmon.store import care_units, patients
from egenmon.store import db as db_store
from egenmon.store.db import DatabaseError, check_timescaledb
from egenmon.store.migrate import migrate


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "migrate", cmd_migrate, "apply schema migrations (idempotent)")

    cu = sub.add_parser("care-unit", help="care units (vårdenheter)").add_subparsers(
        dest="action", required=True
    )
    p = command(cu, "add", cmd_care_unit_add, "register a care unit")
    p.add_argument("--name", required=True)
    p.add_argument("--hsa-id", required=True, help="the unit's HSA-id")

    pa = sub.add_parser("patient", help="patients").add_subparsers(dest="action", required=True)
    p = command(pa, "add", cmd_patient_add, "register a patient")
    p.add_argument(
        "--personnummer", required=True, help="personnummer or samordningsnummer, twelve digits"
    )
    p.add_argument("--care-unit", required=True, help="care unit id, HSA-id or name")
    p.add_argument("--name", help="display name for the clinician UI")


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> None:
    with db(settings) as conn:
        try:
            ran = migrate(conn)
            version = check_timescaledb(conn)
        except DatabaseError as e:
            raise CommandError(str(e)) from None
    names = [f"{m.version:04d}_{m.name}" for m in ran]
    emit(
        args,
        {"applied": names, "timescaledb": version},
        f"applied {len(names)} migration(s){': ' + ', '.join(names) if names else ''}"
        f" (TimescaleDB {version})",
    )


def cmd_care_unit_add(args: argparse.Namespace, settings: Settings) -> None:
    with db(settings) as conn:
        try:
            unit_id = care_units.add_care_unit(conn, args.name, args.hsa_id)
        except db_store.Conflict as e:
            raise CommandError(str(e)) from None
    emit(args, {"id": str(unit_id)}, str(unit_id))


def cmd_patient_add(args: argparse.Namespace, settings: Settings) -> None:
    try:
        ident = parse_personal_identity(args.personnummer)
    except IdentifierError as e:
        raise CommandError(f"--personnummer: {e}") from None
    with db(settings) as conn:
        try:
            unit_id = care_units.find_care_unit(conn, args.care_unit)
            patient_id = patients.add_patient(conn, ident.number, ident.kind, unit_id, args.name)
        except (db_store.NotFound, db_store.Conflict) as e:
            raise CommandError(str(e)) from None
    emit(args, {"id": str(patient_id)}, str(patient_id))
