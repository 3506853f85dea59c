"""Commands for vendor payload templates: template add, list and test."""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path
from typing import Any

from egenmon import jsonbody
from egenmon.cli.common import CommandError, command, db, emit
from egenmon.ingest.template_registry import add_templates, list_templates, try_templates
from egenmon.ingest.templates import TemplateError
from egenmon.settings import Settings


def register(sub: argparse._SubParsersAction) -> None:
    tp = sub.add_parser("template", help="vendor payload templates (IoMT FHIR connector format)")
    actions = tp.add_subparsers(dest="action", required=True)
    p = command(actions, "add", cmd_template_add, "check a template set and bind it to a model")
    p.add_argument(
        "file",
        type=Path,
        help="the device content template (CollectionContent), or one JSON object "
        "holding devicecontent and fhirmapping",
    )
    p.add_argument("fhir_file", type=Path, nargs="?", help="the FHIR mapping (CollectionFhir)")
    p.add_argument("--model", required=True, help="the device model the templates are for")
    command(actions, "list", cmd_template_list, "the template sets, by device model")
    p = command(actions, "test", cmd_template_test, "show what a sample payload becomes")
    p.add_argument("file", type=Path, help="as for template add")
    p.add_argument("fhir_file", type=Path, nargs="?", help="the FHIR mapping (CollectionFhir)")
    p.add_argument("--sample", required=True, type=Path, help="a vendor payload (JSON file)")


def _load(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return jsonbody.loads(path.read_bytes())
    except OSError as e:
        raise CommandError(f"{path}: {e.strerror or e}") from None
    except jsonbody.JsonBodyError as e:
        raise CommandError(f"{path}: {e}") from None


def cmd_template_add(args: argparse.Namespace, settings: Settings) -> None:
    first, second = _load(args.file), _load(args.fhir_file)
    with db(settings) as conn:
        try:
            result = add_templates(conn, args.model, first, second, f"cli:{getpass.getuser()}")
        except TemplateError as e:
            raise CommandError(f"template refused: {e}") from None
    types = ", ".join(f"{k} -> {v}" for k, v in result["types"].items())
    ignored = f" (ignored: {', '.join(result['ignored'])})" if result["ignored"] else ""
    emit(args, result, f"templates of {result['model']}: {types}{ignored}")


def cmd_template_list(args: argparse.Namespace, settings: Settings) -> None:
    with db(settings) as conn:
        entries = list_templates(conn)
    lines = [
        f"{e['model']}: {', '.join(f'{k} -> {v}' for k, v in e.get('types', {}).items())}"
        + (f" ERROR {e['error']}" if "error" in e else "")
        for e in entries
    ]
    emit(args, {"templates": entries}, "\n".join(lines) or "no templates")


def cmd_template_test(args: argparse.Namespace, settings: Settings) -> None:
    first, second, sample = _load(args.file), _load(args.fhir_file), _load(args.sample)
    try:
        result = try_templates(first, second, sample)
    except TemplateError as e:
        raise CommandError(f"template refused: {e}") from None
    lines = []
    for m in result["measurements"]:
        if m["reading"] is not None:
            r = m["reading"]
            values = ", ".join(
                f"{k} {v}" for k, v in r.items() if k not in ("type", "time", "unit")
            )
            lines.append(f"{m['type_name']} -> {r['type']} {values} {r['unit']} at {r['time']}")
        else:
            lines.append(f"{m['type_name']} -> not mapped: {m['error']}")
    emit(args, result, "\n".join(lines) or "no template matches the sample")
