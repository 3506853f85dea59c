"""The readings row: the shape normalisation produces and the store writes (pure).

`COLUMNS` names the readings table's columns in the order of a `Row`; a `Binding` says
which patient a device's readings belong to over time.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple
from uuid import UUID

__all__ = ["COLUMNS", "Binding", "Row"]

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
    str,  # device_id
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
    None,  # extra (FHIR ingest fills it; device readings have none)
]


class Binding(NamedTuple):
    """A device lent to a patient from `start` (inclusive) to `end` (exclusive, None: open)."""

    patient_id: UUID
    start: datetime
    end: datetime | None = None
