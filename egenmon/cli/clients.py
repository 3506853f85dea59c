"""`egenmon client add|list|remove`: SMART clients (backend services and apps)."""

from __future__ import annotations

import argparse
import json

from egenmon.cli.common import CommandError, command, db, emit
from egenmon.identity import clients
from egenmon.settings import Settings
from egenmon.store.db import Conflict, NotFound


def register(sub: argparse._SubParsersAction) -> None:
    cl = sub.add_parser("client", help="SMART clients").add_subparsers(dest="action", required=True)
    p = command(cl, "add", cmd_client_add, "register a SMART client (backend service or app)")
    p.add_argument("--name", required=True, help="what the client is called")
    p.add_argument("--jwks", help="file with the client's public JWKS (private_key_jwt)")
    p.add_argument("--jwks-uri", help="https URL the client's public JWKS is served at")
    p.add_argument(
        "--scope",
        nargs="+",
        action="extend",
        required=True,
        help="SMART scopes the client may be granted (system/*.rs, patient/*.rs, launch...)",
    )
    p.add_argument("--redirect-uri", action="append", help="an app's redirect URI (exact)")
    p.add_argument("--origin", action="append", help="an app's web origin, allowed by CORS")
    p.add_argument("--launch-uri", help="an app's EHR launch URL (egenmon adds iss and launch)")
    command(cl, "list", cmd_client_list, "list the registered clients")
    p = command(cl, "remove", cmd_client_remove, "remove a client: its tokens stop being issued")
    p.add_argument("client_id")


def cmd_client_add(args: argparse.Namespace, settings: Settings) -> None:
    jwks = None
    if args.jwks:
        try:
            with open(args.jwks) as f:
                jwks = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise CommandError(f"--jwks: cannot read a JSON file: {e}") from None
    with db(settings) as conn:
        try:
            result = clients.add_client(
                conn,
                name=args.name,
                scopes=args.scope,
                jwks=jwks,
                jwks_uri=args.jwks_uri,
                redirect_uris=args.redirect_uri,
                origins=args.origin,
                launch_uri=args.launch_uri,
            )
        except (ValueError, Conflict) as e:
            raise CommandError(str(e)) from None
    emit(args, result, result["client_id"])


def cmd_client_list(args: argparse.Namespace, settings: Settings) -> None:
    with db(settings) as conn:
        found = clients.list_clients(conn)
    emit(
        args,
        {"clients": found},
        "\n".join(f"{c['client_id']}\t{c['type']}\t{' '.join(c['scopes'])}" for c in found),
    )


def cmd_client_remove(args: argparse.Namespace, settings: Settings) -> None:
    with db(settings) as conn:
        try:
            clients.remove_client(conn, args.client_id)
        except NotFound as e:
            raise CommandError(str(e)) from None
    emit(args, {"removed": args.client_id}, f"removed {args.client_id}")
