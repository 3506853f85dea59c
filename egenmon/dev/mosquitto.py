"""A private Mosquitto process with egenmon's configuration, on a free local port.

Used by `egenmon dev` (kept under .egenmon/), the test suite and the benchmarks.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from egenmon.dev.cluster import free_port
from egenmon.devices.broker import BrokerConfig, write_config


class MosquittoError(RuntimeError):
    pass


def mosquitto_binary() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise MosquittoError("mosquitto not found; run scripts/install.sh")


class Mosquitto:
    def __init__(self, workdir: Path, port: int | None = None, prefix: str = "egenmon/v1") -> None:
        self.workdir = Path(workdir).absolute()
        self.port = port or free_port()
        self.prefix = prefix
        self.proc: subprocess.Popen | None = None
        self.config: BrokerConfig | None = None

    @property
    def mqtt_url(self) -> str:
        assert self.config
        return self.config.mqtt_url

    def configure(self) -> BrokerConfig:
        # Mosquitto started as root drops to the 'mosquitto' user unless told otherwise;
        # our files belong to whoever runs us, so it stays that user.
        user = pwd.getpwuid(os.geteuid()).pw_name
        self.config = write_config(
            self.workdir,
            port=self.port,
            host="127.0.0.1",
            bind="127.0.0.1",
            prefix=self.prefix,
            user=user,
            log_file=True,
        )
        return self.config

    def start(self, timeout: float = 10.0) -> None:
        if self.config is None:
            self.configure()
        assert self.config
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MosquittoError(
                    f"mosquitto exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise MosquittoError(f"mosquitto did not listen on {self.port}: {self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 10) -> str:
        try:
            text = (self.workdir / "mosquitto.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])
