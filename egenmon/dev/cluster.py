"""A private PostgreSQL+TimescaleDB cluster on a free local port.

Used by `egenmon dev` (kept under .egenmon/), the test suite and benchmarks (throwaway).
PostgreSQL refuses to run as root, so as root the cluster is owned by and run as the
`postgres` system user; as a normal user it runs as that user.

No local user is trusted: every connection, over the Unix socket (in the data folder, mode
0700) or 127.0.0.1, authenticates with a password (scram-sha-256). The superuser's random
password is kept beside the data folder in `<datadir>.password` (mode 0600, the running
user's); `url()` carries it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class ClusterError(RuntimeError):
    pass


class ForeignOwner(ClusterError):
    """The database exists but belongs to another role (made by an older egenmon)."""


# The whole of pg_hba.conf: passwords for everyone, on the socket and on loopback only.
HBA = """\
# Written by egenmon: every role authenticates with a password (scram-sha-256).
local all all scram-sha-256
host  all all 127.0.0.1/32 scram-sha-256
"""


def write_secret(path: Path, text: str) -> None:
    """Write `text` to `path`, readable and writable by the running user only (0600)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


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
        self.password_file = self.datadir.parent / f"{self.datadir.name}.password"

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

    @property
    def password(self) -> str:
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError:
            raise ClusterError(
                f"the cluster's password file {self.password_file} is missing"
            ) from None

    def url(self, dbname: str = "postgres") -> str:
        """The superuser's URL (with its password) for `dbname`."""
        return self.role_url(self.superuser, self.password, dbname)

    def role_url(self, role: str, password: str, dbname: str) -> str:
        return (
            f"postgresql://{quote(role, safe='')}:{quote(password, safe='')}"
            f"@127.0.0.1:{self.port}/{quote(dbname, safe='')}"
        )

    @property
    def initialised(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """initdb with TimescaleDB preloaded; password (scram) auth, loopback and socket only."""
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
        self._touch_private(self.logfile)
        password = secrets.token_urlsafe(24)
        write_secret(self.password_file, password + "\n")
        # initdb reads the password from a file: a private one its user can read, then gone.
        pwdir = Path(tempfile.mkdtemp(prefix="egenmon-initdb-"))
        try:
            self._chown(pwdir)
            pwfile = pwdir / "pw"
            write_secret(pwfile, password + "\n")
            self._chown(pwfile)
            subprocess.run(
                self._cmd(
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.datadir),
                    "-U",
                    self.superuser,
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                    "--no-instructions",
                ),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        finally:
            shutil.rmtree(pwdir, ignore_errors=True)
        self._write_hba()
        conf = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.datadir}'",
            "unix_socket_permissions": "0700",
            "password_encryption": "'scram-sha-256'",
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

    def _touch_private(self, path: Path) -> None:
        """An empty file only its owner (the cluster's user) can read."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)
        os.chmod(path, 0o600)
        self._chown(path)

    def _write_hba(self) -> None:
        hba = self.datadir / "pg_hba.conf"
        tmp = self.datadir / "pg_hba.conf.new"
        write_secret(tmp, HBA)
        self._chown(tmp)
        os.replace(tmp, hba)

    def _needs_hardening(self) -> bool:
        """A cluster made by an older egenmon: trust authentication (and no password)."""
        if self.trust_lines():
            return True
        if not self.password_file.exists():
            raise ClusterError(
                f"the superuser's password file {self.password_file} is missing and the "
                f"cluster in {self.datadir} trusts no one: restore the file, or remove the "
                "folder to start afresh"
            )
        return False

    def trust_lines(self) -> list[str]:
        """The pg_hba.conf lines that let someone in without a password."""
        lines = (self.datadir / "pg_hba.conf").read_text().splitlines()
        return [
            line
            for line in lines
            if line.split("#", 1)[0].split()[-1:] in (["trust"], ["peer"], ["ident"])
        ]

    def _harden(self, timeout: float) -> None:
        """Give a trusting cluster a superuser password and the password-only pg_hba.conf."""
        import psycopg
        from psycopg import sql

        password = secrets.token_urlsafe(24)
        self._pg_ctl_start(timeout)
        try:
            url = f"postgresql://{self.superuser}@127.0.0.1:{self.port}/postgres"
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("SET password_encryption = 'scram-sha-256'")
                conn.execute(
                    sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                        sql.Identifier(self.superuser), sql.Literal(password)
                    )
                )
        finally:
            self.stop()
        write_secret(self.password_file, password + "\n")
        self._write_hba()
        self._touch_private(self.logfile)

    def start(self, timeout: float = 30.0) -> None:
        if not self.initialised:
            self.init()
        self._set_port()
        if self._needs_hardening():
            self._harden(timeout)
        self._pg_ctl_start(timeout)

    def _pg_ctl_start(self, timeout: float) -> None:
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

    def ensure_owned_database(self, dbname: str, role: str, password_file: Path) -> str:
        """A database owned by `role`, an ordinary login role (no superuser, no CREATEROLE,
        no CREATEDB) whose password is kept in `password_file` (0600). Made on first use;
        the role's password is (re)set from the file, made when missing. Its URL."""
        import psycopg
        from psycopg import sql

        if password_file.exists():
            password = password_file.read_text().strip()
        else:
            password = secrets.token_urlsafe(24)
            write_secret(password_file, password + "\n")
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute("SET password_encryption = 'scram-sha-256'")
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            conn.execute(
                sql.SQL(
                    "{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                    "NOBYPASSRLS PASSWORD {}"
                ).format(
                    sql.SQL("ALTER" if exists else "CREATE"),
                    sql.Identifier(role),
                    sql.Literal(password),
                )
            )
            owner = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (dbname,)
            ).fetchone()
            if owner is None:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(dbname), sql.Identifier(role)
                    )
                )
            elif owner[0] != role:
                raise ForeignOwner(f"database {dbname} belongs to {owner[0]}, not {role}")
            conn.execute(
                sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(dbname))
            )
        return self.role_url(role, password, dbname)

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
        self.password_file.unlink(missing_ok=True)


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
