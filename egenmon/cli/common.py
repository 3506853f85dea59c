"""What every command shares: user errors and exit codes, printing results, time
arguments, settings and the database connection. Imports no command module, so each
command module imports this and never the top-level parser (`egenmon.cli.main`)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import psycopg

from egenmon.settings import Settings, load_settings
from egenmon.store.db import DatabaseError, connect

EXIT_USAGE = 2

# Commands that sign nothing, so they may run in production without EGENMON_AUTH_SECRET:
# `dev` makes its own secret, `bench` starts servers of its own with theirs, and
# `broker config` writes the broker's files (docker-compose runs it without the secret).
SIGNS_NOTHING = frozenset({"dev", "bench", "broker"})


class CommandError(Exception):
    """A user error: printed without a traceback, exit code 2."""


def settings_for(command_name: str) -> Settings:
    """The settings a command runs with: the production secret is required unless the
    command signs nothing (raises SettingsError)."""
    return load_settings(secrets_required=command_name not in SIGNS_NOTHING)


def emit(args: argparse.Namespace, result: dict[str, Any], text: str | None = None) -> None:
    """Print a command's result: one JSON object with --json, else a line of text."""
    if getattr(args, "json", False):
        print(json.dumps(result, default=str))
    else:
        print(text if text is not None else json.dumps(result, default=str, indent=2))


def parse_time(value: str) -> dt.datetime:
    """An RFC 3339 time with an offset."""
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {value!r}") from None
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError(f"time needs an offset (e.g. +01:00 or Z): {value!r}")
    return t


def command(
    sub: argparse._SubParsersAction,
    name: str,
    func: Callable[..., int | None],
    help: str,
    json_flag: bool = True,
) -> argparse.ArgumentParser:
    """Add a sub-command whose handler is `func(args, settings)`."""
    p = sub.add_parser(name, help=help, description=help)
    if json_flag:
        p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=func)
    return p


def db(settings: Settings) -> psycopg.Connection:
    """An autocommit connection to the platform's database; a user error if unreachable."""
    try:
        return connect(settings.require_database(), autocommit=True)
    except DatabaseError as e:
        raise CommandError(str(e)) from None
