"""The private cluster (tests, benchmarks, `egenmon dev`) lets no one in without a password."""

import os
import shutil
import stat
import tempfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from egenmon.dev.cluster import Cluster, ClusterError


def no_password_url(cluster: Cluster, dbname: str = "postgres") -> str:
    return f"postgresql://{cluster.superuser}@127.0.0.1:{cluster.port}/{dbname}"


def refused(**kwargs) -> str:
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(connect_timeout=5, **kwargs).close()
    return str(e.value)


def test_connecting_without_the_password_is_refused_on_loopback_and_socket(pg_cluster):
    assert "password" in refused(conninfo=no_password_url(pg_cluster))
    assert "password" in refused(conninfo=no_password_url(pg_cluster), password="not-the-password")
    # The Unix socket (as root we can reach the folder; no one else can) asks too.
    assert "password" in refused(
        host=str(pg_cluster.datadir),
        port=pg_cluster.port,
        user=pg_cluster.superuser,
        dbname="postgres",
    )
    with psycopg.connect(pg_cluster.url()) as conn:
        assert conn.execute("SELECT current_setting('password_encryption')").fetchone() == (
            "scram-sha-256",
        )
        methods = conn.execute(
            "SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE error IS NULL"
        ).fetchall()
        assert methods == [("scram-sha-256",)]
        assert conn.execute("SHOW unix_socket_permissions").fetchone() == ("0700",)


def test_no_trust_lines_and_no_file_readable_by_others(pg_cluster):
    assert pg_cluster.trust_lines() == []
    hba = (pg_cluster.datadir / "pg_hba.conf").read_text()
    assert "trust" not in hba and "peer" not in hba
    for path in (pg_cluster.password_file, pg_cluster.logfile):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(pg_cluster.datadir.stat().st_mode) == 0o700


@pytest.fixture
def scratch():
    base = Path(tempfile.mkdtemp(prefix="egenmon-cluster-"))
    os.chmod(base, 0o755)  # noqa: S103 (the postgres user must reach it as root)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.services  # starts a cluster of its own
def test_a_trusting_cluster_of_an_older_egenmon_is_given_a_password_on_start(scratch):
    cluster = Cluster(
        scratch / "pg", fsync=False, extra_conf={"timescaledb.max_background_workers": "0"}
    )
    try:
        cluster.start()
        # Make it what older versions left: no superuser password, trust on loopback.
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("ALTER ROLE {} PASSWORD NULL").format(sql.Identifier(cluster.superuser))
            )
        cluster.stop()
        (cluster.datadir / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
        cluster.password_file.unlink()
        assert cluster.trust_lines()

        cluster.start()
        assert cluster.trust_lines() == []
        assert stat.S_IMODE(cluster.password_file.stat().st_mode) == 0o600
        refused(conninfo=no_password_url(cluster))
        with psycopg.connect(cluster.url()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

        # A lost password file is said plainly, not answered with trust.
        cluster.stop()
        cluster.password_file.unlink()
        with pytest.raises(ClusterError, match="password file .* is missing"):
            cluster.start()
        assert cluster.trust_lines() == []
    finally:
        cluster.destroy()


def test_an_owned_database_belongs_to_an_ordinary_role(pg_cluster, scratch):
    url = pg_cluster.ensure_owned_database("owned_by_app", "egenmon_app", scratch / "pw")
    assert stat.S_IMODE((scratch / "pw").stat().st_mode) == 0o600
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles "
                "WHERE rolname = current_user"
            ).fetchone()
            assert row == (False, False, False)
            # trusted extensions: the owner installs them (the migrations do)
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("CREATE ROLE someone_else")
        # The same call again keeps the password and the database.
        again = pg_cluster.ensure_owned_database("owned_by_app", "egenmon_app", scratch / "pw")
        assert again == url
        refused(conninfo=f"postgresql://egenmon_app@127.0.0.1:{pg_cluster.port}/owned_by_app")
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS owned_by_app WITH (FORCE)")
            conn.execute("DROP ROLE IF EXISTS egenmon_app")


def test_a_database_of_another_owner_is_not_taken_over(pg_cluster, scratch):
    from egenmon.dev.cluster import ForeignOwner

    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE owned_by_superuser")
    try:
        with pytest.raises(ForeignOwner):
            pg_cluster.ensure_owned_database("owned_by_superuser", "egenmon_app2", scratch / "pw")
    finally:
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS owned_by_superuser WITH (FORCE)")
            conn.execute("DROP ROLE IF EXISTS egenmon_app2")


NORMAL_USER_CHECK = """
import json, os, stat, sys
from pathlib import Path
import psycopg
from egenmon.dev.cluster import Cluster, ClusterError

c = Cluster(Path(sys.argv[1]) / "pg", fsync=False,
            extra_conf={"timescaledb.max_background_workers": "0"})
c.start()
try:
    with psycopg.connect(c.url()) as conn:
        me = conn.execute("SELECT current_user").fetchone()[0]
    try:
        psycopg.connect(f"postgresql://{c.superuser}@127.0.0.1:{c.port}/postgres").close()
        refused = False
    except psycopg.OperationalError:
        refused = True
    print(json.dumps({
        "runs_as": c.user, "superuser": c.superuser, "me": me, "refused": refused,
        "uid": os.geteuid(), "trust": c.trust_lines(),
        "password_mode": stat.S_IMODE(c.password_file.stat().st_mode),
        "datadir_mode": stat.S_IMODE(c.datadir.stat().st_mode),
    }))
finally:
    c.destroy()
"""


@pytest.mark.services  # starts a cluster of its own, as another user
def test_the_cluster_works_for_a_normal_user_too(scratch):
    """As root the suite's clusters run as `postgres`; a developer runs them as themself."""
    import json
    import pwd
    import subprocess
    import sys

    import egenmon

    argv = [sys.executable, "-c", NORMAL_USER_CHECK, str(scratch)]
    env = dict(os.environ)
    if os.geteuid() == 0:
        # As `nobody`: a Python it can run, with this checkout and the venv's packages.
        user = pwd.getpwnam("nobody")
        os.chown(scratch, user.pw_uid, user.pw_gid)
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        site = [p for p in sys.path if p.endswith("site-packages") and "venv" in p]
        root = str(Path(egenmon.__file__).resolve().parents[1])
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(scratch),
            "PYTHONPATH": ":".join([root, *site]),
        }
        argv = ["runuser", "-u", "nobody", "--", f"/usr/bin/{version}", *argv[1:]]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, cwd=scratch)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["uid"] != 0 and got["runs_as"] is None
    assert got["me"] == got["superuser"] == pwd.getpwuid(got["uid"]).pw_name
    assert got["refused"] and got["trust"] == []
    assert (got["password_mode"], got["datadir_mode"]) == (0o600, 0o700)
