"""`egenmon user ...`: local logins for the clinician UI (passwords from standard input)."""

from __future__ import annotations

import argparse
import getpass
import sys

from egenmon.cli.common import CommandError, command, db, emit
from egenmon.settings import Settings
from egenmon.store import care_units
from egenmon.store import db as db_store
from egenmon.store import users as users_store
from egenmon.web import accounts


def register(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("user", help="logins for the clinician UI").add_subparsers(
        dest="action", required=True
    )
    p = command(
        users, "add", cmd_user_add, "add a UI login; the password is read from standard input"
    )
    p.add_argument("--username", required=True)
    p.add_argument("--care-unit", help="care unit id, HSA-id or name (needed by a clinician)")
    p.add_argument("--role", choices=accounts.USER_ROLES, default="clinician")
    p.add_argument("--name", help="the name shown in the UI")
    p.add_argument("--locale", choices=accounts.LOCALES, default="sv")
    p.add_argument(
        "--hsa-id", help="the HSA-id the login is found by when signing in through the provider"
    )
    p.add_argument(
        "--sso-only",
        action="store_true",
        help="no password: the login signs in only through the OpenID provider (needs --hsa-id)",
    )

    p = command(
        users,
        "set-password",
        cmd_user_password,
        "set a login's password from standard input (ends its sessions, lifts a lock)",
    )
    p.add_argument("--username", required=True)

    p = command(users, "unlock", cmd_user_unlock, "lift a lockout after failed logins")
    p.add_argument("--username", required=True)


def read_password() -> str:
    """The password: asked for without echo on a terminal, else the first line of stdin."""
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise CommandError("the passwords differ")
        return first
    line = sys.stdin.readline()
    return line[:-1] if line.endswith("\n") else line


def cmd_user_add(args: argparse.Namespace, settings: Settings) -> None:
    with db(settings) as conn:
        unit_id = None
        if args.care_unit:
            try:
                unit_id = care_units.find_care_unit(conn, args.care_unit)
            except db_store.NotFound as e:
                raise CommandError(f"--care-unit: {e}") from None
        password_hash: str | None
        try:
            username = accounts.check_username(args.username)
            hsa_id = accounts.check_hsa_id(args.hsa_id) if args.hsa_id else None
            if args.sso_only:
                if hsa_id is None:
                    raise ValueError("--sso-only needs --hsa-id")
                username, password_hash = accounts.new_user_fields(
                    username, None, args.role, unit_id, args.locale
                )
            else:
                password = read_password()
                username, password_hash = accounts.new_user_fields(
                    username, password, args.role, unit_id, args.locale
                )
        except ValueError as e:
            raise CommandError(str(e)) from None
        try:
            with conn.transaction():
                user_id = users_store.add_user(
                    conn, username, password_hash, args.role, unit_id, args.name, args.locale
                )
                if hsa_id:
                    users_store.set_hsa_id(conn, user_id, hsa_id)
        except db_store.Conflict as e:
            raise CommandError(str(e)) from None
    emit(
        args,
        {
            "id": str(user_id),
            "username": username,
            "role": args.role,
            "care_unit_id": str(unit_id) if unit_id else None,
            "hsa_id": hsa_id,
        },
        f"user {username} added ({args.role})",
    )


def cmd_user_password(args: argparse.Namespace, settings: Settings) -> None:
    try:
        password_hash = accounts.hash_password(read_password())
    except ValueError as e:
        raise CommandError(str(e)) from None
    with db(settings) as conn:
        try:
            users_store.set_password(
                conn, accounts.normalise_username(args.username), password_hash
            )
        except db_store.NotFound as e:
            raise CommandError(str(e)) from None
    emit(args, {"username": args.username}, f"password of {args.username} set")


def cmd_user_unlock(args: argparse.Namespace, settings: Settings) -> None:
    with db(settings) as conn:
        try:
            users_store.unlock_user(conn, accounts.normalise_username(args.username))
        except db_store.NotFound as e:
            raise CommandError(str(e)) from None
    emit(args, {"username": args.username}, f"{args.username} unlocked")
