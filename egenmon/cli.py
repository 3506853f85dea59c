"""The `egenmon` command: a thin edge that parses, calls one function and answers."""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from egenmon.settings import Settings, SettingsError, load_settings

EXIT_USAGE = 2

# Each module adds its commands with `register(subparsers)`.
COMMAND_MODULES = (
    "egenmon.store.cli",
    "egenmon.devices.cli",
    "egenmon.authcli",
    "egenmon.ingest.cli",
    "egenmon.alerts.cli",
    "egenmon.web.cli",
    "egenmon.bench.cli",
    "egenmon.serve",
    "egenmon.devenv",
)


# Commands that sign nothing, so they may run in production without EGENMON_AUTH_SECRET:
# `dev` makes its own secret, `bench` starts servers of its own with theirs, and
# `broker config` writes the broker's files (docker-compose runs it without the secret).
SIGNS_NOTHING = frozenset({"dev", "bench", "broker"})


class CommandError(Exception):
    """A user error: printed without a traceback, exit code 2."""


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="egenmon", description="egenmon: patient self-monitoring platform"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings: Settings = load_settings(secrets_required=args.command not in SIGNS_NOTHING)
        rc = args.handler(args, settings)
    except (CommandError, SettingsError) as e:
        print(f"egenmon: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


if __name__ == "__main__":
    sys.exit(main())
