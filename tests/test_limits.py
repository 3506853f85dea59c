"""The request-limit middleware as a plain ASGI app around a route that records its calls."""

from __future__ import annotations

import asyncio

import pytest

from egenmon.limits import RequestLimits, path_problem, query_problem


def run(path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes], query: bytes = b""):
    """(status sent, body the route read or None when it was not called)."""
    seen: dict = {}

    async def route(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen["body"] = body
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "method": "POST", "query_string": query,
             "headers": headers}  # fmt: skip
    asyncio.run(RequestLimits(route)(scope, receive, send))
    return sent[0]["status"], seen.get("body")


def test_an_absurd_content_length_is_413_without_reading() -> None:
    assert run("/api/v1/webhooks", [(b"content-length", b"9" * 5000)], [b""]) == (413, None)


def test_a_streamed_body_is_cut_at_the_limit() -> None:
    chunk = b"x" * (256 * 1024)
    status, body = run("/fhir/Observation", [], [chunk] * 40)  # 10 MiB, 8 MiB allowed
    assert status == 413 and body is None


def test_a_json_body_is_passed_on_whole_when_it_is_fine() -> None:
    assert run("/api/v1/webhooks", [], [b'{"url": ', b'"x"}']) == (200, b'{"url": "x"}')


def test_readings_are_left_to_their_route() -> None:
    big = [b"x" * (1024 * 1024)] * 3
    assert run("/api/v1/readings", [], big) == (200, b"".join(big))


@pytest.mark.parametrize(
    ("query", "named"),
    [(b"a=1&b=%00", '"b"'), (b"x%0A=1", '"x\\n"'), (b"q=a+%1Fb", '"q"'), (b"c=%7F", '"c"')],
)
def test_query_control_characters_are_named(query: bytes, named: str) -> None:
    problem = query_problem(query)
    assert problem is not None and f"query parameter {named}" in problem


@pytest.mark.parametrize(
    "query", [b"", b"a=1&b=%C3%A5", b"date=ge2026-01-01T00%3A00%3A00%2B01%3A00", b"x=%ff"]
)
def test_ordinary_queries_pass(query: bytes) -> None:
    assert query_problem(query) is None


def test_paths_with_control_characters_are_refused() -> None:
    assert path_problem("/fhir/Device/a\x00b") is not None
    assert path_problem("/fhir/Device/åäö-1") is None
