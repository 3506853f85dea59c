"""docker-compose.yml, the Dockerfile and their entrypoint: the production shape, checked
without Docker (none is needed to run these)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from egenmon.dev.cluster import free_port
from egenmon.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
INIT_SCRIPT = ROOT / "deploy" / "compose-init.sh"
SETTINGS_VARS = {f"EGENMON_{name.upper()}" for name in Settings.model_fields}
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (the container's port must be reachable)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def as_list(value: str | list | None) -> list[str]:
    if value is None:
        return []
    return value.split() if isinstance(value, str) else [str(v) for v in value]


def egenmon_services(services: dict) -> dict[str, dict]:
    """The services that run the egenmon image (built from this repository)."""
    return {
        name: s
        for name, s in services.items()
        if "build" in s or str(s.get("image", "")).startswith("egenmon")
    }


def config_step(services: dict) -> tuple[str, dict]:
    found = [
        (name, s)
        for name, s in egenmon_services(services).items()
        if as_list(s.get("command"))[:2] == ["broker", "config"]
    ]
    assert len(found) == 1, "one service must run `egenmon broker config`"
    return found[0]


def depends(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def option(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


def published(service: dict, container_port: str) -> str:
    """The host side of a short-form port mapping, with compose's defaults filled in."""
    for spec in service.get("ports") or []:
        host, _, target = interpolate(str(spec), {}).rpartition(":")
        if target == container_port:
            return host
    raise AssertionError(f"port {container_port} is not published")


def mounts(service: dict) -> dict[str, str]:
    """Mount point -> named volume (or host path) of a service's short-form volumes."""
    result = {}
    for spec in service.get("volumes") or []:
        source, target = str(spec).split(":")[:2]
        result[target] = source
    return result


def interpolate(value: str, required: dict[str, str]) -> str:
    """Compose's ${VAR:-default} / ${VAR:?message} with no variables set but `required`."""

    def one(m: re.Match) -> str:
        name, op, rest = m.group(1), m.group(2), m.group(3)
        if op == ":?":
            assert name in required, f"{name} is required but has no sample in the test"
            return required[name]
        return rest or ""

    return re.sub(r"\$\{(\w+)(:-|:\?)?([^}]*)\}", one, value).replace("$$", "$")


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_every_egenmon_variable_a_service_sets_is_a_setting(services):
    seen = set()
    for name, service in services.items():
        for var in environment(service):
            if var.startswith("EGENMON_"):
                assert var in SETTINGS_VARS, f"{name} sets {var}, which Settings does not read"
                seen.add(var)
    assert {
        "EGENMON_DATABASE_URL",
        "EGENMON_AUTH_SECRET",
        "EGENMON_MQTT_TOPIC_PREFIX",
        "EGENMON_TIMEZONE",
        "EGENMON_LOG_LEVEL",
        "EGENMON_ENVIRONMENT",
    } <= seen


def test_egenmon_services_are_configured_only_through_egenmon_variables(services):
    ours = egenmon_services(services)
    assert {"egenmon", "migrate"} <= set(ours)
    for name, service in ours.items():
        assert "env_file" not in service, f"{name}: configure through environment: only"
        others = [v for v in environment(service) if not v.startswith("EGENMON_")]
        assert not others, f"{name} sets {others}"
    for name, service in services.items():
        if name not in ours:
            assert all(v.startswith("POSTGRES_") for v in environment(service)), name


def test_the_egenmon_environment_is_accepted_by_the_settings_class(services):
    samples = {"POSTGRES_PASSWORD": "0123abcd" * 3, "EGENMON_AUTH_SECRET": "s3cr3t" * 8}
    env = {k: interpolate(v, samples) for k, v in environment(services["egenmon"]).items()}
    settings = load_settings(**{k.removeprefix("EGENMON_").lower(): v for k, v in env.items()})
    assert settings.environment == "production"
    assert settings.signing_secret == samples["EGENMON_AUTH_SECRET"]
    db_url = urlsplit(settings.require_database())
    assert (db_url.hostname, db_url.port) == ("db", 5432)
    db_env = environment(services["db"])
    assert db_url.username == db_env["POSTGRES_USER"]
    assert db_url.path == "/" + db_env["POSTGRES_DB"]
    assert db_url.password == interpolate(db_env["POSTGRES_PASSWORD"], samples)


def test_compose_refuses_to_start_without_the_secrets(services):
    env = environment(services["egenmon"])
    assert env["EGENMON_AUTH_SECRET"].startswith("${EGENMON_AUTH_SECRET:?")
    assert "${POSTGRES_PASSWORD:?" in env["EGENMON_DATABASE_URL"]
    assert environment(services["db"])["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_services_start_in_a_sensible_order(services):
    config_name, _ = config_step(services)
    egenmon = depends(services["egenmon"])
    assert (
        egenmon.get("db") == "service_healthy"
        or egenmon.get("migrate") == "service_completed_successfully"
    )
    assert egenmon.get("broker") in ("service_started", "service_healthy")
    # The platform's MQTT URL is written by the config step.
    assert egenmon.get(config_name) == "service_completed_successfully"
    assert depends(services["migrate"]) == {"db": "service_healthy"}
    assert depends(services["broker"]).get(config_name) == "service_completed_successfully"


def test_the_database_is_timescaledb_community_with_a_healthcheck_and_a_volume(compose):
    db = compose["services"]["db"]
    assert re.fullmatch(r"timescale/timescaledb:(2\.\d+(\.\d+)?|latest)-pg1[56]", db["image"])
    assert "pg_isready" in " ".join(as_list(db["healthcheck"]["test"]))
    volume = mounts(db)["/var/lib/postgresql/data"]
    assert volume in compose["volumes"], "the database lives in a named volume"


def test_the_broker_is_mosquitto_2_configured_by_the_config_step(compose):
    services = compose["services"]
    broker = services["broker"]
    assert re.fullmatch(r"eclipse-mosquitto:2(\.\d+){0,2}", broker["image"])
    assert published(broker, "1883") == "1883"
    _, step = config_step(services)
    args = as_list(step["command"])
    mount_dir = option(args, "--mount-dir")
    assert option(args, "--out") == mount_dir, "the step writes where the broker reads"
    assert option(args, "--host") == "broker"
    assert option(args, "--plugin") == "/usr/lib/mosquitto_dynamic_security.so"
    volume = mounts(step)[mount_dir]
    assert volume in compose["volumes"]
    assert mounts(broker)[mount_dir] == volume, "the broker mounts the step's volume there"
    command = as_list(broker["command"])
    assert command[command.index("-c") + 1] == f"{mount_dir}/mosquitto.conf"
    assert f"{mount_dir}/platform.secret" in " ".join(as_list(broker["healthcheck"]["test"]))


def test_egenmon_serves_on_all_interfaces_and_is_checked_on_readyz(services):
    egenmon = services["egenmon"]
    args = as_list(egenmon["command"])
    assert args[0] == "serve"
    assert option(args, "--host") == ALL_INTERFACES
    port = option(args, "--port")
    assert published(egenmon, port) == port
    assert f"127.0.0.1:{port}/readyz" in " ".join(as_list(egenmon["healthcheck"]["test"]))


def test_the_mqtt_url_reaches_egenmon_through_the_shared_volume(services):
    _, step = config_step(services)
    egenmon = services["egenmon"]
    script = INIT_SCRIPT.read_text()
    url_dir = re.search(r"url_file=\$\{MQTT_URL_FILE:-(/\S+)/mqtt_url\}", script).group(1)
    for service in (step, egenmon):
        assert as_list(service["entrypoint"]) == ["egenmon-compose-init"]
    assert mounts(step)[url_dir] == mounts(egenmon)[url_dir], "one volume carries the URL"
    assert any(str(v).endswith(f"{url_dir}:ro") for v in egenmon["volumes"]), (
        "egenmon reads the URL, never writes it"
    )
    assert str(step.get("user", "")).split(":")[0] in ("0", "root")


def test_the_dockerfile_runs_egenmon_as_a_non_root_user():
    steps = dockerfile_instructions()
    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim"), "the official base by default"
    assert steps[1] == ("FROM", "${BASE_IMAGE}")
    entrypoint = [rest for word, rest in steps if word == "ENTRYPOINT"][-1]
    assert json.loads(entrypoint) == ["egenmon"]
    user = [rest for word, rest in steps if word == "USER"][-1]
    assert user.split(":")[0] not in ("root", "0")
    install = [rest for word, rest in steps if word == "RUN" and "pip install" in rest]
    assert len(install) == 1
    # The pinned, tested versions wherever the repository has them.
    assert "-c constraints.txt" in install[0]
    assert 'pip install "$@" .' in install[0]
    copies = [rest.split() for word, rest in steps if word == "COPY"]
    assert ["deploy/compose-init.sh", "/usr/local/bin/egenmon-compose-init"] in copies


def test_the_docker_context_leaves_out_local_state_but_keeps_what_the_build_copies():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        return any(
            fnmatch(path, p)
            or fnmatch(path, p.removeprefix("**/"))
            or path.startswith(p.rstrip("/") + "/")
            for p in patterns
        )

    backups = ("egenmon.dump", "mosquitto.tar")  # the README's backup files
    for path in (".venv", ".egenmon", ".env", ".pytest_cache", "tests", ".git", *backups):
        assert ignored(path), f"{path} must stay out of the image"
    copies = [rest.split()[:-1] for word, rest in dockerfile_instructions() if word == "COPY"]
    for path in (p for sources in copies for p in sources):
        assert not ignored(path), f"the Dockerfile copies {path}, which .dockerignore drops"


def run_init(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """deploy/compose-init.sh with a stand-in `egenmon` that prints what it was given."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "egenmon"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = env ]; then exec env; fi\n'
        'echo "args=$*"\n'
        'echo "url=${EGENMON_MQTT_URL-unset}"\n'
    )
    fake.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    clean["PATH"] = f"{bin_dir}{os.pathsep}{clean['PATH']}"
    clean["MQTT_URL_FILE"] = str(tmp_path / "mqtt_url")
    return subprocess.run(
        ["sh", str(INIT_SCRIPT), *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_entrypoint_exports_the_url_from_the_config_step(tmp_path):
    (tmp_path / "mqtt_url").write_text("mqtt://egenmon:pw@broker:1883\n")
    r = run_init(tmp_path, {}, "serve", "--host", ALL_INTERFACES)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"args=serve --host {ALL_INTERFACES}",
        "url=mqtt://egenmon:pw@broker:1883",
    ]


def test_the_entrypoint_keeps_an_mqtt_url_the_operator_set(tmp_path):
    (tmp_path / "mqtt_url").write_text("mqtt://egenmon:pw@broker:1883\n")
    r = run_init(tmp_path, {"EGENMON_MQTT_URL": "mqtt://u:p@elsewhere:1883"}, "serve")
    assert r.returncode == 0, r.stderr
    assert "url=mqtt://u:p@elsewhere:1883" in r.stdout.splitlines()


def test_the_entrypoint_refuses_to_start_without_a_url(tmp_path):
    r = run_init(tmp_path, {}, "serve")
    assert r.returncode != 0
    assert "args=" not in r.stdout, "egenmon must not start without its broker account"
    assert "broker-config" in r.stderr


def test_the_entrypoint_sets_no_variable_but_egenmon_mqtt_url(tmp_path):
    script = INIT_SCRIPT.read_text()
    exported = {
        word.split("=")[0]
        for line in re.findall(r"^\s*export\s+(.*)$", script, re.MULTILINE)
        for word in line.split()
    }
    assert exported == {"EGENMON_MQTT_URL"}
    assert re.search(r'^\s*exec egenmon "\$@"\s*$', script, re.MULTILINE)
    (tmp_path / "mqtt_url").write_text("mqtt://egenmon:pw@broker:1883\n")
    r = run_init(tmp_path, {}, "env")
    assert r.returncode == 0, r.stderr
    seen = {line.split("=", 1)[0] for line in r.stdout.splitlines() if "=" in line}
    before = {k for k in os.environ if not k.startswith("EGENMON_")} | {"PATH", "MQTT_URL_FILE"}
    added = seen - before - {"PWD", "OLDPWD", "SHLVL", "_"}
    assert added == {"EGENMON_MQTT_URL"}


def test_broker_config_writes_the_paths_the_broker_container_sees(tmp_path, services):
    _, step = config_step(services)
    args = as_list(step["command"])
    mount_dir = option(args, "--mount-dir")
    args[args.index("--out") + 1] = str(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EGENMON_")}
    r = subprocess.run(
        [sys.executable, "-m", "egenmon", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["conf"] == str(tmp_path / "mosquitto.conf")
    conf = (tmp_path / "mosquitto.conf").read_text().splitlines()
    assert "listener 1883" in conf
    assert "plugin /usr/lib/mosquitto_dynamic_security.so" in conf
    assert f"plugin_opt_config_file {mount_dir}/dynamic-security.json" in conf
    assert f"persistence_location {mount_dir}/data/" in conf
    assert str(tmp_path) not in "\n".join(conf), "no path of the machine that wrote it"
    assert (tmp_path / "dynamic-security.json").exists()
    assert (tmp_path / "data").is_dir()
    url = urlsplit(result["mqtt_url"])
    assert (url.scheme, url.hostname, url.port, url.username) == ("mqtt", "broker", 1883, "egenmon")
    assert url.password == (tmp_path / "platform.secret").read_text().strip()


def test_readme_opens_with_the_two_command_quick_start():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```[^\n]*\n(.*?)```", text, re.DOTALL).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["make run", "make test"]
    assert text.index("Quick start") < text.index("```")


def test_readme_configuration_table_names_every_setting():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\|\s*`(EGENMON_\w+)`", section, re.MULTILINE))
    assert rows == SETTINGS_VARS


LOCAL = ROOT / "docker-compose.local.yml"
DEPLOY = ROOT / "deploy"


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_the_local_override_swaps_only_images_for_the_ones_built_from_debian(services):
    local = yaml.safe_load(LOCAL.read_text())["services"]
    assert set(local) == set(services)
    assert local["db"] == {"image": "egenmon-db:local"}
    assert local["broker"] == {"image": "egenmon-broker:local"}
    for name in egenmon_services(services):
        assert set(local[name]) == {"image", "build"}, f"{name}: no other change than the image"
        assert local[name]["image"] == "egenmon:local"
        assert local[name]["build"]["args"] == {"BASE_IMAGE": "egenmon-base:bookworm"}
    images = (ROOT / "scripts" / "images.sh").read_text()
    for tag in (
        "egenmon-base:bookworm",
        "egenmon:local",
        "egenmon-db:local",
        "egenmon-broker:local",
    ):
        assert tag in images, f"scripts/images.sh does not build {tag}"


def test_the_debian_broker_image_is_laid_out_as_compose_expects(services):
    steps = instructions(DEPLOY / "broker.Dockerfile")
    run = " ".join(rest for word, rest in steps if word == "RUN")
    uid = re.search(r"broker_uid=(\d+)", INIT_SCRIPT.read_text()).group(1)
    assert f"--uid {uid}" in run, "the broker runs as the uid compose-init hands its volume to"
    _, step = config_step(services)
    plugin = option(as_list(step["command"]), "--plugin")
    assert plugin in run, "the plugin is where broker-config says it is"
    cmd = json.loads([rest for word, rest in steps if word == "CMD"][-1])
    assert cmd == as_list(services["broker"]["command"])
    assert "mosquitto-clients" in run, "the healthcheck needs mosquitto_sub"


def test_the_debian_database_image_builds_timescaledb_as_the_install_script_does():
    steps = instructions(DEPLOY / "db.Dockerfile")
    build = " ".join(rest for word, rest in steps if word == "RUN")
    install = (ROOT / "scripts" / "install.sh").read_text()
    for flag in ("-DAPACHE_ONLY=ON", "-DREGRESS_CHECKS=OFF", "-DTAP_CHECKS=OFF"):
        assert flag in install and flag in build
    assert "deb-src $uri trixie main" in build
    assert "source --download-only timescaledb" in build
    assert ("ARG", "PG_MAJOR=15") in steps
    assert json.loads([rest for word, rest in steps if word == "ENTRYPOINT"][-1]) == [
        "egenmon-db-entrypoint"
    ]
    assert ["deploy/db-entrypoint.sh", "/usr/local/bin/egenmon-db-entrypoint"] in [
        rest.split() for word, rest in steps if word == "COPY"
    ]
    entry = (DEPLOY / "db-entrypoint.sh").read_text()
    for var in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert var in entry, f"the image honours {var} as the official one does"
    assert "shared_preload_libraries = 'timescaledb'" in entry


def test_no_debian_mirror_or_registry_is_hard_coded():
    files = [
        ROOT / "scripts" / "images.sh",
        ROOT / "scripts" / "apt-sources.sh",
        ROOT / "scripts" / "compose-check.sh",
        DEPLOY / "db.Dockerfile",
        DEPLOY / "broker.Dockerfile",
        DOCKERFILE,
        LOCAL,
    ]
    for path in files:
        text = path.read_text()
        assert not re.search(r"(https?|ftp)://", text), f"{path.name} names a URL"
    images = (ROOT / "scripts" / "images.sh").read_text()
    sources = (ROOT / "scripts" / "apt-sources.sh").read_text()
    assert ". scripts/apt-sources.sh" in images
    assert "/etc/apt/sources.list.d/debian.sources" in sources, "the URI comes from /etc/apt"
    assert "debootstrap" in images and "docker import" in images


def start_db_entrypoint(datadir: Path, sockdir: Path, port: int, env: dict[str, str]):
    """deploy/db-entrypoint.sh on this machine's PostgreSQL (as the image runs it)."""
    from egenmon.dev.cluster import pg_bindir

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "POSTGRES_"))}
    clean["PATH"] = f"{pg_bindir()}{os.pathsep}{clean['PATH']}"
    clean["PGDATA"] = str(datadir)
    # A copy the postgres user can read (the checkout may be closed to it).
    script = datadir.parent / "db-entrypoint.sh"
    shutil.copyfile(DEPLOY / "db-entrypoint.sh", script)
    script.chmod(0o755)
    return subprocess.Popen(
        [
            "sh",
            str(script),
            "postgres",
            "-c",
            "listen_addresses=127.0.0.1",
            "-p",
            str(port),
            "-k",
            str(sockdir),
        ],
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def connect_tcp(port: int, password: str, timeout: float = 60):
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(
                host="127.0.0.1", port=port, user="egenmon", dbname="egenmon",
                password=password, connect_timeout=3, autocommit=True,
            )  # fmt: skip
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def stop_db(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)  # the image's STOPSIGNAL: fast shutdown
    out, _ = proc.communicate(timeout=60)
    return out


def test_the_database_entrypoint_initialises_once_with_timescaledb_and_password_auth():
    import psycopg

    # A folder the postgres user can reach when the test runs as root (setpriv drops to it).
    base = Path(tempfile.mkdtemp(prefix="egenmon-db-entrypoint-"))
    base.chmod(0o755)
    datadir, sockdir = base / "data", base / "sock"
    sockdir.mkdir(mode=0o777)
    sockdir.chmod(0o777)
    env = {"POSTGRES_USER": "egenmon", "POSTGRES_DB": "egenmon", "POSTGRES_PASSWORD": "pw-0123"}
    try:
        refused = start_db_entrypoint(datadir, sockdir, free_port(), {"POSTGRES_USER": "egenmon"})
        assert refused.wait(timeout=60) != 0, "an empty database must need POSTGRES_PASSWORD"
        assert "POSTGRES_PASSWORD" in refused.stdout.read()

        port = free_port()
        proc = start_db_entrypoint(datadir, sockdir, port, env)
        try:
            with connect_tcp(port, "pw-0123") as conn:
                ext = conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
                ).fetchone()
                assert ext is not None, "the database has the timescaledb extension"
                assert conn.execute("SHOW shared_preload_libraries").fetchone()[0] == "timescaledb"
                assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'egenmon'")
                conn.execute("CREATE TABLE kept (x int)")
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(
                    host="127.0.0.1", port=port, user="egenmon", dbname="egenmon",
                    password="wrong", connect_timeout=3,
                )  # fmt: skip
        finally:
            out = stop_db(proc)
        assert "initialised" in out
        assert "pw-0123" not in out, "the password is never printed"

        # Second start: the same data, no second initialisation, no password needed.
        port = free_port()
        proc = start_db_entrypoint(
            datadir, sockdir, port, {"POSTGRES_USER": "egenmon", "POSTGRES_DB": "egenmon"}
        )
        try:
            with connect_tcp(port, "pw-0123") as conn:
                assert conn.execute("SELECT count(*) FROM kept").fetchone() == (0,)
        finally:
            out = stop_db(proc)
        assert "initialised" not in out
    finally:
        shutil.rmtree(base, ignore_errors=True)
