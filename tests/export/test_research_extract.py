"""The research extract of the demo data: nothing identifying in any file, byte by byte;
pseudonyms and date shifts consistent within an extract; a manifest of what was done."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest

from egenmon.cli import main
from egenmon.dev.demo import DEMO_HSA_ID, DEMO_PATIENTS, personnummer, seed
from egenmon.domain.measurements import TYPES
from egenmon.export.research import write_extract
from egenmon.settings import Settings

SECRET = "test-signing-secret-of-at-least-32-characters"
START = datetime(2026, 10, 1, 7, tzinfo=UTC)
NOTE = "Yrsel efter promenad med Tolvan"


@pytest.fixture
def demo(database_url: str, tmp_path: Path) -> dict[str, Any]:
    """The demo care unit of `egenmon dev`, with readings (some with a patient's note)
    and an alert with a clinician's note, for every demo patient."""
    settings = Settings(database_url=database_url, environment="test", auth_secret=SECRET)
    with psycopg.connect(database_url, autocommit=True) as conn:
        (tmp_path / "state").mkdir(mode=0o700)
        devices = seed(conn, settings, tmp_path / "state")
        for d in devices:
            for day in range(5):
                for name, value in (("heart_rate", 70 + day), ("body_weight", 80.5)):
                    t = START + timedelta(days=day, minutes=10 * devices.index(d))
                    conn.execute(
                        "INSERT INTO readings (time, patient_id, device_id, type, code, mdc,"
                        " value, unit, note, source, dedup_key, received_at, message_id, extra)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'http', %s, %s, %s, %s)",
                        (
                            t, d.patient_id, d.device_id, name, TYPES[name].loinc,
                            TYPES[name].mdc, value, TYPES[name].unit, NOTE,
                            f"{d.device_id}|{name}|{t.isoformat()}", t, f"msg-{d.device_id}",
                            json.dumps({"note": [{"text": NOTE}]}),
                        ),
                    )  # fmt: skip
            conn.execute(
                "INSERT INTO alerts (patient_id, rule, key, category, severity, current_severity,"
                " summary, due_at, opened_at, note, acknowledged_by, acknowledged_at, status,"
                " evidence) VALUES (%s, 'device_inactive', %s, 'technical', 'low', 'low', %s,"
                " %s, %s, %s, 'demo.sjukskoterska', %s, 'acknowledged', %s)",
                (
                    d.patient_id, f"device_inactive:{d.device_id}",
                    f"{d.device_id} has not reported", START, START + timedelta(days=2),
                    "Ringde Tolvan Tolvansson", START + timedelta(days=3),
                    [f"obs-{d.device_id}"],
                ),
            )  # fmt: skip
    return {
        "url": database_url,
        "patients": [d.patient_id for d in devices],
        "devices": [d.device_id for d in devices],
    }


def forbidden(demo: dict[str, Any]) -> list[bytes]:
    """Everything that must not appear in any file, in the forms it could take."""
    out: list[bytes] = []
    for name, birth, serial, *_ in DEMO_PATIENTS:
        pnr = personnummer(birth, serial)
        out += [pnr, pnr[2:], f"{pnr[:8]}-{pnr[8:]}", f"{pnr[2:8]}-{pnr[8:]}", *name.split()]
    for pid in demo["patients"]:
        out += [pid, uuid.UUID(pid).hex]
    for did in demo["devices"]:
        out += [did]
    out += [NOTE, "Yrsel", "Ringde", "sjukskoterska", "msg-", "has not reported"]
    return [s.encode() for s in out]


def check_clean(folder: Path, demo: dict[str, Any]) -> None:
    bad = forbidden(demo)
    for path in folder.iterdir():
        content = path.read_bytes()
        for needle in bad:
            assert needle not in content, f"{needle!r} in {path.name}"
        if path.suffix == ".parquet":  # compressed pages: look at the values as well
            text = json.dumps(pq.read_table(path).to_pylist(), default=str).encode()
            for needle in bad:
                assert needle not in text, f"{needle!r} in the values of {path.name}"


def run_cli(monkeypatch: pytest.MonkeyPatch, url: str, *args: str) -> tuple[int, str, str]:
    for key in ("EGENMON_MQTT_URL", "EGENMON_WEBHOOK_SECRET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("EGENMON_DATABASE_URL", url)
    monkeypatch.setenv("EGENMON_ENVIRONMENT", "test")
    monkeypatch.setenv("EGENMON_AUTH_SECRET", SECRET)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_the_demo_extract_holds_nothing_identifying(
    demo: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "extract"
    code, stdout, stderr = run_cli(
        monkeypatch, demo["url"], "export", "research", "--care-unit", DEMO_HSA_ID,
        "--from", "2026-09-01T00:00:00+02:00", "--to", "2026-11-01T00:00:00+01:00",
        "--out", str(out), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    result = json.loads(stdout)
    assert sorted(p.name for p in out.iterdir()) == [
        "alerts.ndjson",
        "manifest.json",
        "readings.ndjson",
    ]
    assert out.stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o600}
    check_clean(out, demo)

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest == {k: v for k, v in result.items() if k != "out"}
    assert manifest["status"].startswith("pseudonymised, not anonymous")
    assert manifest["dates"]["mode"] == "shift"
    assert manifest["pseudonyms"]["key"].startswith("random")
    assert manifest["patients"] == len(DEMO_PATIENTS)
    assert {f["content"]: f["rows"] for f in manifest["files"]} == {
        "readings": 10 * len(DEMO_PATIENTS),
        "alerts": len(DEMO_PATIENTS),
    }
    assert "questionnaire_answers" in manifest["not_included"]

    readings = [json.loads(x) for x in (out / "readings.ndjson").read_text().splitlines()]
    alerts = [json.loads(x) for x in (out / "alerts.ndjson").read_text().splitlines()]
    assert "note" not in readings[0] and "summary" not in alerts[0]
    by_patient: dict[str, list[datetime]] = {}
    for r in readings:
        if r["type"] == "heart_rate":
            by_patient.setdefault(r["patient"], []).append(datetime.fromisoformat(r["time"]))
    assert len(by_patient) == len(DEMO_PATIENTS)
    for times in by_patient.values():
        times.sort()
        # One whole-day shift per patient: the days between readings and the time of
        # day are kept.
        assert [b - a for a, b in zip(times, times[1:], strict=False)] == [timedelta(days=1)] * 4
        assert {t.time() for t in times} == {times[0].time()}
    assert {a["patient"] for a in alerts} == set(by_patient)


def test_parquet_and_truncated_dates_and_new_pseudonyms_per_extract(
    demo: dict[str, Any], tmp_path: Path
) -> None:
    low, high = START - timedelta(days=1), START + timedelta(days=30)
    first = write_extract(
        demo["url"], DEMO_HSA_ID, low, high, tmp_path / "a", dates="truncate-day", fmt="parquet"
    )
    check_clean(tmp_path / "a", demo)
    table = pq.read_table(tmp_path / "a" / "readings.parquet").to_pylist()
    assert len(table) == first["files"][0]["rows"] == 10 * len(DEMO_PATIENTS)
    assert {r["time"].time() for r in table} == {datetime.min.time()}
    assert {r["time"].date() for r in table} == {
        (START + timedelta(days=d)).date() for d in range(5)
    }
    write_extract(demo["url"], DEMO_HSA_ID, low, high, tmp_path / "b", dates="keep")
    second = [json.loads(x) for x in (tmp_path / "b" / "readings.ndjson").read_text().splitlines()]
    # A new key per extract: the two cannot be linked by their pseudonyms.
    assert {r["patient"] for r in table}.isdisjoint({r["patient"] for r in second})
    assert {r["device"] for r in table}.isdisjoint({r["device"] for r in second})


def test_bad_arguments_are_refused(database_url: str, tmp_path: Path) -> None:
    low, high = START, START + timedelta(days=1)
    with pytest.raises(ValueError, match="unknown care unit"):
        write_extract(database_url, "SE-NO-SUCH", low, high, tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(ValueError, match="before"):
        write_extract(database_url, DEMO_HSA_ID, high, low, tmp_path / "x")
    with pytest.raises(ValueError, match="format"):
        write_extract(database_url, DEMO_HSA_ID, low, high, tmp_path / "x", fmt="csv")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        write_extract(database_url, DEMO_HSA_ID, low, high, tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
