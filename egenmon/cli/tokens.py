"""`egenmon token issue`: signed access tokens for clinicians, integrators, admins, patients."""

from __future__ import annotations

import argparse
import uuid

from egenmon.auth import issue_token
from egenmon.cli.common import CommandError, command, db, emit
from egenmon.domain.principals import ROLES
from egenmon.settings import Settings
from egenmon.store import care_units, patients
from egenmon.store import db as db_store


def register(sub: argparse._SubParsersAction) -> None:
    tk = sub.add_parser("token", help="access tokens").add_subparsers(dest="action", required=True)
    p = command(tk, "issue", cmd_token_issue, "issue a signed access token")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--care-unit", help="care unit id, HSA-id or name (clinician)")
    p.add_argument("--patient", help="patient id (patient)")
    p.add_argument("--subject", help="who the token is for (user name or system name)")
    p.add_argument("--scope", help="SMART v2 scopes, space separated (default by role)")
    p.add_argument("--ttl", type=int, help="lifetime in seconds")


def cmd_token_issue(args: argparse.Namespace, settings: Settings) -> None:
    unit_id = patient_id = None
    if args.care_unit or args.patient:
        with db(settings) as conn:
            try:
                if args.care_unit:
                    unit_id = care_units.find_care_unit(conn, args.care_unit)
                if args.patient:
                    row = patients.get_patient(conn, args.patient)
                    patient_id = uuid.UUID(str(row["id"]))
                    # A clinician's patient is a launch context: one of their unit's.
                    if args.role == "clinician" and row["care_unit_id"] != unit_id:
                        raise CommandError("a clinician's --patient must be of their care unit")
            except db_store.NotFound as e:
                raise CommandError(str(e)) from None
    try:
        token = issue_token(
            settings,
            role=args.role,
            subject=args.subject,
            care_unit_id=unit_id,
            patient_id=patient_id,
            scope=args.scope,
            ttl_seconds=args.ttl,
        )
    except ValueError as e:
        raise CommandError(str(e)) from None
    emit(args, {"token": token}, token)
