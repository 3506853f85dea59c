# egenmon: `make run` starts the platform with demo data; `make test` runs the suite,
# `make test-unit` only its pure tests (no servers, seconds); `make lint` runs ruff and mypy.
# All install what they need first (scripts/install.sh: idempotent, fast when done).

VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# The suite runs on two workers (pytest-xdist), a test file each at a time, so a module's
# server fixture starts once; TEST_JOBS=0 runs it in one process.
TEST_JOBS ?= 2

.PHONY: install run test test-unit lint format bench screenshots clean

install:
	@bash scripts/install.sh

run: install
	@$(VENV)/bin/egenmon dev

test: install
	@$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

# The tests that start no server (tests/conftest.py marks them `unit`).
test-unit: install
	@$(PY) -m pytest -m unit $(PYTEST_ARGS)

screenshots: install
	@SCREENSHOTS_TO_DOCS=1 $(PY) -m pytest -q tests/web/test_browser.py

lint: install
	@$(VENV)/bin/ruff check egenmon tests
	@$(VENV)/bin/ruff format --check egenmon tests
	@$(VENV)/bin/mypy

format: install
	@$(VENV)/bin/ruff format egenmon tests

bench: install
	@$(VENV)/bin/egenmon bench ingest-http --json

clean:
	rm -rf $(VENV) .egenmon .pytest_cache

# The production shape on this machine (docker-compose, images from Debian alone); as root.
# About the duration and when it runs: README, "Production with docker-compose".
.PHONY: compose-check
compose-check:
	@bash scripts/compose-check.sh
