"""A private PostgreSQL+TimescaleDB cluster on a free local port.

Used by `egenmon dev` (kept under .egenmon/), the test suite and benchmarks (throwaway).
PostgreSQL refuses to run as root, so as root the cluster is owned by and run as the
`postgres` system user; as a normal user it runs as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class ClusterError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> Path:
    override = os.environ.get("EGENMON_PG_BINDIR")
    if override:
        return Path(override)
    found = sorted(glob.glob(PG_BIN_GLOB), key=lambda p: int(Path(p).parent.name), reverse=True)
    for d in found:
        if (Path(d) / "initdb").exists():
            return Path(d)
    raise ClusterError("PostgreSQL server binaries not found; run scripts/install.sh")


def _run_as() -> str | None:
    """The user to run PostgreSQL as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError("running as root needs the 'postgres' system user") from None
    return "postgres"


class Cluster:
    """A PostgreSQL cluster in `datadir`, started on 127.0.0.1:`port`."""

    def __init__(
        self,
        datadir: Path,
        port: int | None = None,
        *,
        fsync: bool = True,
        extra_conf: dict[str, str] | None = None,
    ) -> None:
        self.datadir = Path(datadir).absolute()
        self.port = port or free_port()
        self.fsync = fsync
        self.extra_conf = extra_conf or {}
        self.bindir = pg_bindir()
        self.user = _run_as()
        self.logfile = self.datadir.parent / f"{self.datadir.name}.log"

    def _cmd(self, *args: str) -> list[str]:
        if self.user:
            return ["runuser", "-u", self.user, "--", *args]
        return list(args)

    def _chown(self, path: Path) -> None:
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    @property
    def superuser(self) -> str:
        return self.user or pwd.getpwuid(os.geteuid()).pw_name

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@127.0.0.1:{self.port}/{dbname}"

    @property
    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb with TimescaleDB preloaded; local trust auth, listening on loopback only."""
        self.datadir.parent.mkdir(parents=True, exist_ok=True)
        if (
            self.user
            and subprocess.run(
                ["runuser", "-u", self.user, "--", "test", "-x", str(self.datadir.parent)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ).returncode
            != 0
        ):
            raise ClusterError(
                f"as root, PostgreSQL runs as '{self.user}', which cannot reach "
                f"{self.datadir.parent}: make its parent folders traversable (chmod o+x) "
                "or use another --state-dir"
            )
        self.datadir.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.datadir)
        self.logfile.touch()
        self._chown(self.logfile)
        subprocess.run(
            self._cmd(
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.superuser,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.datadir}'",
            "shared_preload_libraries": "'timescaledb'",
            "timescaledb.telemetry_level": "off",
            "max_connections": "200",
            "shared_buffers": "256MB",
            "max_wal_size": "2GB",
            "fsync": "on" if self.fsync else "off",
            "synchronous_commit": "on" if self.fsync else "off",
            "full_page_writes": "on" if self.fsync else "off",
            **self.extra_conf,
        }
        with open(self.datadir / "postgresql.auto.conf", "a") as f:
            for k, v in conf.items():
                f.write(f"{k} = {v}\n")

    def start(self, timeout: float = 30.0) -> None:
        if not self.initialised:
            self.init()
        self._set_port()
        proc = subprocess.run(
            self._cmd(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                str(int(timeout)),
                "start",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if proc.returncode != 0:
            tail = self.log_tail()
            raise ClusterError(f"PostgreSQL did not start: {proc.stderr.strip()} {tail}")

    def _set_port(self) -> None:
        opts = self.datadir / "egenmon-port.conf"
        opts.write_text(f"port = {self.port}\n")
        self._chown(opts)
        auto = self.datadir / "postgresql.auto.conf"
        text = auto.read_text()
        if "include_if_exists = 'egenmon-port.conf'" not in text:
            with open(auto, "a") as f:
                f.write("include_if_exists = 'egenmon-port.conf'\n")

    def stop(self, mode: str = "fast") -> None:
        if not (self.datadir / "postmaster.pid").exists():
            return
        subprocess.run(
            self._cmd(
                str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def is_running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists() and subprocess.run(
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "status"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ).returncode == 0

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise ClusterError(f"PostgreSQL not reachable on port {self.port}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
        self.logfile.unlink(missing_ok=True)


@contextlib.contextmanager
def throwaway_database(
    prefix: str = "egenmon-",
    *,
    fsync: bool = True,
    dbname: str = "egenmon",
    conf: dict[str, str] | None = None,
) -> Iterator[str]:
    """A private cluster in a temporary folder with one empty database; yields its URL and
    removes everything afterwards (benchmarks). `conf`: more server settings."""
    import psycopg

    folder = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(folder, 0o755)  # noqa: S103 (the postgres user must reach its data folder)
    cluster = Cluster(
        folder / "pg",
        fsync=fsync,
        extra_conf={"timescaledb.max_background_workers": "0", **(conf or {})},
    )
    try:
        cluster.start()
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {dbname}")
        yield cluster.url(dbname)
    finally:
        cluster.destroy()
        shutil.rmtree(folder, ignore_errors=True)
