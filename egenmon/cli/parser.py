"""The `egenmon` command's parser: a thin edge that parses, calls one function and answers.

Each topic module adds its commands with `register(subparsers)`; they are imported here
by name, and none imports this module back (their shared helpers are in `common.py`)."""

from __future__ import annotations

import argparse
import sys

import egenmon.cli.clients as clients
from egenmon.cli import alerts, bench, dev, devices, ingest, serve, simulate, store, tokens, web
from egenmon.cli import export as export_topic
from egenmon.cli import phd as gateways
from egenmon.cli import templates as tpl
from egenmon.cli.common import EXIT_USAGE, CommandError, settings_for
from egenmon.settings import Settings, SettingsError

# In the order `egenmon --help` lists them.
TOPICS = (
    store, devices, tokens, ingest, simulate, alerts, web, bench, serve, dev, tpl, gateways,
    clients, export_topic,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="egenmon", description="egenmon: patient self-monitoring platform"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for topic in TOPICS:
        topic.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings: Settings = settings_for(args.command)
        rc = args.handler(args, settings)
    except (CommandError, SettingsError) as e:
        print(f"egenmon: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
