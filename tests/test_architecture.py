"""The shape ARCHITECTURE.md describes, checked: which room may import which, where SQL
lives, where the time zone is named, and how the suite tells its pure tests apart.

Each check holds today except for the known offenders listed below, each with where it
goes. A listed offender that no longer offends fails the check too, so the list only
shrinks: a move deletes its entries.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SERVICE_FIXTURES, is_unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "egenmon"

# The rooms, from the bottom up: a module may import its own room and the rooms below it,
# never one above. The edges at the top (entry points, wiring, dev tooling) may import
# anything; nothing imports them.
ROOMS: list[tuple[str, ...]] = [
    # shared vocabulary and configuration: import no other part of egenmon
    (
        "egenmon.domain",
        "egenmon.settings",
        "egenmon.metrics",
        "egenmon.progress",
        "egenmon.jsonbody",
    ),
    ("egenmon.store",),  # all SQL; knows no HTTP, MQTT, FHIR or rules
    # principals and token checks, the running services, the HTTP plumbing
    ("egenmon.auth", "egenmon.runtime", "egenmon.limits", "egenmon.identity"),
    ("egenmon.deps",),  # the typed FastAPI dependencies and the patient-access check
    ("egenmon.devices",),
    ("egenmon.ingest",),
    ("egenmon.fhir",),
    ("egenmon.alerts",),
    ("egenmon.export",),  # Bulk Data $export and research extracts
    ("egenmon.web",),
]
EDGES = (
    "egenmon.openapi",
    "egenmon.app",
    "egenmon.cli",
    "egenmon.health",
    "egenmon.dev",
    "egenmon.bench",
    "egenmon.__main__",
    "egenmon",  # the package's __init__
)

# Imports that run against the rooms, as (importer, imported module): none since issue 13.
# An entry here would be a debt with its way out written beside it.
KNOWN_UPWARD_IMPORTS: set[tuple[str, str]] = set()

# Modules outside store/ with SQL text today, and where it goes (issue 13).
KNOWN_SQL_OUTSIDE_STORE: dict[str, str] = {}

# Tooling that keeps SQL of its own for good, with the reason: the benchmarks load
# millions of rows in bulk (generate_series, COPY), measure a plain COPY into a copy of
# the readings layout as the ceiling (the ceiling is a plain COPY by definition) and
# count what arrived: measurement set-up, not queries of the platform. The private
# cluster of `egenmon dev`, the suite and the benchmarks makes its roles and databases.
TOOLING_WITH_SQL = {
    "egenmon.bench.alerts_scan": "bulk set-up of the scanned data",
    "egenmon.bench.export": "the exported care unit's id, after the bulk set-up",
    "egenmon.bench.fhir_search": "bulk set-up by COPY; the server's settings",
    "egenmon.bench.ingest_http": "the plain-COPY ceiling; counting what arrived",
    "egenmon.bench.ingest_mqtt": "counting what arrived",
    "egenmon.dev.cluster": "cluster set-up (dev and test tooling): roles and databases",
}

# SQL as egenmon writes it: upper-case keywords, a statement at the start of a string or
# a telling pair of keywords inside one.
SQL = re.compile(
    r"^\s*(SELECT|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|COPY|TRUNCATE|SHOW|LISTEN|NOTIFY"
    r"|VACUUM|ANALYZE)\s"
    r"|\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|ON\s+CONFLICT"
    r"|CREATE\s+(TABLE|INDEX|DATABASE|EXTENSION|TEMPORARY|UNIQUE)|DROP\s+(TABLE|DATABASE))\b",
    re.S,
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield module_name(path), ast.parse(path.read_text(encoding="utf-8"), str(path))


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(tree: ast.Module) -> set[str]:
    """The egenmon modules a module imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from egenmon.fhir import ingest` imports the module egenmon.fhir.ingest
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n.startswith("egenmon.") and is_module(n)}
    return found


def room_of(module: str) -> int | None:
    """The rank of a module's room, None for an edge."""
    for rank, room in enumerate(ROOMS):
        if any(module == p or module.startswith(p + ".") for p in room):
            return rank
    if any(module == e or (e != "egenmon" and module.startswith(e + ".")) for e in EDGES):
        return None
    raise AssertionError(f"{module} is in no room: add it to ROOMS or EDGES")


def same_room(a: str, b: str) -> bool:
    return a.split(".")[:2] == b.split(".")[:2]


def upward_imports() -> set[tuple[str, str]]:
    found = set()
    for module, tree in modules():
        rank = room_of(module)
        for target in imports(tree):
            target_rank = room_of(target)
            if rank is None or same_room(module, target):
                continue
            if target_rank is None or target_rank >= rank:
                found.add((module, target))
    return found


def test_every_module_is_in_a_room_or_an_edge():
    for module, _ in modules():
        room_of(module)  # raises naming the module


def test_no_module_imports_a_room_above_its_own_or_an_edge():
    found = upward_imports()
    new = sorted(found - KNOWN_UPWARD_IMPORTS)
    assert not new, f"imports against ARCHITECTURE.md's direction: {new}"
    fixed = sorted(KNOWN_UPWARD_IMPORTS - found)
    assert not fixed, f"no longer imported, delete from KNOWN_UPWARD_IMPORTS: {fixed}"


def test_no_two_folders_import_each_other_but_the_known_cycles():
    def folder(m: str) -> str:
        return ".".join(m.split(".")[:2])

    edges = {
        (folder(m), folder(t))
        for m, tree in modules()
        for t in imports(tree)
        if folder(m) != folder(t) and (m, t) not in KNOWN_UPWARD_IMPORTS
    }
    cycles = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    assert not cycles, f"folders that import each other: {cycles}"


def test_no_command_imports_the_parser_and_no_tooling_imports_a_command():
    """The commands share cli/common.py, never the parser that imports them all; dev/
    and bench/ are called by commands, never the other way round."""
    for module, tree in modules():
        found = imports(tree)
        if module != "egenmon.cli":
            assert "egenmon.cli.parser" not in found, f"{module} imports the parser"
        if module.startswith(("egenmon.dev", "egenmon.bench")):
            commands = {t for t in found if t == "egenmon.cli" or t.startswith("egenmon.cli.")}
            assert not commands, f"{module} imports {commands}"


def test_the_foundation_imports_no_other_part_of_egenmon():
    for module, tree in modules():
        if room_of(module) == 0:
            others = {t for t in imports(tree) if room_of(t) != 0}
            assert not others, f"{module} imports {others}"


def test_the_domain_imports_nothing_of_egenmon_but_itself():
    found = {
        (module, target)
        for module, tree in modules()
        if module.startswith("egenmon.domain")
        for target in imports(tree)
        if not target.startswith("egenmon.domain")
    }
    assert not found, f"domain/ imports other parts of egenmon: {sorted(found)}"
    assert {"egenmon.domain.measurements", "egenmon.domain.principals"} <= {m for m, _ in modules()}


def sql_modules() -> set[str]:
    found = set()
    for module, tree in modules():
        if module.startswith("egenmon.store"):
            continue
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
                and SQL.search(node.value)
            ):
                found.add(module)
                break
    return found


def test_no_sql_outside_store_but_the_known_offenders():
    found = sql_modules()
    allowed = KNOWN_SQL_OUTSIDE_STORE.keys() | TOOLING_WITH_SQL.keys()
    new = sorted(found - allowed)
    assert not new, f"SQL outside egenmon/store/: {new}"
    fixed = sorted(allowed - found)
    assert not fixed, (
        f"no SQL left, delete from KNOWN_SQL_OUTSIDE_STORE or TOOLING_WITH_SQL: {fixed}"
    )


@pytest.mark.parametrize(
    ("text", "sql"),
    [
        ("SELECT 1", True),
        ("SELECT count(*) FROM patients", True),
        ("INSERT INTO readings (time) VALUES (%s)", True),
        (" WHERE id = %s ON CONFLICT DO NOTHING", True),
        ("LISTEN ", True),
        ("DELETE", False),  # an HTTP method
        ("Select a patient from the list", False),
        ("the readings were inserted into the store", False),
    ],
)
def test_the_sql_pattern_tells_statements_from_prose(text, sql):
    assert bool(SQL.search(text)) is sql


def test_the_default_time_zone_is_named_only_in_settings():
    named = sorted(
        module
        for module, tree in modules()
        if module != "egenmon.settings"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and "Europe/Stockholm" in node.value
    )
    assert not named, f"use Settings.tz (or settings.DEFAULT_TIMEZONE): {named}"


# -- the suite's own marking: `make test-unit` runs the tests marked `unit` -------------


def test_a_test_without_servers_is_marked_unit(request):
    assert request.node.get_closest_marker("unit") is not None


@pytest.mark.parametrize(
    ("fixtures", "unit"),
    [
        ({"tmp_path", "monkeypatch"}, True),
        ({"database_url", "pg_cluster"}, False),
        ({"settings", "env", "database_url", "pg_cluster", "broker"}, False),
        ({"own_broker", "tmp_path"}, False),
        ({"serve", "env"}, False),
    ],
)
def test_a_test_is_unit_unless_a_fixture_starts_a_server(fixtures, unit):
    assert is_unit(fixtures) is unit
    assert SERVICE_FIXTURES >= {"pg_cluster", "broker", "own_broker", "serve"}


def test_under_m_unit_service_tests_are_left_out_and_a_unit_test_cannot_start_a_server(
    pytester,
):
    pytester.makeconftest((ROOT / "tests" / "conftest.py").read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nmarkers =\n    unit: pure\n    services: starts a server itself\n")
    pytester.makepyfile(
        test_inner="""
        import pytest
        from egenmon.dev.mosquitto import Mosquitto
        from egenmon.dev.cluster import Cluster

        def test_pure():
            assert 1 + 1 == 2

        def test_with_the_database(conn):
            raise AssertionError("must not run under -m unit")

        @pytest.mark.services
        def test_that_starts_its_own_cluster(tmp_path):
            raise AssertionError("must not run under -m unit")

        def test_pure_but_starts_a_cluster(tmp_path):
            Cluster(tmp_path / "pg").start()

        def test_pure_but_starts_a_broker(tmp_path):
            Mosquitto(tmp_path / "mqtt").start()
        """
    )
    result = pytester.runpytest_inprocess("-m", "unit", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2, deselected=2)
    result.stdout.fnmatch_lines(["*StartsAServer*marked unit but starts Cluster*"])
    result.stdout.fnmatch_lines(["*StartsAServer*marked unit but starts Mosquitto*"])
