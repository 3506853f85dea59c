"""`egenmon bench NAME`: each benchmark prints one JSON object per line."""

from __future__ import annotations

import argparse
import json
from types import ModuleType

from egenmon.bench import alert_latency, alerts_scan, fhir_search, ingest_http, ingest_mqtt
from egenmon.bench import export as export_bench
from egenmon.cli.common import CommandError
from egenmon.settings import Settings

BENCHMARKS: dict[str, ModuleType] = {
    "ingest-http": ingest_http,
    "ingest-mqtt": ingest_mqtt,
    "fhir-search": fhir_search,
    "alerts-scan": alerts_scan,
    "export": export_bench,
    "alert-latency": alert_latency,
}


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks; one JSON object per line").add_subparsers(
        dest="bench", metavar="NAME", required=True
    )
    for name, mod in BENCHMARKS.items():
        p = bench.add_parser(name, help=(mod.__doc__ or name).strip().splitlines()[0])
        p.add_argument("--json", action="store_true", help="print JSON lines (the default)")
        mod.add_arguments(p)
        p.set_defaults(handler=_runner(mod))


def _runner(mod: ModuleType):
    def handler(args: argparse.Namespace, settings: Settings) -> None:
        try:
            for line in mod.run(args, settings):
                print(json.dumps(line), flush=True)
        except (RuntimeError, OSError, ValueError) as e:
            raise CommandError(f"bench {args.bench}: {e}") from None

    return handler
