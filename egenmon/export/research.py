"""Pseudonymised research extracts of one care unit: readings and alerts as NDJSON or
Parquet, with a manifest of what was done.

Pseudonymised, not anonymous: the rows are still personal data under the GDPR (art.
4(5)); whoever holds the extract must protect it as such. What is done to each row:

- patient and device ids become HMAC-SHA256 pseudonyms under a random key made for this
  extract and never written out: the same patient is the same pseudonym within one
  extract, and two extracts cannot be linked by them;
- times are shifted per patient by a random whole number of days (kept for all of that
  patient's rows, so intervals and times of day survive), truncated to the day, or kept,
  as asked (`--dates shift|truncate-day|keep`);
- what can identify or holds free text is left out: personnummer, name, patient notes,
  alert summaries, notes and details, who acted on an alert, message ids, dedup keys
  (they hold the device id), FHIR extra content, evidence ids.

Questionnaire answers are named in the manifest as not included while this store holds
none.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import orjson

from egenmon.store import exports

__all__ = ["DATE_MODES", "FORMATS", "Pseudonymiser", "write_extract"]

DATE_MODES = ("shift", "truncate-day", "keep")
FORMATS = ("ndjson", "parquet")
SHIFT_DAYS = 180  # a shift is drawn from -SHIFT_DAYS..SHIFT_DAYS days
_BATCH = 20_000

READING_COLUMNS = (
    ("patient", "string"),
    ("device", "string"),
    ("time", "timestamp"),
    ("type", "string"),
    ("code", "string"),
    ("value", "double"),
    ("value2", "double"),
    ("value3", "double"),
    ("unit", "string"),
    ("on_oxygen", "bool"),
    ("source", "string"),
)
ALERT_COLUMNS = (
    ("patient", "string"),
    ("rule", "string"),
    ("category", "string"),
    ("severity", "string"),
    ("status", "string"),
    ("opened_at", "timestamp"),
    ("updated_at", "timestamp"),
    ("acknowledged_at", "timestamp"),
    ("resolved_at", "timestamp"),
    ("dismissed_at", "timestamp"),
)
DROPPED = (
    "personnummer and samordningsnummer",
    "names",
    "patient and device ids (replaced by keyed pseudonyms)",
    "patient notes (free text)",
    "alert summaries, notes, details and evidence",
    "who acknowledged, resolved or dismissed an alert",
    "message ids and dedup keys (they name the device)",
    "FHIR content kept beside a reading (extra)",
    "when a reading was received",
)


@dataclass
class Pseudonymiser:
    """The extract's key and each patient's date shift; neither leaves this object."""

    dates: str = "shift"
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _shifts: dict[Any, timedelta] = field(default_factory=dict, repr=False)
    _seen: set[Any] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        if self.dates not in DATE_MODES:
            raise ValueError(f"dates must be one of {', '.join(DATE_MODES)}")

    def _hash(self, kind: bytes, value: object) -> str:
        digest = hmac.new(self.key, kind + b"\x00" + str(value).encode(), hashlib.sha256)
        return digest.hexdigest()[:32]

    def patient(self, patient_id: object) -> str:
        self._seen.add(patient_id)
        return self._hash(b"patient", patient_id)

    def device(self, device_id: object) -> str:
        return self._hash(b"device", device_id)

    def shift(self, patient_id: object) -> timedelta:
        if patient_id not in self._shifts:
            days = secrets.randbelow(2 * SHIFT_DAYS + 1) - SHIFT_DAYS
            self._shifts[patient_id] = timedelta(days=days)
        return self._shifts[patient_id]

    def time(self, patient_id: object, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        if self.dates == "shift":
            return value + self.shift(patient_id)
        if self.dates == "truncate-day":
            return value.replace(hour=0, minute=0, second=0, microsecond=0)
        return value

    @property
    def patients(self) -> int:
        return len(self._seen)


class _Sink(Protocol):
    def add(self, row: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _open_private(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb", buffering=1 << 20)


class _NdjsonSink:
    def __init__(self, path: Path) -> None:
        self.out = _open_private(path)

    def add(self, row: dict[str, Any]) -> None:
        self.out.write(orjson.dumps(row, option=orjson.OPT_UTC_Z) + b"\n")

    def close(self) -> None:
        self.out.close()


class _ParquetSink:
    """Rows buffered by column and written a row group of `_BATCH` at a time."""

    def __init__(self, path: Path, columns: tuple[tuple[str, str], ...]) -> None:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        self.pa = pa
        kinds = {
            "string": pa.string(),
            "double": pa.float64(),
            "bool": pa.bool_(),
            "timestamp": pa.timestamp("us", tz="UTC"),
        }
        self.schema = pa.schema([(name, kinds[kind]) for name, kind in columns])
        self.names = [name for name, _ in columns]
        self.buffer: dict[str, list[Any]] = {n: [] for n in self.names}
        self.out = _open_private(path)
        self.writer = pq.ParquetWriter(self.out, self.schema)

    def add(self, row: dict[str, Any]) -> None:
        for name in self.names:
            self.buffer[name].append(row[name])
        if len(self.buffer[self.names[0]]) >= _BATCH:
            self._flush()

    def _flush(self) -> None:
        if self.buffer[self.names[0]]:
            table = self.pa.Table.from_pydict(self.buffer, schema=self.schema)
            self.writer.write_table(table)
            self.buffer = {n: [] for n in self.names}

    def close(self) -> None:
        self._flush()
        self.writer.close()
        self.out.close()


def _sink(path: Path, fmt: str, columns: tuple[tuple[str, str], ...]) -> _Sink:
    return _ParquetSink(path, columns) if fmt == "parquet" else _NdjsonSink(path)


def _readings(p: Pseudonymiser, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for r in rows:
        pid = r["patient_id"]
        yield {
            "patient": p.patient(pid),
            "device": p.device(r["device_id"]),
            "time": p.time(pid, r["time"]),
            "type": r["type"],
            "code": r["code"],
            "value": r["value"],
            "value2": r["value2"],
            "value3": r["value3"],
            "unit": r["unit"],
            "on_oxygen": r["on_oxygen"],
            "source": r["source"],
        }


def _alerts(p: Pseudonymiser, rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for r in rows:
        pid = r["patient_id"]
        out: dict[str, Any] = {"patient": p.patient(pid)}
        for name, kind in ALERT_COLUMNS[1:]:
            out[name] = p.time(pid, r[name]) if kind == "timestamp" else r[name]
        yield out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_extract(
    url: str,
    care_unit: str,
    low: datetime,
    high: datetime,
    out: Path,
    *,
    dates: str = "shift",
    fmt: str = "ndjson",
) -> dict[str, Any]:
    """Write the extract of `care_unit` (id or HSA-id), readings measured and alerts
    opened in [low, high), into `out` (made 0700; it must be empty); returns the manifest,
    also written there as manifest.json. Raises ValueError for a bad argument."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    if low.tzinfo is None or high.tzinfo is None:
        raise ValueError("--from and --to need a time zone offset")
    if low >= high:
        raise ValueError("--from must be before --to")
    if not (1900 <= low.year and high.year <= 9000):
        raise ValueError("--from and --to must lie between the years 1900 and 9000")
    p = Pseudonymiser(dates)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; an extract is written into an empty folder")
    ext = "parquet" if fmt == "parquet" else "ndjson"
    with exports.connect(url) as conn:
        unit = exports.care_unit_by_ref(conn, care_unit)
        if unit is None:
            raise ValueError(f"unknown care unit {care_unit!r}")
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(out, 0o700)
        files = []
        unit_id = unit["id"]
        for name, columns, rows in (
            (
                "readings",
                READING_COLUMNS,
                _readings(p, exports.research_readings(conn, unit_id, low, high)),
            ),
            (
                "alerts",
                ALERT_COLUMNS,
                _alerts(p, exports.research_alerts(conn, unit_id, low, high)),
            ),
        ):
            path = out / f"{name}.{ext}"
            sink = _sink(path, fmt, columns)
            count = 0
            try:
                for row in rows:
                    sink.add(row)
                    count += 1
            finally:
                sink.close()
            files.append(
                {
                    "name": path.name,
                    "content": name,
                    "format": fmt,
                    "rows": count,
                    "columns": [c for c, _ in columns],
                    "sha256": _sha256(path),
                }
            )
        has_answers = exports.table_exists(conn, "questionnaire_responses")
    manifest = _manifest(unit, low, high, p, files, has_answers)
    fd = os.open(out / "manifest.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2, ensure_ascii=False)
    return manifest


_DATES_DONE = {
    "shift": (
        "each patient's times moved by a whole number of days drawn at random from "
        f"-{SHIFT_DAYS} to {SHIFT_DAYS}, the same for all of that patient's rows (intervals "
        "and times of day are kept); the shifts are not written out"
    ),
    "truncate-day": "times truncated to the start of their UTC day",
    "keep": "times kept as measured (UTC): the dates themselves can help re-identify",
}


def _manifest(
    unit: dict[str, Any],
    low: datetime,
    high: datetime,
    p: Pseudonymiser,
    files: list[dict[str, Any]],
    has_answers: bool,
) -> dict[str, Any]:
    return {
        "kind": "egenmon research extract",
        "id": str(uuid.uuid4()),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "care_unit_hsa_id": unit["hsa_id"],
        "period": {
            "from": low.astimezone(UTC).isoformat(),
            "to": high.astimezone(UTC).isoformat(),
            "selects": "readings measured and alerts opened in [from, to), before any shift",
        },
        "status": (
            "pseudonymised, not anonymous: personal data under the GDPR (art. 4(5)); "
            "protect it as patient data and do not try to re-identify anyone"
        ),
        "pseudonyms": {
            "method": "HMAC-SHA256, first 128 bits, hex",
            "key": "random, made for this extract only and not written out",
            "applied_to": ["patient", "device"],
            "linkable_across_extracts": False,
        },
        "dates": {"mode": p.dates, "done": _DATES_DONE[p.dates]},
        "dropped": list(DROPPED),
        "patients": p.patients,
        "files": files,
        "not_included": {
            "questionnaire_answers": (
                "not part of this version of the extract"
                if has_answers
                else "this store holds no questionnaire answers yet"
            )
        },
    }
