"""What a device format's translation gives the pipeline (pure): readings of the Reading
message v1 for one input item (an Open mHealth data point, a Bluetooth measurement), the
FHIR content kept beside each, or the reasons the item (or a part of it) is refused.

The pipeline (`Pipeline.ingest_translated`) normalises the readings like any others, puts
each `extra` in the row's jsonb column (served back by `egenmon.fhir.render`) and keeps
every refused item whole in quarantine with its reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

PROJECT_NS = "https://egenmon.example.org/fhir"
MAX_ITEMS = 1000


class FormatError(ValueError):
    """The body as a whole is not what the format's endpoint takes; the text says why."""


class Translated(NamedTuple):
    """One input item: its readings (each with its FHIR `extra` and MDC code, or None for
    the type's own), and the reasons it or a part of it is refused. `where` names the
    item's part the normaliser's reasons are about (such as "body.heart_rate"), put in
    front of them. A tuple, not a dataclass: one is made per data point on the hot path."""

    raw: Any  # the item as received, kept in quarantine when refused
    readings: tuple[dict[str, Any], ...] = ()
    extras: tuple[dict[str, Any] | None, ...] = ()
    mdcs: tuple[str | None, ...] = ()
    errors: tuple[str, ...] = ()
    where: str | None = None

    @staticmethod
    def refused(raw: Any, reason: str) -> Translated:
        return Translated(raw, errors=(reason,))


def context_extension(url: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """A complex FHIR extension with one sub-extension per field (lists: one per item);
    strings, integers, decimals and booleans get their value[x]."""
    subs: list[dict[str, Any]] = []
    for name, value in fields.items():
        values: Sequence[Any] = value if isinstance(value, list | tuple) else (value,)
        for v in values:
            if v is None or v == "":
                continue
            if isinstance(v, bool):
                subs.append({"url": name, "valueBoolean": v})
            elif isinstance(v, int):
                subs.append({"url": name, "valueInteger": v})
            elif isinstance(v, float):
                subs.append({"url": name, "valueDecimal": v})
            else:
                subs.append({"url": name, "valueString": str(v)})
    return {"url": url, "extension": subs}
