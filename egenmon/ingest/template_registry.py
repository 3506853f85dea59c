"""Adding, listing and trying template sets (the `egenmon template` commands' work)."""

from __future__ import annotations

from typing import Any

import psycopg

from egenmon.ingest.templates import TemplateError, parse_template_set, show_sample, split_files
from egenmon.store import device_templates

__all__ = ["add_templates", "list_templates", "try_templates"]

MAX_MODEL = 200


def add_templates(
    conn: psycopg.Connection[Any], model: str, first: Any, second: Any, added_by: str
) -> dict[str, Any]:
    """Check a template set and bind it to a device model; TemplateError if it is wrong."""
    model = model.strip()
    if not model or len(model) > MAX_MODEL or not model.isprintable():
        raise TemplateError(f"--model: 1 to {MAX_MODEL} printable characters")
    content, fhir = split_files(first, second)
    parsed = parse_template_set(content, fhir)
    created = device_templates.put_template(conn, model, content, fhir, added_by)
    return {"model": model, "replaced": not created, **parsed.describe()}


def list_templates(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    out = []
    for row in device_templates.list_templates(conn):
        try:
            described: dict[str, Any] = parse_template_set(row["content"], row["fhir"]).describe()
        except TemplateError as e:
            described = {"error": str(e)}
        out.append(
            {"model": row["model"], "added_at": row["added_at"], "added_by": row["added_by"]}
            | described
        )
    return out


def try_templates(first: Any, second: Any, sample: Any) -> dict[str, Any]:
    """What a sample payload becomes with a template set (nothing is stored)."""
    content, fhir = split_files(first, second)
    return show_sample(parse_template_set(content, fhir), sample)
