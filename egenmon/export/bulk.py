"""FHIR Bulk Data `$export`, the pure core: the kick-off's parameters, the manifest.

The kick-off (HL7 FHIR Bulk Data Access IG, v2) takes `_outputFormat`, `_since`, `_type`
and `_typeFilter`; anything else is refused with a 400 naming it, unless the request
says `Prefer: handling=lenient` (then it is ignored). `_typeFilter` is served for
Observation by `code` and `category` (several filters of one type are OR'ed, as the IG
says).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import parse_qsl

from egenmon.domain.measurements import TYPES
from egenmon.domain.principals import Principal
from egenmon.fhir.outcome import FhirError
from egenmon.fhir.search import parse_observation_search

__all__ = [
    "EXPORT_TYPES",
    "NDJSON",
    "ExportRequest",
    "allowed_types",
    "manifest",
    "parse_export",
]

NDJSON = "application/fhir+ndjson"
# What an export holds, in the order the files are written.
EXPORT_TYPES = ("Patient", "Device", "Observation", "Flag", "Task")
_OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
_PARAMS = ("_outputFormat", "_since", "_type", "_typeFilter")
_FILTER_PARAMS = {"Observation": ("code", "category")}
# A new filter starts at a comma followed by a resource type and "?" (FHIR v1 lists
# several in one value; a code list inside one filter has commas too).
_FILTER_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]+\?)")


@dataclass(frozen=True)
class ExportRequest:
    """A parsed kick-off. `types` the resource types asked for (None: every type the
    token may read); `codes` the LOINC codes Observation is narrowed to (None: all);
    `type_filters` the filters as given, for the job's record."""

    types: tuple[str, ...] | None = None
    since: datetime | None = None
    codes: frozenset[str] | None = None
    type_filters: dict[str, list[str]] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()


def _bad(param: str, message: str, code: str = "invalid") -> FhirError:
    return FhirError(400, code, f"{param}: {message}")


def _instant(text: str) -> datetime:
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _bad("_since", f"not a FHIR instant: {value[:40]!r}") from None
    if parsed.tzinfo is None or "T" not in value:
        raise _bad("_since", "must be an instant with a time and a time zone (FHIR instant)")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, say
        raise _bad("_since", "out of range") from None


def _split(values: Iterable[str]) -> list[str]:
    return [part for v in values for part in v.split(",")]


def parse_export(
    params: Sequence[tuple[str, str]], *, tz: tzinfo | str = "UTC", lenient: bool = False
) -> ExportRequest:
    """The kick-off's parameters, checked; a FhirError (400) names what is wrong."""
    ignored = sorted({n for n, _ in params if n not in _PARAMS})
    if ignored and not lenient:
        raise _bad(ignored[0], "not a parameter of $export here", "not-supported")
    given: dict[str, list[str]] = {}
    for name, value in params:
        if name in _PARAMS:
            given.setdefault(name, []).append(value)
    for fmt in given.get("_outputFormat", []):
        if fmt.strip() not in _OUTPUT_FORMATS:
            raise _bad("_outputFormat", f"only {NDJSON} is written, not {fmt[:60]!r}")
    since = None
    if "_since" in given:
        if len(set(given["_since"])) > 1:
            raise _bad("_since", "given more than once with different values")
        since = _instant(given["_since"][0])
    types: tuple[str, ...] | None = None
    if "_type" in given:
        names = [t.strip() for t in _split(given["_type"]) if t.strip()]
        unknown = [t for t in names if t not in EXPORT_TYPES]
        if unknown:
            raise _bad(
                "_type",
                f"{unknown[0][:40]!r} is not exported here (types: {', '.join(EXPORT_TYPES)})",
                "not-supported",
            )
        if not names:
            raise _bad("_type", "names no resource type")
        types = tuple(t for t in EXPORT_TYPES if t in names)
    filters: dict[str, list[str]] = {}
    codes: frozenset[str] | None = None
    for raw in given.get("_typeFilter", []):
        for text in _FILTER_SPLIT.split(raw):
            kind, query = _type_filter(text)
            filters.setdefault(kind, []).append(query)
    if "Observation" in filters:
        codes = _observation_codes(filters["Observation"], tz)
    if types is not None:
        stray = [k for k in filters if k not in types]
        if stray:
            raise _bad("_typeFilter", f"filters {stray[0]}, which _type does not ask for")
    return ExportRequest(types, since, codes, filters, tuple(ignored))


def _type_filter(text: str) -> tuple[str, str]:
    kind, sep, query = text.strip().partition("?")
    if not sep or not query:
        raise _bad("_typeFilter", "must be <ResourceType>?<search parameters>")
    if kind not in _FILTER_PARAMS:
        raise _bad(
            "_typeFilter",
            f"filters are served for Observation only, not {kind[:40]!r}",
            "not-supported",
        )
    return kind, query


def _observation_codes(queries: list[str], tz: tzinfo | str) -> frozenset[str]:
    """The LOINC codes the Observation filters allow, OR'ed across filters."""
    allowed: set[str] = set()
    for query in queries:
        pairs = parse_qsl(query, keep_blank_values=True)
        for name, _ in pairs:
            if name not in _FILTER_PARAMS["Observation"]:
                raise _bad(
                    "_typeFilter",
                    f"Observation filters take code and category only, not {name[:40]!r}",
                    "not-supported",
                )
        try:
            q = parse_observation_search(pairs, tz=tz)
        except FhirError as exc:
            raise _bad("_typeFilter", exc.diagnostics) from None
        if q.types is None:  # a filter without a condition lets everything through
            return frozenset(t.loinc for t in TYPES.values())
        allowed |= {TYPES[name].loinc for name in q.types}  # the stored `code` column
    return frozenset(allowed)


def allowed_types(principal: Principal, asked: tuple[str, ...] | None) -> tuple[str, ...]:
    """The types to export: those asked for, each of which the token must be allowed to
    read and search (403 otherwise); without `_type`, every type it may read."""
    if asked is None:
        return tuple(
            t for t in EXPORT_TYPES if principal.allows(t, "r") and principal.allows(t, "s")
        )
    for kind in asked:
        if not (principal.allows(kind, "r") and principal.allows(kind, "s")):
            raise FhirError(
                403, "forbidden", f"the token's scopes do not allow reading {kind} in bulk"
            )
    return asked


def manifest(job: dict[str, Any], file_url: str, warnings: Sequence[str] = ()) -> dict[str, Any]:
    """The completed job's manifest (IG: transactionTime, request, requiresAccessToken,
    output [{type, url, count}], error); `file_url` the files' URL prefix."""
    output = [
        {"type": f["type"], "url": f"{file_url}/{f['name']}", "count": f["count"]}
        for f in job["output"]
    ]
    return {
        "transactionTime": job["transaction_time"].astimezone(UTC).isoformat(),
        "request": job["request"],
        "requiresAccessToken": True,
        "output": output,
        "error": [],
    }
