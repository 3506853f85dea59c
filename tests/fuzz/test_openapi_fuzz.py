"""schemathesis against the served OpenAPI document: every operation, a bounded number of
generated requests each (valid and invalid), with valid credentials, all of
schemathesis's checks run; no request may get a 5xx.

The other checks' findings (a documented-status mismatch, say) are collected and shown
in the run's summary; a 5xx fails the test with the request that caused it.
"""

from __future__ import annotations

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, is_check_class, load_all_checks

from tests.conftest import TEST_SECRET
from tests.fuzz.conftest import FuzzServer

EXAMPLES = 10  # per operation, plus schemathesis's coverage cases: ~1000 requests

load_all_checks()
ALL_CHECKS = [c for c in CHECKS.get_all() if not is_check_class(c)]


def _document() -> dict:
    """The app's OpenAPI document, made as `egenmon serve` makes it (no database needed)."""
    from egenmon.app import create_app
    from egenmon.settings import Settings

    app = create_app(Settings(database_url="postgresql:///unused", auth_secret=TEST_SECRET))
    return app.openapi()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)


def test_the_served_document_is_the_one_fuzzed(fuzz_server: FuzzServer) -> None:
    served = requests.get(fuzz_server.root + "/openapi.json", timeout=30).json()
    assert served == DOCUMENT
    assert len(DOCUMENT["paths"]) >= 25


@pytest.fixture(scope="session")
def session() -> requests.Session:
    with requests.Session() as s:
        yield s


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_a_server_error(
    case, fuzz_server: FuzzServer, session: requests.Session
) -> None:
    # Valid credentials for the route, over whatever the generator made for the scheme
    # (the ignored_auth check sends its own invalid ones).
    headers = {**(case.headers or {}), **fuzz_server.auth_for(case.path)}
    response = case.call(base_url=fuzz_server.root, session=session, headers=headers, timeout=60)
    key = case.operation.label
    fuzz_server.report[key]["examples"] += 1
    fuzz_server.report[key][f"status {response.status_code}"] += 1
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}\n"
        f"reproduce: {case.as_curl_command(headers=headers)}"
    )
    try:
        case.validate_response(
            response,
            checks=ALL_CHECKS,
            headers=headers,
            transport_kwargs={"session": session, "base_url": fuzz_server.root, "headers": headers},
        )
    except (AssertionError, BaseExceptionGroup) as failures:  # one, or a FailureGroup
        for failure in getattr(failures, "exceptions", [failures]):
            title = getattr(failure, "title", type(failure).__name__)
            fuzz_server.report[key][f"check: {title}"] += 1
            # A check that re-sent the request (ignored_auth, unsupported_method, ...) and got
            # a 5xx fails the test like the request itself would.
            assert "Server error" not in str(title), f"{key}: {failure}"
