"""`egenmon dev` (what `make run` starts) with its simulator, for a while: nothing in its
output may be a traceback or an error (issue 12: the results publisher's tracebacks from
the first second of `egenmon dev` went unseen), readings keep arriving, and it stops
cleanly."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from egenmon.store.cluster import free_port
from tests.conftest import wait_http

pytestmark = pytest.mark.timeout(400)

RUN_S = 90  # after ready: the simulator's back-fill, then live readings


@pytest.fixture
def state_dir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="egenmon-dev-"))
    os.chmod(base, 0o755)  # noqa: S103 (the postgres user must reach it as root)
    yield base / ".egenmon"
    shutil.rmtree(base, ignore_errors=True)


def accepted(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=5).text
    found = re.findall(
        r'^egenmon_readings_total\{[^}]*outcome="accepted"[^}]*\} (\S+)$', text, re.M
    )
    return sum(float(v) for v in found)


def test_dev_with_the_simulator_runs_without_a_traceback(state_dir: Path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "egenmon",
            "dev",
            "--state-dir",
            str(state_dir),
            "--port",
            str(port),
        ],
        env={**env, "EGENMON_LOG_LEVEL": "INFO"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()
    try:
        wait_http(base + "/readyz", proc, timeout=120)
        deadline = time.monotonic() + RUN_S
        seen = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, "".join(lines)
            assert httpx.get(base + "/readyz", timeout=5).status_code == 200, "".join(lines)
            seen.append(accepted(base))
            time.sleep(5)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(10)
    out = "".join(lines)
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    assert not re.search(r" (ERROR|CRITICAL) ", out), out
    assert seen[-1] > seen[0], seen  # the simulator's readings keep being stored
