"""Progress bars on long commands: drawn on a terminal, never into a pipe, never with --json
(simulate back-fill, quarantine replay, bench loading)."""

from __future__ import annotations

import datetime as dt
import fcntl
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import psycopg

from egenmon import progress
from egenmon.bench import fhir_search


def run(argv: list[str], *, terminal: bool, timeout: float = 120) -> tuple[int, str, str]:
    """Run `egenmon argv` with standard error on a pseudo-terminal (or a pipe):
    (exit code, stdout, stderr)."""
    cmd = [sys.executable, "-m", "egenmon", *argv]
    if not terminal:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return p.returncode, p.stdout, p.stderr
    master, slave = pty.openpty()
    # A terminal of 30 rows and 120 columns (a new pseudo-terminal has no size).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, text=True
    )
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: every writer closed its end
            break
        if not chunk:
            break
        err += chunk
    os.close(master)
    out = proc.stdout.read() if proc.stdout else ""
    proc.wait(timeout)
    return proc.returncode, out, err.decode(errors="replace")


def devices_file(tmp_path, device) -> str:
    path = tmp_path / "devices.json"
    path.write_text(
        json.dumps([{"device_id": device["id"], "secret": device["secret"], "scenario": "stable"}])
    )
    return str(path)


def test_simulate_backfill_shows_a_bar_on_a_terminal_only(serve, device, tmp_path):
    base, _ = serve("--no-mqtt", "--no-scheduler")
    args = ["simulate", "--via", "http", "--url", base, "--devices-file"]
    args += [devices_file(tmp_path, device), "--duration", "0", "--batch", "4"]

    code, out, err = run([*args, "--days", "3"], terminal=True)
    assert code == 0, err
    sent = int(re.search(r"sent (\d+) readings", out).group(1))  # stdout as before
    assert sent > 30
    assert "back-fill" in err and "100%" in err and f"{sent:.1f}/{sent:.1f}" in err

    code, out, err = run([*args, "--days", "4"], terminal=False)
    assert code == 0 and "back-fill" not in err and "%|" not in err

    code, out, err = run([*args, "--days", "5", "--json"], terminal=True)
    assert code == 0 and "back-fill" not in err and "%|" not in err
    assert json.loads(out)["readings"] > sent


def test_quarantine_replay_shows_a_bar_on_a_terminal_only(env):
    code, out, err = run(["quarantine", "replay", "999998", "999999"], terminal=True)
    assert code == 1  # neither exists: nothing resolved
    assert "replay" in err and "2.00/2.00" in err
    assert out.count("no such quarantine entry") == 2

    code, out, err = run(["quarantine", "replay", "999998", "--json"], terminal=True)
    assert code == 1 and "%|" not in err
    assert json.loads(out)["replayed"][0]["note"] == "no such quarantine entry"


def test_bench_loading_moves_its_bar_by_the_rows_written(database_url):
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
    with psycopg.connect(database_url) as conn:
        pairs = fhir_search._registry(conn, 3, start)
        drawn = io.StringIO()
        with progress.bar(1000, "loading", enabled=True, file=drawn) as shown:
            written = fhir_search._load(conn, pairs, 1000, start, 7, shown)
            assert shown.n == written == 1000
        stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    assert stored == 1000
    assert "loading" in drawn.getvalue() and "100%" in drawn.getvalue()
    assert not progress.wanted(json_output=True)
