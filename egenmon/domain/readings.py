"""The readings row: the shape normalisation produces and the store writes (pure).

`COLUMNS` names the readings table's columns in the order of a `Row`; a `Binding` says
which patient a device's readings belong to over time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

__all__ = ["COLUMNS", "ENTERED_SOURCES", "Binding", "Row", "entered_dedup_key", "entered_source"]

COLUMNS: tuple[str, ...] = (
    "time",
    "patient_id",
    "device_id",
    "type",
    "code",
    "mdc",
    "value",
    "value2",
    "value3",
    "unit",
    "on_oxygen",
    "note",
    "source",
    "dedup_key",
    "received_at",
    "message_id",
    "extra",
)

Row = tuple[
    datetime,  # time, aware UTC
    UUID,  # patient_id
    str | None,  # device_id (None: entered without a device)
    str,  # type
    str,  # code (LOINC)
    str,  # mdc
    float,  # value (or systolic)
    float | None,  # value2 (diastolic)
    float | None,  # value3 (mean)
    str,  # unit (canonical UCUM)
    bool | None,  # on_oxygen
    str | None,  # note
    str,  # source
    str,  # dedup_key
    datetime,  # received_at
    str | None,  # message_id
    dict[str, Any] | None,  # extra (FHIR ingest and entries fill it; device readings: None)
]


class Binding(NamedTuple):
    """A device lent to a patient from `start` (inclusive) to `end` (exclusive, None: open)."""

    patient_id: UUID
    start: datetime
    end: datetime | None = None


# The sources of readings that come without a device (contract: a reading without a
# device has the dedup key (patient, type, time, source)).
ENTERED_SOURCES = frozenset({"patient-entered", "staff-entered", "fhir"})


def entered_dedup_key(
    source: str, patient_id: UUID, type_name: str, time: datetime, reading_id: str | None
) -> str:
    """The dedup key of a reading without a device: ``<source>:<patient>|<type>|<time>``
    (UTC, microseconds), or ``<source>:<patient>|id|<id>`` when the reading has an id.
    A device id cannot hold ':', so these keys never meet a device reading's."""
    if reading_id is not None:
        return f"{source}:{patient_id}|id|{reading_id}"
    return f"{source}:{patient_id}|{type_name}|{time.isoformat(timespec='microseconds')}"


def entered_source(dedup_key: str) -> str | None:
    """The source of a reading without a device, read from its dedup key; None for a
    device's reading."""
    head, colon, _ = dedup_key.partition(":")
    if colon and "|" not in head and head in ENTERED_SOURCES:
        return head
    return None
