"""`egenmon export research`: a pseudonymised research extract of one care unit."""

from __future__ import annotations

import argparse
from pathlib import Path

from egenmon.cli.common import CommandError, command, emit, parse_time
from egenmon.export.research import DATE_MODES, FORMATS, write_extract
from egenmon.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="data out: research extracts").add_subparsers(
        dest="action", required=True
    )
    p = command(
        ex,
        "research",
        cmd_export_research,
        "a pseudonymised (not anonymous) extract of a care unit's readings and alerts",
    )
    p.add_argument("--care-unit", required=True, help="care unit id or HSA-id")
    p.add_argument("--from", dest="low", required=True, type=parse_time, help="RFC 3339")
    p.add_argument("--to", dest="high", required=True, type=parse_time, help="RFC 3339")
    p.add_argument("--out", required=True, type=Path, help="an empty or new folder")
    p.add_argument("--dates", choices=DATE_MODES, default="shift", help="default: shift")
    p.add_argument("--format", choices=FORMATS, default="ndjson", help="default: ndjson")


def cmd_export_research(args: argparse.Namespace, settings: Settings) -> None:
    try:
        manifest = write_extract(
            settings.require_database(),
            args.care_unit,
            args.low,
            args.high,
            args.out,
            dates=args.dates,
            fmt=args.format,
        )
    except ValueError as e:
        raise CommandError(str(e)) from None
    rows = ", ".join(f"{f['rows']} {f['content']}" for f in manifest["files"])
    emit(
        args,
        {"out": str(args.out), **manifest},
        f"wrote {rows} of {manifest['patients']} patients to {args.out} (pseudonymised, "
        "not anonymous: see manifest.json)",
    )
