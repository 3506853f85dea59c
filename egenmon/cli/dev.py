"""`egenmon dev`: the platform with a private database and broker (egenmon.dev.devenv)."""

from __future__ import annotations

import argparse
from pathlib import Path

from egenmon.cli.common import CommandError, command
from egenmon.dev import devenv
from egenmon.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    p = command(
        sub, "dev", cmd_dev, "run the platform with a private database and broker", json_flag=False
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".egenmon"),
        help="where the private cluster, broker and demo state live",
    )
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--no-simulator", action="store_true", help="do not simulate devices")


def cmd_dev(args: argparse.Namespace, settings: Settings) -> None:
    try:
        devenv.cmd_dev(args, settings)
    except devenv.DevError as e:
        raise CommandError(str(e)) from None
