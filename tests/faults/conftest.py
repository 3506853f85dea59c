"""Fault injection around MQTT ingest: real consumer processes, a Mosquitto of each test's
own (restarting it must not disturb other tests, and a shared subscription's members
outlive the processes), the suite's PostgreSQL (or a throwaway cluster where a test stops
the database).

Each consumer is a real `egenmon serve --no-http --no-scheduler` process (or with HTTP
where a test needs /readyz), configured only through EGENMON_* variables. Helpers are in
faultkit.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faultkit import Consumer

from egenmon.dev.mosquitto import Mosquitto


@pytest.fixture
def broker(own_broker: Mosquitto) -> Mosquitto:
    """A Mosquitto of this test's own, with egenmon's configuration (overrides the suite's)."""
    return own_broker


@pytest.fixture
def consumers(env: dict, tmp_path: Path) -> Iterator[Callable[..., Consumer]]:
    """start(http=False) -> a running, subscribed consumer process; all stopped at the end."""
    started: list[Consumer] = []

    def start(http: bool = False, wait: bool = True) -> Consumer:
        c = Consumer(tmp_path, len(started), http)
        started.append(c)
        if wait:
            c.wait_subscribed()
        return c

    yield start
    for c in started:
        c.stop()
